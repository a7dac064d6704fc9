"""Upstream connectors: the hub binds to a carrier SMSC as an ESME.

A :class:`Connector` owns one carrier link: it reconnects with exponential
backoff, binds (transceiver), keeps its window full from an in-order queue, and
hands responses and carrier PDUs to the router. Requests still outstanding when
the link drops or time out go back to the head of the queue, so nothing sits in
limbo (the carrier may see a duplicate; the client never sees two ids).
"""

from __future__ import annotations

import logging
from collections import deque

from twisted.internet import protocol

from staffetta.conf.settings import UpstreamSettings
from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import Command, Status
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.session import Outstanding, Side, Timers

log = logging.getLogger(__name__)

# Enum members read per message, as globals (an Enum class attribute costs ~120 ns
# on Python 3.11: see pdu/session.py).
_SUBMIT_SM = Command.SUBMIT_SM


class Forward:
    """One accepted message on its way upstream (until the carrier accepts it)."""

    __slots__ = ("message_id", "fields", "tlvs", "attempts", "expires_at")

    def __init__(self, message_id: int, fields: dict, tlvs: dict[int, bytes], expires_at: float) -> None:
        self.message_id = message_id
        self.fields = fields
        self.tlvs = tlvs
        self.attempts = 0
        self.expires_at = expires_at


class UpstreamProtocol(SessionProtocol):
    side = Side.ESME

    def __init__(self, connector: Connector, **kw) -> None:
        super().__init__(**kw)
        self.connector = connector

    def on_connected(self) -> None:
        c = self.connector.config
        self.session.bind(
            Command.BIND_TRANSCEIVER,
            c.system_id.encode(),
            c.password.encode(),
            c.system_type.encode(),
        )
        self.flush()

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        cid = request.command_id
        if cid == _SUBMIT_SM:
            self.connector.submit_answered(self, request.context, pdu)
        elif cid == Command.BIND_TRANSCEIVER:
            if pdu.status == Status.ESME_ROK and pdu.command_id != Command.GENERIC_NACK:
                self.connector.bound(self)
            else:
                log.error(
                    "connector %s: bind refused with 0x%08x", self.connector.config.name, pdu.status
                )
                self.drop("bind refused")

    def on_timeout(self, request: Outstanding) -> None:
        if request.command_id == Command.SUBMIT_SM:
            self.connector.requeue([request.context])

    def on_request(self, pdu: Pdu) -> None:
        # deliver_sm / data_sm from the carrier: receipts and MO.
        self.connector.router.carrier_pdu(self.connector, self, pdu)

    def on_closed(self, reason: str, pending: list[Outstanding]) -> None:
        self.connector.lost(self, reason, [p.context for p in pending if p.command_id == Command.SUBMIT_SM])


class _Factory(protocol.ReconnectingClientFactory):
    def __init__(self, owner: Connector) -> None:
        self.owner = owner
        self.initialDelay = owner.config.reconnect_min
        self.maxDelay = owner.config.reconnect_max
        self.factor = 2.0
        self.clock = owner.reactor

    def buildProtocol(self, addr):  # noqa: N802
        self.resetDelay()
        return UpstreamProtocol(
            self.owner,
            clock=self.owner.reactor,
            timers=self.owner.timers,
            window=self.owner.config.window,
            pdu_counts=self.owner.pdu_counts,
        )


class Connector:
    def __init__(self, config: UpstreamSettings, router, reactor, *, timers: Timers | None = None,
                 pdu_counts=None, max_queue: int = 200_000) -> None:
        self.config = config
        self.router = router
        self.reactor = reactor
        self.timers = timers or Timers()
        self.pdu_counts = pdu_counts
        self.max_queue = max_queue
        self.queue: deque[Forward] = deque()
        self.protocol: UpstreamProtocol | None = None
        self._factory: _Factory | None = None
        self._paused_until = 0.0
        self._resume_call = None
        self._stopping = False

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        self._factory = _Factory(self)
        self.reactor.connectTCP(self.config.host, self.config.port, self._factory)

    def stop(self) -> None:
        self._stopping = True
        if self._factory is not None:
            self._factory.stopTrying()
        p = self.protocol
        if p is not None and p.session.bound:
            p.session.unbind()  # 3.4: unbind before a planned disconnect
            p.flush()
            self.reactor.callLater(1.0, lambda: p.transport and p.transport.loseConnection())

    @property
    def up(self) -> bool:
        return self.protocol is not None and self.protocol.session.bound

    @property
    def full(self) -> bool:
        return len(self.queue) >= self.max_queue

    @property
    def in_flight(self) -> int:
        p = self.protocol
        return 0 if p is None else p.session.window - p.session.window_free

    # ------------------------------------------------------------------ queue

    def enqueue(self, item: Forward) -> None:
        self.queue.append(item)
        self.pump()

    def requeue(self, items: list[Forward]) -> None:
        for item in reversed(items):
            if item is not None:
                item.attempts += 1
                self.queue.appendleft(item)
        self.pump()

    def pump(self) -> None:
        p = self.protocol
        if p is None or not p.session.bound or not self.queue:
            return
        now = self.reactor.seconds()
        if self._paused_until > now:
            self._resume_at(self._paused_until - now)
            return
        session = p.session
        q = self.queue
        sent = False
        while q and session.window_free > 0:
            item = q.popleft()
            if item.expires_at <= now:
                self.router.expired_in_queue(item)
                continue
            session.send_request(_SUBMIT_SM, item.fields, item.tlvs, item)
            sent = True
        if sent:
            p.flush()

    def take(self, match) -> list[Forward]:
        """Remove and return the queued (not yet sent) items for which ``match(item)`` holds."""
        kept: deque[Forward] = deque()
        taken = []
        for item in self.queue:
            (taken if match(item) else kept).append(item)
        if taken:
            self.queue = kept
        return taken

    def throttled(self) -> None:
        """The carrier said slow down: pause the whole connector, keep order."""
        delay = self.config.throttle_backoff
        self._paused_until = self.reactor.seconds() + delay
        self._resume_at(delay)

    def _resume_at(self, delay: float) -> None:
        """One pending resume, never earlier than the pause's end (a later throttle extends it)."""
        call = self._resume_call
        if call is not None and call.active():
            if call.getTime() >= self.reactor.seconds() + delay:
                return
            call.cancel()
        self._resume_call = self.reactor.callLater(delay, self.pump)

    # -------------------------------------------------------- protocol events

    def bound(self, proto: UpstreamProtocol) -> None:
        log.info("connector %s bound", self.config.name)
        self.protocol = proto
        self.router.connector_state(self, True)
        self.pump()

    def submit_answered(self, proto: UpstreamProtocol, item: Forward, pdu: Pdu) -> None:
        self.router.submit_answered(self, item, pdu)
        self.pump()

    def lost(self, proto: UpstreamProtocol, reason: str, pending: list[Forward]) -> None:
        if self.protocol is proto:
            self.protocol = None
            self.router.connector_state(self, False)
        log.log(logging.INFO if self._stopping else logging.WARNING,
                "connector %s lost: %s (%d in flight requeued)", self.config.name, reason, len(pending))
        self.requeue(pending)
