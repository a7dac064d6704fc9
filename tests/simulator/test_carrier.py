"""The simulated carrier: binds, ids, receipts, scripting, MO, queues, faults, HTTP control.

Network behaviour is tested over real TCP on 127.0.0.1; timer and queue
behaviour with ``task.Clock`` and an in-memory transport, so that "the receipt
is not sent yet" is a fact, not a race.
"""

from __future__ import annotations

import json
import re
import struct
from io import BytesIO
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.web.client import Agent, FileBodyProducer, ResponseDone
from twisted.web.http_headers import Headers

from staffetta.pdu.codec import Pdu, decode, encode, tlv_cstr, tlv_int, u16
from staffetta.pdu.constants import Command, MessageState, Status, Tag
from staffetta.pdu.framing import Framer
from staffetta.pdu.receipt import STAT_TO_STATE, parse_receipt
from staffetta.pdu.session import Timers
from staffetta.simulator import cli
from staffetta.simulator.carrier import (
    DEFAULT_ERR,
    FAULT_KINDS,
    FAULT_SEQUENCE,
    Carrier,
    CarrierProtocol,
    fault_bytes,
)
from staffetta.simulator.control import listen_control
from tests.simulator.conftest import within

inline = pytest_twisted.inlineCallbacks


# ------------------------------------------------------------------ binds


@inline
def test_bind_accepted_without_credentials(make_carrier, connect):
    carrier = make_carrier()
    esme = yield connect(carrier)
    resp = yield esme.bind(b"anyone", b"anything")
    assert resp.command_id == Command.BIND_TRANSCEIVER_RESP
    assert resp.status == Status.ESME_ROK
    assert resp.fields["system_id"] == b"staffsim"
    assert resp.tlvs[Tag.sc_interface_version] == b"\x34"
    assert carrier.stats["binds"] == 1
    assert carrier.snapshot()["sessions"][0]["state"] == "BOUND_TRX"


@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [
        (b"hub", b"secret", Status.ESME_ROK),
        (b"hub", b"wrong", Status.ESME_RINVPASWD),
        (b"nobody", b"secret", Status.ESME_RINVSYSID),
    ],
)
@inline
def test_bind_with_credentials(make_carrier, connect, system_id, password, status):
    carrier = make_carrier(credentials={b"hub": b"secret"})
    esme = yield connect(carrier)
    resp = yield esme.bind(system_id, password, Command.BIND_TRANSMITTER)
    assert resp.status == status
    if status:
        # Header only (3.4 §4.1.2 note), then the carrier closes.
        assert struct.unpack(">IIII", bytes(esme.raw[:16])) == (16, Command.BIND_TRANSMITTER_RESP, status, 1)
        yield within(esme.lost)
        assert carrier.stats["bind_failures"] == 1
    else:
        assert carrier.stats["binds"] == 1


# ---------------------------------------------------------------- submits


