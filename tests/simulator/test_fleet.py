"""The simulated fleet: several carriers, each with its own faults, over real TCP on 127.0.0.1.

Every fault a routing test relies on (latency, throttling, refusals per
prefix, silence, slowness, disconnects, magic destinations, ported numbers
in the HLR) is proven here with our own ESME (tests/simulator/conftest.py)
against carriers started by :func:`simulator.fleet.start_fleet`.
"""

from __future__ import annotations

import json
import struct
import subprocess

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, reactor, threads

from staffetta.pdu.codec import tlv_int
from staffetta.pdu.constants import Command, MessageState, Status, Tag
from staffetta.pdu.receipt import parse_receipt
from staffetta.simulator import cli
from staffetta.simulator.faults import (
    MAGIC_DISCONNECT,
    MAGIC_MODES,
    MAGIC_OUTCOME,
    MAGIC_REFUSE,
    MAGIC_SILENT,
    MAGIC_SLOW,
    FaultPlan,
    Faults,
    magic,
    magic_destination,
)
from staffetta.simulator.fleet import (
    CarrierSpec,
    SpecError,
    fleet_from_data,
    load_fleet_file,
    parse_carrier_flag,
)
from tests.simulator.conftest import Esme, answered_by, sleep, within
from tests.syncesme import CLI, SyncEsme, free_port

inline = pytest_twisted.inlineCallbacks

DEST = b"393331234567"


# -------------------------------------------------------- several carriers


@inline
def test_fleet_runs_carriers_on_their_own_ports_with_their_own_ids(fleet, esme_to):
    f = fleet(CarrierSpec("a", id_format="hex", dlr_delay=0.01),
              CarrierSpec("b", id_format="uuid", dlr_delay=0.01, outcomes={"UNDELIV": 1.0}))
    assert f.port("a") != f.port("b") and set(f.carriers) == {"a", "b"}
    a = yield esme_to(f, "a")
    b = yield esme_to(f, "b")
    ra = yield within(a.submit())
    rb = yield within(b.submit())
    assert len(ra.fields["message_id"]) == 8 and len(rb.fields["message_id"]) == 36
    receipt = yield b.next_request()
    assert parse_receipt(receipt.fields["short_message"]).stat == "UNDELIV"
    receipt = yield a.next_request()
    assert parse_receipt(receipt.fields["short_message"]).stat == "DELIVRD"
    assert f.counters("a")["submits"] == 1 and f.counters("b")["accepted"] == 1
    # The bind answers with the carrier's name, so a hub's logs show who answered.
    assert f.carriers["b"].system_id == b"b"


@inline
def test_latency_delays_every_answer(fleet, esme_to):
    f = fleet(CarrierSpec("slowpoke", latency=0.3))
    esme = yield esme_to(f, "slowpoke")
    t0 = reactor.seconds()
    d = esme.submit(registered_delivery=0)
    box = answered_by(d)
    yield sleep(0.15)
    assert box == []  # not yet
    resp = yield within(d)
    assert resp.status == 0 and reactor.seconds() - t0 >= 0.29


@inline
def test_throughput_limit_answers_throttled_above_it(fleet, esme_to):
    f = fleet(CarrierSpec("narrow", throughput=5))
    esme = yield esme_to(f, "narrow")
    resps = yield within(defer.gatherResults([esme.submit(registered_delivery=0) for _ in range(20)]))
    statuses = [r.status for r in resps]
    ok = statuses.count(0)
    # One second's worth in the bucket; the burst takes a few ms, so at most one more token.
    assert 5 <= ok <= 6 and statuses.count(Status.ESME_RTHROTTLED) == 20 - ok
    assert statuses[:5] == [0] * 5  # the first ones in, the later ones throttled
    assert f.counters("narrow")["throttled"] == 20 - ok
    yield sleep(0.45)  # ~2 tokens back
    resp = yield within(esme.submit(registered_delivery=0))
    assert resp.status == 0


@inline
def test_error_codes_per_destination_prefix_longest_wins(fleet, esme_to):
    f = fleet(CarrierSpec("picky", errors={"3934": 0x45, "39347": 0x0B}))
    esme = yield esme_to(f, "picky")
    r1 = yield within(esme.submit(b"393401234567"))
    r2 = yield within(esme.submit(b"393471234567"))
    r3 = yield within(esme.submit(b"393331234567"))
    assert (r1.status, r2.status, r3.status) == (0x45, Status.ESME_RINVDSTADR, 0)
    assert f.counters("picky")["rejected"] == 2


