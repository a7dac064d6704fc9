"""The bundled SMSC simulator: a scriptable upstream carrier for the hub's tests and benchmarks.

It is the hub's test oracle (conformance §26), so it behaves like a plain,
correct SMSC by default and misbehaves only when asked to: per-destination
scripts (reject, never answer, force an outcome or a delay), on-demand fault
fixtures with exact bytes, and switchable receipt formats.

Why it is built the way it is:

* It imports only :mod:`pdu` (and Twisted): it stands in for a foreign system,
  so it must not share a single rule with the hub it is testing.
* The session state machine is :class:`pdu.session.Session`; this module only
  decides *business*: binds, message ids, receipts, MO.
* The hub benchmark pushes 5-10k msg/s through it with receipts, so every
  receipt waits in one heap driven by one reactor timer (never one
  ``callLater`` per message), receipt texts are built from a small template
  cache, and output is written once per read or per timer firing.
* Nothing is lost while the simulator runs: a receipt or MO for a system_id
  with no RX/TRX bind waits in a bounded in-memory queue and goes out when one
  binds; deliver_sm left unanswered by a session that drops or times out is
  queued again, at the head, in order. The queues are :class:`pdu.window.Line`
  (one per system_id, one for MO to anyone) and every receiving session has a
  :class:`pdu.window.Window` on its system_id's line and on the anyone line:
  the same window object as the hub's.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import uuid
from bisect import bisect_right
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IListeningPort

from staffetta.pdu import text as textmod
from staffetta.pdu.codec import Pdu, pack_header
from staffetta.pdu.constants import (
    BIND_COMMANDS,
    Command,
    Status,
    Tag,
)
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.receipt import DELIVER_SM_NULL, STAT_TO_STATE, format_receipt, receipt_fields
from staffetta.pdu.session import Outstanding, Side, Timers
from staffetta.pdu.window import Line, Window
from staffetta.simulator.faults import Answer, FaultPlan, Faults

log = logging.getLogger(__name__)

ID_FORMATS = ("decimal", "hex", "uuid")
RECEIPT_FORMATS = ("strict", "12digit", "Text", "tlv_only")

#: Final stat words an outcome mix may name (ENROUTE is not final).
FINAL_STATS = tuple(s for s in STAT_TO_STATE if s != "ENROUTE")

#: ``err:`` code (and network_error_code GSM code) per outcome. Loosely the
#: GSM MAP error a real network would give: 1 unknown subscriber, 27 absent
#: subscriber, 13 call barred, 9 illegal subscriber, 34 system failure.
DEFAULT_ERR: dict[str, int] = {
    "DELIVRD": 0,
    "ACCEPTD": 0,
    "UNDELIV": 1,
    "EXPIRED": 27,
    "REJECTD": 13,
    "DELETED": 9,
    "UNKNOWN": 34,
}
#: Outcomes that are not a delivery: they carry network_error_code and are the
#: ones a "failure only" registered_delivery (bits 1-0 == 10) asks for.
_SUCCESS_STATS = frozenset({"DELIVRD"})

#: deliver_sm_resp statuses after which a receipt is offered again later
#: (conformance §16: temporary application error, throttled, queue full).
RETRY_STATUSES = frozenset({Status.ESME_RX_T_APPN, Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL})

#: Fault fixtures :meth:`Carrier.fault` can send (see :func:`fault_bytes`).
FAULT_KINDS = (
    "short_length",
    "long_length",
    "unknown_command",
    "generic_nack_noseq",
    "unbind",
    "error_resp_with_body",
)
#: Sequence number of unsolicited fault PDUs: the top of the range, which our
#: own session reaches only after 2**31 requests, so the peer's answer to a
#: fault can never be mistaken for the answer to a real deliver_sm.
FAULT_SEQUENCE = 0x7FFFFFFF
#: command_id of the 'unknown_command' fixture: unassigned in SMPP 3.4 (§5.1.2.1).
UNKNOWN_COMMAND_ID = 0x0000001F
#: Answers a script may give to a submit_sm instead of a submit_sm_resp.
SCRIPT_ANSWERS = ("generic_nack_noseq", "error_resp_with_body")

#: The heap is looked at no more often than this (seconds): at 10k receipts/s
#: one firing sends ~10 receipts instead of one timer per receipt.
_GRAIN = 0.002
_TEMPLATE_CACHE_MAX = 4096

# Plain ints for the hot path: an IntEnum member costs a metaclass lookup per use.
_T_UMR = int(Tag.user_message_reference)
_T_PAYLOAD = int(Tag.message_payload)
_DELIVER_SM = Command.DELIVER_SM

def fault_bytes(kind: str, sequence: int = FAULT_SEQUENCE) -> bytes:
    """The exact octets of an unsolicited fault fixture ('unbind' excepted: it is a real unbind).

    * ``short_length``: a header announcing command_length 15 (below the
      16-octet header) - the peer must generic_nack ESME_RINVCMDLEN and close.
    * ``long_length``: command_length 0xFFFFFFFF - same answer, without
      buffering 4 GiB first.
    * ``unknown_command``: a well-formed header with command_id 0x0000001F -
      generic_nack ESME_RINVCMDID with our sequence number.
    * ``generic_nack_noseq``: generic_nack ESME_RSYSERR with sequence 0; an
      ESME with a single request outstanding must take it as that request's
      answer (conformance §25).
    * ``error_resp_with_body``: a submit_sm_resp with ESME_RSYSERR and a
      one-octet body (a lone NUL), which 3.4 says to tolerate and ignore.
    """
    if kind == "short_length":
        return pack_header(0x0000000F, Command.ENQUIRE_LINK, 0, sequence)
    if kind == "long_length":
        return pack_header(0xFFFFFFFF, Command.ENQUIRE_LINK, 0, sequence)
    if kind == "unknown_command":
        return pack_header(16, UNKNOWN_COMMAND_ID, 0, sequence)
    if kind == "generic_nack_noseq":
        return pack_header(16, Command.GENERIC_NACK, Status.ESME_RSYSERR, 0)
    if kind == "error_resp_with_body":
        return pack_header(17, Command.SUBMIT_SM_RESP, Status.ESME_RSYSERR, sequence) + b"\x00"
    raise ValueError(f"unknown fault kind {kind!r} (expected one of {', '.join(FAULT_KINDS)})")


class QueueFull(Exception):
    """An MO was pushed out of the bounded queue before any RX/TRX session took it."""


class Rule:
    """A script rule for destinations starting with ``prefix`` (longest prefix wins)."""

    __slots__ = ("prefix", "submit_status", "stat", "err", "delay", "respond", "answer")

    def __init__(
        self,
        prefix: str,
        submit_status: int = 0,
        stat: str | None = None,
        err: int | None = None,
        delay: float | None = None,
        respond: bool = True,
        answer: str | None = None,
    ) -> None:
        self.prefix = prefix
        self.submit_status = submit_status
        self.stat = stat
        self.err = err
        self.delay = delay
        self.respond = respond
        self.answer = answer

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class _Outbound:
    """A deliver_sm waiting to go out: a receipt (built lazily when due) or an MO.

    Receipts keep what they need to build their text and are built only when
    due, so ``done date`` is the real send time; MO carry their fields ready.
    """

    __slots__ = (
        "key",
        "fields",
        "tlvs",
        "deferred",
        "message_id",
        "orig",
        "submit_time",
        "stat",
        "err",
        "umr",
        "text",
    )

    # Receipt attributes (message_id ... text) are set by Carrier._maybe_receipt
    # only: one object per message at 10k/s, so no defaults assigned twice.
    message_id: bytes
    orig: dict[str, Any] | None
    submit_time: float
    stat: str
    err: int
    umr: bytes | None
    text: bytes  # the original's first octets, for the receipt's text:

    def __init__(self, key: bytes | None,
                 fields: dict[str, Any] | None = None, tlvs: dict[int, bytes] | None = None) -> None:
        self.key = key  # system_id of the owner, None = any receiving session
        self.fields = fields  # None until a receipt is built
        self.tlvs = tlvs
        self.deferred: defer.Deferred[int] | None = None  # MO only


class CarrierProtocol(SessionProtocol):
    """One ESME connection to the simulated carrier (the SMSC side of the session)."""

    side = Side.SMSC

    def __init__(self, carrier: Carrier, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.carrier = carrier
        #: system_id once bound (the owner key of receipts and MO).
        self.key: bytes | None = None
        #: Fires once the connection is gone (stop_sessions/close wait on it).
        self.lost: defer.Deferred[None] = defer.Deferred()
        #: Once bound to receive: owner key -> this session's window on that key's
        #: line (its own system_id's, and None: MO for any receiving session).
        self.windows: dict[bytes | None, Window[_Outbound]] = {}

    # ----------------------------------------------------------- transport side

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            set_nodelay(True)  # request/response traffic: Nagle only adds latency
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        super().connectionLost(reason)
        carrier = self.carrier
        if self in carrier.sessions:
            carrier.sessions.remove(self)
        if not self.lost.called:
            self.lost.callback(None)

    def write_raw(self, data: bytes) -> None:
        """Write octets outside the session (fault fixtures), after anything it has queued."""
        if self.transport is not None:
            self.transport.write(self.session.data_to_send() + data)

    # ------------------------------------------------------------------- hooks

    def on_connected(self) -> None:
        self.carrier.sessions.append(self)

    def on_request(self, pdu: Pdu) -> None:
        carrier = self.carrier
        cid = pdu.command_id
        if cid == Command.SUBMIT_SM or cid == Command.DATA_SM:
            carrier._submit(self, pdu)
        elif cid in BIND_COMMANDS:
            carrier._bind(self, pdu)
        elif cid == Command.SUBMIT_MULTI:
            carrier._submit_multi(self, pdu)
        elif cid == Command.QUERY_SM:
            # The simulator keeps no per-message state after the receipt.
            self.session.respond(pdu, Status.ESME_RQUERYFAIL)
        elif cid == Command.CANCEL_SM:
            self.session.respond(pdu, Status.ESME_RCANCELFAIL)
        elif cid == Command.REPLACE_SM:
            self.session.respond(pdu, Status.ESME_RREPLACEFAIL)
        else:
            self.session.respond(pdu, Status.ESME_RINVCMDID)

    def send_deliver(self, item: _Outbound) -> int:
        """A window's send: one deliver_sm on the session (flushed once per burst)."""
        seq = self.session.send_request(_DELIVER_SM, item.fields, item.tlvs, item)
        if item.deferred is None:
            self.carrier.stats["receipts_sent"] += 1
        else:
            self.carrier.stats["mo_sent"] += 1
        return seq

    def receiving(self) -> int:
        """Room for deliver_sm: the session's window is shared by this session's two windows."""
        s = self.session
        return s.window_free if s.can_receive else 0

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        item = request.context
        if item is not None:
            status = pdu.status
            if pdu.command_id == Command.GENERIC_NACK and not status:
                status = Status.ESME_RUNKNOWNERR
            self.carrier._answered(self, request.sequence, item, status)

    def on_timeout(self, request: Outstanding) -> None:
        item = request.context
        w = self.windows.get(item.key) if item is not None else None
        if w is not None:
            w.retry(request.sequence)  # back to the head of its line, in order

    def on_closed(self, reason: str, pending: list[Outstanding]) -> None:
        self.carrier._closed(self, reason)


