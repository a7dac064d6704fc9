"""The load-generating ESME, run against the simulated carrier over real TCP."""

from __future__ import annotations

import argparse
import math

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError

from staffetta.pdu.codec import Pdu, decode, encode
from staffetta.pdu.constants import Command, Status, Tag
from staffetta.simulator import cli, loadclient
from staffetta.simulator.loadclient import (
    SEQ_BASE,
    BindError,
    LoadResult,
    run_load,
    scan_deliver_sm,
    submit_template,
)
from tests.simulator.conftest import within

inline = pytest_twisted.inlineCallbacks


def _port(carrier) -> int:
    return carrier.ports[0].getHost().port


@inline
def test_load_all_accepted_and_receipts_matched(make_carrier):
    mix = {"DELIVRD": 0.8, "UNDELIV": 0.15, "REJECTD": 0.05}
    carrier = make_carrier(dlr_delay=0.01, outcomes=mix, seed=3)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=2000, window=50), 20)
    assert (r.sent, r.accepted, r.rejected, r.lost) == (2000, 2000, {}, 0)
    assert r.receipts == 2000 and r.receipt_ids_matched == 2000
    assert 0 < r.p50_ms <= r.p99_ms
    assert r.accepted_per_s > 0 and r.receipts_per_s > 0 and r.duration_s > 0
    assert carrier.stats["submits"] == 2000 and carrier.stats["receipts_acked"] == 2000
    # The outcome mix, within 4.5 standard deviations of a binomial draw.
    for stat, p in mix.items():
        got = carrier.stats["outcomes"].get(stat, 0)
        assert abs(got - 2000 * p) < 4.5 * math.sqrt(2000 * p * (1 - p)), (stat, got)
    # The run unbound cleanly.
    assert carrier.sessions == []


@inline
def test_load_over_several_connections(make_carrier):
    carrier = make_carrier(dlr_delay=0.0, id_format="hex")
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=999, window=7,
                              connections=3), 20)
    assert (r.sent, r.accepted, r.receipts, r.receipt_ids_matched) == (999, 999, 999, 999)
    assert carrier.stats["binds"] == 3


@inline
def test_load_counts_rejections_and_does_not_wait_for_receipts(make_carrier):
    carrier = make_carrier(dlr_delay=0.01)
    carrier.script("3900", submit_status=Status.ESME_RTHROTTLED)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=300, window=20,
                              destination="39001234567", receipt_timeout=60), 10)
    assert r.accepted == 0 and r.rejected == {Status.ESME_RTHROTTLED: 300}
    assert r.receipts == 0
    assert r.as_dict()["rejected"] == {"ESME_RTHROTTLED": 300}


@inline
def test_load_gives_up_on_missing_receipts(make_carrier):
    carrier = make_carrier(dlr_delay=60.0)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=50, window=10,
                              receipt_timeout=0.2), 10)
    assert r.accepted == 50 and r.receipts == 0 and r.receipts_per_s == 0


@inline
def test_load_without_receipts(make_carrier):
    carrier = make_carrier(dlr_delay=0.0)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=100,
                              registered_delivery=0), 10)
    assert r.accepted == 100 and r.receipts == 0
    assert carrier.stats["receipts_scheduled"] == 0


@inline
def test_load_counts_unanswered_as_lost(make_carrier):
    carrier = make_carrier(dlr_delay=0.0)
    carrier.script("3900", respond=False)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=30, window=10,
                              destination="3900111", response_timeout=0.3), 10)
    assert r.sent == 10 and r.lost == 10 and r.accepted == 0


@inline
def test_load_bind_refused(make_carrier):
    carrier = make_carrier(credentials={b"hub": b"secret"})
    with pytest.raises(BindError) as info:
        yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "wrong", n=10), 10)
    assert info.value.status == Status.ESME_RINVPASWD
    assert "ESME_RINVPASWD" in str(info.value)


