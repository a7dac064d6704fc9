"""A bind storm against a hub process: memory, CPU, and a good client's service.

The hub and the simulator run as processes of their own (``staffetta run``,
``staffetta simulator``); this process is the attacker and the good client.

1. A good client binds (a real scrypt check) and sends submits: the baseline.
2. ``--binds`` binds with a wrong password are sent from ``--addresses``
   source addresses (127.0.0.2 upwards: the whole 127.0.0.0/8 is loopback),
   ``--concurrency`` connections at a time, each a connection of its own.
3. During the storm the good client comes back: its bind (served by the cache
   of recent successful checks) and its submits are timed.

The hub's resident memory is read from /proc (sampled every 5 ms, and its
VmHWM high-water mark), its CPU from /proc/PID/stat.

    python bench/bind_storm.py                 # 1000 binds from 249 addresses
    python bench/bind_storm.py --binds 5000 --json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from staffetta.pdu.codec import Pdu, decode, encode
from staffetta.pdu.constants import Command, Status, status_name

sys.path.insert(0, str(Path(__file__).parent))
from bench_spine import free_port, pinned, rss_mib, stop, wait_port  # noqa: E402

CLI = [sys.executable, "-m", "staffetta.smsc.cli"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    """A blocking transmitter: bind and submit, timed."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.seq = 0

    def request(self, command_id: int, fields: dict) -> tuple[Pdu, float]:
        self.seq += 1
        started = time.perf_counter()
        self.sock.sendall(encode(Pdu(command_id, self.seq, 0, fields)))
        while True:
            if len(self.buf) >= 16:
                n = int.from_bytes(self.buf[:4], "big")
                if len(self.buf) >= n:
                    pdu, self.buf = decode(self.buf[:n]), self.buf[n:]
                    if pdu.sequence == self.seq and pdu.command_id & 0x80000000:
                        return pdu, time.perf_counter() - started
                    continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("hub closed the connection")
            self.buf += chunk

    def bind(self, system_id: str, password: str) -> tuple[int, float]:
        pdu, took = self.request(Command.BIND_TRANSMITTER, {
            "system_id": system_id.encode(), "password": password.encode(), "interface_version": 0x34})
        return pdu.status, took

    def submit(self) -> tuple[int, float]:
        pdu, took = self.request(Command.SUBMIT_SM, {
            "source_addr_ton": 5, "source_addr": b"Staffetta", "dest_addr_ton": 1, "dest_addr_npi": 1,
            "destination_addr": b"393331234567", "short_message": b"storm"})
        return pdu.status, took

    def close(self) -> None:
        self.sock.close()


def storm(port: int, binds: int, addresses: int, concurrency: int, system_id: str = "demo",
          password: str = "wrong!", timeout: float = 30.0) -> collections.Counter:
    """Send ``binds`` wrong binds, one connection each, from 127.0.0.2... ; count the answers."""
    frame = encode(Pdu(Command.BIND_TRANSCEIVER, 1, 0, {
        "system_id": system_id.encode(), "password": password.encode(), "interface_version": 0x34}))
    sel = selectors.DefaultSelector()
    results: collections.Counter = collections.Counter()
    todo = collections.deque(range(binds))
    open_ = 0
    end = time.monotonic() + timeout

    def finish(sock: socket.socket, outcome: str) -> None:
        nonlocal open_
        sel.unregister(sock)
        sock.close()
        open_ -= 1
        results[outcome] += 1

    while (todo or open_) and time.monotonic() < end:
        while todo and open_ < concurrency:
            i = todo.popleft()
            s = socket.socket()
            s.setblocking(False)
            s.bind((f"127.0.0.{2 + i % addresses}", 0))
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE, [b"", False])
            open_ += 1
        for key, _mask in sel.select(timeout=1.0):
            s, state = key.fileobj, key.data
            if not state[1]:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    finish(s, "connect failed")
                    continue
                s.send(frame)
                state[1] = True
                sel.modify(s, selectors.EVENT_READ, state)
                continue
            try:
                chunk = s.recv(4096)
            except OSError:
                chunk = b""
            state[0] += chunk
            if len(state[0]) >= 16:
                finish(s, status_name(int.from_bytes(state[0][8:12], "big")))
            elif not chunk:
                finish(s, "closed unanswered")
    for key in list(sel.get_map().values()):
        finish(key.fileobj, "timed out")
    return results


