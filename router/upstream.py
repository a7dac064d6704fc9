"""Upstream connectors: the hub binds to a carrier SMSC as an ESME.

A :class:`Connector` owns one carrier link: it reconnects with exponential
backoff, binds (transceiver), and while bound keeps a :class:`pdu.window.Window`
on its route's line (``router.routes``), so it takes the head of the route's
queue whenever it has a free slot. It answers its carrier itself and hands
events up to its listener (the router), which decides:

* ``submit_answered(connector, item, status, carrier_id)``: the carrier
  answered a submit_sm (``carrier_id`` normalised per ``id_format``, or None
  when it refused);
* ``carrier_pdu(connector, pdu, ack)``: a deliver_sm / data_sm (receipt or
  MO); ``ack(status)`` answers the carrier, once the router has made durable
  what it carries;
* ``connector_state(connector, up, reason)``: bound, or lost.

A "slow down" answer (ESME_RTHROTTLED, ESME_RMSGQFUL), a submit with no answer
in time and a lost link are the connector's own business: the item goes back
to the head of the route's line in its original order (the carrier may see a
duplicate after a time-out or a drop; the client never sees two ids), and a
throttle pauses this connector's window for ``throttle_backoff``.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Protocol

from twisted.internet import protocol

from staffetta.conf.settings import UpstreamSettings
from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import Command, Status
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.receipt import normalize_message_id
from staffetta.pdu.session import Outstanding, Side, Timers
from staffetta.pdu.window import Line, Window

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

# Enum members read per message, as globals (an Enum class attribute costs ~120 ns
# on Python 3.11: see pdu/session.py).
_SUBMIT_SM = Command.SUBMIT_SM
_SUBMIT_SM_RESP = Command.SUBMIT_SM_RESP
_ROK = Status.ESME_ROK

#: Carrier statuses that mean "slow down", not "no".
BACKOFF = frozenset({Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL})


class Forward:
    """One accepted message on its way upstream (until the carrier accepts it)."""

    __slots__ = ("message_id", "fields", "tlvs", "attempts", "expires_at")

    def __init__(self, message_id: int, fields: dict, tlvs: dict[int, bytes], expires_at: float) -> None:
        self.message_id = message_id
        self.fields = fields
        self.tlvs = tlvs
        #: Sends that came back unprocessed (time-out, throttle, lost link).
        self.attempts = 0
        self.expires_at = expires_at


class ConnectorEvents(Protocol):
    """What a connector hands up (the router implements it)."""

    def submit_answered(self, connector: Connector, item: Forward, status: int, carrier_id: str | None) -> None: ...

    def carrier_pdu(self, connector: Connector, pdu: Pdu, ack: Callable[[int], None]) -> None: ...

    def connector_state(self, connector: Connector, up: bool, reason: str) -> None: ...


class UpstreamProtocol(SessionProtocol):
    side = Side.ESME

    def __init__(self, connector: Connector, **kw) -> None:
        super().__init__(**kw)
        self.connector = connector
        self.window: Window[Forward] | None = None

    def on_connected(self) -> None:
        c = self.connector.config
        self.session.bind(
            Command.BIND_TRANSCEIVER,
            c.system_id.encode(),
            c.password.encode(),
            c.system_type.encode(),
        )
        self.flush()

    def send_submit(self, item: Forward) -> int:
        """The window's send: one submit_sm on the wire (flushed once per burst)."""
        return self.session.send_request(_SUBMIT_SM, item.fields, item.tlvs, item)

    def answer(self, pdu: Pdu, status: int) -> None:
        """Answer a carrier request (the ``ack`` handed up with it); a no-op once closed."""
        self.session.respond(pdu, status)
        self.flush()

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        cid = request.command_id
        if cid == _SUBMIT_SM:
            self.connector.submit_answered(self, request.sequence, pdu)
        elif cid == Command.BIND_TRANSCEIVER:
            if pdu.status == Status.ESME_ROK and pdu.command_id != Command.GENERIC_NACK:
                self.connector.bound(self)
            else:
                log.error(
                    "connector %s: bind refused with 0x%08x", self.connector.config.name, pdu.status
                )
                self.drop("bind refused")

    def on_timeout(self, request: Outstanding) -> None:
        if request.command_id == _SUBMIT_SM and self.window is not None:
            self.connector.timed_out(self, request.sequence)

    def on_request(self, pdu: Pdu) -> None:
        # deliver_sm / data_sm from the carrier: receipts and MO.
        c = self.connector
        c.listener.carrier_pdu(c, pdu, partial(self.answer, pdu))

    def on_closed(self, reason: str, pending: list[Outstanding]) -> None:
        self.connector.lost(self, reason)


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
            inbound_window=self.owner.config.inbound_window,
            pdu_counts=self.owner.pdu_counts,
            hold_when_full=True,  # a full window slows the carrier by TCP, never refuses it
        )


