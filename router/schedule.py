"""Scheduled delivery: messages accepted now and handed to their route at their time.

A submit_sm with a ``schedule_delivery_time`` in the future is accepted,
debited and written like any other (its row has ``deliver_at`` and
``message_state`` SCHEDULED), then waits here instead of in its route's line.
Why a separate hold and not the route's line: a line is sent from its head in
order of acceptance, and a message due tomorrow must not stand in front of
today's traffic.

:class:`Schedule` keeps one heap of ``(due, message id)`` and one reactor
timer armed for the earliest (as the simulator's receipts heap): O(log n) per
message, never one ``callLater`` per message. ``due`` is the release time, or
the end of validity when that comes first (so validity is enforced while a
message waits here too). Equal times leave in order of acceptance (message id).
A cancelled message leaves the index at once and its heap entry is skipped
when it surfaces (the heap is rebuilt when such entries outnumber the live
ones, so its size stays proportional to what is held).

The row is the durable copy: after a restart the router's resume hands every
queued row to :meth:`Router.forward`, which holds again here those not yet due.

:func:`lifetime` is the one rule for a scheduled message's dates, read by the
submit pipeline before the write.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from staffetta.pdu.constants import Status
from staffetta.router.record import MessageRecord

log = logging.getLogger(__name__)

#: Messages held waiting for their time by default (each ~1 KB in memory, as in flight).
DEFAULT_LIMIT = 200_000


def lifetime(schedule: datetime | None, validity: datetime | None, now: float,
             default_validity: float, max_validity: float) -> tuple[float | None, float]:
    """``(deliver_at, expires_at)`` of an accepted message.

    ``deliver_at`` is None unless ``schedule`` is in the future (a time already
    past means "now", as 3.4 §5.2.15's NULL). The default validity and the
    clamp count from the release, not the acceptance: a message scheduled in
    3 days with no validity gets its 72 hours of delivery attempts after it
    leaves, not an expiry before it ever could. (assess_submit already refused
    a validity that ends before the schedule.)
    """
    deliver_at = None
    base = now
    if schedule is not None:
        ts = schedule.timestamp()
        if ts > now:
            deliver_at = base = ts
    if validity is None:
        return deliver_at, base + default_validity
    return deliver_at, min(validity.timestamp(), base + max_validity)


class Schedule:
    """Messages waiting for their release time; ``release(record)`` / ``expired(record)`` when due.

    ``clock`` is the reactor (``seconds``, ``callLater``); tests give a
    ``task.Clock``. ``horizon``: how far ahead a schedule may be (seconds);
    ``limit``: how many messages may wait here at once.
    """

    def __init__(self, clock: Any, release: Callable[[MessageRecord], None],
                 expired: Callable[[MessageRecord], None], *, horizon: float,
                 limit: int = DEFAULT_LIMIT) -> None:
        self.clock = clock
        self.release = release
        self.expired = expired
        self.horizon = horizon
        self.limit = limit
        self._held: dict[int, MessageRecord] = {}
        self._heap: list[tuple[float, int]] = []
        self._timer: Any = None
        self._timer_due = 0.0

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, message_id: int) -> bool:
        return message_id in self._held

    def __iter__(self) -> Iterator[MessageRecord]:
        return iter(self._held.values())

    def admit(self, deliver_at: float, now: float) -> tuple[int, str] | None:
        """Before the write: ``(status, reason)`` if a message due at ``deliver_at`` cannot be held."""
        if deliver_at <= now:
            return None  # not held: sent at once
        if deliver_at > now + self.horizon:
            return (int(Status.ESME_RINVSCHED),
                    f"schedule_delivery_time: more than {self.horizon / 86400:g} days ahead")
        if len(self._held) >= self.limit:
            return int(Status.ESME_RMSGQFUL), f"schedule: {self.limit} messages already held"
        return None

    def hold(self, record: MessageRecord) -> bool:
        """Keep ``record`` until its ``deliver_at`` (True), or False if it is due now (send it)."""
        deliver_at = record.deliver_at
        now = self.clock.seconds()
        if deliver_at is None or deliver_at <= now:
            return False
        mid = record.id
        if mid in self._held:  # pragma: no cover - resume reads each row once
            return True
        self._held[mid] = record
        due = min(deliver_at, record.expires_at)
        heapq.heappush(self._heap, (due, mid))
        if self._timer is None:
            self._arm(now)
        elif due < self._timer_due:
            self._timer_due = due
            self._timer.reset(max(0.0, due - now))
        return True

    def take(self, match: Callable[[MessageRecord], bool], message_id: int | None = None) -> list[MessageRecord]:
        """Withdraw (cancel_sm) the held messages ``match`` selects, in order of acceptance.

        With ``message_id`` only that message is looked at (O(1)); without,
        every held message is (cancel_sm by source and destination).
        """
        held = self._held
        if message_id is not None:
            r = held.get(message_id)
            candidates = [r] if r is not None else []
        else:
            candidates = sorted(held.values(), key=lambda r: r.id)
        out = [r for r in candidates if match(r)]
        for r in out:
            del held[r.id]
        if out and len(self._heap) > 2 * len(held) + 64:
            self._heap = [(d, m) for d, m in self._heap if m in held]
            heapq.heapify(self._heap)
        return out

    def stop(self) -> None:
        """Disarm the timer (the hub stops; the rows stay for the next start)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # ------------------------------------------------------------------ timer

    def _arm(self, now: float) -> None:
        heap, held = self._heap, self._held
        while heap and heap[0][1] not in held:  # cancelled
            heapq.heappop(heap)
        if not heap:
            self._timer = None
            return
        due = heap[0][0]
        self._timer_due = due
        self._timer = self.clock.callLater(max(0.0, due - now), self._fire)

    def _fire(self) -> None:
        """Release (or expire) everything due, earliest first, then arm for the next."""
        self._timer = None
        now = self.clock.seconds()
        heap, held = self._heap, self._held
        while heap and heap[0][0] <= now:
            _, mid = heapq.heappop(heap)
            record = held.pop(mid, None)
            if record is None:
                continue  # cancelled
            try:
                if record.expires_at <= now:
                    self.expired(record)
                else:
                    self.release(record)
            except Exception:  # one bad message must not stop the others, nor the reactor
                log.exception("releasing scheduled message %d failed", mid)
        self._arm(now)