@pytest.mark.parametrize(
    ("id_format", "pattern"),
    [
        ("decimal", r"[1-9]\d{8,9}"),
        ("hex", r"[0-9a-f]{8}"),
        ("uuid", r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
    ],
)
@inline
def test_submit_acked_with_unique_id(make_carrier, connect, id_format, pattern):
    carrier = make_carrier(id_format=id_format)
    esme = yield connect(carrier)
    yield esme.bind()
    resps = yield within(defer.gatherResults([esme.submit(registered_delivery=0) for _ in range(20)]))
    ids = [r.fields["message_id"].decode() for r in resps]
    assert all(r.status == 0 and r.command_id == Command.SUBMIT_SM_RESP for r in resps)
    assert all(re.fullmatch(pattern, i) for i in ids), ids
    assert len(set(ids)) == 20
    assert carrier.stats["submits"] == 20


@inline
def test_data_sm_acked_with_id(make_carrier, connect):
    carrier = make_carrier(dlr_delay=0.01)
    esme = yield connect(carrier)
    yield esme.bind()
    resp = yield within(esme.request(Command.DATA_SM, {
        "source_addr": b"Staffetta", "destination_addr": b"393331234567", "registered_delivery": 1,
    }, {Tag.message_payload: b"payload text"}))
    assert resp.command_id == Command.DATA_SM_RESP and resp.status == 0
    receipt = yield esme.next_request()
    assert receipt.tlvs[Tag.receipted_message_id] == resp.fields["message_id"] + b"\x00"
    assert parse_receipt(receipt.fields["short_message"]).text == "payload text"


@pytest.mark.parametrize("stat", ["DELIVRD", "UNDELIV", "REJECTD", "EXPIRED"])
@inline
def test_receipt_carries_id_state_and_text(make_carrier, connect, stat):
    carrier = make_carrier(dlr_delay=0.01, outcomes={stat: 1.0})
    esme = yield connect(carrier)
    yield esme.bind()
    resp = yield within(esme.submit(b"393331234567", b"hello world, this is longer than twenty",
                                    tlvs={Tag.user_message_reference: u16(4242)}))
    mid = resp.fields["message_id"]
    receipt = yield esme.next_request()
    f = receipt.fields
    assert receipt.command_id == Command.DELIVER_SM
    assert f["esm_class"] == 0x04
    # Source and destination swapped, with their TON/NPI.
    assert (f["source_addr"], f["source_addr_ton"], f["source_addr_npi"]) == (b"393331234567", 1, 1)
    assert (f["destination_addr"], f["dest_addr_ton"], f["dest_addr_npi"]) == (b"Staffetta", 5, 0)
    assert f["schedule_delivery_time"] == b"" and f["validity_period"] == b""
    assert tlv_cstr(receipt.tlvs[Tag.receipted_message_id]) == mid
    assert tlv_int(receipt.tlvs[Tag.message_state]) == STAT_TO_STATE[stat]
    assert receipt.tlvs[Tag.user_message_reference] == u16(4242)
    if stat == "DELIVRD":
        assert Tag.network_error_code not in receipt.tlvs
    else:
        assert receipt.tlvs[Tag.network_error_code] == b"\x03" + u16(DEFAULT_ERR[stat])
    text = f["short_message"].decode("ascii")
    assert text.startswith(f"id:{mid.decode()} sub:001 dlvrd:00{1 if stat == 'DELIVRD' else 0} submit date:")
    parsed = parse_receipt(text)
    assert parsed.id == mid.decode()
    assert parsed.stat == stat
    assert parsed.err == f"{DEFAULT_ERR[stat]:03d}"
    assert parsed.text == "hello world, this is"
    assert carrier.stats["outcomes"] == {stat: 1}
    assert carrier.stats["receipts_sent"] == 1


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        ("strict", r"submit date:\d{10} done date:\d{10} stat:DELIVRD err:000 text:hello$"),
        ("12digit", r"submit date:\d{12} done date:\d{12} stat:DELIVRD err:000 text:hello$"),
        ("Text", r"submit date:\d{10} done date:\d{10} stat:DELIVRD err:000 Text:hello$"),
        ("tlv_only", r"^$"),
    ],
)
@inline
def test_receipt_formats(make_carrier, connect, fmt, check):
    carrier = make_carrier(dlr_delay=0.0, receipt_format=fmt)
    esme = yield connect(carrier)
    yield esme.bind()
    resp = yield within(esme.submit(text=b"hello"))
    receipt = yield esme.next_request()
    assert re.search(check, receipt.fields["short_message"].decode()), receipt.fields["short_message"]
    assert tlv_cstr(receipt.tlvs[Tag.receipted_message_id]) == resp.fields["message_id"]
    assert tlv_int(receipt.tlvs[Tag.message_state]) == MessageState.DELIVERED


def test_outcome_mix_is_honoured_and_seeded():
    mix = {"DELIVRD": 0.7, "UNDELIV": 0.2, "REJECTD": 0.1}
    a = Carrier(task.Clock(), outcomes=mix, seed=7)
    draws = [a.draw_outcome() for _ in range(20000)]
    for stat, p in mix.items():
        # 20000 draws: one standard deviation is at most ~0.0033.
        assert abs(draws.count(stat) / 20000 - p) < 0.015, stat
    b = Carrier(task.Clock(), outcomes=mix, seed=7)
    assert [b.draw_outcome() for _ in range(20000)] == draws
    c = Carrier(task.Clock(), outcomes=mix, seed=8)
    assert [c.draw_outcome() for _ in range(200)] != draws[:200]


