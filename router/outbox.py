"""Deliver what clients are owed (receipts, MO) to their bound RX/TRX sessions.

Nothing is lost: a delivery is in the ``outbox`` table before it gets here, and
it leaves the table only when the client answered its deliver_sm. Memory is
bounded: an account with no bound receiver keeps nothing in memory (the table
holds it); one that is bound keeps at most ``max_queued`` waiting, the rest is
read back from the table as the queue drains.

A *sink* is a bound client session seen from here: anything with a
``window_free`` int and a ``send_delivery(delivery)`` method; it reports back
with :meth:`Outbox.acknowledged` or :meth:`Outbox.failed`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from twisted.internet import defer

from staffetta.pdu.constants import Status
from staffetta.router.messages import Delivery

log = logging.getLogger(__name__)

# Enum members read per message, as globals (an Enum class attribute costs ~120 ns
# on Python 3.11: see pdu/session.py).
_ROK = Status.ESME_ROK

#: deliver_sm_resp statuses after which we must not retry (3.4 Table 5-2).
PERMANENT = frozenset({Status.ESME_RX_P_APPN, Status.ESME_RX_R_APPN})


class Sink(Protocol):
    window_free: int

    def send_delivery(self, delivery: Delivery) -> None: ...


class _Account:
    __slots__ = ("queue", "known", "sinks", "spilled", "loading", "rr", "done_while_loading")

    def __init__(self) -> None:
        self.queue: deque[Delivery] = deque()
        self.known: set[int] = set()  # ids queued here or in flight
        self.sinks: list[Sink] = []
        self.spilled = True  # the table may hold rows that are not in memory
        self.loading = False
        self.rr = 0
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
        on_event: Callable[[str, int], None] | None = None,
    ) -> None:
        self.writer = writer
        self.reactor = reactor
        self._load = load  # (account_id, limit) -> Deferred[list[Delivery]]
        self.max_queued = max_queued
        self.retry_delay = retry_delay
        self._accounts: dict[int, _Account] = {}
        self._on_event = on_event

    def _acct(self, account_id: int) -> _Account:
        a = self._accounts.get(account_id)
        if a is None:
            a = self._accounts[account_id] = _Account()
        return a

    def _event(self, name: str, account_id: int) -> None:
        if self._on_event is not None:
            self._on_event(name, account_id)

    # ----------------------------------------------------------------- inputs

    def add(self, delivery: Delivery) -> None:
        """A delivery whose outbox row is committed."""
        a = self._acct(delivery.account_id)
        if not a.sinks or len(a.queue) >= self.max_queued:
            a.spilled = True  # stays in the table until a receiver can take it
            self._event("queued", delivery.account_id)
            return
        a.queue.append(delivery)
        a.known.add(delivery.id)
        self.pump(delivery.account_id)

    def attach(self, account_id: int, sink: Sink) -> None:
        a = self._acct(account_id)
        a.sinks.append(sink)
        self._refill(account_id)
        self.pump(account_id)

    def detach(self, account_id: int, sink: Sink) -> None:
        a = self._accounts.get(account_id)
        if a is None:
            return
        if sink in a.sinks:
            a.sinks.remove(sink)
        if not a.sinks:
            # Forget what is merely queued; in-flight ones come back via failed().
            for d in a.queue:
                a.known.discard(d.id)
            a.queue.clear()
            a.spilled = True

    def acknowledged(self, delivery: Delivery, status: int) -> None:
        a = self._acct(delivery.account_id)
        if status == _ROK or status in PERMANENT:
            if status:
                log.warning("client refused delivery %d permanently: 0x%08x", delivery.id, status)
            self._forget_when_deleted(a, delivery.id)
            self._event("delivered", delivery.account_id)
        else:
            self._retry_later(delivery)
        self.pump(delivery.account_id)

    def _forget_when_deleted(self, a: _Account, delivery_id: int) -> None:
        """Delete the row; keep the id as known until the delete commits, so that
        a refill in between cannot read the row back and deliver it twice."""
        def deleted(_) -> None:
            a.known.discard(delivery_id)
            if a.loading:
                a.done_while_loading.add(delivery_id)

        self.writer.submit_then("delivered", delivery_id, deleted, deleted)

    def failed(self, delivery: Delivery) -> None:
        """No answer (timeout, connection lost): try again later."""
        self._retry_later(delivery)

    def _retry_later(self, delivery: Delivery) -> None:
        delivery.attempts += 1
        a = self._acct(delivery.account_id)

        def again() -> None:
            if a.sinks:
                a.queue.appendleft(delivery)
                self.pump(delivery.account_id)
            else:
                a.known.discard(delivery.id)
                a.spilled = True

        self.reactor.callLater(min(self.retry_delay * delivery.attempts, 300.0), again)

    # ------------------------------------------------------------------ output

    def pump(self, account_id: int) -> None:
        a = self._accounts.get(account_id)
        if a is None or not a.sinks:
            return
        now = self.reactor.seconds()
        sinks = a.sinks
        while a.queue:
            sink = None
            for i in range(len(sinks)):
                s = sinks[(a.rr + i) % len(sinks)]
                if s.window_free > 0:
                    sink = s
                    a.rr = (a.rr + i + 1) % len(sinks)
                    break
            if sink is None:
                return
            d = a.queue.popleft()
            if d.expires_at <= now:
                self._forget_when_deleted(a, d.id)
                self._event("expired", account_id)
                continue
            sink.send_delivery(d)
        if a.spilled:
            self._refill(account_id)

    def _refill(self, account_id: int) -> None:
        a = self._acct(account_id)
        if a.loading or not a.spilled or not a.sinks:
            return
        a.loading = True
        a.spilled = False
        a.done_while_loading = set()
        d = self._load(account_id, self.max_queued)

        def loaded(rows: list[Delivery]) -> None:
            a.loading = False
            done, a.done_while_loading = a.done_while_loading, set()
            fresh = [r for r in rows if r.id not in a.known and r.id not in done]
            for r in fresh:
                a.known.add(r.id)
                a.queue.append(r)
            if len(rows) >= self.max_queued:
                a.spilled = True  # more in the table than we loaded
            if fresh:
                self.pump(account_id)

        def failed(f) -> None:
            a.loading = False
            a.done_while_loading = set()
            a.spilled = True
            log.error("loading outbox for account %d failed: %s", account_id, f.getErrorMessage())

        d.addCallbacks(loaded, failed)

    def queued(self, account_id: int) -> int:
        a = self._accounts.get(account_id)
        return len(a.queue) if a else 0
