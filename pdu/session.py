"""One SMPP 3.4 session as a pure state machine (the h11 idea applied to SMPP).

Bytes go in with :meth:`Session.receive`, events come out; requests and
responses go in with :meth:`Session.send_request` / :meth:`Session.respond`,
bytes come out of :meth:`Session.data_to_send`. No sockets, no reactor: the
clock is a callable, so tests drive every timer with ``twisted.internet.task.Clock``
or a plain float.

The session answers by itself everything that is protocol, not business:
enquire_link, unbind, header errors (generic_nack), requests out of state
(the request's own ``*_resp`` with ``ESME_RINVBNDSTS``/``ESME_RALYBND``),
malformed bodies (the field's status), requests over the inbound window
(``ESME_RTHROTTLED``). What remains for the application is binds, the message
operations and the responses to its own requests.

The same class serves both ends (as smppex does): ``Side.SMSC`` for the hub's
listener and the simulator, ``Side.ESME`` for the hub's upstream connectors
and the load client.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable, MutableMapping
from enum import Enum, IntEnum

from staffetta.pdu.codec import (
    HEADER_LEN,
    DecodeError,
    Pdu,
    decode,
    decode_frame,
    encode,
    response_octets,
    u8,
    unpack_header,
)
from staffetta.pdu.constants import (
    BIND_COMMANDS,
    RESPONSE_BIT,
    Command,
    Status,
    Tag,
)
from staffetta.pdu.framing import DEFAULT_MAX_LENGTH, Framer, FramingError

log = logging.getLogger(__name__)

#: A frame's command_id, read in place (send_encoded).
_unpack_command_id = struct.Struct(">I").unpack_from

MAX_SEQUENCE = 0x7FFFFFFF


class Side(Enum):
    SMSC = "smsc"
    ESME = "esme"


class State(IntEnum):
    OPEN = 0
    BOUND_TX = 1
    BOUND_RX = 2
    BOUND_TRX = 3
    UNBINDING = 4  # we sent unbind and wait for unbind_resp
    CLOSED = 5
    #: The peer unbound and we answered, but it still owes responses to our
    #: requests: they are honoured until the last one comes, times out, or the
    #: peer closes (3.4 §2.9: an unbind ends the session, not what was in flight).
    UNBOUND = 6


BIND_STATE = {
    Command.BIND_TRANSMITTER: State.BOUND_TX,
    Command.BIND_RECEIVER: State.BOUND_RX,
    Command.BIND_TRANSCEIVER: State.BOUND_TRX,
}
_BOUND = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})
_CAN_RECEIVE = frozenset({State.BOUND_RX, State.BOUND_TRX})

# The members the per-PDU paths compare against, as module globals: on Python
# 3.11 every read of an Enum class attribute goes through EnumType.__getattr__'s
# hook (~120 ns, a global ~10 ns). At ~60 such reads a message that was 6% of
# the hub's reactor thread (docs/benchmarks.md); 3.12 dropped the hook.
_CLOSED = State.CLOSED
_UNBOUND = State.UNBOUND
_SMSC = Side.SMSC
_ENQUIRE_LINK = Command.ENQUIRE_LINK
_UNBIND = Command.UNBIND
_GENERIC_NACK = Command.GENERIC_NACK
_ALERT_NOTIFICATION = Command.ALERT_NOTIFICATION
_OUTBIND = Command.OUTBIND

_TX_OPS = frozenset(
    {
        Command.SUBMIT_SM,
        Command.SUBMIT_MULTI,
        Command.QUERY_SM,
        Command.CANCEL_SM,
        Command.REPLACE_SM,
        Command.DATA_SM,
    }
)
#: Application requests an SMSC accepts from an ESME, per state (3.4 Table 2-1,
#: with the decisions of docs/conformance.md: data_sm accepted from RX,
#: replace_sm accepted from TRX).
_SMSC_ACCEPTS = {
    State.OPEN: frozenset(),
    State.BOUND_TX: _TX_OPS,
    State.BOUND_RX: frozenset({Command.DATA_SM}),
    State.BOUND_TRX: _TX_OPS,
}
#: Requests an ESME accepts from an SMSC once bound.
_ESME_ACCEPTS_BOUND = frozenset({Command.DELIVER_SM, Command.DATA_SM})
#: Requests the session never serves in the given role, answered RINVCMDID.
_SMSC_NEVER = frozenset({Command.DELIVER_SM, Command.OUTBIND, Command.ALERT_NOTIFICATION})
_ESME_NEVER = _TX_OPS - {Command.DATA_SM} | BIND_COMMANDS
#: Requests with no response PDU of their own.
_NO_RESPONSE = frozenset({Command.OUTBIND, Command.ALERT_NOTIFICATION, Command.GENERIC_NACK})
#: Every 3.4 request id, as plain ints (generic_nack is not a request).
_KNOWN_REQUESTS = frozenset(int(c) for c in Command if not c & RESPONSE_BIT)
#: Our requests that do not count against the window.
_UNWINDOWED = frozenset({Command.ENQUIRE_LINK, Command.UNBIND})
#: Per state, the requests that go straight to the application (after the
#: inbound window and the body check): the ones the screening in
#: ``Session._screen`` would let through, known in one set lookup. Binds are
#: not here: they have their own conditions.
_SMSC_PASS = {state: _SMSC_ACCEPTS.get(state, frozenset()) - _SMSC_NEVER for state in State}
_ESME_PASS = {state: (_ESME_ACCEPTS_BOUND if state in _BOUND else frozenset()) - _ESME_NEVER for state in State}


class Timers:
    """Session timers in seconds (3.4 §7.2); defaults follow smppex/SMPPSim practice."""

    __slots__ = ("session_init", "enquire_link", "response", "inactivity")

    def __init__(
        self,
        session_init: float = 10.0,
        enquire_link: float = 30.0,
        response: float = 30.0,
        inactivity: float = 300.0,
    ) -> None:
        self.session_init = session_init
        self.enquire_link = enquire_link
        self.response = response
        self.inactivity = inactivity


# ------------------------------------------------------------------------- events


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        vals = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({vals})"


class RequestReceived(Event):
    """A request for the application: answer it with :meth:`Session.respond`."""

    __slots__ = ("pdu",)

    def __init__(self, pdu: Pdu) -> None:
        self.pdu = pdu


class Outstanding:
    """One of our requests awaiting its response (cloudhopper's window entry)."""

    __slots__ = ("command_id", "sequence", "context", "deadline", "pdu")

    def __init__(self, command_id: int, sequence: int, context, deadline: float, pdu: Pdu):
        self.command_id = command_id
        self.sequence = sequence
        self.context = context
        self.deadline = deadline
        self.pdu = pdu

    def __repr__(self) -> str:
        return f"Outstanding(0x{self.command_id:08x}, seq={self.sequence}, ctx={self.context!r})"


class ResponseReceived(Event):
    """The response to one of our requests (also a generic_nack answering it)."""

    __slots__ = ("pdu", "request")

    def __init__(self, pdu: Pdu, request: Outstanding) -> None:
        self.pdu = pdu
        self.request = request


class RequestTimedOut(Event):
    """No response within the response timer: the request counts as not processed."""

    __slots__ = ("request",)

    def __init__(self, request: Outstanding) -> None:
        self.request = request


class AlertReceived(Event):
    """A request that has no response (alert_notification to an ESME)."""

    __slots__ = ("pdu",)

    def __init__(self, pdu: Pdu) -> None:
        self.pdu = pdu


class Closing(Event):
    """The session is over: flush what is queued, then close the transport.

    ``pending`` are our requests that never got a response; they were not
    processed by the peer and must be re-queued by the application.
    """

    __slots__ = ("reason", "pending")

    def __init__(self, reason: str, pending: list[Outstanding]) -> None:
        self.reason = reason
        self.pending = pending


class ProtocolViolation(Event):
    """The peer broke a rule; we answered (or dropped) it. For logs and metrics."""

    __slots__ = ("command_id", "sequence", "status", "reason")

    def __init__(self, command_id: int, sequence: int, status: int, reason: str) -> None:
        self.command_id = command_id
        self.sequence = sequence
        self.status = status
        self.reason = reason


# ------------------------------------------------------------------------ session


class Session:
    def __init__(
        self,
        side: Side,
        *,
        clock: Callable[[], float],
        timers: Timers | None = None,
        window: int = 10,
        inbound_window: int = 100,
        max_length: int = DEFAULT_MAX_LENGTH,
        pdu_counts: MutableMapping[tuple[bool, int, int], int] | None = None,
        hold_when_full: bool = False,
    ) -> None:
        self.side = side
        self._pass = _SMSC_PASS if side == _SMSC else _ESME_PASS
        self.clock = clock
        self.timers = timers or Timers()
        self._windowed = 0
        #: Free slots of the window: kept up to date where ``_windowed`` moves,
        #: as a plain attribute, because windows read it at every pump.
        self.window_free = window
        self.window = window
        self.inbound_window = inbound_window
        #: A request that finds the inbound window full: answered ESME_RTHROTTLED
        #: (False), or held with everything after it until a slot frees (True),
        #: while the Twisted edge stops reading the socket (TCP back-pressure).
        #: Carriers get the second: many treat a refused deliver_sm as final.
        self.hold_when_full = hold_when_full
        self._held: deque[bytes] = deque()
        self.state = State.OPEN
        self.interface_version = 0x34
        self.system_id: bytes = b""
        self.bind_pdu: Pdu | None = None
        self.outstanding: dict[int, Outstanding] = {}
        self._inbound: set[int] = set()
        self._framer = Framer(max_length)
        self._out: list[bytes] = []
        self._next_seq = 1
        now = clock()
        self.opened_at = now
        self.last_received = now
        self.last_transaction = now
        self._enquire_seq: int | None = None
        # (incoming, command_id, status) -> count, bumped in place for every PDU
        # (a defaultdict(int)): metrics without a call per PDU.
        self._pdu_counts = pdu_counts

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        # What depends on the state only is worked out here, once per change,
        # rather than on each read: windows ask ``bound``/``can_receive`` at
        # every pump, and each request needs the set it may pass by.
        self._state = state
        #: Whether the session is bound (any bind type).
        self.bound = state in _BOUND
        #: Whether we may send deliver_sm/data_sm to this peer (SMSC side).
        self.can_receive = state in _CAN_RECEIVE
        self._passing = self._pass[state]

    @property
    def window(self) -> int:
        """Our requests the peer takes at a time (the caller respects it, see :attr:`window_free`)."""
        return self._window

    @window.setter
    def window(self, window: int) -> None:
        self._window = window
        self.window_free = window - self._windowed

    # ------------------------------------------------------------------- output

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _emit(self, pdu: Pdu) -> None:
        if self.interface_version < 0x34 and pdu.tlvs:
            pdu.tlvs = {}  # never send TLVs to a v3.3 peer
        self._out.append(encode(pdu))
        if self._pdu_counts is not None:
            self._pdu_counts[(False, pdu.command_id, pdu.status)] += 1

    def send_request(
        self,
        command_id: int,
        fields: dict | None = None,
        tlvs: dict[int, bytes] | None = None,
        context=None,
    ) -> int:
        """Queue one of our requests; returns its sequence number.

        The window is the caller's to respect (check :attr:`window_free`): the
        session counts, it does not queue, so that the caller keeps order.
        """
        if self._state == _CLOSED:
            raise RuntimeError("session closed")
        seq = self._next_seq
        if seq in self.outstanding or seq >= MAX_SEQUENCE:
            seq = self._allocate_sequence()
        else:
            self._next_seq = seq + 1
        pdu = Pdu(command_id, seq, 0, fields, tlvs)
        self._emit(pdu)
        now = self.clock()
        self.outstanding[seq] = Outstanding(command_id, seq, context, now + self.timers.response, pdu)
        if command_id not in _UNWINDOWED:
            self._windowed += 1
            self.window_free -= 1
        if command_id != _ENQUIRE_LINK:
            self.last_transaction = now
        return seq

    def send_encoded(self, frame: bytes, context=None) -> int:
        """Send a request that is already encoded (sequence 0), e.g. from the outbox.

        Only the sequence number is patched, so a stored deliver_sm costs no
        re-encoding. A v3.3 peer gets it re-encoded without TLVs.
        """
        if self._state == _CLOSED:
            raise RuntimeError("session closed")
        seq = self._next_seq
        if seq in self.outstanding or seq >= MAX_SEQUENCE:
            seq = self._allocate_sequence()
        else:
            self._next_seq = seq + 1
        (command_id,) = _unpack_command_id(frame, 4)
        if self.interface_version < 0x34:
            pdu = decode(frame)
            pdu.sequence = seq
            self._emit(pdu)
        else:
            pdu = None
            self._out.append(frame[:12] + seq.to_bytes(4, "big") + frame[16:])
            if self._pdu_counts is not None:
                self._pdu_counts[(False, command_id, 0)] += 1
        now = self.clock()
        self.outstanding[seq] = Outstanding(command_id, seq, context, now + self.timers.response, pdu)
        self._windowed += 1
        self.window_free -= 1
        self.last_transaction = now
        return seq

    def _allocate_sequence(self) -> int:
        """The next free sequence number, skipping those still outstanding and wrapping at 2^31-1.

        The send paths inline the common case (the next number is free and not
        the last); this is the rest.
        """
        seq = self._next_seq
        while seq in self.outstanding:
            seq = seq + 1 if seq < MAX_SEQUENCE else 1
        self._next_seq = seq + 1 if seq < MAX_SEQUENCE else 1
        return seq

    def respond(
        self,
        request: Pdu,
        status: int = 0,
        fields: dict | None = None,
        tlvs: dict[int, bytes] | None = None,
    ) -> None:
        """Answer a :class:`RequestReceived`; a late answer after close is dropped."""
        sequence = request.sequence
        self._inbound.discard(sequence)
        if self._state == _CLOSED:
            return
        command_id = request.command_id | RESPONSE_BIT
        if tlvs and self.interface_version < 0x34:
            tlvs = None  # never send TLVs to a v3.3 peer
        self._out.append(response_octets(command_id, sequence, status, fields, tlvs))
        if self._pdu_counts is not None:
            self._pdu_counts[(False, command_id, status)] += 1

    def forget(self, request: Pdu) -> None:
        """Never answer this request, and free its inbound slot (the simulator's lost submit)."""
        self._inbound.discard(request.sequence)

    def accept_bind(self, request: Pdu, system_id: bytes) -> None:
        """Bind succeeded: move to the bound state and answer with our system_id."""
        self._inbound.discard(request.sequence)
        self.state = BIND_STATE[request.command_id]
        self.interface_version = request.fields.get("interface_version", 0x34)
        self.system_id = request.fields.get("system_id", b"")
        # Kept for what the bind asked (address_range, ton/npi), not its password.
        request.fields["password"] = b""
        self.bind_pdu = request
        tlvs = {Tag.sc_interface_version: u8(0x34)} if self.interface_version >= 0x34 else None
        self._emit(
            Pdu(request.command_id | RESPONSE_BIT, request.sequence, 0, {"system_id": system_id}, tlvs)
        )

    def reject_bind(self, request: Pdu, status: int) -> list[Event]:
        """Bind refused: header-only response, then close (our DECIDE, §3)."""
        self.respond(request, status)
        return [self._close(f"bind refused: 0x{status:08x}")]

    def unbind(self) -> None:
        """Start our own unbind; the peer's unbind_resp (or the timer) closes."""
        if self._state in _BOUND:
            self.send_request(Command.UNBIND)
            self.state = State.UNBINDING

    def bind(
        self,
        command_id: int,
        system_id: bytes,
        password: bytes,
        system_type: bytes = b"",
        addr_ton: int = 0,
        addr_npi: int = 0,
        address_range: bytes = b"",
    ) -> int:
        """ESME side: send a bind request; the state moves on its ROK response."""
        return self.send_request(
            command_id,
            {
                "system_id": system_id,
                "password": password,
                "system_type": system_type,
                "interface_version": 0x34,
                "addr_ton": addr_ton,
                "addr_npi": addr_npi,
                "address_range": address_range,
            },
        )

    def close(self, reason: str = "closed") -> Closing:
        """The transport is gone (or we drop it): give back what was in flight."""
        return self._close(reason)

    def _close(self, reason: str) -> Closing:
        pending = list(self.outstanding.values())
        self.outstanding.clear()
        self._windowed = 0
        self.window_free = self._window
        self._inbound.clear()
        self._held.clear()
        self.state = State.CLOSED
        return Closing(reason, [p for p in pending if p.command_id not in _UNWINDOWED])

    # -------------------------------------------------------------------- input

    def receive(self, data: bytes) -> list[Event]:
        if self._state == _CLOSED:
            return []
        events: list[Event] = []
        now = self.clock()  # one read for the whole chunk: its frames arrived together
        try:
            frames = self._framer.feed(data)
        except FramingError as exc:
            for frame in exc.frames:
                self._handle_frame(frame, events, now)
                if self._state == _CLOSED:
                    return events
            self._emit(Pdu(Command.GENERIC_NACK, exc.sequence, Status.ESME_RINVCMDLEN))
            events.append(
                ProtocolViolation(0, exc.sequence, Status.ESME_RINVCMDLEN, str(exc))
            )
            events.append(self._close(f"framing: {exc}"))
            return events
        held = self._held
        handle = self._handle_frame
        for frame in frames:
            if held:  # holding: what follows waits behind it, in stream order
                held.append(frame)
            elif handle(frame, events, now):
                held.append(frame)
            elif self._state == _CLOSED:
                break
        return events

    @property
    def holding(self) -> bool:
        """Frames wait for a free inbound slot (``hold_when_full``): stop reading the peer."""
        return bool(self._held)

    def release(self) -> list[Event]:
        """Handle held frames while the inbound window has room; call it after answering.

        Returns the events of the frames it handled; :attr:`holding` stays true
        while the head still finds the window full.
        """
        events: list[Event] = []
        held = self._held
        now = self.clock()
        while held and self._state != _CLOSED:
            if self._handle_frame(held[0], events, now):
                break
            held.popleft()
        if self._state == _CLOSED:
            held.clear()
        return events

    def _handle_frame(self, frame: bytes, events: list[Event], now: float) -> bool | None:
        """Handle one whole frame received at ``now``; True when it must be held for a free inbound slot."""
        self.last_received = now
        _, command_id, status, sequence = unpack_header(frame)
        if command_id & RESPONSE_BIT:
            self._handle_response(frame, command_id, status, sequence, events)
            return
        if self._pdu_counts is not None:
            self._pdu_counts[(True, command_id, 0)] += 1
        if command_id in self._passing:
            # The common case (submit_sm, deliver_sm in a bound state): nothing
            # of the screening applies, one set lookup says so.
            self.last_transaction = now
        elif self._screen(command_id, sequence, frame, now, events):
            return
        if len(self._inbound) >= self.inbound_window:  # binds too: they cost the most
            if self.hold_when_full:
                if self._pdu_counts is not None:  # counted again when it is handled
                    self._pdu_counts[(True, command_id, 0)] -= 1
                return True
            self._reject(command_id, sequence, Status.ESME_RTHROTTLED, events, "inbound window full")
            return False
        try:
            pdu = decode_frame(frame, command_id, status, sequence)
        except DecodeError as exc:
            if exc.header_error:
                self._nack(command_id, sequence, exc.status, events, str(exc))
            else:
                self._reject(command_id, sequence, exc.status, events, str(exc))
            return
        self._inbound.add(sequence)
        events.append(RequestReceived(pdu))

    def _screen(self, command_id: int, sequence: int, frame: bytes, now: float, events: list[Event]) -> bool:
        """Every rule a request meets before the application; True when it is answered (or dropped) here.

        False lets it on (a bind that may proceed): the inbound window and the
        body check come next. Requests in ``_SMSC_PASS``/``_ESME_PASS`` for the
        state skip this (they would pass every test).
        """
        if command_id not in _KNOWN_REQUESTS:  # a set of ints: no enum built per frame
            self._nack(command_id, sequence, Status.ESME_RINVCMDID, events, "unknown command_id")
            return True
        # Protocol-level requests first: these need no body.
        if command_id == _ENQUIRE_LINK:
            self._emit(Pdu(Command.ENQUIRE_LINK_RESP, sequence))
            return True
        self.last_transaction = now
        state = self._state
        if command_id == _UNBIND:
            if state in _BOUND or state == State.UNBINDING:
                self._emit(Pdu(Command.UNBIND_RESP, sequence))
                if self._windowed:
                    self.state = _UNBOUND  # accept nothing new; wait for what we are owed
                else:
                    events.append(self._close("unbound by peer"))
            else:
                self._reject(command_id, sequence, Status.ESME_RINVBNDSTS, events, "unbind before bind")
            return True
        never = _SMSC_NEVER if self.side == _SMSC else _ESME_NEVER
        if command_id in never:
            if command_id in _NO_RESPONSE:
                self._nack(command_id, sequence, Status.ESME_RINVCMDID, events, "not served")
            else:
                self._reject(command_id, sequence, Status.ESME_RINVCMDID, events, "not served")
            return True
        if command_id in BIND_COMMANDS:  # SMSC side only, ESME side refused above
            if state != State.OPEN:
                self._reject(command_id, sequence, Status.ESME_RALYBND, events, "already bound")
                return True
            if self._inbound:  # in OPEN only a bind reaches the application: one at a time
                self._reject(command_id, sequence, Status.ESME_RALYBND, events, "bind in progress")
                return True
        elif command_id == _ALERT_NOTIFICATION:  # ESME side
            try:
                pdu = decode(frame)
            except DecodeError as exc:
                events.append(ProtocolViolation(command_id, sequence, exc.status, str(exc)))
                return True
            events.append(AlertReceived(pdu))
            return True
        elif command_id == _OUTBIND:  # ESME side: we never wait for outbinds
            self._nack(command_id, sequence, Status.ESME_RINVCMDID, events, "outbind not supported")
            return True
        else:
            if self.side == _SMSC:
                allowed = _SMSC_ACCEPTS.get(state, frozenset())
            else:
                allowed = _ESME_ACCEPTS_BOUND if state in _BOUND else frozenset()
            if command_id not in allowed:
                self._reject(command_id, sequence, Status.ESME_RINVBNDSTS, events, f"not allowed in {state.name}")
                return True
        return False

    def _handle_response(self, frame: bytes, command_id: int, status: int, sequence: int, events: list) -> None:
        if self._pdu_counts is not None:
            self._pdu_counts[(True, command_id, status)] += 1
        outstanding = self.outstanding
        request = outstanding.get(sequence)
        if request is not None and request.command_id | RESPONSE_BIT == command_id:
            pass  # the common case: the response to the request of that sequence
        elif command_id == _GENERIC_NACK:
            if request is None and sequence == 0 and len(outstanding) == 1:
                # A nack without sequence can only answer our single request.
                request = next(iter(outstanding.values()))
        else:
            request = None
        if request is None:
            events.append(
                ProtocolViolation(command_id, sequence, status, "response to nothing outstanding: dropped")
            )
            return
        try:
            pdu = decode_frame(frame, command_id, status, sequence)
        except DecodeError as exc:
            # A response we cannot read still ends the request, as a failure.
            pdu = Pdu(command_id, sequence, status or Status.ESME_RSYSERR)
            events.append(ProtocolViolation(command_id, sequence, exc.status, str(exc)))
        del outstanding[request.sequence]
        request_id = request.command_id
        if request_id in _UNWINDOWED:  # enquire_link or unbind
            events.append(ResponseReceived(pdu, request))
            if request_id == _ENQUIRE_LINK:
                if self._enquire_seq == request.sequence:
                    self._enquire_seq = None
            else:
                events.append(self._close("unbind answered"))
            return
        self._windowed -= 1
        self.window_free += 1
        if self._state == _UNBOUND and not self._windowed:
            events.append(ResponseReceived(pdu, request))
            events.append(self._close("unbound by peer"))
            return
        if request_id in BIND_COMMANDS and pdu.status == 0 and pdu.command_id != _GENERIC_NACK:
            self.state = BIND_STATE[request_id]
            self.system_id = pdu.fields.get("system_id", b"")
            v = pdu.tlvs.get(Tag.sc_interface_version)
            self.interface_version = v[0] if v else 0x34
        events.append(ResponseReceived(pdu, request))

    def _reject(self, command_id: int, sequence: int, status: int, events: list, reason: str) -> None:
        self._emit(Pdu(command_id | RESPONSE_BIT, sequence, status))
        events.append(ProtocolViolation(command_id, sequence, status, reason))

    def _nack(self, command_id: int, sequence: int, status: int, events: list, reason: str) -> None:
        self._emit(Pdu(Command.GENERIC_NACK, sequence, status))
        events.append(ProtocolViolation(command_id, sequence, status, reason))

    # ------------------------------------------------------------------- timers

    def tick(self) -> list[Event]:
        """Run the timers; call it about once a second."""
        if self._state == _CLOSED:
            return []
        now = self.clock()
        t = self.timers
        events: list[Event] = []
        if self._state == State.OPEN and self.side == _SMSC and not self._inbound:
            if now - self.opened_at >= t.session_init:
                return [self._close("session_init_timer expired")]
        if self.outstanding:
            for req in [r for r in self.outstanding.values() if r.deadline <= now]:
                if req.command_id in (Command.ENQUIRE_LINK, Command.UNBIND) or (
                    req.command_id in BIND_COMMANDS
                ):
                    return [self._close(f"no response to {Command(req.command_id).name.lower()}")]
                del self.outstanding[req.sequence]
                self._windowed -= 1
                self.window_free += 1
                events.append(RequestTimedOut(req))
            if self._state == _UNBOUND and not self._windowed:
                events.append(self._close("unbound by peer"))
                return events
        if self._state in _BOUND:
            if now - self.last_transaction >= t.inactivity:
                self.unbind()
                events.append(ProtocolViolation(0, 0, 0, "inactivity_timer expired: unbinding"))
            elif self._enquire_seq is None and now - self.last_received >= t.enquire_link:
                self._enquire_seq = self.send_request(Command.ENQUIRE_LINK)
        return events


__all__ = [
    "HEADER_LEN",
    "AlertReceived",
    "Closing",
    "Outstanding",
    "ProtocolViolation",
    "RequestReceived",
    "RequestTimedOut",
    "ResponseReceived",
    "Session",
    "Side",
    "State",
    "Timers",
]