def test_bad_outcomes_refused():
    with pytest.raises(ValueError, match="FOO"):
        Carrier(task.Clock(), outcomes={"FOO": 1.0})
    with pytest.raises(ValueError, match="zero"):
        Carrier(task.Clock(), outcomes={"DELIVRD": 0})
    with pytest.raises(ValueError, match="ENROUTE"):
        Carrier(task.Clock(), outcomes={"ENROUTE": 1})


@inline
def test_failure_only_receipts(make_carrier, connect):
    carrier = make_carrier(dlr_delay=0.01)
    carrier.script("39999", stat="UNDELIV")
    esme = yield connect(carrier)
    yield esme.bind()
    ok = yield within(esme.submit(b"393331234567", registered_delivery=2))
    failed = yield within(esme.submit(b"39999000111", registered_delivery=2))
    # Same delay: a receipt for the delivered one would come first.
    receipt = yield esme.next_request()
    assert tlv_cstr(receipt.tlvs[Tag.receipted_message_id]) == failed.fields["message_id"]
    assert ok.fields["message_id"] != failed.fields["message_id"]
    assert tlv_int(receipt.tlvs[Tag.message_state]) == MessageState.UNDELIVERABLE
    assert carrier.stats["receipts_scheduled"] == 1


# -------------------------------------------------------------- scripting


@inline
def test_script_rejects_by_longest_prefix(make_carrier, connect):
    carrier = make_carrier(dlr_delay=0.01)
    carrier.script("39", submit_status=Status.ESME_RSUBMITFAIL)
    carrier.script("3933", submit_status=0)
    carrier.script("393300", submit_status=Status.ESME_RINVDSTADR)
    esme = yield connect(carrier)
    yield esme.bind()
    r1 = yield within(esme.submit(b"391234567"))
    r2 = yield within(esme.submit(b"393312345"))
    r3 = yield within(esme.submit(b"3933001234"))
    r4 = yield within(esme.submit(b"441234567"))
    assert (r1.status, r2.status, r3.status, r4.status) == (0x45, 0, 0x0B, 0)
    # Rejected submits are header only and get no receipt.
    assert r1.fields == {} and r3.fields == {}
    assert carrier.stats["submits_rejected"] == 2
    assert carrier.stats["receipts_scheduled"] == 2


@inline
def test_script_no_response(make_carrier, connect):
    carrier = make_carrier(dlr_delay=0.01)
    carrier.script("39000", respond=False)
    esme = yield connect(carrier)
    yield esme.bind()
    silent = esme.submit(b"39000111222")
    answered = yield within(esme.submit(b"393331234567"))
    assert answered.status == 0
    assert not silent.called
    assert carrier.stats["submits_unanswered"] == 1


@inline
def test_script_answers_with_fault(make_carrier, connect):
    carrier = make_carrier(dlr_delay=0.01)
    carrier.script("3901", answer="error_resp_with_body")
    carrier.script("3902", answer="generic_nack_noseq")
    esme = yield connect(carrier)
    yield esme.bind()
    resp = yield within(esme.submit(b"39011111"))
    # The 1-octet body is tolerated and ignored; the request still ends.
    assert (resp.command_id, resp.status) == (Command.SUBMIT_SM_RESP, Status.ESME_RSYSERR)
    assert resp.fields.get("message_id", b"") == b""
    mark = len(esme.raw)
    resp = yield within(esme.submit(b"39021111"))
    # A generic_nack without sequence answers the one request outstanding.
    assert (resp.command_id, resp.status) == (Command.GENERIC_NACK, Status.ESME_RSYSERR)
    assert bytes(esme.raw[mark:]) == bytes.fromhex("00000010 80000000 00000008 00000000")