@inline
def test_a_share_of_submits_is_never_answered_and_the_slot_is_freed(fleet, esme_to):
    f = fleet(CarrierSpec("lossy", unanswered=0.3, seed=5))
    esme = yield esme_to(f, "lossy")
    ds = [esme.submit(registered_delivery=0, text=b"m%d" % i) for i in range(200)]
    boxes = [answered_by(d) for d in ds]
    yield sleep(0.5)
    silent = [i for i, b in enumerate(boxes) if not b]
    assert len(silent) == f.counters("lossy")["unanswered"]
    assert 40 <= len(silent) <= 80  # 30% of 200, give or take three sigma
    # The lost submits hold no inbound slot: the carrier still takes new ones.
    assert len(f.carriers["lossy"].sessions[0].session._inbound) == 0
    # Seeded: a second carrier with the same seed loses the same submits.
    g = fleet(CarrierSpec("lossy", unanswered=0.3, seed=5))
    other = yield esme_to(g, "lossy")
    boxes2 = [answered_by(other.submit(registered_delivery=0)) for _ in range(200)]
    yield sleep(0.5)
    assert [i for i, b in enumerate(boxes2) if not b] == silent
    for d in ds:  # the test ESME's own window: drop what never came
        d.addErrback(lambda _f: None)


@inline
def test_a_share_of_answers_is_slow_and_comes_out_of_order(fleet, esme_to):
    f = fleet(CarrierSpec("sluggish", slow=0.5, slow_delay=0.4, seed=3))
    esme = yield esme_to(f, "sluggish")
    order: list[int] = []
    ds = []
    for i in range(20):
        d = esme.submit(registered_delivery=0)
        d.addCallback(lambda r, i=i: order.append(i) or r)
        ds.append(d)
    yield sleep(0.2)
    fast = list(order)
    n_slow = f.counters("sluggish")["slow"]
    assert 0 < n_slow < 20 and len(fast) == 20 - n_slow
    resps = yield within(defer.gatherResults(ds))
    assert all(r.status == 0 for r in resps)
    assert sorted(order) == list(range(20)) and order != list(range(20))  # slow ones overtaken


@inline
def test_disconnect_every_n_submits(fleet, esme_to):
    f = fleet(CarrierSpec("flaky", disconnect_every=3))
    esme = yield esme_to(f, "flaky")
    resps = yield within(defer.gatherResults([esme.submit(registered_delivery=0) for _ in range(3)]))
    assert [r.status for r in resps] == [0, 0, 0]  # the third is answered, then the line drops
    yield within(esme.lost)
    # No unbind before the drop, as when a carrier's front end restarts.
    frames, raw = [], bytes(esme.raw)
    while raw:
        n, cid = struct.unpack(">II", raw[:8])
        frames.append(cid)
        raw = raw[n:]
    assert Command.UNBIND not in frames
    assert f.counters("flaky")["disconnects"] == 1
    again = yield esme_to(f, "flaky")
    resp = yield within(again.submit(registered_delivery=0))
    assert resp.status == 0


# ----------------------------------------------------- magic destinations


def test_magic_scheme():
    assert magic_destination("39333", MAGIC_REFUSE, 0x45) == "393339991069"
    assert magic(b"393339991069") == (MAGIC_REFUSE, 69)
    assert magic(b"393339990000") == (MAGIC_SILENT, 0)
    assert magic(b"393331234567") is None
    assert magic(b"393339996000") is None  # reserved mode
    assert magic(b"9990") is None


@inline
def test_magic_silent_never_answers_the_others_do(fleet, esme_to):
    f = fleet(CarrierSpec("m"))
    esme = yield esme_to(f, "m")
    silent = answered_by(esme.submit(magic_destination("39333", MAGIC_SILENT).encode()))
    ok = yield within(esme.submit(DEST))
    yield sleep(0.3)
    assert ok.status == 0 and silent == []
    assert f.counters("m")["unanswered"] == 1


@pytest.mark.parametrize(("status", "counter"), [(0x45, "rejected"), (0x58, "throttled"), (0x0B, "rejected")])
@inline
def test_magic_refuses_with_the_status_it_names(fleet, esme_to, status, counter):
    f = fleet(CarrierSpec("m"))
    esme = yield esme_to(f, "m")
    resp = yield within(esme.submit(magic_destination("39333", MAGIC_REFUSE, status).encode()))
    assert resp.status == status
    assert f.counters("m")[counter] == 1


