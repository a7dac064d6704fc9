"""Connector back-off on a Clock: a later throttle extends the pause, never strands the queue."""

from __future__ import annotations

from twisted.internet import task

from staffetta.conf.settings import UpstreamSettings
from staffetta.router.upstream import Connector, Forward


class Session:
    bound = True
    window = 10

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.window_free = 10

    def send_request(self, command_id, fields, tlvs, item) -> int:
        self.sent.append(item.message_id)
        return len(self.sent)


class Proto:
    def __init__(self) -> None:
        self.session = Session()

    def flush(self) -> None:
        pass


def test_second_throttle_during_a_pause_does_not_strand_the_queue():
    clock = task.Clock()
    c = Connector(UpstreamSettings("sim", "h", 1, "s", "p", throttle_backoff=1.0), router=None, reactor=clock)
    c.protocol = Proto()
    c.throttled()  # t=0: paused until 1.0, resume at 1.0
    clock.advance(0.5)
    c.throttled()  # t=0.5: paused until 1.5
    c.queue.append(Forward(7, {}, {}, expires_at=1e9))
    clock.advance(0.5)  # t=1.0: still paused
    assert c.protocol.session.sent == []
    clock.advance(0.6)  # t=1.6: the pause is over and something must have resumed it
    assert c.protocol.session.sent == [7]