def _prepare_store(data_dir: Path, sessions: int, legacy: bool) -> None:
    """Accounts demo/demo (room for ``sessions`` binds) and victim/victim, whose hash is made
    with the old parameters (16 MiB a check) when ``legacy``."""
    import base64
    import hashlib

    import staffetta.router.messages  # noqa: F401 - registers its tables
    from staffetta.billing.accounts import create_account, credentials, upgrade
    from staffetta.billing.wallet import topup
    from staffetta.store.db import create_schema, make_engine

    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{data_dir / 'staffetta.db'}")
    create_schema(engine)
    upgrade(engine)
    with engine.begin() as conn:
        for name in ("demo", "victim"):
            topup(conn, create_account(conn, name, name).id, 10_000_000, method="bench")
        conn.execute(credentials.update().where(credentials.c.system_id == "demo")
                     .values(max_binds=sessions // 4 + 10))
        if legacy:
            salt = os.urandom(16)
            d = hashlib.scrypt(b"victim", salt=salt, n=2**14, r=8, p=1)
            conn.execute(credentials.update().where(credentials.c.system_id == "victim").values(
                password_hash=f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(d).decode()}"))
    engine.dispose()


def bound_sessions(port: int, n: int) -> list[socket.socket]:
    """``n`` transmitter sessions of demo, bound and idle."""
    out = []
    for _ in range(n):
        c = Client(port)
        st, _ = c.bind("demo", "demo")
        if st != Status.ESME_ROK:
            raise SystemExit(f"session {len(out) + 1} could not bind: {status_name(st)}")
        out.append(c.sock)
    return out


@dataclass
class Figures:
    binds: int
    addresses: int
    answers: dict = field(default_factory=dict)
    storm_seconds: float = 0.0
    rss_idle_mib: float = 0.0  # after start-up and the good client's first bind
    rss_peak_mib: float = 0.0  # highest sample during the storm
    rss_after_mib: float = 0.0  # one second after the storm
    hwm_mib: float = 0.0  # the kernel's high-water mark of the hub's RSS
    hub_cpu_s: float = 0.0  # the hub's CPU during the storm
    first_bind_ms: float = 0.0  # the good client's first bind: a real scrypt check
    good_bind_ms: float = 0.0  # its bind again during the storm
    good_bind_status: str = ""
    submit_p50_ms_before: float = 0.0
    submit_p50_ms_during: float = 0.0
    submit_max_ms_during: float = 0.0
    submits_during: dict = field(default_factory=dict)
    bind_checks: dict = field(default_factory=dict)  # staffetta_bind_checks_total by how
    target: str = "demo"  # the system_id the storm guesses at
    sessions: int = 0
    session_kib: float = 0.0  # RSS per idle bound session


def _submits(c: Client, n: int) -> tuple[collections.Counter, list[float]]:
    statuses: collections.Counter = collections.Counter()
    took = []
    for _ in range(n):
        st, t = c.submit()
        statuses[status_name(st)] += 1
        took.append(t * 1000)
    return statuses, sorted(took)


def _metrics(port: int) -> dict:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("staffetta_bind_checks_total{"):
            how = line.split('how="', 1)[1].split('"', 1)[0]
            out[how] = int(float(line.rsplit(" ", 1)[1]))
    return out


def run(binds: int = 1000, addresses: int = 249, concurrency: int = 200, submits: int = 20,
        extra_config: str = "", workdir: Path | None = None, sessions: int = 400,
        legacy: bool = False, give_up: float = 30.0) -> Figures:
    """Start a simulator and a hub, storm it, and return the figures (processes stopped)."""
    if not 1 <= addresses <= 249:
        raise SystemExit("--addresses: 1-249 (127.0.0.2 ... 127.0.0.250)")
    tmp = Path(tempfile.mkdtemp(prefix="staffetta-storm-", dir=workdir))
    procs: list[subprocess.Popen] = []
    fig = Figures(binds, addresses, target="victim" if legacy else "demo", sessions=sessions)
    ok = False
    try:
        sim_port, hub_port, metrics_port = free_port(), free_port(), free_port()
        cfg = tmp / "hub.yaml"
        cfg.write_text(
            f"listen: 127.0.0.1:{hub_port}\n"
            f"data_dir: {tmp / 'data'}\n"
            f"metrics_listen: 127.0.0.1:{metrics_port}\n"
            + extra_config +
            "upstreams:\n"
            f"  - {{name: sim, host: 127.0.0.1, port: {sim_port}, system_id: hub, password: hub}}\n"
        )
        _prepare_store(tmp / "data", sessions, legacy)
        log = (tmp / "sim.log").open("w")
        procs.append(subprocess.Popen(pinned(1, [*CLI, "simulator", "--listen", f"127.0.0.1:{sim_port}",
                                       "--dlr-delay", "0.05", "--control", "off", "--hlr", "off"]),
                                      stdout=log, stderr=log))
        wait_port(sim_port, timeout=30)
        hub_log = (tmp / "hub.log").open("w")
        hub = subprocess.Popen(pinned(0, [*CLI, "-v", "run", "--config", str(cfg)]), stdout=hub_log, stderr=hub_log)
        procs.append(hub)
        try:
            wait_port(hub_port, timeout=30)
        except SystemExit:
            raise SystemExit("the hub did not start: " + (tmp / "hub.log").read_text()[-2000:]) from None

        good = Client(hub_port)
        st, t = good.bind("demo", "demo")
        if st != Status.ESME_ROK:
            raise SystemExit(f"the good client could not bind: {status_name(st)}")
        fig.first_bind_ms = t * 1000
        _, before = _submits(good, submits)
        fig.submit_p50_ms_before = before[len(before) // 2]
        good.close()
        time.sleep(0.5)
        fig.rss_idle_mib = rss_mib(hub.pid)

        samples: list[float] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set() and hub.poll() is None:
                samples.append(rss_mib(hub.pid))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # The attacker is a process of its own at the lowest priority, on the other core than
        # the hub: on a real hub the storm comes from other machines, so neither its CPU nor
        # the GIL of this process may be what the good client waits for.
        cpu0, t0 = cpu_seconds(hub.pid), time.monotonic()
        attacker = subprocess.Popen(
            pinned(1, ["nice", "-n", "19", sys.executable, __file__, "--attack", str(hub_port), "--target", fig.target,
                       "--binds", str(binds), "--addresses", str(addresses), "--concurrency", str(concurrency),
                       "--give-up", str(give_up)]),
            stdout=subprocess.PIPE, text=True)
        procs.append(attacker)
        time.sleep(0.3)  # the storm is on: the queue of checks is full
        good = Client(hub_port)
        st, t = good.bind("demo", "demo")
        fig.good_bind_ms, fig.good_bind_status = t * 1000, status_name(st)
        statuses, during = _submits(good, submits)
        fig.submits_during = dict(statuses)
        fig.submit_p50_ms_during = during[len(during) // 2]
        fig.submit_max_ms_during = during[-1]
        good.close()
        out, _ = attacker.communicate(timeout=120)
        answers = json.loads(out)
        fig.storm_seconds = time.monotonic() - t0
        fig.hub_cpu_s = cpu_seconds(hub.pid) - cpu0
        time.sleep(1.0)
        sampling.set()
        sampler.join()
        fig.rss_peak_mib = max(samples)
        fig.rss_after_mib = rss_mib(hub.pid)
        fig.hwm_mib = rss_mib(hub.pid, "VmHWM")
        fig.answers = dict(answers)
        fig.bind_checks = _metrics(metrics_port)
        if sessions:
            before_sessions = rss_mib(hub.pid)
            held = bound_sessions(hub_port, sessions)
            time.sleep(0.5)
            fig.session_kib = (rss_mib(hub.pid) - before_sessions) * 1024 / sessions
            for sock in held:
                sock.close()
        ok = True
    finally:
        stop(procs)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bind_storm: failed; the hub's log is in {tmp / 'hub.log'}", file=sys.stderr)
    return fig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binds", type=int, default=1000, help="wrong binds in the storm")
    ap.add_argument("--addresses", type=int, default=249, help="source addresses, 127.0.0.2 upwards (1-249)")
    ap.add_argument("--concurrency", type=int, default=200, help="storm connections open at once")
    ap.add_argument("--config", default="", metavar="YAML",
                    help="extra hub settings, e.g. 'bind_limit: {check_threads: 2}'")
    ap.add_argument("--sessions", type=int, default=400, help="idle bound sessions for the per-session figure")
    ap.add_argument("--legacy", action="store_true",
                    help="guess at an account whose hash has the old parameters (16 MiB a check)")
    ap.add_argument("--target", default="demo", help=argparse.SUPPRESS)
    ap.add_argument("--give-up", type=float, default=30.0, metavar="SECONDS",
                    help="the attacker closes what is still unanswered after this long ('timed out')")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--attack", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the attacker process
    args = ap.parse_args()
    if args.attack:
        print(json.dumps(storm(args.attack, args.binds, args.addresses, args.concurrency, args.target,
                               timeout=args.give_up)))
        return 0
    extra = args.config + ("\n" if args.config and not args.config.endswith("\n") else "")
    fig = run(args.binds, args.addresses, args.concurrency, extra_config=extra, sessions=args.sessions,
              legacy=args.legacy, give_up=args.give_up)
    if args.json:
        print(json.dumps(asdict(fig), indent=2))
        return 0
    print(f"storm: {fig.binds} wrong binds from {fig.addresses} addresses in {fig.storm_seconds:.1f} s: "
          f"{fig.answers}")
    print(f"hub RSS: idle {fig.rss_idle_mib:.1f} MiB, peak {fig.rss_peak_mib:.1f} MiB, "
          f"after {fig.rss_after_mib:.1f} MiB (VmHWM {fig.hwm_mib:.1f} MiB); "
          f"hub CPU during the storm {fig.hub_cpu_s:.2f} s")
    print(f"password checks: {fig.bind_checks}; target {fig.target!r}")
    print(f"idle bound sessions: {fig.session_kib:.1f} KiB each ({fig.sessions} sessions)")
    print(f"good client: first bind {fig.first_bind_ms:.1f} ms; bind during the storm "
          f"{fig.good_bind_ms:.1f} ms ({fig.good_bind_status}); submits p50 {fig.submit_p50_ms_before:.1f} ms "
          f"before, {fig.submit_p50_ms_during:.1f} ms during (max {fig.submit_max_ms_during:.1f}) "
          f"{fig.submits_during}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