def test_script_validation():
    c = Carrier(task.Clock())
    with pytest.raises(ValueError, match="stat"):
        c.script("39", stat="NOPE")
    with pytest.raises(ValueError, match="answer"):
        c.script("39", answer="explode")
    with pytest.raises(ValueError, match="delay"):
        c.script("39", delay=-1)
    c.script("", submit_status=8)
    assert c.match("123").submit_status == 8
    c.clear_scripts()
    assert c.match("123") is None


# --------------------------------------------------------------------- MO


@inline
def test_mo_reaches_rx_session(make_carrier, connect):
    carrier = make_carrier()
    tx = yield connect(carrier)
    yield tx.bind(b"hub", b"pw", Command.BIND_TRANSMITTER)
    rx = yield connect(carrier)
    yield rx.bind(b"hub", b"pw", Command.BIND_RECEIVER)
    d = carrier.inject_mo("393331112222", "4000", b"STOP")
    mo = yield rx.next_request()
    status = yield within(d)
    assert status == Status.ESME_ROK
    f = mo.fields
    assert mo.command_id == Command.DELIVER_SM
    assert (f["source_addr"], f["destination_addr"], f["short_message"]) == (b"393331112222", b"4000", b"STOP")
    assert f["esm_class"] == 0 and f["data_coding"] == 0
    assert carrier.stats["mo_sent"] == 1 and carrier.stats["mo_acked"] == 1
    assert len(tx.requests.pending) == 0  # never to a transmitter


@inline
def test_mo_fires_with_the_esme_status(make_carrier, connect):
    carrier = make_carrier()
    rx = yield connect(carrier, ack_status=Status.ESME_RX_T_APPN)
    yield rx.bind(command_id=Command.BIND_RECEIVER)
    status = yield within(carrier.inject_mo("393331112222", "4000", "caffè", data_coding=8))
    assert status == Status.ESME_RX_T_APPN
    mo = yield rx.next_request()
    assert mo.fields["short_message"] == "caffè".encode("utf-16-be")
    assert mo.fields["data_coding"] == 8


@inline
def test_mo_for_a_system_id_waits_for_its_bind(make_carrier, connect):
    carrier = make_carrier()
    other = yield connect(carrier)
    yield other.bind(b"other", b"pw", Command.BIND_RECEIVER)
    d = carrier.inject_mo("393331112222", "4000", b"x" * 300, system_id="hub")
    assert not d.called and carrier.queued == 1
    rx = yield connect(carrier)
    yield rx.bind(b"hub", b"pw", Command.BIND_TRANSCEIVER)
    mo = yield rx.next_request()
    assert (yield within(d)) == 0
    assert mo.fields["short_message"] == b"" and mo.tlvs[Tag.message_payload] == b"x" * 300
    assert len(other.requests.pending) == 0


# ------------------------------------------- queues, windows, timers (Clock)


def _proto(carrier: Carrier) -> tuple[CarrierProtocol, StringTransport]:
    p = carrier.buildProtocol(None)
    t = StringTransport()
    p.makeConnection(t)
    return p, t


def _send(p: CarrierProtocol, command_id: int, seq: int, fields: dict | None = None,
          status: int = 0) -> None:
    p.dataReceived(encode(Pdu(command_id, seq, status, fields or {})))


def _read(t: StringTransport) -> list[Pdu]:
    frames = Framer().feed(t.value())
    t.clear()
    return [decode(f) for f in frames]


def _bind(p: CarrierProtocol, t: StringTransport, cmd: int, system_id: bytes = b"hub") -> None:
    _send(p, cmd, 1, {"system_id": system_id, "password": b"pw", "interface_version": 0x34})
    [resp] = _read(t)
    assert resp.status == 0


def _submit(p: CarrierProtocol, t: StringTransport, seq: int, dest: bytes = b"393331234567") -> bytes:
    _send(p, Command.SUBMIT_SM, seq, {"source_addr": b"S", "destination_addr": dest,
                                      "registered_delivery": 1, "short_message": b"hi"})
    [resp] = _read(t)
    assert resp.status == 0
    return resp.fields["message_id"]


