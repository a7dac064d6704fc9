"""Deliver what clients are owed (receipts, MO) to their bound RX/TRX sessions.

Nothing is lost: a delivery is in the ``outbox`` table before it gets here, and
it leaves the table only when the client answered its deliver_sm. Memory is
bounded: an account with no bound receiver keeps nothing in memory (the table
holds it); one that is bound keeps at most ``max_queued`` waiting, the rest is
read back from the table as the queue drains.

Each account has one :class:`pdu.window.Line`; each of its bound receivers
(a *sink*) has a :class:`pdu.window.Window` on that line, so a free slot on
any receiver takes the head, and what a receiver did not process (no answer
in time, a temporary refusal, a session that closed) goes back to the head in
its original order. A temporary refusal (``ESME_RX_T_APPN``,
``ESME_RTHROTTLED``...) pauses that receiver for ``retry_delay``; a permanent
one (``ESME_RX_P_APPN``, ``ESME_RX_R_APPN``) ends the delivery.

A *sink* is a bound client session seen from here (:class:`Sink`); it reports
back with :meth:`Outbox.answered`, :meth:`Outbox.timed_out` and
:meth:`Outbox.detach`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from twisted.internet import defer

from staffetta.pdu.constants import Status
from staffetta.pdu.window import Line, Window
from staffetta.router.messages import Delivery

log = logging.getLogger(__name__)

# Enum members read per message, as globals (an Enum class attribute costs ~120 ns
# on Python 3.11: see pdu/session.py).
_ROK = Status.ESME_ROK

#: deliver_sm_resp statuses after which we must not retry (3.4 Table 5-2).
PERMANENT = frozenset({Status.ESME_RX_P_APPN, Status.ESME_RX_R_APPN})


class Sink(Protocol):
    """A bound receiver: how many deliver_sm it may have unanswered, and how to send one."""

    window_size: int

    def receiving(self) -> int:
        """How many new deliver_sm the session takes now (0 once unbinding or closed)."""
        ...

    def send_delivery(self, delivery: Delivery) -> int:
        """Put the deliver_sm on the session; returns its sequence number."""
        ...

    def flush(self) -> None: ...


class _Account:
    __slots__ = ("line", "known", "windows", "spilled", "spill_from", "loading", "done_while_loading")

    def __init__(self, line: Line[Delivery]) -> None:
        self.line = line
        self.known: set[int] = set()  # ids queued here, in flight, or acknowledged and not yet deleted
        self.windows: dict[Sink, Window[Delivery]] = {}
        self.spilled = True  # the table may hold rows that are not in memory
        #: The lowest id the table may hold that memory does not (0: read it all; None: nothing
        #: spilled since the last read began). A refill reads
        #: from there, not from the start: under sustained load a full line spills on every add,
        #: and reading the oldest ``max_queued`` rows again each time (all already in memory)
        #: was most of a busy hub's read work (bench/bench_mo.py).
        self.spill_from: int | None = 0
        self.loading = False
        #: Ids deleted while a table read is in flight: its snapshot may still hold them.
        self.done_while_loading: set[int] = set()


class Outbox:
    def __init__(
        self,
        writer,
        reactor,
        load: Callable[[int, int], defer.Deferred],
        *,
        max_queued: int = 5000,
        retry_delay: float = 5.0,
        on_event: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.writer = writer
        self.reactor = reactor
        self._load = load  # (account_id, limit, after_id) -> Deferred[list[Delivery]], ids > after_id in order
        self.max_queued = max_queued
        self.retry_delay = retry_delay
        self._accounts: dict[int, _Account] = {}
        self._on_event = on_event

    def _acct(self, account_id: int) -> _Account:
        a = self._accounts.get(account_id)
        if a is None:
            def expired(d: Delivery) -> None:
                self._forget_when_deleted(a, d.id)
                self._event("expired", account_id, d.kind)

            a = self._accounts[account_id] = _Account(Line(expired=expired, clock=self.reactor))
        return a

    def _event(self, name: str, account_id: int, kind: str = "dlr") -> None:
        """``on_event(name, account_id, kind)``: kind "dlr" (a receipt) or "mo"."""
        if self._on_event is not None:
            self._on_event(name, account_id, kind)

    # ----------------------------------------------------------------- inputs

    def add(self, delivery: Delivery) -> None:
        """A delivery whose outbox row is committed."""
        a = self._accounts.get(delivery.account_id) or self._acct(delivery.account_id)
        if not a.windows or len(a.line) >= self.max_queued:
            a.spilled = True  # stays in the table until a receiver can take it
            if not a.windows:
                a.spill_from = 0
            elif a.spill_from is None or delivery.id < a.spill_from:
                a.spill_from = delivery.id
            self._event("queued", delivery.account_id, delivery.kind)
            return
        a.known.add(delivery.id)
        a.line.put(delivery)

    def attach(self, account_id: int, sink: Sink) -> None:
        """A receiver of this account is bound: it takes from the account's line."""
        a = self._acct(account_id)
        if sink in a.windows:
            return
        w = a.windows[sink] = Window(a.line, sink.window_size, sink.send_delivery, flush=sink.flush,
                                     ready=sink.receiving, clock=self.reactor)
        w.open()
        self._refill(account_id)

    def detach(self, account_id: int, sink: Sink) -> None:
        """A receiver is gone: what it had in flight goes back to the head, in order."""
        a = self._accounts.get(account_id)
        if a is None:
            return
        w = a.windows.pop(sink, None)
        if w is not None:
            w.close()
        if not a.windows:
            # Nobody to send to: forget what is merely queued, the table keeps it.
            for d in a.line.take(lambda _: True):
                a.known.discard(d.id)
            a.spilled = True
            a.spill_from = 0

    def answered(self, account_id: int, sink: Sink, sequence: int, status: int) -> None:
        """The client answered a deliver_sm."""
        a = self._accounts.get(account_id) or self._acct(account_id)
        w = a.windows.get(sink)
        if w is None:
            return
        if status == _ROK or status in PERMANENT:
            d = w.done(sequence)
            if d is None:
                return
            if status:
                log.warning("client refused delivery %d permanently: 0x%08x", d.id, status)
            self._forget_when_deleted(a, d.id)
            if self._on_event is not None:  # _event, without a call per receipt
                self._on_event("delivered", account_id, d.kind)
            if a.spilled:
                self._refill(account_id)
        else:
            d = w.throttled(sequence, self.retry_delay)
            if d is not None:
                d.attempts += 1

    def timed_out(self, account_id: int, sink: Sink, sequence: int) -> None:
        """No answer in time: back to the head of the line, in order."""
        a = self._accounts.get(account_id)
        w = a.windows.get(sink) if a is not None else None
        if w is not None:
            d = w.retry(sequence)
            if d is not None:
                d.attempts += 1

    def _forget_when_deleted(self, a: _Account, delivery_id: int) -> None:
        """Delete the row; keep the id as known until the delete commits, so that
        a refill in between cannot read the row back and deliver it twice."""
        def deleted(_) -> None:
            a.known.discard(delivery_id)
            if a.loading:
                a.done_while_loading.add(delivery_id)

        self.writer.submit_then("delivered", delivery_id, deleted, deleted)

    # ------------------------------------------------------------------ output

    def pump(self, account_id: int) -> None:
        """Fill the receivers' free slots; read the table again when it holds more."""
        a = self._accounts.get(account_id)
        if a is None or not a.windows:
            return
        a.line.pump()
        if a.spilled:
            self._refill(account_id)

    def _refill(self, account_id: int) -> None:
        a = self._acct(account_id)
        if a.loading or not a.spilled or not a.windows:
            return
        a.loading = True
        a.spilled = False
        start, a.spill_from = a.spill_from or 0, None
        a.done_while_loading = set()
        d = self._load(account_id, self.max_queued, max(start - 1, 0))

        def respill(from_id: int) -> None:
            a.spilled = True
            if a.spill_from is None or from_id < a.spill_from:
                a.spill_from = from_id

        def loaded(rows: list[Delivery]) -> None:
            a.loading = False
            done, a.done_while_loading = a.done_while_loading, set()
            if not a.windows:  # the receivers left meanwhile: the table keeps it all
                a.spilled = True
                a.spill_from = 0
                return
            if len(rows) >= self.max_queued:
                respill(rows[-1].id + 1)  # more in the table than we loaded
            known = a.known
            put = a.line.put
            for r in rows:
                if r.id not in known and r.id not in done:
                    known.add(r.id)
                    put(r)

        def failed(f) -> None:
            a.loading = False
            a.done_while_loading = set()
            respill(start)
            log.error("loading outbox for account %d failed: %s", account_id, f.getErrorMessage())

        d.addCallbacks(loaded, failed)

    def refill_all(self) -> None:
        """Read the table again for every account with a bound receiver (rows written by another
        process: ``staffetta mo replay``)."""
        for account_id, a in self._accounts.items():
            if a.windows:
                a.spilled = True
                a.spill_from = 0
                self._refill(account_id)

    def queued(self, account_id: int) -> int:
        a = self._accounts.get(account_id)
        return len(a.line) if a else 0
