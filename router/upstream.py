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
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Protocol

from twisted.internet import protocol

from staffetta.conf.settings import UpstreamSettings
from staffetta.pdu.codec import Pdu, decode
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
    """One accepted message on its way upstream (until a carrier accepts it).

    ``frame`` is its whole submit_sm with sequence 0 (``MessageRecord.submit_octets``),
    built once: a send, and a resend after a time-out or a failover, only
    patch the sequence (``Session.send_encoded``). ``rule`` and ``order`` are
    the routing decision (router.table): the connectors to try, in order;
    ``step`` is the one holding it now. A failover (refusal, no answer in
    time, a connector down) moves it to the next, with its place in line.
    """

    __slots__ = ("message_id", "frame", "attempts", "expires_at", "rule", "order", "step", "moves", "sent_at")

    def __init__(self, message_id: int, frame: bytes, expires_at: float) -> None:
        self.message_id = message_id
        self.frame = frame
        #: Sends that came back unprocessed (time-out, throttle, lost link).
        self.attempts = 0
        self.expires_at = expires_at
        self.rule = None
        self.order: tuple[str, ...] = ()
        self.step = 0
        #: Failovers on a refusal or a time-out (bounded by the candidates).
        self.moves = 0
        self.sent_at = 0.0

    @property
    def fields(self) -> dict:
        """The submit_sm's mandatory fields, read back from :attr:`frame` (tests, inspection)."""
        return decode(self.frame).fields

    @property
    def tlvs(self) -> dict[int, bytes]:
        """The submit_sm's TLVs, read back from :attr:`frame` (tests, inspection)."""
        return decode(self.frame).tlvs


class ConnectorEvents(Protocol):
    """What a connector hands up (the router implements it)."""

    def submit_answered(self, connector: Connector, item: Forward, status: int, carrier_id: str | None) -> None: ...

    def carrier_pdu(self, connector: Connector, pdu: Pdu, ack: Callable[[int], None]) -> None: ...

    def connector_state(self, connector: Connector, up: bool, reason: str) -> None: ...

    def submit_timed_out(self, connector: Connector, entry: tuple[int, Forward]) -> None: ...

    def submit_throttled(self, connector: Connector, entry: tuple[int, Forward], status: int) -> None: ...


class UpstreamProtocol(SessionProtocol):
    side = Side.ESME

    def __init__(self, connector: Connector, bind_command: int = Command.BIND_TRANSCEIVER, **kw) -> None:
        super().__init__(**kw)
        self.connector = connector
        self.bind_command = bind_command
        self.window: Window[Forward] | None = None

    def on_connected(self) -> None:
        c = self.connector.config
        self.session.bind(
            self.bind_command,
            c.system_id.encode(),
            c.password.encode(),
            c.system_type.encode(),
        )
        self.flush()

    def send_submit(self, item: Forward) -> int:
        """The window's send: one submit_sm on the wire (flushed once per burst).

        A rule's own time-out shortens the session's response timer for this
        request (failover moves the message when it expires).
        """
        session = self.session
        seq = session.send_encoded(item.frame, item)
        connector = self.connector
        if connector.rate:
            connector.tokens -= 1.0
        rule = item.rule
        now = self.clock.seconds()
        item.sent_at = now
        if rule is not None and rule.timeout < connector.timers.response:
            session.outstanding[seq].deadline = session.clock() + rule.timeout
        return seq

    def answer(self, pdu: Pdu, status: int) -> None:
        """Answer a carrier request (the ``ack`` handed up with it); a no-op once closed."""
        self.session.respond(pdu, status)
        self.flush()

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        cid = request.command_id
        if cid == _SUBMIT_SM:
            self.connector.submit_answered(self, request.sequence, pdu)
        elif cid == self.bind_command:
            if pdu.status == Status.ESME_ROK and pdu.command_id != Command.GENERIC_NACK:
                self.connector.bound(self)
            else:
                log.error(
                    "connector %s: bind refused with 0x%08x", self.connector.config.name, pdu.status
                )
                self.connector.last_error = f"bind refused with 0x{pdu.status:08X}"
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
    """One session of a connector (a TRX, TX or RX bind), reconnecting with backoff."""

    def __init__(self, owner: Connector, bind_command: int) -> None:
        self.owner = owner
        self.bind_command = bind_command
        self.initialDelay = owner.config.reconnect_min
        self.maxDelay = owner.config.reconnect_max
        self.factor = 2.0
        self.clock = owner.reactor

    def buildProtocol(self, addr):  # noqa: N802
        self.resetDelay()
        proto = UpstreamProtocol(
            self.owner,
            self.bind_command,
            clock=self.owner.reactor,
            timers=self.owner.timers,
            window=self.owner.config.window,
            inbound_window=self.owner.config.inbound_window,
            pdu_counts=self.owner.pdu_counts,
            hold_when_full=True,  # a full window slows the carrier by TCP, never refuses it
        )
        self.owner.protocols.append(proto)
        return proto

    def clientConnectionFailed(self, connector, reason):  # noqa: N802 - Twisted's name
        self.owner.last_error = f"connect failed: {reason.getErrorMessage()}"
        super().clientConnectionFailed(connector, reason)