class Connector:
    """One carrier link. ``listener`` gets its events; ``line`` is its route's queue (set by the route)."""

    def __init__(self, config: UpstreamSettings, listener: ConnectorEvents | None, reactor, *,
                 timers: Timers | None = None, pdu_counts=None, max_queue: int = 200_000) -> None:
        self.config = config
        self.listener = listener
        self.reactor = reactor
        self.timers = timers or Timers()
        self.pdu_counts = pdu_counts
        #: The queue limit this connector asks of its route (``settings.max_queue``).
        self.max_queue = max_queue
        #: The route's waiting line; a connector alone gets a line of its own.
        self.line: Line[Forward] = Line(limit=max_queue)
        self.protocol: UpstreamProtocol | None = None
        self._factory: _Factory | None = None
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
    def queue(self) -> Line[Forward]:
        """What waits for this connector: its route's line (shared with the route's other connectors)."""
        return self.line

    @property
    def in_flight(self) -> int:
        p = self.protocol
        return 0 if p is None or p.window is None else len(p.window)

    @property
    def throttled(self) -> bool:
        p = self.protocol
        return p is not None and p.window is not None and p.window.paused_until > 0

    # -------------------------------------------------------- protocol events

    def bound(self, proto: UpstreamProtocol) -> None:
        log.info("connector %s bound to %s:%d (window %d)", self.config.name, self.config.host,
                 self.config.port, self.config.window)
        self.protocol = proto
        session = proto.session
        proto.window = Window(self.line, self.config.window, proto.send_submit, flush=proto.flush,
                              ready=lambda: session.window_free if session.bound else 0, clock=self.reactor)
        if self.listener is not None:
            self.listener.connector_state(self, True, "bound")
        proto.window.open()

    def submit_answered(self, proto: UpstreamProtocol, sequence: int, pdu: Pdu) -> None:
        window = proto.window
        status = pdu.status
        if status in BACKOFF:
            if not window.paused_until:
                log.info("connector %s throttled by its carrier (0x%08x): pausing %.1f s",
                         self.config.name, status, self.config.throttle_backoff)
            item = window.throttled(sequence, self.config.throttle_backoff)
            if item is not None:
                item.attempts += 1
            return
        item = window.done(sequence)
        if item is None:  # pragma: no cover - the session only reports our own requests
            return
        carrier_id = None
        if status == _ROK and pdu.command_id == _SUBMIT_SM_RESP:
            raw = pdu.fields.get("message_id", b"").decode("ascii", "replace")
            carrier_id = normalize_message_id(raw, self.config.id_format)
        elif not status:  # a generic_nack without a status is still a refusal
            status = Status.ESME_RUNKNOWNERR
        self.listener.submit_answered(self, item, status, carrier_id)

    def timed_out(self, proto: UpstreamProtocol, sequence: int) -> None:
        item = proto.window.retry(sequence)
        if item is not None:
            item.attempts += 1
            log.info("connector %s: no answer to message %d in time, sent again in its place",
                     self.config.name, item.message_id)

    def lost(self, proto: UpstreamProtocol, reason: str) -> None:
        back = proto.window.close() if proto.window is not None else []
        for item in back:
            item.attempts += 1
        if self.protocol is proto:
            self.protocol = None
            if self.listener is not None:
                self.listener.connector_state(self, False, reason)
        log.log(logging.INFO if self._stopping else logging.WARNING,
                "connector %s lost: %s (%d in flight back to the head of the queue)",
                self.config.name, reason, len(back))