def _receipt_ids(pdus: list[Pdu]) -> list[bytes]:
    assert all(p.command_id == Command.DELIVER_SM for p in pdus)
    return [tlv_cstr(p.tlvs[Tag.receipted_message_id]) for p in pdus]


def test_receipts_wait_for_an_rx_bind():
    clock = task.Clock()
    carrier = Carrier(clock, dlr_delay=1.0)
    tx, ttx = _proto(carrier)
    _bind(tx, ttx, Command.BIND_TRANSMITTER)
    ids = [_submit(tx, ttx, 10 + i) for i in range(3)]
    clock.advance(0.999)
    assert carrier.scheduled == 3 and carrier.queued == 0
    clock.advance(0.001)
    assert carrier.scheduled == 0 and carrier.queued == 3
    assert ttx.value() == b""  # never to a transmitter
    rx, trx = _proto(carrier)
    _send(rx, Command.BIND_RECEIVER, 1, {"system_id": b"hub", "password": b"pw", "interface_version": 0x34})
    pdus = _read(trx)
    assert pdus[0].command_id == Command.BIND_RECEIVER_RESP
    assert _receipt_ids(pdus[1:]) == ids
    assert carrier.queued == 0


def test_window_respected_and_pending_requeued_on_drop():
    clock = task.Clock()
    carrier = Carrier(clock, dlr_delay=1.0, window=2)
    a, ta = _proto(carrier)
    _bind(a, ta, Command.BIND_TRANSCEIVER)
    ids = [_submit(a, ta, 10 + i) for i in range(5)]
    clock.advance(1.0)
    sent = _read(ta)
    assert _receipt_ids(sent) == ids[:2]
    assert carrier.queued == 3
    # One answer frees one slot: exactly one more goes out.
    _send(a, Command.DELIVER_SM_RESP, sent[0].sequence, {"message_id": b""})
    more = _read(ta)
    assert _receipt_ids(more) == ids[2:3]
    assert carrier.stats["receipts_acked"] == 1
    # The connection drops with two unanswered: they go back to the head of the queue.
    a.connectionLost(None)
    assert carrier.queued == 4
    b, tb = _proto(carrier)
    _send(b, Command.BIND_TRANSCEIVER, 1, {"system_id": b"hub", "password": b"pw", "interface_version": 0x34})
    pdus = _read(tb)
    assert _receipt_ids(pdus[1:]) == [ids[1], ids[2]]
    for pdu in pdus[1:]:
        _send(b, Command.DELIVER_SM_RESP, pdu.sequence, {"message_id": b""})
    assert _receipt_ids(_read(tb)) == ids[3:]


def test_unanswered_receipt_requeued_after_response_timer():
    clock = task.Clock()
    carrier = Carrier(clock, dlr_delay=0.5, timers=Timers(response=2.0, enquire_link=100))
    a, ta = _proto(carrier)
    _bind(a, ta, Command.BIND_TRANSCEIVER)
    mid = _submit(a, ta, 10)
    clock.advance(0.5)
    first = _read(ta)
    assert _receipt_ids(first) == [mid]
    for _ in range(3):  # the session timers tick once a second
        clock.advance(1.0)
    again = _read(ta)
    assert _receipt_ids(again) == [mid]
    assert again[0].sequence != first[0].sequence
    assert carrier.stats["receipts_sent"] == 2


def test_temporary_refusal_retried_permanent_not():
    clock = task.Clock()
    carrier = Carrier(clock, dlr_delay=0.0, retry_delay=3.0)
    a, ta = _proto(carrier)
    _bind(a, ta, Command.BIND_TRANSCEIVER)
    m1 = _submit(a, ta, 10)
    m2 = _submit(a, ta, 11)
    clock.advance(0)
    r1, r2 = _read(ta)
    _send(a, Command.DELIVER_SM_RESP, r1.sequence, status=Status.ESME_RX_T_APPN)
    _send(a, Command.DELIVER_SM_RESP, r2.sequence, status=Status.ESME_RX_P_APPN)
    clock.advance(2.9)
    assert _read(ta) == []
    clock.advance(0.2)
    assert _receipt_ids(_read(ta)) == [m1]
    assert m2 != m1
    assert carrier.stats["receipts_retried"] == 1 and carrier.stats["receipts_refused"] == 1