@inline
def test_magic_slow_answers_after_tenths_of_a_second(fleet, esme_to):
    f = fleet(CarrierSpec("m"))
    esme = yield esme_to(f, "m")
    t0 = reactor.seconds()
    slow = esme.submit(magic_destination("39333", MAGIC_SLOW, 4).encode())
    fast = yield within(esme.submit(DEST))
    assert not slow.called and fast.status == 0
    resp = yield within(slow)
    assert resp.status == 0 and reactor.seconds() - t0 >= 0.39


@inline
def test_magic_disconnect_answers_then_drops(fleet, esme_to):
    f = fleet(CarrierSpec("m"))
    esme = yield esme_to(f, "m")
    resp = yield within(esme.submit(magic_destination("39333", MAGIC_DISCONNECT).encode()))
    assert resp.status == 0
    yield within(esme.lost)
    assert f.counters("m")["disconnects"] == 1


@inline
def test_magic_outcome_forces_the_receipt(fleet, esme_to):
    f = fleet(CarrierSpec("m", dlr_delay=0.01))
    esme = yield esme_to(f, "m")
    yield within(esme.submit(magic_destination("39333", MAGIC_OUTCOME, MessageState.REJECTED).encode()))
    receipt = yield esme.next_request()
    assert tlv_int(receipt.tlvs[Tag.message_state]) == MessageState.REJECTED
    assert parse_receipt(receipt.fields["short_message"]).stat == "REJECTD"


@inline
def test_magic_is_switchable_per_carrier(fleet, esme_to):
    f = fleet(CarrierSpec("on"), CarrierSpec("off", magic=False))
    on = yield esme_to(f, "on")
    off = yield esme_to(f, "off")
    dest = magic_destination("39333", MAGIC_REFUSE, 0x45).encode()
    r_on = yield within(on.submit(dest))
    r_off = yield within(off.submit(dest))
    assert (r_on.status, r_off.status) == (0x45, 0)


@inline
def test_magic_wins_over_throttling_and_prefix_errors(fleet, esme_to):
    f = fleet(CarrierSpec("m", errors={"39": 0x45}))
    esme = yield esme_to(f, "m")
    r = yield within(esme.submit(magic_destination("39333", MAGIC_REFUSE, 0x58).encode()))
    plain = yield within(esme.submit(DEST))
    assert (r.status, plain.status) == (Status.ESME_RTHROTTLED, 0x45)


# ------------------------------------------------------- order and seeds


@inline
def test_per_destination_order_is_recorded(fleet, esme_to):
    f = fleet(CarrierSpec("rec"), CarrierSpec("norec", record=False))
    esme = yield esme_to(f, "rec")
    for text, dest in ((b"a1", b"393330000001"), (b"b1", b"393330000002"), (b"a2", b"393330000001"),
                       (b"a3", b"393330000001")):
        yield within(esme.submit(dest, text))
    refused = f.carriers["rec"]
    refused.script("393330000002", submit_status=0x45)
    yield within(esme.submit(b"393330000002", b"b2"))
    assert f.order("rec", "393330000001") == [b"a1", b"a2", b"a3"]
    assert f.order("rec", b"393330000002") == [b"b1"]  # refused ones are not taken
    with pytest.raises(ValueError, match="record is off"):
        f.order("norec", "393330000001")


@inline
def test_same_fleet_seed_same_ids_outcomes_and_faults(fleet, esme_to):
    def spec(name: str) -> CarrierSpec:
        return CarrierSpec(name, id_format="uuid", outcomes={"DELIVRD": 0.5, "UNDELIV": 0.5}, unanswered=0.2,
                           dlr_delay=0.01)

    runs = []
    for name in ("x", "x", "y"):
        f = fleet(spec(name), seed=42)
        esme = yield esme_to(f, name)
        boxes = [answered_by(esme.submit(text=b"m%d" % i)) for i in range(30)]
        yield sleep(0.3)
        ids = [b[0].fields["message_id"] if b else None for b in boxes]
        outcomes = dict(f.carriers[name].stats["outcomes"])
        runs.append((ids, outcomes))
        yield f.close()
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]  # another name, another stream


# ---------------------------------------------------------- the fleet's HLR