class Carrier(protocol.ServerFactory):
    """The simulated SMSC: a factory of :class:`CarrierProtocol` plus the shared state.

    ``reactor`` provides ``callLater``/``seconds`` (a real reactor, or a
    ``twisted.internet.task.Clock`` in tests that drive the receipt timer by
    hand) and, for :meth:`listen`, ``listenTCP``.
    """

    noisy = False
    protocol = CarrierProtocol  # type: ignore[assignment]

    def __init__(
        self,
        reactor: Any,
        *,
        dlr_delay: float = 1.0,
        outcomes: dict[str, float] | None = None,
        id_format: str = "decimal",
        receipt_format: str = "strict",
        credentials: dict[bytes, bytes] | None = None,
        seed: int | None = None,
        window: int = 100,
        inbound_window: int = 1000,
        system_id: bytes = b"staffsim",
        timers: Timers | None = None,
        queue_limit: int = 100_000,
        retry_delay: float = 5.0,
        faults: Faults | None = None,
        record: bool = False,
        record_limit: int = 1_000_000,
    ) -> None:
        if id_format not in ID_FORMATS:
            raise ValueError(f"id_format must be one of {ID_FORMATS}, not {id_format!r}")
        if receipt_format not in RECEIPT_FORMATS:
            raise ValueError(f"receipt_format must be one of {RECEIPT_FORMATS}, not {receipt_format!r}")
        if dlr_delay < 0:
            raise ValueError("dlr_delay must not be negative")
        self.reactor = reactor
        self.dlr_delay = dlr_delay
        self.id_format = id_format
        self.receipt_format = receipt_format
        self.credentials = (
            None if credentials is None else {_b(k): _b(v) for k, v in credentials.items()}
        )
        self.window = window
        self.inbound_window = inbound_window
        self.system_id = system_id
        self.timers = timers
        self.queue_limit = queue_limit
        self.retry_delay = retry_delay
        self.rng = random.Random(seed)
        #: The misbehaviour on submits (simulator/faults.py); None: a plain SMSC, the fast path.
        self.faults = faults
        self._plan = None if faults is None else FaultPlan(faults, seed)
        #: destination -> short_message (or message_payload) of each submit accepted for it,
        #: in the order the carrier took them (None unless ``record``); at most ``record_limit``.
        self.seen: dict[bytes, list[bytes]] | None = {} if record else None
        #: Called with (system_id of the session, submit_sm) for each submit accepted:
        #: the handsets' conversation mode (simulator/handsets.py) replies from it.
        self.on_accept: Any = None
        self.record_limit = record_limit
        self.set_outcomes(outcomes if outcomes is not None else {"DELIVRD": 1.0})

        #: Live connections, bound or not.
        self.sessions: list[CarrierProtocol] = []
        self.stats: dict[str, Any] = {
            "submits": 0,
            "submits_rejected": 0,
            "submits_unanswered": 0,
            "receipts_scheduled": 0,
            "receipts_sent": 0,
            "receipts_acked": 0,
            "receipts_refused": 0,
            "receipts_retried": 0,
            "queue_dropped": 0,
            "mo_sent": 0,
            "mo_acked": 0,
            "binds": 0,
            "bind_failures": 0,
            "faults_sent": 0,
            "throttled": 0,
            "slow": 0,
            "disconnects": 0,
            "answers_lost": 0,
            "recorded": 0,
            "outcomes": {},
        }
        self._rules: dict[str, Rule] = {}
        self._rule_lengths: list[int] = []
        # Deliver_sm waiting for a session or a window slot, per owner key (None: any).
        self._lines: dict[bytes | None, Line[_Outbound]] = {}
        # The receipt timer: one heap of (due, n, item), one DelayedCall.
        # Late submit answers (simulator/faults.py) share it as plain callables.
        self._heap: list[tuple[float, int, Any]] = []
        self._tie = itertools.count()
        self._timer: Any = None
        self._timer_due = 0.0
        self._ports: list[IListeningPort] = []
        # Message ids: a counter from a random start, so two runs (or two
        # carriers) do not hand out the same ids.
        self._counter = self.rng.randrange(10**8, 10**9)
        self._templates: dict[tuple, bytes] = {}

    # ---------------------------------------------------------------- settings

    def set_outcomes(self, outcomes: dict[str, float]) -> None:
        """Set the outcome mix: stat word -> weight (weights need not sum to 1)."""
        if not outcomes:
            raise ValueError("outcomes must name at least one stat")
        stats: list[str] = []
        cum: list[float] = []
        total = 0.0
        for stat, weight in outcomes.items():
            if stat not in FINAL_STATS:
                raise ValueError(f"unknown outcome {stat!r} (expected one of {', '.join(FINAL_STATS)})")
            weight = float(weight)
            if not weight >= 0:  # also refuses NaN
                raise ValueError(f"outcome {stat} has a negative weight")
            if weight == 0:
                continue
            total += weight
            stats.append(stat)
            cum.append(total)
        if total <= 0:
            raise ValueError("outcome weights sum to zero")
        self.outcomes = {s: float(outcomes[s]) / total for s in stats}
        self._outcome_stats = stats
        self._outcome_cum = [c / total for c in cum]

    def draw_outcome(self) -> str:
        """One outcome from the mix (seeded: the same seed gives the same sequence)."""
        stats = self._outcome_stats
        if len(stats) == 1:
            return stats[0]
        i = bisect_right(self._outcome_cum, self.rng.random())
        return stats[min(i, len(stats) - 1)]

    def script(
        self,
        prefix: str,
        *,
        submit_status: int = 0,
        stat: str | None = None,
        delay: float | None = None,
        respond: bool = True,
        err: int | None = None,
        answer: str | None = None,
    ) -> Rule:
        """Script submits whose destination starts with ``prefix`` (longest prefix wins).

        ``submit_status`` != 0 rejects the submit_sm with that status (no
        receipt); ``stat``/``err``/``delay`` force the receipt; ``respond=False``
        never answers the submit_sm (the "no response" fault); ``answer`` is
        'generic_nack_noseq' or 'error_resp_with_body' to answer with that
        fault instead of a submit_sm_resp. An empty prefix matches everything.
        """
        if stat is not None and stat not in FINAL_STATS:
            raise ValueError(f"unknown stat {stat!r} (expected one of {', '.join(FINAL_STATS)})")
        if answer is not None and answer not in SCRIPT_ANSWERS:
            raise ValueError(f"answer must be one of {SCRIPT_ANSWERS}, not {answer!r}")
        if delay is not None and delay < 0:
            raise ValueError("delay must not be negative")
        if not 0 <= submit_status <= 0xFFFFFFFF:
            raise ValueError("submit_status must fit in 32 bits")
        rule = Rule(prefix, submit_status, stat, err, delay, respond, answer)
        self._rules[prefix] = rule
        self._rule_lengths = sorted({len(p) for p in self._rules}, reverse=True)
        return rule

    def clear_scripts(self) -> None:
        self._rules.clear()
        self._rule_lengths = []

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def match(self, destination: str | bytes) -> Rule | None:
        """The rule for a destination: the longest matching prefix, or None."""
        if not self._rules:
            return None
        dest = destination.decode("latin-1") if isinstance(destination, bytes) else destination
        rules = self._rules
        for n in self._rule_lengths:
            rule = rules.get(dest[:n])
            if rule is not None and len(dest) >= n:
                return rule
        return None

    # ------------------------------------------------------------- networking

    def buildProtocol(self, addr: Any) -> CarrierProtocol:  # noqa: N802 - Twisted's name
        p = CarrierProtocol(
            self,
            clock=self.reactor,
            timers=self.timers,
            window=self.window,
            inbound_window=self.inbound_window,
        )
        p.factory = self
        return p

    @property
    def ports(self) -> list[IListeningPort]:
        """The ports :meth:`listen` opened (``ports[0].getHost().port`` after listening on 0)."""
        return list(self._ports)

    def listen(self, port: int, interface: str = "127.0.0.1") -> IListeningPort:
        """Start accepting ESMEs on ``interface:port`` (port 0: any free port)."""
        lp = self.reactor.listenTCP(port, self, interface=interface)
        self._ports.append(lp)
        if self._heap and self._timer is None:
            self._arm(self.reactor.seconds())  # listening again after close(): what is owed goes on
        return lp

    def stop_sessions(self) -> defer.Deferred[None]:
        """Drop every connection at once (an upstream crash); fires when all are gone.

        Outstanding deliver_sm are queued again, as after any drop.
        """
        waits = []
        for p in list(self.sessions):
            waits.append(p.lost)
            if p.transport is not None:
                p.transport.abortConnection()
        d = defer.gatherResults(waits, consumeErrors=True)
        d.addCallback(lambda _: None)
        return d

    def close(self) -> defer.Deferred[None]:
        """Stop listening, drop all sessions, cancel the receipt timer (tests' teardown)."""
        waits = [defer.maybeDeferred(p.stopListening) for p in self._ports]
        self._ports.clear()
        waits.append(self.stop_sessions())
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        d = defer.gatherResults(waits, consumeErrors=True)
        d.addCallback(lambda _: None)
        return d

    # ---------------------------------------------------------------- binds

    def _bind(self, proto: CarrierProtocol, pdu: Pdu) -> None:
        creds = self.credentials
        if creds is not None:
            sid = pdu.fields.get("system_id", b"")
            expected = creds.get(sid)
            status = 0
            if expected is None:
                status = Status.ESME_RINVSYSID
            elif expected != pdu.fields.get("password", b""):
                status = Status.ESME_RINVPASWD
            if status:
                self.stats["bind_failures"] += 1
                proto._dispatch(proto.session.reject_bind(pdu, status))
                return
        proto.session.accept_bind(pdu, self.system_id)
        proto.key = proto.session.system_id
        self.stats["binds"] += 1
        if proto.session.can_receive:
            for key in (proto.key, None):
                w = proto.windows[key] = Window(self._line(key), self.window, proto.send_deliver,
                                                flush=proto.flush, ready=proto.receiving, clock=self.reactor)
                w.open()

    # ---------------------------------------------------------------- submits

    def _next_id(self) -> bytes:
        fmt = self.id_format
        if fmt == "decimal":
            self._counter += 1
            return b"%d" % self._counter
        if fmt == "hex":
            self._counter += 1
            return b"%08x" % self._counter
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).encode("ascii")

    def _submit(self, proto: CarrierProtocol, pdu: Pdu) -> None:
        """submit_sm and data_sm: answer at once with our id, then maybe schedule a receipt."""
        stats = self.stats
        stats["submits"] += 1
        fields = pdu.fields
        if self._plan is not None:
            self._submit_faulty(proto, pdu, self._plan.decide(fields.get("destination_addr", b""),
                                                               self.reactor.seconds()))
            return
        rule = self.match(fields.get("destination_addr", b"")) if self._rules else None
        if rule is not None:
            if self._scripted_away(proto, pdu, rule):
                return
            if rule.submit_status:
                stats["submits_rejected"] += 1
                proto.session.respond(pdu, rule.submit_status)
                return
        self._accept(proto, pdu, rule)

    def _scripted_away(self, proto: CarrierProtocol, pdu: Pdu, rule: Rule) -> bool:
        """A script that never answers, or answers with a fault instead of a submit_sm_resp (True: done)."""
        stats = self.stats
        if not rule.respond:
            stats["submits_unanswered"] += 1
            return True
        if rule.answer is not None:
            stats["submits_rejected"] += 1
            stats["faults_sent"] += 1
            # Not a submit_sm_resp, so the session still counts the request
            # as owed: one inbound-window slot per such answer stays used.
            proto.write_raw(fault_bytes(rule.answer, pdu.sequence))
            return True
        return False

    def _accept(self, proto: CarrierProtocol, pdu: Pdu, rule: Rule | None) -> None:
        """Answer with our id, record it, and maybe schedule its receipt (``rule`` may force one)."""
        mid = self._next_id()
        proto.session.respond(pdu, 0, {"message_id": mid})
        if self.seen is not None:
            self._record(pdu)
        if self.on_accept is not None:
            self.on_accept(proto.key, pdu)
        fields = pdu.fields
        self._maybe_receipt(proto, pdu, fields, fields.get("destination_addr", b""), mid, rule)

    def _submit_faulty(self, proto: CarrierProtocol, pdu: Pdu, answer: Answer) -> None:
        """Carry out a :class:`FaultPlan` answer: scripts, then now or later, then maybe drop."""
        stats = self.stats
        cause = answer.cause
        if cause == "throttled":
            stats["throttled"] += 1
        elif cause == "slow":
            stats["slow"] += 1
        if not answer.respond:
            stats["submits_unanswered"] += 1
            proto.session.forget(pdu)  # a lost submit holds no inbound slot: the hub must time it out
            return
        dest = pdu.fields.get("destination_addr", b"")
        rule = self.match(dest) if self._rules and cause not in ("magic", "throttled") else None
        status = answer.status
        if rule is not None:
            if self._scripted_away(proto, pdu, rule):
                return
            status = rule.submit_status
        if answer.stat is not None:
            rule = Rule(dest, stat=answer.stat)
        if answer.delay > 0:
            self._schedule(self.reactor.seconds() + answer.delay,
                           lambda: self._answer(proto, pdu, status, rule, answer.disconnect, True))
        else:
            self._answer(proto, pdu, status, rule, answer.disconnect, False)

    def _answer(self, proto: CarrierProtocol, pdu: Pdu, status: int, rule: Rule | None,
                disconnect: bool, late: bool) -> None:
        """One submit's answer (maybe late): the id and a receipt, or a refusal; then maybe drop."""
        stats = self.stats
        if late and (proto.transport is None or not proto.connected):
            stats["answers_lost"] += 1  # the connection went first: the hub never sees this answer
            return
        if status:
            stats["submits_rejected"] += 1
            if status == Status.ESME_RTHROTTLED and rule is not None:
                stats["throttled"] += 1
            proto.session.respond(pdu, status)
        else:
            self._accept(proto, pdu, rule)
        if disconnect:
            stats["disconnects"] += 1
            proto.drop("simulated disconnect")  # flushes the answer, then closes (no unbind)
        elif late:
            proto.flush()

    def _record(self, pdu: Pdu) -> None:
        """Note an accepted submit's text under its destination (the order tests check)."""
        stats = self.stats
        if stats["recorded"] >= self.record_limit:
            return
        stats["recorded"] += 1
        fields = pdu.fields
        text = fields.get("short_message") or (pdu.tlvs or {}).get(_T_PAYLOAD, b"")
        seen = self.seen
        assert seen is not None
        dest = fields.get("destination_addr", b"")
        lst = seen.get(dest)
        if lst is None:
            lst = seen[dest] = []
        lst.append(text)

    def _submit_multi(self, proto: CarrierProtocol, pdu: Pdu) -> None:
        """submit_multi: one id for the whole submission, one receipt per SME destination."""
        self.stats["submits"] += 1
        mid = self._next_id()
        proto.session.respond(pdu, 0, {"message_id": mid, "unsuccess_sme": []})
        for d in pdu.fields.get("dest_addresses", ()):
            if d.get("dest_flag") == 1:
                fields = dict(pdu.fields)
                fields.update(d)
                dest = d.get("destination_addr", b"")
                self._maybe_receipt(proto, pdu, fields, dest, mid, self.match(dest))

    def _maybe_receipt(
        self,
        proto: CarrierProtocol,
        pdu: Pdu,
        fields: dict[str, Any],
        dest: bytes,
        mid: bytes,
        rule: Rule | None,
    ) -> None:
        rd = fields.get("registered_delivery", 0) & 3
        if rd != 1 and rd != 2:
            return
        if rule is not None and rule.stat is not None:
            stat = rule.stat
        else:
            stat = self.draw_outcome()
        if rd == 2 and stat in _SUCCESS_STATS:
            return
        outcomes = self.stats["outcomes"]
        outcomes[stat] = outcomes.get(stat, 0) + 1
        item = _Outbound(proto.key)
        item.message_id = mid
        item.orig = fields
        item.stat = stat
        item.err = rule.err if rule is not None and rule.err is not None else DEFAULT_ERR[stat]
        tlvs = pdu.tlvs
        if tlvs:
            item.umr = tlvs.get(_T_UMR)
            sm = fields.get("short_message") or tlvs.get(_T_PAYLOAD, b"")
        else:
            item.umr = None
            sm = fields.get("short_message", b"")
        item.text = sm[:40]  # 20 characters are at most 40 octets (UCS-2, GSM escapes)
        now = self.reactor.seconds()
        item.submit_time = now
        delay = rule.delay if rule is not None and rule.delay is not None else self.dlr_delay
        self.stats["receipts_scheduled"] += 1
        self._schedule(now + delay, item)

    # ---------------------------------------------------------- receipt timer

    def call_later(self, delay: float, fn: Any) -> None:
        """Call ``fn()`` after ``delay`` seconds on the receipt timer (one heap, one DelayedCall)."""
        self._schedule(self.reactor.seconds() + delay, fn)

    def _schedule(self, due: float, item: Any) -> None:
        heapq.heappush(self._heap, (due, next(self._tie), item))
        timer = self._timer
        if timer is None:
            self._arm(self.reactor.seconds())
        elif due < self._timer_due - _GRAIN:
            # Rare: only a scripted delay shorter than the default gets here.
            now = self.reactor.seconds()
            self._timer_due = due
            timer.reset(max(0.0, due - now))

    def _arm(self, now: float) -> None:
        if not self._heap:
            self._timer = None
            return
        due = self._heap[0][0]
        self._timer_due = due
        self._timer = self.reactor.callLater(max(0.0, due - now), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.reactor.seconds()
        heap = self._heap
        pop = heapq.heappop
        try:
            while heap and heap[0][0] <= now:
                item = pop(heap)[2]
                if item.__class__ is not _Outbound:
                    try:
                        item()  # a late submit answer, a handset's reply (call_later)
                    except Exception:
                        log.exception("delayed call failed")
                    continue
                try:
                    if item.fields is None:
                        self._build_receipt(item, now)
                    self._deliver(item)
                except Exception:  # one bad item must not stop every later receipt
                    log.exception("could not deliver %r", item.message_id)
                    continue
        finally:
            if heap and self._timer is None:
                due = max(heap[0][0], now + _GRAIN)
                self._timer_due = due
                self._timer = self.reactor.callLater(due - now, self._fire)

    def _receipt_text(self, item: _Outbound, now: float) -> bytes:
        """Appendix B text via :func:`pdu.receipt.format_receipt`, from a template cache.

        Everything but the id repeats (same minute, same outcome, same text in
        a benchmark), so the formatted tail after ``id:`` is cached and only
        the id is spliced in: ~10x cheaper than formatting every receipt.
        """
        fmt = self.receipt_format
        twelve = fmt == "12digit"
        unit = 1 if twelve else 60  # the dates' resolution
        sk = int(item.submit_time) // unit
        dk = int(now) // unit
        orig = item.orig or {}
        sm = item.text
        dc = orig.get("data_coding", 0)
        key = (sk, dk, item.stat, item.err, dc, sm, fmt)
        tail = self._templates.get(key)
        if tail is None:
            sdt = datetime.fromtimestamp(sk * unit, UTC)
            ddt = datetime.fromtimestamp(dk * unit, UTC)
            text = _text_of(sm, dc)
            full = format_receipt(
                "", 1, 0 if item.stat not in _SUCCESS_STATS else 1, sdt, ddt, item.stat, item.err,
                text, text_key="Text" if fmt == "Text" else "text",
            )
            if twelve:
                full = full.replace(
                    b"submit date:" + sdt.strftime("%y%m%d%H%M").encode(),
                    b"submit date:" + sdt.strftime("%y%m%d%H%M%S").encode(),
                ).replace(
                    b"done date:" + ddt.strftime("%y%m%d%H%M").encode(),
                    b"done date:" + ddt.strftime("%y%m%d%H%M%S").encode(),
                )
            tail = full[3:]  # after "id:"
            if len(self._templates) >= _TEMPLATE_CACHE_MAX:
                self._templates.clear()
            self._templates[key] = tail
        return b"id:" + item.message_id + tail

    def _build_receipt(self, item: _Outbound, now: float) -> None:
        stat = item.stat
        sm = b"" if self.receipt_format == "tlv_only" else self._receipt_text(item, now)
        orig = item.orig or {}
        # data_sm addresses may be up to 64 characters; a deliver_sm's are 20.
        item.fields, item.tlvs = receipt_fields(
            item.message_id,
            orig.get("destination_addr", b"")[:20], orig.get("dest_addr_ton", 0), orig.get("dest_addr_npi", 0),
            orig.get("source_addr", b"")[:20], orig.get("source_addr_ton", 0), orig.get("source_addr_npi", 0),
            STAT_TO_STATE[stat], sm,
            item.err if stat not in _SUCCESS_STATS and stat != "ACCEPTD" else None, item.umr,
        )
        item.orig = None

    # ------------------------------------------------------------ delivering

    def _line(self, key: bytes | None) -> Line[_Outbound]:
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = Line()
        return line

    def _deliver(self, item: _Outbound) -> None:
        """Queue at the back of its owner's line: a receiving session with a free slot takes it."""
        line = self._line(item.key)
        line.put(item)
        if len(line) > self.queue_limit:
            self._dropped(line.drop())

    def _dropped(self, item: _Outbound | None) -> None:
        if item is None:
            return
        self.stats["queue_dropped"] += 1
        if item.deferred is not None:
            d, item.deferred = item.deferred, None
            d.errback(QueueFull("MO dropped: queue full"))

    def _answered(self, proto: CarrierProtocol, sequence: int, item: _Outbound, status: int) -> None:
        w = proto.windows.get(item.key)
        if w is not None:
            w.done(sequence)
        stats = self.stats
        if item.deferred is None:
            if status == 0:
                stats["receipts_acked"] += 1
            elif status in RETRY_STATUSES:
                stats["receipts_retried"] += 1
                self._schedule(self.reactor.seconds() + self.retry_delay, item)
            else:
                stats["receipts_refused"] += 1
        else:
            stats["mo_acked"] += 1
            d, item.deferred = item.deferred, None
            d.callback(status)
        # The slot freed is the session's: the other line may use it too.
        other = self._lines.get(None if item.key is not None else proto.key)
        if other:
            other.pump()

    def _closed(self, proto: CarrierProtocol, reason: str) -> None:
        """Deliver_sm the session left unanswered go back to the head of their lines, in order."""
        windows, proto.windows = proto.windows, {}
        for w in windows.values():
            w.close()

    # -------------------------------------------------------------------- MO

    def inject_mo(
        self,
        source: str | bytes,
        destination: str | bytes,
        text: bytes | str,
        data_coding: int = 0,
        esm_class: int = 0,
        tlvs: dict[int, bytes] | None = None,
        system_id: str | bytes | None = None,
    ) -> defer.Deferred[int]:
        """Send an MO deliver_sm; fires with the deliver_sm_resp command_status.

        Goes to a receiving session of ``system_id`` (any, when None); waits
        in the queue while there is none. ``text`` as str is encoded per
        ``data_coding`` (GSM for 0, UCS-2 for 8, Latin-1 otherwise); more than
        254 octets travel in message_payload.
        """
        if isinstance(text, str):
            text = encode_text(text, data_coding)
        src = _b(source)
        dst = _b(destination)
        if len(src) > 20 or len(dst) > 20:
            raise ValueError("MO source and destination must be at most 20 characters")
        fields: dict[str, Any] = {
            **DELIVER_SM_NULL,
            "source_addr_ton": 1 if src.isdigit() else 5,
            "source_addr_npi": 1 if src.isdigit() else 0,
            "source_addr": src,
            "dest_addr_ton": 1 if dst.isdigit() else 5,
            "dest_addr_npi": 1 if dst.isdigit() else 0,
            "destination_addr": dst,
            "esm_class": esm_class,
            "data_coding": data_coding,
        }
        all_tlvs = dict(tlvs or {})
        if len(text) > 254:
            all_tlvs[Tag.message_payload] = text
            fields["short_message"] = b""
        else:
            fields["short_message"] = text
        item = _Outbound(None if system_id is None else _b(system_id), fields, all_tlvs)
        d: defer.Deferred[int] = defer.Deferred()
        item.deferred = d
        self._deliver(item)
        return d

    # ------------------------------------------------------------------ faults

    def fault(self, kind: str) -> int:
        """Send a fault fixture to every bound session; returns how many got it.

        'unbind' starts a real unbind (the session then waits for
        unbind_resp and closes); the others are the raw octets of
        :func:`fault_bytes`.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (expected one of {', '.join(FAULT_KINDS)})")
        n = 0
        for p in list(self.sessions):
            if not p.session.bound:
                continue
            if kind == "unbind":
                p.session.unbind()
                p.flush_now()  # a fault is on the wire when fault() returns
            else:
                p.write_raw(fault_bytes(kind))
            n += 1
        self.stats["faults_sent"] += n
        return n

    # ------------------------------------------------------------------ views

    @property
    def queued(self) -> int:
        """Deliver_sm waiting for a session or a window slot."""
        return sum(len(line) for line in self._lines.values())

    @property
    def scheduled(self) -> int:
        """Receipts (and retries) waiting for their due time."""
        return len(self._heap)

    def snapshot(self) -> dict[str, Any]:
        """Counters plus the current queue sizes and sessions, for /stats."""
        out = dict(self.stats)
        out["outcomes"] = dict(self.stats["outcomes"])
        out["queued"] = self.queued
        out["scheduled"] = len(self._heap)
        out["sessions"] = [
            {
                "system_id": (p.key or b"").decode("latin-1"),
                "state": p.session.state.name,
                "outstanding": len(p.session.outstanding),
            }
            for p in self.sessions
        ]
        return out


# --------------------------------------------------------------------- helpers


def _b(v: str | bytes) -> bytes:
    return v.encode("latin-1") if isinstance(v, str) else v


def encode_text(text: str, data_coding: int = 0) -> bytes:
    """Text -> short_message octets for an MO: GSM (unpacked) for 0/1, UCS-2 for 8, else Latin-1."""
    if data_coding in (0, 1):
        return textmod.encode(text, textmod.GSM)
    if data_coding == 8:
        return text.encode("utf-16-be")
    return text.encode("latin-1")


def _text_of(sm: bytes, dc: int) -> str:
    """The original's text for the receipt's ``text:`` field (never raises)."""
    try:
        coding = textmod.parse_data_coding(dc)
    except SubmitRejected:
        return ""
    t = textmod.decode(sm, coding.alphabet, strict=False)
    return t or ""


__all__ = [
    "DEFAULT_ERR",
    "FAULT_KINDS",
    "FAULT_SEQUENCE",
    "ID_FORMATS",
    "RECEIPT_FORMATS",
    "Carrier",
    "CarrierProtocol",
    "QueueFull",
    "Rule",
    "encode_text",
    "fault_bytes",
]