def test_scripted_short_delay_overtakes_default():
    clock = task.Clock()
    carrier = Carrier(clock, dlr_delay=10.0)
    carrier.script("3901", delay=1.0, stat="EXPIRED")
    a, ta = _proto(carrier)
    _bind(a, ta, Command.BIND_TRANSCEIVER)
    slow = _submit(a, ta, 10, b"393331234567")
    fast = _submit(a, ta, 11, b"39011234567")
    clock.advance(1.0)
    [r] = _read(ta)
    assert _receipt_ids([r]) == [fast]
    assert tlv_int(r.tlvs[Tag.message_state]) == MessageState.EXPIRED
    _send(a, Command.DELIVER_SM_RESP, r.sequence)
    clock.advance(8.9)
    assert _read(ta) == []
    clock.advance(0.1)
    assert _receipt_ids(_read(ta)) == [slow]


def test_bounded_queue_drops_oldest():
    clock = task.Clock()
    carrier = Carrier(clock, dlr_delay=0.0, queue_limit=2)
    tx, ttx = _proto(carrier)
    _bind(tx, ttx, Command.BIND_TRANSMITTER)
    ids = [_submit(tx, ttx, 10 + i) for i in range(3)]
    clock.advance(0)
    assert carrier.queued == 2 and carrier.stats["queue_dropped"] == 1
    rx, trx = _proto(carrier)
    _send(rx, Command.BIND_RECEIVER, 1, {"system_id": b"hub", "password": b"pw", "interface_version": 0x34})
    assert _receipt_ids(_read(trx)[1:]) == ids[1:]


# ----------------------------------------------------------------- faults


EXPECTED_FAULTS = {
    "short_length": "0000000f 00000015 00000000 7fffffff",
    "long_length": "ffffffff 00000015 00000000 7fffffff",
    "unknown_command": "00000010 0000001f 00000000 7fffffff",
    "generic_nack_noseq": "00000010 80000000 00000008 00000000",
    "error_resp_with_body": "00000011 80000004 00000008 7fffffff 00",
}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_fixture_bytes(kind):
    carrier = Carrier(task.Clock())
    a, ta = _proto(carrier)
    unbound, tu = _proto(carrier)
    _bind(a, ta, Command.BIND_TRANSCEIVER)
    assert carrier.fault(kind) == 1
    if kind == "unbind":
        assert struct.unpack(">IIII", ta.value()) == (16, Command.UNBIND, 0, 1)
    else:
        assert ta.value() == bytes.fromhex(EXPECTED_FAULTS[kind]) == fault_bytes(kind)
    assert tu.value() == b""  # only bound sessions get faults
    assert FAULT_SEQUENCE == 0x7FFFFFFF


def test_unknown_fault_kind():
    with pytest.raises(ValueError, match="short_length"):
        Carrier(task.Clock()).fault("meltdown")


@inline
def test_short_length_fault_closes_the_peer(make_carrier, connect):
    carrier = make_carrier()
    esme = yield connect(carrier)
    yield esme.bind()
    mark = len(esme.raw)
    carrier.fault("short_length")
    raw = yield esme.wait_raw(mark + 16)
    assert raw[mark:] == fault_bytes("short_length")
    reason = yield within(esme.closed)
    assert "framing" in reason


@inline
def test_unbind_fault_ends_the_session(make_carrier, connect):
    carrier = make_carrier()
    esme = yield connect(carrier)
    yield esme.bind()
    carrier.fault("unbind")
    reason = yield within(esme.closed)
    assert reason == "unbound by peer"
    yield within(esme.lost)


@inline
def test_stop_sessions_drops_everyone(make_carrier, connect):
    carrier = make_carrier()
    esmes = []
    for _ in range(3):
        e = yield connect(carrier)
        yield e.bind()
        esmes.append(e)
    yield within(carrier.stop_sessions())
    yield within(defer.gatherResults([e.lost for e in esmes]))
    assert carrier.sessions == []


