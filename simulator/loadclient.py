"""The load-generating ESME behind ``staffetta bench``.

Every PDU goes through :class:`pdu.session.Session` by way of
:class:`pdu.protocol.SessionProtocol`, like every other SMPP peer of the
project: the session allocates sequence numbers, counts the window, times
requests out, answers enquire_link and unbind. What the load client adds is
the business of a benchmark:

* what to send: :class:`simulator.traffic.Traffic`, frames encoded ahead
  (sequence 0) and handed to :meth:`Session.send_encoded`, which only patches
  the sequence number, so building a message costs a few µs;
* the project's one window object (:mod:`pdu.window`): each bind has a
  :class:`~pdu.window.Line` filled a whole message at a time (so the parts of
  a long message stay on one bind and in order) and a
  :class:`~pdu.window.Window` on it that sends through the session;
  :meth:`LoadProtocol._fill` tops the line up as slots free, so frames are
  built only when they can go;
* counting its own receipts (issue 11.5): a receipt counts when its id is one
  that a ``submit_sm_resp`` of this run gave for a message that asked for a
  receipt. Anything else (left from an earlier run, for an id this run never
  got) is reported apart and never counted, and the run waits only for its own.

One clock read and one write per TCP read: each submit_sm_resp refills its
slot at once, so new submits leave with the read's deliver_sm_resp.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, endpoints
from twisted.python.failure import Failure

from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import ESM_RECEIPT, Command, Status, Tag, status_name
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.receipt import parse_receipt
from staffetta.pdu.session import Outstanding, Side, Timers
from staffetta.pdu.window import Line, Window
from staffetta.simulator.traffic import REALISTIC, Traffic

_SUBMIT_SM = int(Command.SUBMIT_SM)
_SUBMIT_SM_RESP = int(Command.SUBMIT_SM_RESP)
_DELIVER_SM = int(Command.DELIVER_SM)
_DATA_SM = int(Command.DATA_SM)
_BIND_TRANSCEIVER = int(Command.BIND_TRANSCEIVER)
_RECEIPT_TYPE_MASK = 0x3C  # esm_class bits 5-2: message type
_T_RECEIPTED_ID = int(Tag.receipted_message_id)


class BindError(Exception):
    """The target refused our bind; ``status`` is its command_status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused: {status_name(status)} (0x{status:08x})")
        self.status = status


@dataclass
class LoadResult:
    """What a run measured. Rates are over the submit phase (accepted) and from
    the first submit to the last of our receipts (receipts), so a hub that lags
    on receipts shows it."""

    sent: int = 0
    accepted: int = 0
    rejected: dict[int, int] = field(default_factory=dict)
    duration_s: float = 0.0
    accepted_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    #: Receipts for ids this run got in a submit_sm_resp of a message that asked for one.
    receipts: int = 0
    #: Accepted messages that asked for a receipt (registered_delivery 1).
    receipts_expected: int = 0
    receipts_per_s: float = 0.0
    #: Receipts for ids this run is not waiting for (left from an earlier run,
    #: or repeated): reported, never counted in ``receipts``.
    receipts_foreign: int = 0
    #: Receipts for our messages sent without registered_delivery.
    receipts_unrequested: int = 0
    #: Submits that never got a response (connection lost or response timeout).
    lost: int = 0
    #: deliver_sm that were not receipts (MO), answered and counted only.
    mo: int = 0
    connections: int = 1
    window: int = 0
    profile: str = ""
    #: This process's CPU from the first submit to the end, per submit sent: the
    #: client's own cost, to check that it is not what limits a run.
    client_cpu_us_per_msg: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rejected"] = {status_name(k): v for k, v in sorted(self.rejected.items())}
        return d