@inline
def test_load_target_down(make_carrier):
    carrier = make_carrier()
    port = _port(carrier)
    yield carrier.close()
    with pytest.raises(ConnectionRefusedError):
        yield within(run_load(reactor, "127.0.0.1", port, "hub", "pw", n=10), 10)


def test_submit_template():
    t = submit_template("Staffetta", "393331234567", b"hello", 1)
    pdu = decode(t)
    assert pdu.command_id == Command.SUBMIT_SM and pdu.sequence == 0
    f = pdu.fields
    assert (f["source_addr"], f["source_addr_ton"], f["destination_addr"], f["dest_addr_ton"]) == (
        b"Staffetta", 5, b"393331234567", 1)
    assert f["registered_delivery"] == 1 and f["short_message"] == b"hello"
    long = decode(submit_template("12345", "393331234567", b"x" * 300, 0))
    assert long.fields["short_message"] == b"" and long.tlvs[Tag.message_payload] == b"x" * 300
    assert long.fields["source_addr_ton"] == 1
    assert SEQ_BASE > 0x3FFFFFFF


def test_bench_arguments_and_report(capsys):
    parser = argparse.ArgumentParser()
    cli.add_bench_arguments(parser)
    args = parser.parse_args(["--target", "127.0.0.1:2775", "--system-id", "demo", "--password", "demo"])
    assert (args.n, args.window, args.connections, args.json) == (10000, 50, 1, False)
    r = LoadResult(sent=10, accepted=9, rejected={0x58: 1}, duration_s=0.5, accepted_per_s=18.0, p50_ms=1.0,
                   p99_ms=2.0, receipts=9, receipts_per_s=9.0, receipt_ids_matched=9, window=50)
    text = cli.format_result(r)
    assert "18 msg/s" in text and "ESME_RTHROTTLED 1" in text and "p99 2.00 ms" in text
    bad = parser.parse_args(["--target", "nowhere", "--system-id", "d", "--password", "d"])
    assert cli.bench_main(bad, reactor=object()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--target" in err


_addr = st.binary(max_size=20).map(lambda b: b.replace(b"\x00", b"1"))


@settings(max_examples=200, deadline=None)
@given(
    service_type=st.binary(max_size=5).map(lambda b: b.replace(b"\x00", b"x")),
    source=_addr,
    dest=_addr,
    esm_class=st.integers(0, 255),
    sched=st.sampled_from([b"", b"000000000100000R"]),
    sm=st.binary(max_size=254),
    rid=st.none() | st.binary(min_size=0, max_size=64).map(lambda b: b.replace(b"\x00", b"7")),
    extra=st.dictionaries(st.sampled_from([0x0427, 0x0204, 0x1400, 0x0424]), st.binary(max_size=3),
                          max_size=3),
)
def test_scan_deliver_sm_agrees_with_the_decoder(service_type, source, dest, esm_class, sched, sm, rid, extra):
    tlvs = dict(extra)
    if 0x0427 in tlvs:
        tlvs[0x0427] = b"\x02"
    if 0x0204 in tlvs:
        tlvs[0x0204] = b"\x00\x01"
    if rid is not None:
        tlvs[Tag.receipted_message_id] = rid + b"\x00"
    frame = encode(Pdu(Command.DELIVER_SM, 7, 0, {
        "service_type": service_type, "source_addr": source, "destination_addr": dest,
        "esm_class": esm_class, "schedule_delivery_time": sched, "short_message": sm}, tlvs))
    pdu = decode(frame)
    got = scan_deliver_sm(frame)
    want_rid = pdu.tlvs.get(Tag.receipted_message_id)
    assert got == (pdu.fields["esm_class"], None if want_rid is None else want_rid[:-1])


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_scan_deliver_sm_refuses_truncated_frames(cut):
    frame = encode(Pdu(Command.DELIVER_SM, 7, 0, {"short_message": b"hello"},
                       {Tag.receipted_message_id: b"123\x00"}))
    bad = (len(frame) - cut).to_bytes(4, "big") + frame[4:-cut]
    with pytest.raises(loadclient._Unusual):
        scan_deliver_sm(bad)
