"""The load-generating ESME behind ``staffetta bench``.

It shares a 2-core machine with the hub it measures, so whatever it spends per
message is taken from the hub's figures. Hence its shape:

* Binding, unbinding, enquire_link and anything unusual go through
  :class:`pdu.session.Session` like any ESME.
* The two PDUs that make up the load take a fast path beside the session: every
  submit_sm is one pre-encoded template with only the sequence number patched
  in (sequence numbers from a range the session never reaches, so the two
  cannot collide), submit_sm_resp is read from its header and body directly,
  and deliver_sm is decoded once and answered with a fixed deliver_sm_resp.
* One clock read per TCP read, one ``write`` per TCP read.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, endpoints
from twisted.python.failure import Failure

from staffetta.pdu.codec import DecodeError, Pdu, decode, encode
from staffetta.pdu.constants import ESM_RECEIPT, Command, Status, Tag, status_name
from staffetta.pdu.framing import Framer, FramingError
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.session import Outstanding, Side, Timers

#: Our submit_sm sequence numbers start here; the session's own requests
#: (bind, enquire_link, unbind) count up from 1 and never get this far.
SEQ_BASE = 0x40000000
_SEQ_MAX = 0x7FFFFFFF

_SUBMIT_SM_RESP = int(Command.SUBMIT_SM_RESP)
_DELIVER_SM = int(Command.DELIVER_SM)
_GENERIC_NACK = int(Command.GENERIC_NACK)
_DSR_HEAD = (17).to_bytes(4, "big") + int(Command.DELIVER_SM_RESP).to_bytes(4, "big") + bytes(4)
_RECEIPT_TYPE_MASK = 0x3C  # esm_class bits 5-2: message type
_T_RECEIPTED_ID = int(Tag.receipted_message_id)


class _Unusual(Exception):
    """Not the plain shape :func:`scan_deliver_sm` reads: use the full decoder."""


def scan_deliver_sm(fr: bytes) -> tuple[int, bytes | None]:
    """(esm_class, receipted_message_id without NUL or None) of a deliver_sm.

    Reads only what the count needs, about 4x cheaper than a full decode;
    raises :class:`_Unusual` at anything it does not expect (the caller then
    decodes fully and answers a malformed PDU with its error status).
    """
    n = len(fr)
    find = fr.find
    p = find(0, 16, 22)  # service_type
    if p < 0:
        raise _Unusual
    p = find(0, p + 3, p + 24)  # source_addr_ton, _npi, source_addr
    if p < 0:
        raise _Unusual
    p = find(0, p + 3, p + 24)  # dest_addr_ton, _npi, destination_addr
    if p < 0 or p + 4 >= n:
        raise _Unusual
    esm_class = fr[p + 1]
    p = find(0, p + 4, p + 21)  # protocol_id, priority_flag, schedule_delivery_time
    if p < 0:
        raise _Unusual
    p = find(0, p + 1, p + 18)  # validity_period
    if p < 0 or p + 5 >= n:
        raise _Unusual
    p += 5  # registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id
    p += 1 + fr[p]  # sm_length + short_message
    rid = None
    while p < n:
        if p + 4 > n:
            raise _Unusual
        tag = (fr[p] << 8) | fr[p + 1]
        length = (fr[p + 2] << 8) | fr[p + 3]
        p += 4
        if p + length > n:
            raise _Unusual
        if tag == _T_RECEIPTED_ID:
            nul = find(0, p, p + length)
            rid = fr[p:nul] if nul >= 0 else fr[p : p + length]
        p += length
    if p != n:
        raise _Unusual
    return esm_class, rid


class BindError(Exception):
    """The target refused our bind; ``status`` is its command_status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused: {status_name(status)} (0x{status:08x})")
        self.status = status


@dataclass
class LoadResult:
    """What a run measured. Rates are over the submit phase (accepted) and from
    the first submit to the last receipt (receipts), so a hub that lags on
    receipts shows it."""

    sent: int = 0
    accepted: int = 0
    rejected: dict[int, int] = field(default_factory=dict)
    duration_s: float = 0.0
    accepted_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    receipts: int = 0
    receipts_per_s: float = 0.0
    receipt_ids_matched: int = 0
    #: Submits that never got a response (connection lost or response_timeout).
    lost: int = 0
    #: deliver_sm that were not receipts (MO), answered and counted only.
    mo: int = 0
    connections: int = 1
    window: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rejected"] = {status_name(k): v for k, v in sorted(self.rejected.items())}
        return d


