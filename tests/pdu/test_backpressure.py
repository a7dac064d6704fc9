"""A full inbound window held, not refused: the session holds frames, the edge stops reading (issue 12.2)."""

from __future__ import annotations

from collections import defaultdict

from twisted.internet import task
from twisted.internet.testing import StringTransport

from staffetta.pdu.codec import Pdu, decode, encode
from staffetta.pdu.constants import Command, Status
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.session import RequestReceived, ResponseReceived, Session, Side, State
from tests.builders import split_frames


def esme(inbound_window: int = 2) -> Session:
    """A bound ESME-side session (our connector) that holds what a full window cannot take."""
    s = Session(Side.ESME, clock=lambda: 0.0, inbound_window=inbound_window, hold_when_full=True,
                pdu_counts=defaultdict(int))
    s.bind(Command.BIND_TRANSCEIVER, b"hub", b"pw")
    s.data_to_send()
    [ev] = s.receive(encode(Pdu(Command.BIND_TRANSCEIVER_RESP, 1, 0, {"system_id": b"smsc"})))
    assert isinstance(ev, ResponseReceived) and s.state == State.BOUND_TRX
    return s


def deliver(seq: int) -> bytes:
    return encode(Pdu(Command.DELIVER_SM, seq, 0, {"source_addr": b"39333", "esm_class": 4,
                                                    "short_message": b"id:%d stat:DELIVRD" % seq}))


def test_a_full_window_holds_in_order_and_releases_as_answers_free_slots():
    s = esme(inbound_window=2)
    events = s.receive(b"".join(deliver(i) for i in range(10, 15)))
    assert [e.pdu.sequence for e in events] == [10, 11]
    assert s.holding and s.data_to_send() == b""  # nothing refused
    s.respond(events[0].pdu)
    more = s.release()
    assert [e.pdu.sequence for e in more] == [12] and s.holding
    # A read while holding queues behind what is held, in stream order.
    assert s.receive(deliver(15)) == []
    for e in [events[1], more[0]]:
        s.respond(e.pdu)
    more = s.release()
    assert [e.pdu.sequence for e in more] == [13, 14]
    s.respond(more[0].pdu)
    assert [e.pdu.sequence for e in s.release()] == [15]
    assert not s.holding
    statuses = {decode(f).status for f in split_frames(s.data_to_send())}
    assert statuses == {Status.ESME_ROK}
    assert s._pdu_counts[(True, Command.DELIVER_SM, 0)] == 6  # each counted once


def test_responses_behind_a_held_request_wait_their_turn():
    s = esme(inbound_window=1)
    seq = s.send_request(Command.SUBMIT_SM, {"destination_addr": b"39333", "short_message": b"x"})
    resp = encode(Pdu(Command.SUBMIT_SM_RESP, seq, 0, {"message_id": b"abc"}))
    events = s.receive(deliver(10) + deliver(11) + resp)
    assert [type(e) for e in events] == [RequestReceived]
    s.respond(events[0].pdu)
    events = s.release()
    assert [type(e) for e in events] == [RequestReceived, ResponseReceived]


def test_without_hold_the_window_still_refuses():
    s = esme(inbound_window=1)
    s.hold_when_full = False
    events = s.receive(deliver(10) + deliver(11))
    assert len(events) == 2 and not s.holding
    [resp] = [decode(f) for f in split_frames(s.data_to_send())]
    assert (resp.sequence, resp.status) == (11, Status.ESME_RTHROTTLED)


def test_closing_drops_what_was_held():
    s = esme(inbound_window=1)
    s.receive(deliver(10) + deliver(11))
    assert s.holding
    s.close("gone")
    assert not s.holding and s.release() == []


class Edge(SessionProtocol):
    side = Side.ESME

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.requests: list[Pdu] = []

    def on_request(self, pdu: Pdu) -> None:
        self.requests.append(pdu)  # answered later, as the router does after its commit


def test_the_edge_stops_reading_while_frames_are_held_and_resumes_after():
    clock = task.Clock()
    p = Edge(clock=clock, inbound_window=2, hold_when_full=True)
    t = StringTransport()
    p.makeConnection(t)
    s = p.session
    s.bind(Command.BIND_TRANSCEIVER, b"hub", b"pw")
    p.flush_now()
    p.dataReceived(encode(Pdu(Command.BIND_TRANSCEIVER_RESP, 1, 0, {"system_id": b"smsc"})))
    p.dataReceived(b"".join(deliver(i) for i in range(10, 14)))
    assert t.producerState == "paused" and p.reading_paused
    assert [r.sequence for r in p.requests] == [10, 11]
    s.respond(p.requests[0])
    p.flush()
    clock.advance(0)
    assert [r.sequence for r in p.requests] == [10, 11, 12] and t.producerState == "paused"
    for r in p.requests[1:]:
        s.respond(r)
    p.flush()
    clock.advance(0)
    assert [r.sequence for r in p.requests] == [10, 11, 12, 13]
    assert t.producerState == "producing" and not p.reading_paused
    p.connectionLost()