#: Receipts kept to compute a connector's live delivery ratio (least-cost floor).
RATIO_SAMPLE = 500
#: Fewer final outcomes than this: no ratio yet (a new connector is not judged on three receipts).
RATIO_MIN = 20


class Connector:
    """One carrier: its sessions (binds), its queue (``line``) and its live state.

    ``listener`` gets its events. The router gives each connector a line of
    its own sharing one place counter with the others, so a message moved
    here by a failover keeps its place (pdu/window.py). Every bound
    transmitting session (TRX or TX) has a window on that line; a
    transmitter-receiver connector's RX sessions only receive. A throughput
    limit holds the line back (it never refuses), so order is kept.
    """

    def __init__(self, config: UpstreamSettings, listener: ConnectorEvents | None, reactor, *,
                 timers: Timers | None = None, pdu_counts=None, max_queue: int = 200_000,
                 line: Line[Forward] | None = None) -> None:
        self.config = config
        self.listener = listener
        self.reactor = reactor
        self.timers = timers or Timers()
        self.pdu_counts = pdu_counts
        #: The queue limit (``settings.max_queue``): a full queue refuses submits with ESME_RMSGQFUL.
        self.max_queue = max_queue
        self.line: Line[Forward] = line if line is not None else Line(limit=max_queue)
        #: Every session started (connecting, bound or closing), and the bound ones.
        self.protocols: list[UpstreamProtocol] = []
        self.links: list[UpstreamProtocol] = []
        #: Whether a session that can submit is bound (kept current by bound/lost:
        #: routing reads it for every message).
        self.up = False
        self._factories: list[_Factory] = []
        self._stopping = False
        #: Removed by a reload: drains its window; what waits goes back to routing.
        self.removed = False
        self.last_error: str | None = None
        self.rate = float(config.throughput)
        self.tokens = self.rate
        self._stamp = 0.0
        self._refill = None
        self._outcomes: deque[bool] = deque(maxlen=RATIO_SAMPLE)
        self._delivered = 0
        #: How many of the route table's floors the delivery ratio is at or above (-1: no ratio yet).
        self.band = -1

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        c = self.config
        binds = ([Command.BIND_TRANSCEIVER] if c.bind_mode == "transceiver"
                 else [Command.BIND_TRANSMITTER, Command.BIND_RECEIVER])
        for _ in range(c.sessions):
            for b in binds:
                f = _Factory(self, b)
                self._factories.append(f)
                self.reactor.connectTCP(c.host, c.port, f)

    def stop(self) -> None:
        self._stopping = True
        for f in self._factories:
            f.stopTrying()
        for p in list(self.protocols):
            if p.session.bound:
                p.session.unbind()  # 3.4: unbind before a planned disconnect
                p.flush()
                self.reactor.callLater(1.0, lambda p=p: p.transport and p.transport.loseConnection())
            elif p.transport is not None:
                p.transport.loseConnection()

    def drain(self, *, grace: float | None = None) -> None:
        """Take nothing new, let the window's answers come, then unbind (a reload removed this connector).

        Unbinds when nothing is in flight, or after ``grace`` seconds (the
        response timer: an unanswered submit has timed out by then).
        """
        self.removed = True
        for f in self._factories:
            f.stopTrying()
        for p in self.links:
            if p.window is not None:
                self.line.detach(p.window)
        deadline = self.reactor.seconds() + (self.timers.response + 1.0 if grace is None else grace)

        def check() -> None:
            if self.in_flight and self.reactor.seconds() < deadline:
                self.reactor.callLater(0.2, check)
            else:
                self.stop()

        check()

    def disconnect(self) -> None:
        """Drop every session at once (tests, shutdown)."""
        for p in list(self.protocols):
            if p.transport is not None:
                p.transport.loseConnection()

    @property
    def protocol(self) -> UpstreamProtocol | None:
        """The first bound transmitting session (None: none is bound)."""
        for p in self.links:
            if p.window is not None:
                return p
        return None

    @property
    def queue(self) -> Line[Forward]:
        """What waits for this connector."""
        return self.line

    @property
    def in_flight(self) -> int:
        return sum(len(p.window) for p in self.links if p.window is not None)

    @property
    def window_size(self) -> int:
        return self.config.window * self.config.sessions

    @property
    def throttled(self) -> bool:
        return any(p.window is not None and p.window.paused_until > 0 for p in self.links)

    @property
    def delivery_ratio(self) -> float | None:
        """Delivered among the last final outcomes (None until there are enough to judge)."""
        n = len(self._outcomes)
        return self._delivered / n if n >= RATIO_MIN else None

    def outcome(self, delivered: bool) -> None:
        """A final outcome of a message this connector carried (its receipt, or a refusal)."""
        q = self._outcomes
        if len(q) == q.maxlen and q[0]:
            self._delivered -= 1
        q.append(delivered)
        if delivered:
            self._delivered += 1

    def state(self) -> dict:
        """The live state for /status/connectors and ``staffetta connectors``."""
        c = self.config
        return {
            "name": c.name, "host": c.host, "port": c.port, "bind_mode": c.bind_mode, "up": self.up,
            "sessions": len(self.links), "sessions_configured": c.sessions * (1 if c.bind_mode == "transceiver" else 2),
            "window": self.in_flight, "window_size": self.window_size, "queue": len(self.line),
            "throughput": self.rate, "last_error": self.last_error, "delivery_ratio": self.delivery_ratio,
            "throttled": self.throttled,
        }

    # ------------------------------------------------------------- throughput

    def _allowance(self) -> int:
        """Sends the throughput limit allows now; arms one timer to refill the windows when at zero."""
        now = self.reactor.seconds()
        rate = self.rate
        t = self.tokens + (now - self._stamp) * rate
        self.tokens = t if t < rate else rate  # at most a second's worth in a burst
        self._stamp = now
        if self.tokens >= 1.0:
            return int(self.tokens)
        if self._refill is None and len(self.line):
            self._refill = self.reactor.callLater((1.0 - self.tokens) / rate, self._refilled)
        return 0

    def _refilled(self) -> None:
        self._refill = None
        self.line.pump()

    # -------------------------------------------------------- protocol events

    def bound(self, proto: UpstreamProtocol) -> None:
        c = self.config
        log.info("connector %s bound to %s:%d (%s, window %d)", c.name, c.host, c.port,
                 Command(proto.bind_command).name.lower(), c.window)
        was_up = self.up
        self.links.append(proto)
        self.last_error = None
        if proto.bind_command == Command.BIND_RECEIVER:
            return  # receives receipts and MO only
        self.up = True
        session = proto.session
        if self.rate:
            def ready() -> int:
                if not session.bound:
                    return 0
                free = session.window_free
                allowed = self._allowance()
                return allowed if allowed < free else free
        else:
            def ready() -> int:
                return session.window_free if session.bound else 0
        proto.window = Window(self.line, c.window, proto.send_submit, flush=proto.flush, ready=ready,
                              clock=self.reactor)
        if self.listener is not None and not was_up:
            self.listener.connector_state(self, True, "bound")
        proto.window.open()

    def submit_answered(self, proto: UpstreamProtocol, sequence: int, pdu: Pdu) -> None:
        window = proto.window
        status = pdu.status
        if status in BACKOFF:
            if not window.paused_until:
                log.info("connector %s throttled by its carrier (0x%08x): pausing %.1f s",
                         self.config.name, status, self.config.throttle_backoff)
            window.pause(self.config.throttle_backoff)
            entry = window.release(sequence)
            if entry is not None:
                entry[1].attempts += 1
                self.listener.submit_throttled(self, entry, status)
            return
        entry = window.finish(sequence)
        if entry is None:  # pragma: no cover - the session only reports our own requests
            return
        carrier_id = None
        if status == _ROK and pdu.command_id == _SUBMIT_SM_RESP:
            raw = pdu.fields.get("message_id", b"").decode("ascii", "replace")
            carrier_id = normalize_message_id(raw, self.config.id_format)
        elif not status:  # a generic_nack without a status is still a refusal
            status = Status.ESME_RUNKNOWNERR
        self.listener.submit_answered(self, entry, status, carrier_id)

    def timed_out(self, proto: UpstreamProtocol, sequence: int) -> None:
        entry = proto.window.release(sequence)
        if entry is not None:
            entry[1].attempts += 1
            self.listener.submit_timed_out(self, entry)

    def lost(self, proto: UpstreamProtocol, reason: str) -> None:
        if proto in self.protocols:
            self.protocols.remove(proto)
        back = proto.window.close() if proto.window is not None else []
        for item in back:
            item.attempts += 1
        if proto in self.links:
            self.links.remove(proto)
            self.up = any(p.window is not None for p in self.links)
            if proto.window is not None and not self.up:
                self.last_error = reason if not self._stopping else self.last_error
                if self.listener is not None:
                    self.listener.connector_state(self, False, reason)
        log.log(logging.INFO if self._stopping else logging.WARNING,
                "connector %s lost a session: %s (%d in flight back to the head of the queue)",
                self.config.name, reason, len(back))
