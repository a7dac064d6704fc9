"""The thin Twisted edge around :class:`pdu.session.Session`.

It only moves bytes and calls hooks; every rule lives in the session. The hub's
listener, its upstream connectors, the simulator and the load client subclass
it and override the ``on_*`` hooks they need. Output produced while handling one
read is written once, so a burst of PDUs costs one ``write`` call; output
produced elsewhere (a commit's callbacks, a timer) is written once per reactor
turn, however many PDUs it holds.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping

from twisted.internet import protocol, task

from staffetta.pdu.codec import Pdu
from staffetta.pdu.session import (
    AlertReceived,
    Closing,
    Outstanding,
    ProtocolViolation,
    RequestReceived,
    RequestTimedOut,
    ResponseReceived,
    Session,
    Side,
    Timers,
)

log = logging.getLogger(__name__)


class SessionProtocol(protocol.Protocol):
    side: Side = Side.SMSC
    #: Tick period for the session timers, in seconds.
    tick_interval = 1.0

    def __init__(
        self,
        *,
        clock,
        timers: Timers | None = None,
        window: int = 10,
        inbound_window: int = 100,
        pdu_counts: MutableMapping[tuple[bool, int, int], int] | None = None,
        hold_when_full: bool = False,
    ) -> None:
        self.clock = clock
        self.session = Session(
            self.side,
            clock=clock.seconds,
            timers=timers,
            window=window,
            inbound_window=inbound_window,
            pdu_counts=pdu_counts,
            hold_when_full=hold_when_full,
        )
        #: Reading paused because the session holds frames for a free inbound slot.
        self.reading_paused = False
        self._ticker: task.LoopingCall | None = None
        self._closed = False
        self._in_batch = False
        self._flush_call = None

    # ----------------------------------------------------------- transport side

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = self.clock
        self._ticker.start(self.tick_interval, now=False)
        self.on_connected()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self._in_batch = True
        try:
            events = self.session.receive(data)
            self._dispatch(events)
        finally:
            self._in_batch = False
        self.flush_now()
        if self.session._held and not self.reading_paused and self.transport is not None:  # .holding, inline
            # TCP back-pressure: the peer is slowed by its full send buffer, not refused.
            self.reading_paused = True
            self.transport.pauseProducing()

    def connectionLost(self, reason=None) -> None:  # noqa: N802
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if not self._closed:
            self._closed = True
            closing = self.session.close("connection lost")
            self.on_closed(closing.reason, closing.pending)

    def flush(self) -> None:
        """Write what the session queued, at the latest at the end of this reactor turn."""
        if self._in_batch or self._flush_call is not None:
            return
        self._flush_call = self.clock.callLater(0, self.flush_now)

    def flush_now(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        out = self.session.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)
        if self.reading_paused:
            self._release()

    def _release(self) -> None:
        """Our answers freed inbound slots: handle what was held, read again once it is all in."""
        session = self.session
        self._in_batch = True
        try:
            self._dispatch(session.release())
        finally:
            self._in_batch = False
        out = session.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)
        if not session.holding and self.reading_paused:
            self.reading_paused = False
            if self.transport is not None and not self._closed:
                self.transport.resumeProducing()

    def _tick(self) -> None:
        try:
            self._dispatch(self.session.tick())
        except Exception:  # a bug in a hook must not kill the timer loop
            log.exception("session tick failed")
        self.flush()

    def _dispatch(self, events: list) -> None:
        for ev in events:
            try:
                if type(ev) is RequestReceived:
                    self.on_request(ev.pdu)
                elif type(ev) is ResponseReceived:
                    self.on_response(ev.pdu, ev.request)
                elif type(ev) is RequestTimedOut:
                    self.on_timeout(ev.request)
                elif type(ev) is ProtocolViolation:
                    self.on_violation(ev)
                elif type(ev) is AlertReceived:
                    self.on_alert(ev.pdu)
                elif type(ev) is Closing:
                    self._closing(ev)
            except Exception:
                # Never let one PDU's handler crash the connection's other PDUs.
                log.exception("handler failed for %r", ev)
                if type(ev) is RequestReceived:
                    from staffetta.pdu.constants import Status

                    self.session.respond(ev.pdu, Status.ESME_RSYSERR)

    def _closing(self, ev: Closing) -> None:
        if self._closed:
            return
        self._closed = True
        self.on_closed(ev.reason, ev.pending)
        self._in_batch = False
        self.flush_now()
        if self.transport is not None:
            self.transport.loseConnection()

    def drop(self, reason: str) -> None:
        """Close the session from our side (after flushing what is queued)."""
        self._closing(self.session.close(reason))

    # ------------------------------------------------------------------- hooks

    def on_connected(self) -> None:
        pass

    def on_request(self, pdu: Pdu) -> None:
        raise NotImplementedError

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        pass

    def on_timeout(self, request: Outstanding) -> None:
        pass

    def on_alert(self, pdu: Pdu) -> None:
        pass

    def on_violation(self, ev: ProtocolViolation) -> None:
        log.info("peer violation: %s (status 0x%08x)", ev.reason, ev.status)

    def on_closed(self, reason: str, pending: list[Outstanding]) -> None:
        pass