@inline
def test_hlr_answers_the_serving_network_of_ported_numbers(fleet):
    f = fleet(CarrierSpec("tim", mccmnc="22201"),
              CarrierSpec("iliad", mccmnc="22250", serves={"39333": 1.0, "39347": 0.5}), seed=1)

    def lookup(n: str) -> defer.Deferred:
        import urllib.request

        url = f"{f.hlr.url}/lookup?msisdn={n}"
        return threads.deferToThread(lambda: json.loads(urllib.request.urlopen(url, timeout=5).read()))

    a = yield lookup("393331234567")
    assert a["result"] == "DELIVERED" and a["serving"] == {"mccmnc": "22250", "name": "Iliad"}
    assert a["ported"] is True and a["home"]["mccmnc"] != "22250"
    def served(hlr, n: str) -> bool:
        return (hlr.answer(n)["serving"] or {}).get("mccmnc") == "22250"

    half = [served(f.hlr, f"3934712{i:05d}") for i in range(400)]
    assert 140 < sum(half) < 260
    # Seeded: the same numbers in another HLR with the same seed.
    g = fleet(CarrierSpec("iliad", mccmnc="22250", serves={"39347": 0.5}), seed=1)
    assert [served(g.hlr, f"3934712{i:05d}") for i in range(400)] == half
    other = yield lookup("447400123456")
    assert other["serving"]["mccmnc"].startswith("234")  # not served: the usual rules


# ---------------------------------------------------------------- parsing


def test_flag_and_yaml_give_the_same_spec(tmp_path):
    flag = parse_carrier_flag(
        "name=b,port=2790,id-format=hex,latency=0.05,dlr_delay=2,outcome=DELIVRD:0.9,outcome=UNDELIV:0.1,"
        "throughput=100,error=3934:0x45,error=3935:ESME_RINVDSTADR,unanswered=0.01,slow=0.02,slow_delay=3,"
        "disconnect_every=1000,mccmnc=22250,serve=39333,serve=39347:0.5,magic=off,credential=hub:secret")
    path = tmp_path / "fleet.yaml"
    path.write_text("""
seed: 9
carriers:
  - name: b
    port: 2790
    id_format: hex
    latency: 0.05
    dlr_delay: 2
    outcomes: {DELIVRD: 0.9, UNDELIV: 0.1}
    throughput: 100
    errors: {"3934": 0x45, "3935": ESME_RINVDSTADR}
    unanswered: 0.01
    slow: 0.02
    slow_delay: 3
    disconnect_every: 1000
    mccmnc: "22250"
    serves: {"39333": 1, "39347": 0.5}
    magic: false
    credentials: {hub: secret}
""")
    ff = load_fleet_file(str(path))
    assert ff.seed == 9 and ff.carriers == (flag,)
    assert flag.errors == {"3934": 0x45, "3935": 0x0B}