class _Run:
    """State shared by the connections of one run."""

    def __init__(self, reactor: Any, n: int, window: int, connections: int, registered_delivery: int,
                 receipt_timeout: float, response_timeout: float) -> None:
        self.reactor = reactor
        self.remaining = n
        self.window = window
        self.expect_receipts = (registered_delivery & 3) == 1
        self.receipt_timeout = receipt_timeout
        self.response_timeout = response_timeout
        self.result = LoadResult(connections=connections, window=window)
        self.latencies = array("d")
        self.ids: set[bytes] = set()
        self.early: set[bytes] = set()  # receipts whose id had not been seen yet
        self.protos: list[LoadProtocol] = []
        self.t_start = 0.0
        self.t_last_resp = 0.0
        self.t_last_receipt = 0.0
        self.last_progress = time.perf_counter()
        self.submitting_done = False
        self.finishing = False
        self.done: defer.Deferred[LoadResult] = defer.Deferred()
        self._receipt_timer: Any = None
        self._watchdog: Any = None

    # ------------------------------------------------------------- lifecycle

    @property
    def _watch_every(self) -> float:
        return min(1.0, self.response_timeout / 2)

    def start_watchdog(self) -> None:
        self._watchdog = self.reactor.callLater(self._watch_every, self._watch)

    def _watch(self) -> None:
        """Give up on responses that never come (a hub that drops submits silently)."""
        self._watchdog = None
        if self.finishing:
            return
        if not self.submitting_done and time.perf_counter() - self.last_progress > self.response_timeout:
            self.remaining = 0
            for p in self.protos:
                p.give_up()
            self.check()
        if not self.finishing:
            self._watchdog = self.reactor.callLater(self._watch_every, self._watch)

    def fail(self, reason: Failure | Exception) -> None:
        if self.finishing:
            return
        self.finishing = True
        self._cancel_timers()
        for p in self.protos:
            p.abort()
        if not self.done.called:
            self.done.errback(reason if isinstance(reason, Failure) else Failure(reason))

    def check(self) -> None:
        """Called on progress: move to the receipt wait, then to the unbind."""
        if self.finishing:
            return
        if not self.submitting_done:
            if self.remaining > 0 or any(p.outstanding for p in self.protos if p.active):
                return
            if any(p.active and not p.bound_once for p in self.protos):
                return  # a connection still binding will take no work, but wait for it
            self.submitting_done = True
            if self.expect_receipts and self.result.receipts < self.result.accepted:
                self._receipt_timer = self.reactor.callLater(self.receipt_timeout, self.finish)
                return
            self.finish()
            return
        if self.expect_receipts and self.result.receipts >= self.result.accepted:
            self.finish()

    def finish(self) -> None:
        if self.finishing:
            return
        self.finishing = True
        self._cancel_timers()
        waits = [p.closed for p in self.protos if not p.closed.called]
        for p in self.protos:
            p.unbind()
        d = defer.gatherResults(waits, consumeErrors=True) if waits else defer.succeed(None)
        # An unbind_resp that never comes must not hold the result hostage.
        guard = self.reactor.callLater(5.0, lambda: [p.abort() for p in self.protos])
        d.addBoth(lambda _: guard.cancel() if guard.active() else None)
        d.addBoth(lambda _: self._report())

    def _cancel_timers(self) -> None:
        for t in (self._receipt_timer, self._watchdog):
            if t is not None and t.active():
                t.cancel()
        self._receipt_timer = self._watchdog = None

    def _report(self) -> None:
        r = self.result
        r.lost += sum(p.outstanding for p in self.protos)
        if self.early:
            r.receipt_ids_matched += len(self.early & self.ids)
        lat = sorted(self.latencies)
        if lat:
            r.p50_ms = lat[(len(lat) - 1) // 2] * 1000.0
            r.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000.0
        if self.t_start:
            r.duration_s = max(self.t_last_resp - self.t_start, 1e-9)
            r.accepted_per_s = r.accepted / r.duration_s
            if r.receipts:
                r.receipts_per_s = r.receipts / max(self.t_last_receipt - self.t_start, 1e-9)
        if not self.done.called:
            self.done.callback(r)


class LoadProtocol(SessionProtocol):
    """One TRX connection of the load client."""

    side = Side.ESME

    def __init__(self, run: _Run, system_id: bytes, password: bytes, template: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.system_id = system_id
        self.password = password
        self._head = template[:12]
        self._tail = template[16:]
        self._framer = Framer()
        self._seq = SEQ_BASE
        self._sent_at: dict[int, float] = {}
        self.outstanding = 0
        self.active = True
        self.bound_once = False
        self.closed: defer.Deferred[None] = defer.Deferred()

    # ------------------------------------------------------------ transport

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            set_nodelay(True)
        super().connectionMade()
        self.session.bind(Command.BIND_TRANSCEIVER, self.system_id, self.password)
        self.flush()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        try:
            frames = self._framer.feed(data)
        except FramingError as exc:
            self._handle(exc.frames)
            # Hand the impossible header to the session: it answers generic_nack
            # ESME_RINVCMDLEN and closes, as for any ESME.
            bad = exc.length.to_bytes(4, "big") + bytes(8) + exc.sequence.to_bytes(4, "big")
            SessionProtocol.dataReceived(self, bad)
            return
        self._handle(frames)

    def _handle(self, frames: list[bytes]) -> None:
        run = self.run
        now = time.perf_counter()
        out: list[bytes] = []
        fast = self.session.bound
        sent_at = self._sent_at
        result = run.result
        progressed = False
        for fr in frames:
            cid = int.from_bytes(fr[4:8], "big")
            seq = int.from_bytes(fr[12:16], "big")
            if seq >= SEQ_BASE and (cid == _SUBMIT_SM_RESP or cid == _GENERIC_NACK):
                t0 = sent_at.pop(seq, None)
                if t0 is None:
                    continue  # a late answer after give_up(): already counted as lost
                self.outstanding -= 1
                progressed = True
                run.latencies.append(now - t0)
                status = int.from_bytes(fr[8:12], "big")
                if status == 0 and cid == _SUBMIT_SM_RESP:
                    result.accepted += 1
                    nul = fr.find(b"\x00", 16)
                    mid = fr[16:nul] if nul >= 0 else fr[16:]
                    if mid in run.early:
                        run.early.discard(mid)
                        result.receipt_ids_matched += 1
                    else:
                        run.ids.add(mid)
                else:
                    rej = result.rejected
                    rej[status] = rej.get(status, 0) + 1
            elif cid == _DELIVER_SM and fast:
                out.append(self._deliver_sm(fr, seq, now))
            else:
                # bind_resp, enquire_link, unbind and friends: the session's job.
                SessionProtocol.dataReceived(self, fr)
                fast = self.session.bound
        if progressed:
            run.last_progress = now
            run.t_last_resp = now
        if fast and self.active and not run.finishing:
            self._fill(out, now)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        if progressed or run.submitting_done:
            run.check()

    def _deliver_sm(self, fr: bytes, seq: int, now: float) -> bytes:
        run = self.run
        try:
            esm_class, rid = scan_deliver_sm(fr)
        except _Unusual:
            try:
                pdu = decode(fr)
            except DecodeError as exc:
                return encode(Pdu(Command.DELIVER_SM_RESP, seq, exc.status))
            esm_class = pdu.fields.get("esm_class", 0)
            rid = pdu.tlvs.get(_T_RECEIPTED_ID)
            if rid is not None:
                nul = rid.find(b"\x00")
                if nul >= 0:
                    rid = rid[:nul]
        if esm_class & _RECEIPT_TYPE_MASK == ESM_RECEIPT:
            result = run.result
            result.receipts += 1
            run.t_last_receipt = now
            if rid is not None:
                if rid in run.ids:
                    run.ids.discard(rid)
                    result.receipt_ids_matched += 1
                else:
                    run.early.add(rid)
        else:
            run.result.mo += 1
        return _DSR_HEAD + seq.to_bytes(4, "big") + b"\x00"

    def _fill(self, out: list[bytes], now: float) -> None:
        """Top the window up with submits (one template, a fresh sequence each)."""
        run = self.run
        free = min(run.window - self.outstanding, run.remaining)
        if free <= 0:
            return
        if not run.t_start:
            run.t_start = now
        head, tail = self._head, self._tail
        sent_at = self._sent_at
        seq = self._seq
        for _ in range(free):
            seq += 1
            if seq > _SEQ_MAX:
                seq = SEQ_BASE + 1
            out.append(head + seq.to_bytes(4, "big") + tail)
            sent_at[seq] = now
        self._seq = seq
        self.outstanding += free
        run.remaining -= free
        run.result.sent += free

    # ------------------------------------------------------------------ hooks

    def on_request(self, pdu: Pdu) -> None:
        # Requests the fast path did not take (data_sm, deliver_sm before bind
        # completes cannot happen: the session refuses it): answer politely.
        self.session.respond(pdu, 0, {"message_id": b""} if pdu.command_id == Command.DATA_SM else None)

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        if request.command_id == Command.BIND_TRANSCEIVER:
            if pdu.status != 0 or pdu.command_id == Command.GENERIC_NACK:
                self.run.fail(BindError(pdu.status or Status.ESME_RUNKNOWNERR))
                return
            self.bound_once = True  # _handle fills the window right after this read
            self.run.check()

    def on_closed(self, reason: str, pending: list[Outstanding]) -> None:
        run = self.run
        self.active = False
        if not self.bound_once and not run.finishing:
            run.fail(ConnectionError(f"connection closed before bind: {reason}"))
        else:
            self.give_up()
            run.check()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        super().connectionLost(reason)
        if not self.closed.called:
            self.closed.callback(None)

    # ---------------------------------------------------------------- control

    def give_up(self) -> None:
        """Count what is still outstanding as lost and stop waiting for it."""
        if self.outstanding:
            self.run.result.lost += self.outstanding
            self.outstanding = 0
            self._sent_at.clear()

    def unbind(self) -> None:
        self.active = False
        if self.session.bound:
            self.session.unbind()
            self.flush()
        elif self.transport is not None and not self.closed.called:
            self.transport.loseConnection()

    def abort(self) -> None:
        self.active = False
        if self.transport is not None and not self.closed.called:
            self.transport.abortConnection()


def submit_template(source: str | bytes, destination: str | bytes, text: bytes, registered_delivery: int,
                    data_coding: int = 0) -> bytes:
    """The submit_sm every connection sends, encoded once with sequence 0."""
    src = source.encode("latin-1") if isinstance(source, str) else source
    dst = destination.encode("latin-1") if isinstance(destination, str) else destination
    numeric_src = src.isdigit()
    fields = {
        "source_addr_ton": 1 if numeric_src else 5,
        "source_addr_npi": 1 if numeric_src else 0,
        "source_addr": src,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": dst,
        "registered_delivery": registered_delivery,
        "data_coding": data_coding,
    }
    tlvs: dict[int, bytes] = {}
    if len(text) > 254:
        fields["short_message"] = b""
        tlvs[Tag.message_payload] = text
    else:
        fields["short_message"] = text
    return encode(Pdu(Command.SUBMIT_SM, 0, 0, fields, tlvs))


def run_load(
    reactor: Any,
    host: str,
    port: int,
    system_id: str | bytes,
    password: str | bytes,
    *,
    n: int = 10000,
    window: int = 50,
    connections: int = 1,
    text: bytes = b"hello world",
    destination: str = "393331234567",
    source: str = "Staffetta",
    registered_delivery: int = 1,
    receipt_timeout: float = 30.0,
    response_timeout: float = 30.0,
    data_coding: int = 0,
) -> defer.Deferred[LoadResult]:
    """Bind ``connections`` TRX sessions, push ``n`` submit_sm through them, collect receipts.

    Each connection keeps ``window`` submits outstanding while work remains;
    after the last response the run waits for every receipt (when
    registered_delivery asks for all of them, bits 1-0 == 01) or
    ``receipt_timeout``, then unbinds. Fails with :class:`BindError` on a
    refused bind and with the connection error when the target is down.
    """
    if n < 0 or window < 1 or connections < 1:
        raise ValueError("n must be >= 0, window and connections >= 1")
    sid = system_id.encode("latin-1") if isinstance(system_id, str) else system_id
    pw = password.encode("latin-1") if isinstance(password, str) else password
    template = submit_template(source, destination, text, registered_delivery, data_coding)
    run = _Run(reactor, n, window, connections, registered_delivery, receipt_timeout, response_timeout)
    # The session's own timers: never let it unbind a long run for "inactivity"
    # (our submits bypass it, so it cannot see them).
    timers = Timers(inactivity=1e9)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=10)
    for _ in range(connections):
        proto = LoadProtocol(run, sid, pw, template, clock=reactor, timers=timers, window=10)
        run.protos.append(proto)
        d = endpoints.connectProtocol(endpoint, proto)
        d.addErrback(run.fail)
    run.start_watchdog()
    return run.done


__all__ = ["SEQ_BASE", "BindError", "LoadProtocol", "LoadResult", "run_load", "submit_template"]
