"""Group commit: many small durable writes, one transaction.

An acknowledgement is a promise (ARCHITECTURE principle 2), so submit_sm_resp
waits for the message row to be committed. One row per commit tops out at a
few thousand rows/s here; batches of ~100 reach 25k+. The writer thread takes
whatever has queued (up to ``max_batch``, waiting at most ``max_delay`` for
more), runs the handlers in submission order inside one transaction, commits,
then hands every result back to the reactor in a single ``callFromThread``.

Items reach the thread as one list per reactor turn, not one by one: each
``put`` wakes the writer and hands it the GIL, and measured here that cost more
than the SQL. Handlers are registered per kind and get consecutive runs of their kind, so a
message insert queued before the update of the same message stays before it.
The thread holds the GIL only while SQLAlchemy builds statements; the SQLite
and libpq calls release it, so the reactor keeps running during I/O.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection, Engine
from twisted.internet import defer

log = logging.getLogger(__name__)

Handler = Callable[[Connection, list[Any]], list[Any] | None]

_STOP = object()


class WriterStopped(Exception):
    pass


class GroupCommitWriter:
    def __init__(
        self,
        engine: Engine,
        reactor,
        *,
        max_batch: int = 200,
        max_delay: float = 0.002,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.reactor = reactor
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._handlers: dict[str, Handler] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._pending: list = []
        self._handoff_call = None
        self._idle = threading.Event()
        self._on_batch = on_batch
        self.batches = 0
        self.items = 0

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="staffetta-writer", daemon=True)
        self._thread.start()

    def submit(self, kind: str, item: Any) -> defer.Deferred:
        """Queue one write; the Deferred fires in the reactor after the commit."""
        d = defer.Deferred()
        if self._stopped:
            d.errback(WriterStopped("writer stopped"))
            return d
        self._pending.append((kind, item, d))
        if self._handoff_call is None:
            self._handoff_call = self.reactor.callLater(0, self._handoff)
        return d

    def enqueue(self, kind: str, item: Any) -> None:
        """Queue a write nobody waits for (a failure is logged): no Deferred to build and fire."""
        if self._stopped:
            log.error("writer stopped: %s write dropped", kind)
            return
        self._pending.append((kind, item, None))
        if self._handoff_call is None:
            self._handoff_call = self.reactor.callLater(0, self._handoff)

    def _handoff(self) -> None:
        self._handoff_call = None
        if self._pending:
            batch, self._pending = self._pending, []
            self._queue.put(batch)

    def stop(self) -> defer.Deferred:
        """Drain what is queued, then end the thread."""
        self._stopped = True
        if self._handoff_call is not None:
            self._handoff_call.cancel()
        self._handoff()
        self._queue.put(_STOP)
        if self._thread is None:
            return defer.succeed(None)
        from twisted.internet import threads

        return threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self._thread.join
        )

    # ------------------------------------------------------------- the thread

    def _run(self) -> None:
        q = self._queue
        stop = False
        while not stop:
            first = q.get()
            if first is _STOP:
                break
            batch = list(first)
            deadline = time.monotonic() + self.max_delay
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    more = q.get_nowait() if remaining <= 0 else q.get(timeout=remaining)
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.extend(more)
            self._write(batch)

    def _write(self, batch: list) -> None:
        started = time.monotonic()
        outcome: list[tuple[defer.Deferred, bool, Any]] = []
        try:
            with self.engine.begin() as conn:
                i = 0
                n = len(batch)
                while i < n:
                    kind = batch[i][0]
                    j = i + 1
                    while j < n and batch[j][0] == kind:
                        j += 1
                    run = batch[i:j]
                    results = self._handlers[kind](conn, [b[1] for b in run])
                    if results is None:
                        results = [None] * len(run)
                    outcome.extend((b[2], True, r) for b, r in zip(run, results, strict=True))
                    i = j
        except Exception as exc:  # the whole batch failed: every waiter hears it
            log.exception("group commit of %d items failed", len(batch))
            outcome = [(b[2], False, exc) for b in batch]
        self.batches += 1
        self.items += len(batch)
        if self._on_batch is not None:
            self._on_batch(len(batch), time.monotonic() - started)
        self.reactor.callFromThread(_fire, outcome)


def _fire(outcome: list[tuple[defer.Deferred | None, bool, Any]]) -> None:
    for d, ok, value in outcome:
        if d is None:
            continue  # enqueue(): the failure was logged with the batch
        if ok:
            d.callback(value)
        else:
            d.errback(value)
