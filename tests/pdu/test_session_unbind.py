"""A peer's unbind with our requests still in flight: their responses are honoured (issue 10 item 7).

3.4 §2.9 ends the session with unbind; it does not say that what the peer
already processed stops counting. A client that acknowledges a deliver_sm
right after its unbind (in the same write, or before it closes) must not get
that deliver_sm again.
"""

from __future__ import annotations

from staffetta.pdu.codec import Pdu, encode
from staffetta.pdu.constants import Command, Status
from staffetta.pdu.session import Closing, ResponseReceived, State, Timers
from tests.pdu.test_session import REQUESTS, FakeClock, answers, smsc


def with_two_deliveries(clock=None):
    s = smsc(State.BOUND_TRX, clock=clock, timers=Timers(response=5.0))
    a = s.send_request(Command.DELIVER_SM, {"short_message": b"a"}, context="a")
    b = s.send_request(Command.DELIVER_SM, {"short_message": b"b"}, context="b")
    s.data_to_send()
    return s, a, b


def test_responses_after_the_peers_unbind_are_honoured_then_the_session_closes():
    s, a, b = with_two_deliveries()
    events = s.receive(
        encode(Pdu(Command.UNBIND, 7)) + encode(Pdu(Command.DELIVER_SM_RESP, a))
    )
    [resp] = answers(s)
    assert (resp.command_id, resp.sequence) == (Command.UNBIND_RESP, 7)
    assert [type(e) for e in events] == [ResponseReceived]
    assert events[0].request.context == "a"
    assert s.state == State.UNBOUND and not s.bound and not s.can_receive
    # Nothing new is accepted meanwhile.
    s.receive(encode(Pdu(Command.SUBMIT_SM, 8, 0, REQUESTS[Command.SUBMIT_SM])))
    [refused] = answers(s)
    assert (refused.command_id, refused.status) == (Command.SUBMIT_SM_RESP, Status.ESME_RINVBNDSTS)
    events = s.receive(encode(Pdu(Command.DELIVER_SM_RESP, b)))
    assert [type(e) for e in events] == [ResponseReceived, Closing]
    assert events[1].pending == [] and events[1].reason == "unbound by peer"
    assert s.state == State.CLOSED


def test_what_is_never_answered_after_the_peers_unbind_times_out_and_closes():
    clock = FakeClock()
    s, a, b = with_two_deliveries(clock)
    s.receive(encode(Pdu(Command.UNBIND, 7)) + encode(Pdu(Command.DELIVER_SM_RESP, a)))
    clock.now += 6
    events = s.tick()
    assert [type(e).__name__ for e in events] == ["RequestTimedOut", "Closing"]
    assert events[0].request.context == "b"
    assert s.state == State.CLOSED


def test_a_transport_lost_after_the_peers_unbind_gives_back_what_was_unanswered():
    s, a, b = with_two_deliveries()
    s.receive(encode(Pdu(Command.UNBIND, 7)) + encode(Pdu(Command.DELIVER_SM_RESP, b)))
    closing = s.close("connection lost")
    assert [p.context for p in closing.pending] == ["a"]


def test_an_unbind_with_nothing_in_flight_still_closes_at_once():
    s = smsc(State.BOUND_TRX)
    [ev] = s.receive(encode(Pdu(Command.UNBIND, 7)))
    assert type(ev) is Closing and s.state == State.CLOSED