class _Run:
    """State shared by the connections of one run: the traffic, the counts, the end."""

    def __init__(self, reactor: Any, traffic: Traffic, n: int, window: int, connections: int,
                 receipt_timeout: float) -> None:
        self.reactor = reactor
        self.traffic = traffic
        self.remaining = n
        self.window = window
        self.receipt_timeout = receipt_timeout
        self.result = LoadResult(connections=connections, window=window, profile=traffic.profile)
        self.latencies = array("d")
        #: ids of accepted messages whose receipt we wait for
        self.awaited: set[bytes] = set()
        #: ids of accepted messages sent without registered_delivery
        self.unrequested: set[bytes] = set()
        #: receipts whose id we have not been given (yet): id -> count
        self.stray: dict[bytes, int] = {}
        #: frames of a connection that closed before sending them, for the others
        self.returned: deque[tuple[bytes, bool]] = deque()
        self.protos: list[LoadProtocol] = []
        self.t_start = 0.0
        self.cpu_start = 0.0
        self.t_last_resp = 0.0
        self.t_last_receipt = 0.0
        self.submitting_done = False
        self.finishing = False
        self.done: defer.Deferred[LoadResult] = defer.Deferred()
        self._receipt_timer: Any = None

    # ---------------------------------------------------------------- counts

    def accepted(self, message_id: bytes, wants_receipt: bool) -> None:
        result = self.result
        result.accepted += 1
        stray = self.stray
        if wants_receipt:
            result.receipts_expected += 1
            if message_id in stray:  # its receipt came first, on another bind
                self._unstray(message_id)
                result.receipts += 1
            else:
                self.awaited.add(message_id)
        elif message_id in stray:
            self._unstray(message_id)
            result.receipts_unrequested += 1
        else:
            self.unrequested.add(message_id)

    def _unstray(self, message_id: bytes) -> None:
        left = self.stray[message_id] - 1
        if left:
            self.stray[message_id] = left
        else:
            del self.stray[message_id]

    def receipt(self, message_id: bytes | None, now: float) -> None:
        awaited = self.awaited
        if message_id in awaited:
            awaited.discard(message_id)
            self.result.receipts += 1
            self.t_last_receipt = now
            if self.submitting_done and not awaited:
                self.finish()
        elif message_id in self.unrequested:
            self.unrequested.discard(message_id)
            self.result.receipts_unrequested += 1
        else:
            key = message_id if message_id is not None else b""
            self.stray[key] = self.stray.get(key, 0) + 1

    def stop_submitting(self) -> None:
        """A submit was never answered: the target is not answering, send no more."""
        self.remaining = 0
        self.returned.clear()
        for p in self.protos:
            p.line.take(lambda item: True)

    # ------------------------------------------------------------- lifecycle

    def fail(self, reason: Failure | Exception) -> None:
        if self.finishing:
            return
        self.finishing = True
        self._cancel_timer()
        for p in self.protos:
            p.abort()
        if not self.done.called:
            self.done.errback(reason if isinstance(reason, Failure) else Failure(reason))

    def check(self) -> None:
        """Called on progress: move to the receipt wait, then to the unbind."""
        if self.finishing or self.submitting_done:
            return
        if self.remaining > 0 or self.returned:
            return
        for p in self.protos:
            if p.active and (p.busy or not p.bound_once):
                return  # still sending, or still binding (it will take no work, but wait for it)
        self.submitting_done = True
        if self.awaited:
            self._receipt_timer = self.reactor.callLater(self.receipt_timeout, self.finish)
        else:
            self.finish()

    def finish(self) -> None:
        if self.finishing:
            return
        self.finishing = True
        self._cancel_timer()
        waits = [p.closed for p in self.protos if not p.closed.called]
        for p in self.protos:
            p.unbind()
        d = defer.gatherResults(waits, consumeErrors=True) if waits else defer.succeed(None)
        # An unbind_resp that never comes must not hold the result hostage.
        guard = self.reactor.callLater(5.0, lambda: [p.abort() for p in self.protos])
        d.addBoth(lambda _: guard.cancel() if guard.active() else None)
        d.addBoth(lambda _: self._report())

    def _cancel_timer(self) -> None:
        t = self._receipt_timer
        if t is not None and t.active():
            t.cancel()
        self._receipt_timer = None

    def _report(self) -> None:
        r = self.result
        r.receipts_foreign = sum(self.stray.values())
        lat = sorted(self.latencies)
        if lat:
            r.p50_ms = lat[(len(lat) - 1) // 2] * 1000.0
            r.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000.0
        if self.t_start:
            r.client_cpu_us_per_msg = (time.process_time() - self.cpu_start) / max(r.sent, 1) * 1e6
            r.duration_s = max(self.t_last_resp - self.t_start, 1e-9)
            r.accepted_per_s = r.accepted / r.duration_s
            if r.receipts:
                r.receipts_per_s = r.receipts / max(self.t_last_receipt - self.t_start, 1e-9)
        if not self.done.called:
            self.done.callback(r)


class LoadProtocol(SessionProtocol):
    """One TRX connection of the load client."""

    side = Side.ESME

    def __init__(self, run: _Run, system_id: bytes, password: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.system_id = system_id
        self.password = password
        #: Frames waiting for a window slot, each with "expects a receipt"; the
        #: window (opened at bind) sends them through the session.
        self.line: Line[tuple[bytes, bool]] = Line()
        self.window: Window[tuple[bytes, bool]] | None = None
        self.active = True
        self.bound_once = False
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._now = 0.0

    @property
    def busy(self) -> bool:
        """Submits outstanding or waiting on this connection."""
        return bool(self.line) or (self.window is not None and len(self.window) > 0)

    # ------------------------------------------------------------ transport

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            set_nodelay(True)
        super().connectionMade()
        self.session.bind(Command.BIND_TRANSCEIVER, self.system_id, self.password)
        self.flush()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self._now = time.perf_counter()
        # The hooks below answer, count and refill the window; what they queue
        # in the session goes out in one write at the end of the read.
        super().dataReceived(data)
        run = self.run
        if not run.submitting_done:
            run.check()

    def _send(self, item: tuple[bytes, bool]) -> int:
        """The window's send: the frame as encoded, its time and "expects a receipt" as context."""
        run = self.run
        if not run.t_start:
            run.t_start = self._now
            run.cpu_start = time.process_time()
        run.result.sent += 1
        return self.session.send_encoded(item[0], (self._now, item[1]))

    def _fill(self, now: float) -> None:
        """Top the line up a message at a time while the window has room; the window sends."""
        run = self.run
        window = self.window
        if window is None:
            return
        self._now = now
        line = self.line
        while window.room() > 0 and not line:
            if run.returned:
                line.put(run.returned.popleft())
            elif run.remaining > 0:
                frames = run.traffic.next_message(run.remaining)
                run.remaining -= len(frames)
                for frame in frames:
                    line.put(frame)
            else:
                break

    # ------------------------------------------------------------------ hooks

    def on_request(self, pdu: Pdu) -> None:
        """deliver_sm (receipts and MO) and data_sm: count, answer ROK."""
        cid = pdu.command_id
        if cid == _DELIVER_SM:
            # Answer first: the last receipt ends the run, and an answer queued
            # behind our unbind would be dropped and the receipt sent again.
            self.session.respond(pdu, 0)
            if pdu.fields.get("esm_class", 0) & _RECEIPT_TYPE_MASK == ESM_RECEIPT:
                self.run.receipt(_receipt_id(pdu), self._now or time.perf_counter())
            else:
                self.run.result.mo += 1
        else:
            self.run.result.mo += 1
            self.session.respond(pdu, 0, {"message_id": b""} if cid == _DATA_SM else None)

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        cid = request.command_id
        run = self.run
        if cid == _SUBMIT_SM:
            t0, wants_receipt = request.context
            now = self._now
            run.latencies.append(now - t0)
            run.t_last_resp = now
            if pdu.status == 0 and pdu.command_id == _SUBMIT_SM_RESP:
                run.accepted(pdu.fields["message_id"], wants_receipt)
            else:
                rej = run.result.rejected
                status = pdu.status or Status.ESME_RUNKNOWNERR
                rej[status] = rej.get(status, 0) + 1
            self.window.done(request.sequence)  # frees the slot (and sends what the line holds)
            if self.active and not run.finishing:
                # Refill the freed slot now: the submit goes out in the same
                # write as this read's deliver_sm_resp (one write per read).
                self._fill(now)
        elif cid == _BIND_TRANSCEIVER:
            if pdu.status != 0 or pdu.command_id == Command.GENERIC_NACK:
                run.fail(BindError(pdu.status or Status.ESME_RUNKNOWNERR))
                return
            self.bound_once = True
            # The window counts its own slots (the session's, as nothing else of
            # ours is windowed); the client stops filling before it unbinds.
            self.window = Window(self.line, self.session.window, self._send, flush=self.flush)
            self.window.open()
            self._fill(self._now)

    def on_timeout(self, request: Outstanding) -> None:
        if request.command_id == _SUBMIT_SM:
            self.run.result.lost += 1
            self.run.stop_submitting()  # empties the lines first: freeing the slot sends nothing
            if self.window is not None:
                self.window.done(request.sequence)  # counted lost, never sent again
            self.run.check()

    def on_closed(self, reason: str, pending: list[Outstanding]) -> None:
        run = self.run
        self.active = False
        run.result.lost += sum(1 for p in pending if p.command_id == _SUBMIT_SM)
        if self.window is not None:
            self.window.close(give_back=False)  # what was outstanding is counted lost above
        waiting = self.line.take(lambda item: True)
        if waiting and not run.finishing:
            run.returned.extend(waiting)  # never sent: another bind takes them
        if not self.bound_once and not run.finishing:
            run.fail(ConnectionError(f"connection closed before bind: {reason}"))
        else:
            run.check()
            if run.returned:
                for p in run.protos:  # a bind with a free window sends them now
                    if p.active and p.session.bound:
                        p._fill(time.perf_counter())
                        p.flush()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        super().connectionLost(reason)
        if not self.closed.called:
            self.closed.callback(None)

    # ---------------------------------------------------------------- control

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


def _receipt_id(pdu: Pdu) -> bytes | None:
    """The receipted message id: the TLV, else the ``id:`` of the Appendix B text."""
    rid = pdu.tlvs.get(_T_RECEIPTED_ID)
    if rid is not None:
        nul = rid.find(b"\x00")
        return rid[:nul] if nul >= 0 else rid
    try:
        text_id = parse_receipt(pdu.fields.get("short_message", b"")).id
    except ValueError:
        return None
    return text_id.encode("latin-1") if text_id else None


def run_load(
    reactor: Any,
    host: str,
    port: int,
    system_id: str | bytes | None = None,
    password: str | bytes | None = None,
    *,
    credentials: list[tuple[bytes, bytes]] | None = None,
    n: int = 10000,
    window: int = 50,
    connections: int | None = None,
    profile: str = REALISTIC,
    seed: int = 1,
    regions: list[str] | None = None,
    text: bytes = b"hello world",
    destination: str = "393331234567",
    source: str = "Staffetta",
    registered_delivery: int = 1,
    receipt_timeout: float = 30.0,
    response_timeout: float = 30.0,
    data_coding: int = 0,
) -> defer.Deferred[LoadResult]:
    """Bind TRX sessions, push ``n`` submit_sm through them, collect our receipts.

    ``credentials`` (or ``system_id``/``password`` for one) are used in turn,
    one per connection; ``connections`` defaults to one per credential. Each
    connection keeps ``window`` submits outstanding while work remains. The
    traffic is ``profile``: :data:`~simulator.traffic.REALISTIC` (the mix of
    docs/benchmarks.md, from ``seed``, to ``regions`` or all of its
    countries) or ``single-destination`` (one template
    from ``text``, ``destination``, ``source``, ``registered_delivery``).
    After the last response the run waits for the receipts of its own
    messages that asked for one, at most ``receipt_timeout``, then unbinds. A
    submit not answered within ``response_timeout`` is counted lost and ends
    the sending. Fails with :class:`BindError` on a refused bind and with the
    connection error when the target is down.
    """
    creds = list(credentials or [])
    if system_id is not None:
        sid = system_id.encode("latin-1") if isinstance(system_id, str) else system_id
        pw = (password or b"").encode("latin-1") if isinstance(password, str) else (password or b"")
        creds.insert(0, (sid, pw))
    if not creds:
        raise ValueError("give system_id and password, or credentials")
    if connections is None:
        connections = len(creds)
    if n < 0 or window < 1 or connections < 1:
        raise ValueError("n must be >= 0, window and connections >= 1")
    traffic = Traffic(profile, seed=seed, regions=regions, destination=destination.encode("latin-1"),
                      source=source.encode("latin-1"), text=text, registered_delivery=registered_delivery,
                      data_coding=data_coding)
    run = _Run(reactor, traffic, n, window, connections, receipt_timeout)
    timers = Timers(response=response_timeout)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=10)
    for i in range(connections):
        sid, pw = creds[i % len(creds)]
        proto = LoadProtocol(run, sid, pw, clock=reactor, timers=timers, window=window)
        proto.tick_interval = min(1.0, response_timeout / 2)
        run.protos.append(proto)
        d = endpoints.connectProtocol(endpoint, proto)
        d.addErrback(run.fail)
    return run.done


__all__ = ["BindError", "LoadProtocol", "LoadResult", "run_load"]
