"""The MO benchmark: carrier deliver_sm -> owner decision -> durable -> client deliver_sm -> response.

Two processes. The hub (``staffetta run``, embedded SQLite store) on core 0;
on core 1 a driver that is both the carrier (the simulator's
:class:`Carrier`, which the hub binds to and which sends the MO) and the
owning client (an RX bind that answers every deliver_sm). The figure is MO
per second from the first MO sent to the last one received by the client,
every MO acknowledged to the carrier only after its commit.

    python bench/bench_mo.py                  # 50,000 MO to 4 dedicated numbers of one account
    python bench/bench_mo.py -n 5000          # a smoke run
    python bench/bench_mo.py --ownership code # MO on a shared number, routed by receiving code

It also prints the owner decision's cost (``Numbers.owner_of``, µs, in this
process) for the three kinds of owner: dedicated, receiving code, reply window.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_spine import calibrate, cpu_seconds, free_port, pinned, stop, wait_port  # noqa: E402

NUMBERS = [f"3934000{i:05d}" for i in range(4)]
SHARED = "393409999999"


def decision_cost() -> dict[str, float]:
    """µs per ``owner_of`` for each way an owner is found (best of 5)."""
    from staffetta.router.numbers import Configured, Numbers

    n = Numbers()
    n.configure(Configured(shared=frozenset({SHARED}), dedicated={x: 1 for x in NUMBERS},
                           codes={"10001": (1, "code")}))
    for i in range(10_000):
        n.remember_mt(2, f"39333{i:07d}", "393400000777", 0.0)
    out = {}
    for name, args in (("dedicated", ("393331234567", NUMBERS[3], "hello there", 1.0)),
                       ("code", ("393331234567", SHARED, "10001 hello there", 1.0)),
                       ("reply_window", ("393330000042", "393400000777", "yes please", 1.0)),
                       ("dead_letter", ("393331234567", "393401111111", "who is this", 1.0))):
        out[name] = min(timeit.repeat(lambda a=args: n.owner_of(*a), number=50_000, repeat=5)) / 50_000 * 1e6
    return out


# ---------------------------------------------------------------- the driver (core 1)


def driver(args) -> int:
    """The carrier and the owning client, as lean raw SMPP peers (so the driver is not the limit).

    The carrier answers the hub's bind and keeps ``window`` MO deliver_sm
    unanswered at once (pre-encoded, only the sequence number changes); the
    client binds as a receiver and answers every deliver_sm at once.
    """
    import struct

    from twisted.internet import defer, protocol, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from staffetta.pdu.codec import Pdu, encode
    from staffetta.pdu.constants import Command
    from staffetta.pdu.receipt import DELIVER_SM_NULL

    n = args.n
    state = {"sent": 0, "acked": 0, "refused": 0, "got": 0, "first": None, "last": None}
    done = defer.Deferred()
    header = struct.Struct(">IIII")

    def frames(buf: bytearray):
        while len(buf) >= 16:
            length, cid, status, seq = header.unpack_from(buf, 0)
            if len(buf) < length:
                return
            body = bytes(buf[16:length])
            del buf[:length]
            yield cid, status, seq, body

    templates = []
    for i in range(16):
        dest = SHARED if args.ownership == "code" else NUMBERS[i % len(NUMBERS)]
        text = f"10001 msg {i}" if args.ownership == "code" else f"hello there, this is handset {i}"
        fields = {**DELIVER_SM_NULL, "source_addr_ton": 1, "source_addr_npi": 1,
                  "source_addr": f"3933{i:08d}".encode(), "dest_addr_ton": 1, "dest_addr_npi": 1,
                  "destination_addr": dest.encode(), "short_message": text.encode()}
        templates.append(bytearray(encode(Pdu(Command.DELIVER_SM, 0, 0, fields))))

    class CarrierSide(protocol.Protocol):
        def connectionMade(self) -> None:  # noqa: N802
            self.buf = bytearray()
            self.outstanding = 0

        def pump(self) -> None:
            out = []
            while self.outstanding < args.window and state["sent"] < n:
                state["sent"] += 1
                self.outstanding += 1
                t = templates[state["sent"] % 16]
                struct.pack_into(">I", t, 12, state["sent"])
                out.append(bytes(t))
            if out:
                self.transport.write(b"".join(out))

        def dataReceived(self, data: bytes) -> None:  # noqa: N802
            self.buf += data
            replies = []
            for cid, status, seq, _body in frames(self.buf):
                if cid == Command.BIND_TRANSCEIVER:
                    replies.append(header.pack(16 + 4, cid | 0x80000000, 0, seq) + b"sim\x00")
                    reactor.callLater(0.5, start, self)
                elif cid == Command.ENQUIRE_LINK:
                    replies.append(header.pack(16, Command.ENQUIRE_LINK_RESP, 0, seq))
                elif cid == Command.DELIVER_SM_RESP:
                    self.outstanding -= 1
                    state["acked"] += 1
                    if status:
                        state["refused"] += 1
                elif cid == Command.UNBIND:
                    replies.append(header.pack(16, Command.UNBIND_RESP, 0, seq))
            if replies:
                self.transport.write(b"".join(replies))
            if state["first"] is not None:
                self.pump()

    class Client(protocol.Protocol):
        def connectionMade(self) -> None:  # noqa: N802
            self.buf = bytearray()
            body = b"owner\x00owner\x00\x00\x34\x00\x00\x00"
            self.transport.write(header.pack(16 + len(body), Command.BIND_RECEIVER, 0, 1) + body)

        def dataReceived(self, data: bytes) -> None:  # noqa: N802
            self.buf += data
            replies = []
            for cid, _status, seq, _body in frames(self.buf):
                if cid == Command.DELIVER_SM:
                    replies.append(header.pack(17, Command.DELIVER_SM_RESP, 0, seq) + b"\x00")
                    state["got"] += 1
                    if state["got"] == n:
                        state["last"] = time.perf_counter()
                        if not done.called:
                            done.callback(None)
                elif cid == Command.ENQUIRE_LINK:
                    replies.append(header.pack(16, Command.ENQUIRE_LINK_RESP, 0, seq))
            if replies:
                self.transport.write(b"".join(replies))

    def start(carrier: CarrierSide) -> None:
        if state["first"] is None:
            state["first"] = time.perf_counter()
            carrier.pump()

    factory = protocol.ServerFactory.forProtocol(CarrierSide)
    reactor.listenTCP(args.carrier_port, factory, interface="127.0.0.1")

    def _sleep(s):
        d = defer.Deferred()
        reactor.callLater(s, d.callback, None)
        return d

    @defer.inlineCallbacks
    def run():
        from twisted.internet.error import ConnectError

        for _ in range(1200):  # the hub starts after the carrier it binds to
            try:
                yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", args.hub_port), Client())
                break
            except ConnectError:
                yield _sleep(0.1)
        yield done.addTimeout(args.timeout, reactor)

    def finish(result):
        ok = state["last"] is not None
        elapsed = (state["last"] or time.perf_counter()) - state["first"] if state["first"] else 0.0
        print(json.dumps({"sent": n, "delivered": state["got"], "acked": state["acked"],
                          "refused": state["refused"], "seconds": elapsed,
                          "mo_per_s": state["got"] / elapsed if elapsed else 0.0, "complete": ok,
                          "error": None if ok else str(result)}), flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: run().addBoth(finish))
    reactor.run()
    return 0


# ---------------------------------------------------------------- the orchestrator


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50_000, help="MO to send (default 50,000)")
    ap.add_argument("--window", type=int, default=200, help="the carrier's deliver_sm window toward the hub")
    ap.add_argument("--client-window", type=int, default=100, help="the hub's deliver_sm window toward the client")
    ap.add_argument("--ownership", choices=("dedicated", "code"), default="dedicated")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--yappi", metavar="OUT.txt", help="run the hub under yappi (bench/profile_hub.py); slows it")
    ap.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hub-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--carrier-port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.driver:
        return driver(args)
    py = sys.executable
    cli = [py, "-m", "staffetta.smsc.cli"]
    costs = decision_cost()
    calib = calibrate()
    tmp = Path(tempfile.mkdtemp(prefix="staffetta-bench-mo-"))
    procs: list[subprocess.Popen] = []
    try:
        hub_port, carrier_port = free_port(), free_port()
        cfg = tmp / "hub.yaml"
        cfg.write_text(
            f"listen: 127.0.0.1:{hub_port}\n"
            f"data_dir: {tmp / 'data'}\n"
            "metrics_listen: null\n"
            f"session: {{window: {args.client_window}}}\n"
            "upstreams:\n"
            f"  - {{name: sim, host: 127.0.0.1, port: {carrier_port}, system_id: hub, password: hub, "
            f"inbound_window: {args.window}}}\n"
        )
        store = ["--config", str(cfg)]
        subprocess.run([*cli, "account", "create", "owner", "--password", "owner", *store], check=True,
                       stdout=subprocess.DEVNULL)
        if args.ownership == "code":
            subprocess.run([*cli, "number", "shared", "add", SHARED, *store], check=True, stdout=subprocess.DEVNULL)
            got = subprocess.run([*cli, "number", "code", "assign", "owner", "--json", *store], check=True,
                                 capture_output=True, text=True).stdout
            assert "10001" in got, f"the owner's code is not 10001: {got}"
        else:
            for number in NUMBERS:
                subprocess.run([*cli, "number", "dedicated", "assign", number, "--account", "owner", *store],
                               check=True, stdout=subprocess.DEVNULL)
        drv = subprocess.Popen(pinned(1, [py, __file__, "--driver", "-n", str(args.n), "--hub-port", str(hub_port),
                                          "--carrier-port", str(carrier_port), "--window", str(args.window),
                                          "--ownership", args.ownership,
                                          "--timeout", str(args.timeout)]),
                               stdout=subprocess.PIPE, text=True)
        procs.append(drv)
        wait_port(carrier_port)
        hub_cmd = [*cli, "run", *store]
        if args.yappi:
            hub_cmd = [py, str(Path(__file__).with_name("profile_hub.py")), args.yappi, "run", *store]
        hub = subprocess.Popen(pinned(0, hub_cmd), stdout=subprocess.DEVNULL)
        procs.append(hub)
        wait_port(hub_port, timeout=120)
        cpu0 = cpu_seconds(hub.pid)
        out, _ = drv.communicate(timeout=args.timeout + 60)
        r = json.loads(out.strip().splitlines()[-1])
        r["hub_cpu_us_per_mo"] = (cpu_seconds(hub.pid) - cpu0) / max(r["delivered"], 1) * 1e6
        r["owner_of_us"] = costs
        r["codec_round_trip_us"] = calib
        r["ownership"] = args.ownership
        r["machine"] = f"{os.cpu_count()} cores"
    finally:
        stop(procs)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"MO ({args.ownership}): {r['delivered']}/{r['sent']} delivered to the owner's bind in "
              f"{r['seconds']:.2f} s = {r['mo_per_s']:.0f} MO/s; carrier acks {r['acked']} "
              f"(refused {r['refused']}); hub CPU {r['hub_cpu_us_per_mo']:.0f} µs/MO "
              f"(= {r['hub_cpu_us_per_mo'] / calib:.0f} codec round trips of {calib:.2f} µs)")
        print("owner decision (Numbers.owner_of): " + ", ".join(f"{k} {v:.2f} µs" for k, v in costs.items()))
    return 0 if r.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