@pytest.mark.parametrize(("text", "needle"), [
    ("port=1", "name: required"),
    ("name=a,latency=-1", "latency: -1.0 is not a number of seconds"),
    ("name=a,latency=soon", "latency: 'soon' is not a number"),
    ("name=a,throughput=0", "throughput: must be a number of messages per second > 0"),
    ("name=a,error=39:zz", "errors: 39: 'zz' is not a command_status"),
    ("name=a,error=3x:1", "errors: prefix '3x' is not digits"),
    ("name=a,outcome=FOO:1", "outcomes: 'FOO' is not one of"),
    ("name=a,outcome=DELIVRD", "outcome: 'DELIVRD' is not STAT:WEIGHT"),
    ("name=a,serve=393", "serves: needs mccmnc"),
    ("name=a,mccmnc=222,serve=393", "mccmnc: '222' is not 5 or 6 digits"),
    ("name=a,unanswered=1.5", "unanswered: 1.5 is not a share"),
    ("name=a,unanswered=0.7,slow=0.5", "unanswered + slow: must not exceed 1"),
    ("name=a,disconnect_every=-2", "disconnect_every: must be a whole number >= 0"),
    ("name=a,magic=maybe", "magic: 'maybe' is not on/off"),
    ("name=a,id_format=octal", "id_format: 'octal' is not one of"),
    ("name=a,port=70000", "port: 70000 is not 0-65535"),
    ("name=a,colour=red", "colour: unknown field"),
    ("name=a,latency=1,latency=2", "latency: given twice"),
    ("name=stats", "name: 'stats'"),
    ("name=a b", "name: 'a b'"),
    ("name=a,port", "'port' is not KEY=VALUE"),
])
def test_bad_carrier_flags_are_one_line_naming_the_field(text, needle):
    with pytest.raises(SpecError) as exc:
        parse_carrier_flag(text)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(("data", "needle"), [
    ([], "expected a mapping with 'carriers'"),
    ({"carriers": []}, "carriers: expected a non-empty list"),
    ({"carriers": [{"name": "a"}], "colour": 1}, "colour: unknown key"),
    ({"carriers": [{"name": "a"}, {"name": "b", "latency": "x"}]}, "carriers[1] (b): latency: 'x' is not a number"),
    ({"carriers": [{"name": "a"}, {"name": "a"}]}, "a: name given twice"),
    ({"carriers": [{"name": "a", "port": 2790}, {"name": "b", "port": 2790}]}, "b: port 2790 already taken by a"),
    ({"carriers": [{"name": "a", "errors": [1]}]}, "errors: expected a mapping"),
    ({"seed": "x", "carriers": [{"name": "a"}]}, "seed: 'x' is not a whole number"),
])
def test_bad_fleet_files_are_one_line_naming_carrier_and_field(data, needle):
    with pytest.raises(SpecError) as exc:
        fleet_from_data(data, "f.yaml")
    assert str(exc.value).startswith("f.yaml: ") and needle in str(exc.value)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--carrier", "name=a,latency=-1"], "--carrier 'name=a,latency=-1': latency: -1.0 is not"),
    (["--carrier", "name=a", "--carrier", "name=a"], "a: name given twice"),
    (["--carrier", "name=a", "--listen", ":2776"], "--listen: not with --carrier/--fleet"),
    (["--carrier", "name=a", "--dlr-delay", "1"], "--dlr-delay: not with --carrier/--fleet"),
    (["--fleet", "/nonexistent/fleet.yaml"], "--fleet /nonexistent/fleet.yaml: No such file"),
    (["--carrier", "name=a", "--control", "x:y"], "--control:"),
    (["--carrier", "name=a", "--hlr-error-rate", "2"], "--hlr-error-rate: must be between 0 and 1"),
])
def test_simulator_cli_fleet_mistakes_exit_2_with_one_line(capsys, argv, needle):
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_simulator_arguments(parser)
    args = parser.parse_args(argv)
    assert cli.simulator_main(args, reactor=object()) == 2  # never reaches the reactor
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_bad_yaml_file_exits_2_naming_the_line(tmp_path, capsys):
    import argparse

    path = tmp_path / "fleet.yaml"
    path.write_text("carriers:\n  - name: a\n    latency: [\n")
    parser = argparse.ArgumentParser()
    cli.add_simulator_arguments(parser)
    assert cli.simulator_main(parser.parse_args(["--fleet", str(path)]), reactor=object()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not YAML" in err and str(path) in err


def test_fault_plan_is_sans_io_and_seeded():
    plan = FaultPlan(Faults(throughput=2, unanswered=0.5, disconnect_every=2), seed=1)
    t = 100.0
    answers = [plan.decide(DEST, t) for _ in range(4)]
    assert [a.cause for a in answers[2:]] == ["throttled", "throttled"]  # two tokens at t
    assert plan.decide(DEST, t + 0.5).cause != "throttled"  # one back after half a second
    again = FaultPlan(Faults(throughput=2, unanswered=0.5, disconnect_every=2), seed=1)
    assert [again.decide(DEST, t) for _ in range(4)] == answers


# ------------------------------------------------------- the command line


def test_cli_runs_a_fleet_with_control_and_hlr(tmp_path):
    pa, pb, pc, ph = free_port(), free_port(), free_port(), free_port()
    path = tmp_path / "fleet.yaml"
    path.write_text(f"carriers:\n  - name: b\n    port: {pb}\n    errors: {{'39': 0x45}}\n")
    proc = subprocess.Popen(
        [*CLI, "simulator", "--fleet", str(path), "--carrier", f"name=a,port={pa},throughput=1",
         "--control", f"127.0.0.1:{pc}", "--hlr", f"127.0.0.1:{ph}", "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert "fleet of 2 listening" in banner, banner + proc.stderr.read() if proc.poll() else banner
        a = SyncEsme(pa)
        assert a.bind("hub", "x").status == 0
        statuses = [r.status for r in a.submit_many(3)]
        assert statuses == [0, Status.ESME_RTHROTTLED, Status.ESME_RTHROTTLED]
        b = SyncEsme(pb)
        assert b.bind("hub", "x").status == 0
        assert [r.status for r in b.submit_many(1)] == [0x45]
        import urllib.request

        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{pc}/stats", timeout=5).read())
        assert stats["a"]["throttled"] == 2 and stats["b"]["submits_rejected"] == 1 and stats["a"]["port"] == pa
        one = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{pc}/b/stats", timeout=5).read())
        assert one["submits"] == 1
        hlr = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ph}/lookup?msisdn=393331234567",
                                                timeout=5).read())
        assert hlr["result"] in ("DELIVERED", "ABSENT", "UNKNOWN_SUBSCRIBER")
        b.close()

        def post(path: str) -> dict:
            req = urllib.request.Request(f"http://127.0.0.1:{pc}{path}", data=b"", method="POST")
            return json.loads(urllib.request.urlopen(req, timeout=5).read())

        assert post("/a/down") == {"carrier": "a", "up": False, "port": pa}
        with pytest.raises(ConnectionError):
            a.read()  # its session dropped
        with pytest.raises(ConnectionRefusedError):
            SyncEsme(pa)
        assert post("/a/up")["up"] is True
        a = SyncEsme(pa)
        assert a.bind("hub", "x").status == 0
        a.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_cli_single_carrier_flags_unchanged():
    """Today's flags still run one carrier (tests/e2e rely on it)."""
    port = free_port()
    proc = subprocess.Popen([*CLI, "simulator", "--listen", f"127.0.0.1:{port}", "--dlr-delay", "0.05",
                             "--control", "off", "--hlr", "off", "--seed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert f"listening on 127.0.0.1:{port}" in proc.stdout.readline()
        s = SyncEsme(port)
        assert s.bind("hub", "x").status == 0
        assert [r.status for r in s.submit_many(2, destination=b"393339991069")] == [0, 0]  # no magic here
        s.close()
    finally:
        proc.terminate()
        proc.wait(10)



@inline
def test_a_carrier_goes_down_and_comes_back_with_what_it_owed(fleet, esme_to):
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.error import ConnectionRefusedError

    f = fleet(CarrierSpec("a", dlr_delay=0.3), CarrierSpec("b"))
    esme = yield esme_to(f, "a")
    resp = yield within(esme.submit())
    port = f.port("a")
    yield f.down("a")
    yield within(esme.lost)
    assert not f.is_up("a") and f.port("a") == port
    with pytest.raises(ConnectionRefusedError):
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Esme())
    other = yield esme_to(f, "b")  # the rest of the fleet lives on
    assert (yield within(other.submit())).status == 0
    yield sleep(0.4)  # the receipt falls due while the carrier is down
    f.up("a")
    assert f.port("a") == port
    again = yield esme_to(f, "a")
    receipt = yield again.next_request()
    assert parse_receipt(receipt.fields["short_message"]).id == resp.fields["message_id"].decode()


@inline
def test_the_demo_fleet_throttles_refuses_and_serves(fleet, esme_to):
    from staffetta.simulator.fleet import demo_specs

    f = fleet(*demo_specs(), seed=1)
    cheap = yield esme_to(f, "cheap")
    resps = yield within(defer.gatherResults([cheap.submit(registered_delivery=0) for _ in range(25)]))
    assert [r.status for r in resps].count(Status.ESME_RTHROTTLED) >= 4
    refused = yield within(cheap.submit(b"393471234567", registered_delivery=0))
    assert refused.status in (Status.ESME_RSUBMITFAIL, Status.ESME_RTHROTTLED)
    served = [n for n in (f"39333{i:07d}" for i in range(200))
              if (f.hlr.answer(n)["serving"] or {}).get("mccmnc") == "22210"]
    assert 20 < len(served) < 70


@given(prefix=st.text("0123456789", min_size=2, max_size=8), mode=st.sampled_from(MAGIC_MODES),
       argument=st.integers(0, 999))
def test_magic_destinations_round_trip(prefix, mode, argument):
    assert magic(magic_destination(prefix, mode, argument).encode()) == (mode, argument)


@given(number=st.text("0123456789", min_size=7, max_size=15))
def test_only_999_and_a_known_mode_is_magic(number):
    expected = number[-7:-4] == "999" and number[-4] in "01234"
    assert (magic(number.encode()) is not None) == expected


@given(rate=st.floats(0.5, 1000), steps=st.lists(st.floats(0, 0.5), min_size=1, max_size=300))
def test_throughput_never_admits_more_than_the_bucket_allows(rate, steps):
    plan = FaultPlan(Faults(throughput=rate, magic=False), seed=1)
    t, admitted = 0.0, 0
    for dt in steps:
        t += dt
        admitted += plan.decide(DEST, t).cause != "throttled"
    assert admitted <= max(1.0, rate) + rate * t + 1e-6