# ----------------------------------------------------------- HTTP control


@defer.inlineCallbacks
def _http(port: int, method: bytes, path: str, body: Any = None):
    producer = None if body is None else FileBodyProducer(BytesIO(json.dumps(body).encode()))
    resp = yield within(Agent(reactor).request(
        method, f"http://127.0.0.1:{port}{path}".encode(),
        Headers({b"content-type": [b"application/json"]}), producer))
    data = yield within(_body(resp))
    return resp.code, json.loads(data)


def _body(resp: Any) -> defer.Deferred:
    """readBody without its deprecation warning about abortConnection."""
    d: defer.Deferred = defer.Deferred()
    chunks: list[bytes] = []

    class Collect(Protocol):
        def dataReceived(self, data: bytes) -> None:  # noqa: N802
            chunks.append(data)

        def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
            if reason is None or reason.check(ResponseDone):
                d.callback(b"".join(chunks))
            else:
                d.errback(reason)

    resp.deliverBody(Collect())
    return d


@pytest.fixture
def control(make_carrier):
    carrier = make_carrier(dlr_delay=0.01)
    port = listen_control(carrier, 0)
    yield carrier, port.getHost().port
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


@inline
def test_http_mo_injects_and_waits(control, connect):
    carrier, port = control
    rx = yield connect(carrier)
    yield rx.bind(command_id=Command.BIND_RECEIVER)
    code, body = yield _http(port, b"POST", "/mo", {"source": "393331112222", "destination": "4000",
                                                    "text": "ciao €", "wait": True})
    assert (code, body) == (200, {"status": 0, "status_name": "ESME_ROK"})
    mo = yield rx.next_request()
    assert mo.fields["short_message"] == b"ciao \x1be"  # GSM 03.38, € is an escape pair
    code, body = yield _http(port, b"POST", "/mo", {"source": "1", "destination": "2", "text": "x"})
    assert (code, body) == (202, {"queued": True})
    yield rx.next_request()


@inline
def test_http_stats_script_fault(control, connect):
    carrier, port = control
    code, body = yield _http(port, b"POST", "/script", {"prefix": "3900", "submit_status": 11})
    assert code == 200 and body["prefix"] == "3900" and body["submit_status"] == 11
    esme = yield connect(carrier)
    yield esme.bind()
    resp = yield within(esme.submit(b"39001234"))
    assert resp.status == Status.ESME_RINVDSTADR
    code, body = yield _http(port, b"GET", "/stats")
    assert code == 200
    assert body["submits"] == 1 and body["submits_rejected"] == 1 and body["binds"] == 1
    assert body["sessions"][0]["system_id"] == "hub"
    code, body = yield _http(port, b"GET", "/script")
    assert [r["prefix"] for r in body] == ["3900"]
    code, body = yield _http(port, b"POST", "/fault", {"kind": "unknown_command"})
    assert (code, body) == (200, {"kind": "unknown_command", "sessions": 1})
    yield esme.wait_raw(len(esme.raw) + 1)
    code, body = yield _http(port, b"DELETE", "/script")
    assert code == 200 and carrier.rules == []


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/mo", {"destination": "1", "text": "x"}, "source: required"),
        ("/mo", {"source": "1", "destination": "2", "text": 5}, "text: expected str"),
        ("/mo", {"source": "1", "destination": "2", "text": "x", "data_coding": True}, "data_coding"),
        ("/script", {"prefix": "39", "stat": "NOPE"}, "NOPE"),
        ("/script", {"prefix": "39", "colour": "red"}, "colour: unknown field"),
        ("/fault", {"kind": "meltdown"}, "meltdown"),
        ("/fault", [1, 2], "JSON object"),
    ],
)
@inline
def test_http_bad_requests(control, path, body, needle):
    _carrier, port = control
    code, answer = yield _http(port, b"POST", path, body)
    assert code == 400
    assert needle in answer["error"]


# ------------------------------------------------------------------- CLI


