"""The session state machine, without a reactor: every PDU in every state (conformance §2-§8)."""

from __future__ import annotations

import pytest

from staffetta.pdu.codec import Pdu, decode, encode
from staffetta.pdu.constants import Command, Status, Tag
from staffetta.pdu.session import (
    MAX_SEQUENCE,
    Closing,
    ProtocolViolation,
    RequestReceived,
    RequestTimedOut,
    ResponseReceived,
    Session,
    Side,
    State,
    Timers,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def smsc(state: State = State.OPEN, clock=None, **kw) -> Session:
    s = Session(Side.SMSC, clock=clock or FakeClock(), **kw)
    if state in (State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX):
        cid = {State.BOUND_TX: Command.BIND_TRANSMITTER, State.BOUND_RX: Command.BIND_RECEIVER,
               State.BOUND_TRX: Command.BIND_TRANSCEIVER}[state]
        [ev] = s.receive(encode(Pdu(cid, 1, 0, {"system_id": b"a", "password": b"b", "interface_version": 0x34})))
        s.accept_bind(ev.pdu, b"hub")
        s.data_to_send()
    assert s.state == state
    return s


def answers(s: Session) -> list[Pdu]:
    out = s.data_to_send()
    pdus = []
    while out:
        n = int.from_bytes(out[:4], "big")
        pdus.append(decode(out[:n]))
        out = out[n:]
    return pdus


REQUESTS = {
    Command.SUBMIT_SM: {"destination_addr": b"39333", "short_message": b"hi"},
    Command.QUERY_SM: {"message_id": b"1"},
    Command.CANCEL_SM: {"message_id": b"1"},
    Command.REPLACE_SM: {"message_id": b"1", "short_message": b"x"},
    Command.DATA_SM: {"destination_addr": b"39333"},
    Command.SUBMIT_MULTI: {"dest_addresses": [{"dest_flag": 1, "destination_addr": b"39333"}]},
}
BOUND = [State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX]

# (command, state) -> expected answer status, or "app" when the application gets it.
EXPECTED = {}
for cmd in REQUESTS:
    EXPECTED[(cmd, State.OPEN)] = Status.ESME_RINVBNDSTS
    EXPECTED[(cmd, State.BOUND_TX)] = "app"
    EXPECTED[(cmd, State.BOUND_TRX)] = "app"
    EXPECTED[(cmd, State.BOUND_RX)] = "app" if cmd == Command.DATA_SM else Status.ESME_RINVBNDSTS


@pytest.mark.parametrize("state", [State.OPEN, *BOUND])
@pytest.mark.parametrize("cmd", list(REQUESTS))
def test_message_operations_by_state(cmd, state):
    s = smsc(state)
    events = s.receive(encode(Pdu(cmd, 77, 0, REQUESTS[cmd])))
    expected = EXPECTED[(cmd, state)]
    if expected == "app":
        assert [type(e) for e in events] == [RequestReceived]
        assert answers(s) == []
    else:
        [resp] = answers(s)
        assert (resp.command_id, resp.sequence, resp.status) == (cmd | 0x80000000, 77, expected)
        assert isinstance(events[0], ProtocolViolation)


@pytest.mark.parametrize("state", BOUND)
@pytest.mark.parametrize("bind", [Command.BIND_TRANSMITTER, Command.BIND_RECEIVER, Command.BIND_TRANSCEIVER])
def test_second_bind_is_already_bound_and_keeps_the_first(state, bind):
    s = smsc(state)
    s.receive(encode(Pdu(bind, 9, 0, {"system_id": b"x"})))
    [resp] = answers(s)
    assert (resp.command_id, resp.status, resp.sequence) == (bind | 0x80000000, Status.ESME_RALYBND, 9)
    assert s.state == state


@pytest.mark.parametrize("state", [State.OPEN, *BOUND])
def test_enquire_link_answered_in_every_state(state):
    s = smsc(state)
    assert s.receive(encode(Pdu(Command.ENQUIRE_LINK, 5))) == []
    [resp] = answers(s)
    assert (resp.command_id, resp.sequence, resp.status) == (Command.ENQUIRE_LINK_RESP, 5, 0)


def test_unbind_before_bind_is_invalid_bind_status():
    s = smsc(State.OPEN)
    s.receive(encode(Pdu(Command.UNBIND, 3)))
    [resp] = answers(s)
    assert (resp.command_id, resp.status) == (Command.UNBIND_RESP, Status.ESME_RINVBNDSTS)
    assert s.state == State.OPEN


@pytest.mark.parametrize("state", BOUND)
def test_unbind_answers_then_closes_and_accepts_nothing_more(state):
    s = smsc(state)
    events = s.receive(
        encode(Pdu(Command.UNBIND, 3)) + encode(Pdu(Command.SUBMIT_SM, 4, 0, REQUESTS[Command.SUBMIT_SM]))
    )
    assert [type(e) for e in events] == [Closing]
    [resp] = answers(s)
    assert (resp.command_id, resp.status, resp.sequence) == (Command.UNBIND_RESP, 0, 3)
    assert s.state == State.CLOSED
    assert s.receive(encode(Pdu(Command.ENQUIRE_LINK, 5))) == []


@pytest.mark.parametrize("cmd", [Command.DELIVER_SM])
def test_deliver_sm_from_an_esme_is_invalid_command_id(cmd):
    s = smsc(State.BOUND_TRX)
    s.receive(encode(Pdu(cmd, 8, 0, {})))
    [resp] = answers(s)
    assert (resp.command_id, resp.status, resp.sequence) == (cmd | 0x80000000, Status.ESME_RINVCMDID, 8)


@pytest.mark.parametrize("cmd", [Command.OUTBIND, Command.ALERT_NOTIFICATION])
def test_requests_without_response_get_generic_nack(cmd):
    s = smsc(State.BOUND_TRX)
    s.receive(encode(Pdu(cmd, 8, 0, {})))
    [resp] = answers(s)
    assert (resp.command_id, resp.status, resp.sequence) == (Command.GENERIC_NACK, Status.ESME_RINVCMDID, 8)


@pytest.mark.parametrize("cid", [0x0A, 0x0C, 0x14, 0x16, 0x22, 0x101, 0x111, 0x00010200])
def test_unknown_command_id_is_generic_nack_with_sequence(cid):
    s = smsc(State.BOUND_TRX)
    frame = (16).to_bytes(4, "big") + cid.to_bytes(4, "big") + bytes(4) + (42).to_bytes(4, "big")
    s.receive(frame)
    [resp] = answers(s)
    assert (resp.command_id, resp.status, resp.sequence) == (Command.GENERIC_NACK, Status.ESME_RINVCMDID, 42)
    assert s.state == State.BOUND_TRX


def test_generic_nack_from_peer_is_never_answered():
    s = smsc(State.BOUND_TRX)
    s.receive(encode(Pdu(Command.GENERIC_NACK, 0, Status.ESME_RINVCMDID)))
    assert answers(s) == []


@pytest.mark.parametrize("state", [State.OPEN, State.BOUND_TX])
def test_stray_responses_are_dropped_not_answered(state):
    s = smsc(state)
    events = s.receive(encode(Pdu(Command.DELIVER_SM_RESP, 99)) + encode(Pdu(Command.ENQUIRE_LINK_RESP, 98)))
    assert answers(s) == []
    assert all(isinstance(e, ProtocolViolation) for e in events)


@pytest.mark.parametrize("length", [0, 15, 0x00100000, 0xFFFFFFFF])
def test_bad_command_length_nacks_and_closes(length):
    s = smsc(State.BOUND_TRX)
    events = s.receive(length.to_bytes(4, "big") + bytes(12))
    [resp] = answers(s)
    assert (resp.command_id, resp.status) == (Command.GENERIC_NACK, Status.ESME_RINVCMDLEN)
    assert isinstance(events[-1], Closing)


def test_pdus_before_a_bad_length_in_the_same_read_are_handled():
    s = smsc(State.BOUND_TRX)
    events = s.receive(encode(Pdu(Command.ENQUIRE_LINK, 1)) + (15).to_bytes(4, "big") + bytes(11))
    out = answers(s)
    assert [p.command_id for p in out] == [Command.ENQUIRE_LINK_RESP, Command.GENERIC_NACK]
    assert isinstance(events[-1], Closing)


def test_truncated_body_is_answered_with_the_request_response():
    s = smsc(State.BOUND_TRX)
    frame = (20).to_bytes(4, "big") + Command.SUBMIT_SM.to_bytes(4, "big") + bytes(4) + (6).to_bytes(4, "big") + b"ab\x00\x01"
    s.receive(frame)
    [resp] = answers(s)
    assert (resp.command_id, resp.sequence) == (Command.SUBMIT_SM_RESP, 6)
    assert resp.status == Status.ESME_RINVCMDLEN


def test_pdu_in_pieces_and_many_in_one_read():
    s = smsc(State.BOUND_TRX)
    data = b"".join(encode(Pdu(Command.ENQUIRE_LINK, i)) for i in range(1, 6))
    for i in range(len(data)):
        s.receive(data[i:i + 1])
    assert [p.sequence for p in answers(s)] == [1, 2, 3, 4, 5]


def test_bind_response_carries_sc_interface_version_for_34_and_nothing_for_33():
    s = smsc()
    [ev] = s.receive(encode(Pdu(Command.BIND_TRANSCEIVER, 1, 0, {"system_id": b"a", "interface_version": 0x34})))
    s.accept_bind(ev.pdu, b"hub")
    [resp] = answers(s)
    assert resp.fields["system_id"] == b"hub" and resp.tlvs == {Tag.sc_interface_version: b"\x34"}
    s33 = smsc()
    [ev] = s33.receive(encode(Pdu(Command.BIND_TRANSCEIVER, 1, 0, {"system_id": b"a", "interface_version": 0x33})))
    s33.accept_bind(ev.pdu, b"hub")
    [resp] = answers(s33)
    assert resp.tlvs == {}


def test_failed_bind_is_header_only_and_closes():
    s = smsc()
    [ev] = s.receive(encode(Pdu(Command.BIND_TRANSMITTER, 4, 0, {"system_id": b"a"})))
    events = s.reject_bind(ev.pdu, Status.ESME_RBINDFAIL)
    raw = s.data_to_send()
    assert len(raw) == 16 and decode(raw).status == Status.ESME_RBINDFAIL
    assert isinstance(events[0], Closing) and s.state == State.CLOSED


def test_inbound_window_throttles_without_closing():
    s = smsc(State.BOUND_TRX, inbound_window=2)
    data = b"".join(encode(Pdu(Command.SUBMIT_SM, i, 0, REQUESTS[Command.SUBMIT_SM])) for i in (1, 2, 3))
    events = s.receive(data)
    assert [type(e) for e in events[:2]] == [RequestReceived, RequestReceived]
    [resp] = answers(s)
    assert (resp.sequence, resp.status) == (3, Status.ESME_RTHROTTLED)
    s.respond(events[0].pdu, 0, {"message_id": b"1"})
    s.receive(encode(Pdu(Command.SUBMIT_SM, 4, 0, REQUESTS[Command.SUBMIT_SM])))
    assert s.state == State.BOUND_TRX and len(s._inbound) == 2


def test_sequence_numbers_wrap_and_skip_outstanding():
    s = smsc(State.BOUND_TRX, window=10)
    s._next_seq = MAX_SEQUENCE
    a = s.send_request(Command.DELIVER_SM, {})
    b = s.send_request(Command.DELIVER_SM, {})
    assert (a, b) == (MAX_SEQUENCE, 1)
    s._next_seq = 1
    assert s.send_request(Command.DELIVER_SM, {}) == 2  # 1 is still outstanding


def test_responses_correlate_by_sequence_in_any_order():
    s = smsc(State.BOUND_TRX)
    a = s.send_request(Command.DELIVER_SM, {}, context="a")
    b = s.send_request(Command.DELIVER_SM, {}, context="b")
    assert s.window_free == 8
    events = s.receive(encode(Pdu(Command.DELIVER_SM_RESP, b)) + encode(Pdu(Command.DELIVER_SM_RESP, a)))
    assert [e.request.context for e in events if isinstance(e, ResponseReceived)] == ["b", "a"]
    assert s.window_free == 10


def test_generic_nack_without_sequence_answers_the_single_outstanding_request():
    s = Session(Side.ESME, clock=FakeClock())
    seq = s.send_request(Command.SUBMIT_SM, {}, context="x")
    [ev] = s.receive(encode(Pdu(Command.GENERIC_NACK, 0, Status.ESME_RINVCMDLEN)))
    assert isinstance(ev, ResponseReceived) and ev.request.sequence == seq


def test_error_response_with_a_body_is_tolerated():
    s = Session(Side.ESME, clock=FakeClock())
    seq = s.send_request(Command.SUBMIT_SM, {}, context="x")
    frame = bytearray(encode(Pdu(Command.SUBMIT_SM_RESP, seq, Status.ESME_RSYSERR)) + b"\x00")
    frame[0:4] = (17).to_bytes(4, "big")
    [ev] = s.receive(bytes(frame))
    assert ev.pdu.status == Status.ESME_RSYSERR


# -------------------------------------------------------------------- timers


def test_session_init_timer_closes_an_unbound_connection():
    clock = FakeClock()
    s = smsc(clock=clock, timers=Timers(session_init=10))
    clock.now += 9.9
    assert s.tick() == []
    clock.now += 0.2
    [ev] = s.tick()
    assert isinstance(ev, Closing) and "session_init" in ev.reason


def test_enquire_link_sent_after_silence_and_missing_answer_closes():
    clock = FakeClock()
    s = smsc(State.BOUND_TRX, clock=clock, timers=Timers(enquire_link=30, response=5, inactivity=1000))
    clock.now += 30
    assert s.tick() == []
    [el] = answers(s)
    assert el.command_id == Command.ENQUIRE_LINK
    clock.now += 5
    [ev] = s.tick()
    assert isinstance(ev, Closing)


def test_any_pdu_resets_the_enquire_link_timer():
    clock = FakeClock()
    s = smsc(State.BOUND_TRX, clock=clock, timers=Timers(enquire_link=30, inactivity=1000))
    clock.now += 20
    s.receive(encode(Pdu(Command.ENQUIRE_LINK, 3)))
    answers(s)
    clock.now += 20
    s.tick()
    assert answers(s) == []


def test_inactivity_unbinds():
    clock = FakeClock()
    s = smsc(State.BOUND_TRX, clock=clock, timers=Timers(enquire_link=10, inactivity=60, response=100))
    for _ in range(7):
        clock.now += 10
        s.receive(encode(Pdu(Command.ENQUIRE_LINK, 3)))  # keeps the link, not a transaction
        s.tick()
    assert any(p.command_id == Command.UNBIND for p in answers(s))
    assert s.state == State.UNBINDING


def test_request_timeout_gives_the_request_back():
    clock = FakeClock()
    s = smsc(State.BOUND_TRX, clock=clock, timers=Timers(response=30, enquire_link=1000, inactivity=1000))
    s.send_request(Command.DELIVER_SM, {}, context="d1")
    clock.now += 31
    [ev] = s.tick()
    assert isinstance(ev, RequestTimedOut) and ev.request.context == "d1"
    assert s.window_free == s.window


def test_close_returns_requests_in_flight():
    s = smsc(State.BOUND_TRX)
    s.send_request(Command.DELIVER_SM, {}, context="d1")
    ev = s.close("lost")
    assert [p.context for p in ev.pending] == ["d1"]


def test_window_free_and_bound_follow_every_change():
    """window_free, bound and can_receive are kept as plain attributes: each change must move them."""
    clock = FakeClock()
    s = smsc(State.BOUND_TRX, clock=clock, timers=Timers(response=30, enquire_link=1000, inactivity=1000))
    assert (s.bound, s.can_receive, s.window_free) == (True, True, 10)
    s.send_request(Command.DELIVER_SM, {})
    s.send_encoded(encode(Pdu(Command.DELIVER_SM, 0)))
    s.send_request(Command.ENQUIRE_LINK)  # not windowed
    assert s.window_free == 8
    s.window = 20
    assert s.window_free == 18
    s.receive(encode(Pdu(Command.DELIVER_SM_RESP, 1)))
    assert s.window_free == 19
    clock.now += 31
    s.tick()  # the second deliver_sm times out; the enquire_link's time-out closes
    assert s.window_free == 20 and s.window == 20
    assert (s.state, s.bound, s.can_receive) == (State.CLOSED, False, False)
    t = smsc(State.BOUND_TX)
    assert (t.bound, t.can_receive) == (True, False)
    t.state = State.OPEN
    assert (t.bound, t.can_receive) == (False, False)


@pytest.mark.parametrize("side", list(Side), ids=lambda s: s.value)
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_the_passing_set_is_exactly_what_screening_lets_through(side: Side, state: State):
    """The one-lookup fast path must agree with the full screening for every request, side and state.

    Binds are the exception by design: they pass screening in OPEN only when no
    other bind is in progress, so they always take the full path.
    """
    from staffetta.pdu.constants import BIND_COMMANDS
    from staffetta.pdu.session import _KNOWN_REQUESTS

    for command_id in sorted(_KNOWN_REQUESTS):
        s = Session(side, clock=FakeClock())
        s.state = state
        events: list = []
        passes = not s._screen(command_id, 1, encode(Pdu(command_id, 1)), 1000.0, events)
        passes = passes and not events and not s.data_to_send()
        if command_id in BIND_COMMANDS:
            assert command_id not in s._passing
        else:
            assert (command_id in s._passing) == passes, (hex(command_id), side, state)