def test_parse_outcomes():
    assert cli.parse_outcomes("DELIVRD=0.9,UNDELIV=0.05,rejectd=0.05") == {
        "DELIVRD": 0.9, "UNDELIV": 0.05, "REJECTD": 0.05}
    for bad, needle in [("DELIVRD", "STAT=WEIGHT"), ("FOO=1", "FOO"), ("DELIVRD=x", "not a number"),
                        ("DELIVRD=1,DELIVRD=2", "twice"), ("DELIVRD=-1", ">= 0"), ("", "no outcome"),
                        ("DELIVRD=0", "zero")]:
        with pytest.raises(ValueError, match=needle):
            cli.parse_outcomes(bad)


def test_parse_hostport():
    assert cli.parse_hostport("0.0.0.0:2776") == ("0.0.0.0", 2776)
    assert cli.parse_hostport(":2776") == ("127.0.0.1", 2776)
    assert cli.parse_hostport("2776", default_host="::1") == ("::1", 2776)
    assert cli.parse_hostport("[::1]:2776") == ("::1", 2776)
    for bad in ("host:", "host:99999", "host:port", "::1:2776", "[::1]2776"):
        with pytest.raises(ValueError):
            cli.parse_hostport(bad)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--outcomes", "DELIVRD=0.9,BOGUS=0.1"], "--outcomes: unknown stat 'BOGUS'"),
        (["--listen", "localhost:notaport"], "--listen:"),
        (["--control", "x:y"], "--control:"),
        (["--dlr-delay", "-1"], "--dlr-delay"),
    ],
)
def test_simulator_cli_bad_arguments(capsys, argv, needle):
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_simulator_arguments(parser)
    args = parser.parse_args(argv)
    assert cli.simulator_main(args, reactor=object()) == 2  # never reaches the reactor
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_v33_peer_gets_receipt_text_without_tlvs():
    clock = task.Clock()
    carrier = Carrier(clock, dlr_delay=0.0)
    a, ta = _proto(carrier)
    _send(a, Command.BIND_TRANSCEIVER, 1, {"system_id": b"old", "password": b"pw", "interface_version": 0x33})
    [resp] = _read(ta)
    assert resp.status == 0 and resp.tlvs == {}  # no sc_interface_version to a 3.3 ESME
    mid = _submit(a, ta, 10)
    clock.advance(0)
    [receipt] = _read(ta)
    assert receipt.tlvs == {}
    assert parse_receipt(receipt.fields["short_message"]).id == mid.decode()


def test_two_receivers_share_one_line_and_a_dropped_ones_receipts_go_first_in_order():
    clock = task.Clock()
    carrier = Carrier(clock, dlr_delay=1.0, window=2)
    tx, ttx = _proto(carrier)
    _bind(tx, ttx, Command.BIND_TRANSMITTER)
    a, ta = _proto(carrier)
    _bind(a, ta, Command.BIND_RECEIVER)
    b, tb = _proto(carrier)
    _bind(b, tb, Command.BIND_RECEIVER)
    ids = [_submit(tx, ttx, 10 + i) for i in range(6)]
    clock.advance(1.0)
    to_a, to_b = _receipt_ids(_read(ta)), _receipt_ids(_read(tb))
    assert sorted(to_a + to_b) == sorted(ids[:4]) and len(to_a) == len(to_b) == 2
    assert carrier.queued == 2
    a.connectionLost(None)  # a's two come back ahead of the two that never left
    assert carrier.queued == 4
    assert _read(tb) == []  # b is full
    # b answers its two: a's go next, in the order they were submitted, then the rest.
    pending = list(b.session.outstanding.values())
    for req in pending:
        _send(b, Command.DELIVER_SM_RESP, req.sequence, {"message_id": b""})
    got = _receipt_ids(_read(tb))
    for req in list(b.session.outstanding.values()):
        _send(b, Command.DELIVER_SM_RESP, req.sequence, {"message_id": b""})
    got += _receipt_ids(_read(tb))
    assert got == sorted(to_a, key=ids.index) + ids[4:]
