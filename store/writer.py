"""Group commit: many small durable writes, one transaction.

An acknowledgement is a promise (ARCHITECTURE principle 2), so submit_sm_resp
waits for the message row to be committed. One row per commit tops out at a
few thousand rows/s here; batches of ~100 reach 25k+. The writer thread takes
whatever has queued (up to ``max_batch``, collecting for at least
``max_delay`` since its previous batch began), runs the handlers in submission
order inside one transaction, commits, then hands every result back to the
reactor in a single ``callFromThread``.

The reactor never waits for the thread and wakes it only when it sleeps idle:
an item is appended to a deque (thread-safe, no lock), and a busy writer finds
it at its next batch. Waking a thread costs two context switches and a GIL
hand-off on a one-core hub; measured here, waking it once per reactor turn cost
more than the SQL. Handlers are registered per kind and get consecutive runs of
their kind, so a message insert queued before the update of the same message
stays before it. The SQLite and libpq calls release the GIL, so the reactor
keeps running during I/O.

The writer also paces itself on the reactor: a batch does not begin while the
reactor has not yet taken the previous batch's results (``handback_wait`` at
most). Those results wait for the reactor whatever we do, so a commit made
meanwhile answers nobody sooner; it only takes the core from the reactor and
pays one more commit. A commit costs about the same whatever its size (~14
WAL pages here, ~59 KB: ``bench/bench_writer.py``: 2 messages a commit cost
the writer ~2.3x the CPU per message of 12 a commit), so on a busy hub
batches grow with the reactor's turns instead of with ``max_delay`` alone; on
a quiet one the reactor takes results at once and nothing changes.

Whoever waits for a write either gets a Deferred (:meth:`submit`) or hands two
plain callables (:meth:`submit_then`): the hot paths use the latter, since
building and firing a Deferred per write was ~5% of the reactor thread.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from itertools import repeat
from typing import Any

from sqlalchemy.engine import Connection, Engine
from twisted.internet import defer

log = logging.getLogger(__name__)

Handler = Callable[[Connection, list[Any]], list[Any] | None]
#: What waits for one item: nothing, a Deferred, or (on_committed, on_failed).
Waiter = defer.Deferred | tuple[Callable[[Any], object], Callable[[Exception], object]] | None


class WriterStopped(Exception):
    pass


class GroupCommitWriter:
    def __init__(
        self,
        engine: Engine,
        reactor,
        *,
        max_batch: int = 200,
        max_delay: float = 0.0005,
        handback_wait: float = 0.05,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.reactor = reactor
        self.max_batch = max_batch
        self.max_delay = max_delay
        #: The longest a batch waits for the reactor to take the previous one's results.
        self.handback_wait = handback_wait
        # True when the reactor has run the previous batch's results (and whatever
        # they appended is queued): the next batch may begin. A writer waiting for
        # it raises _awaiting and sleeps on _handed_wake, which the hand-back
        # releases only then: a threading.Event's set() took its Condition's lock
        # and ran notify_all on the reactor for every batch, waiting or not.
        self._handed = True
        self._awaiting = False
        self._handed_wake = _signal_lock()
        self._handlers: dict[str, Handler] = {}
        # (kind, item, waiter); appended by the reactor, popped by the thread.
        self._items: collections.deque[tuple[str, Any, Waiter]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._stopping = False  # the thread's view: drain, then end
        # The thread sleeps on _wake only when _items is empty; _idle says so.
        # _wake is a lock used as a binary semaphore (released: a wake-up is
        # pending): an _append that sees _idle releases it. A Condition's notify
        # cost the reactor its lock, an ownership probe and its waiter list, and
        # woke the writer into a second wait for that lock (py-spy: notify was
        # 5.7% of the reactor's samples holding the GIL).
        self._wake = _signal_lock()
        self._idle = False
        self._on_batch = on_batch
        self._conn: Connection | None = None  # the writer thread's own
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
        self._append((kind, item, d))
        return d

    def submit_then(
        self, kind: str, item: Any, on_committed: Callable[[Any], object], on_failed: Callable[[Exception], object]
    ) -> None:
        """Queue one write; after the commit, call ``on_committed(result)`` (or
        ``on_failed(exception)``) in the reactor. No Deferred: for the hot paths."""
        if self._stopped:
            on_failed(WriterStopped("writer stopped"))
            return
        self._append((kind, item, (on_committed, on_failed)))

    def enqueue(self, kind: str, item: Any) -> None:
        """Queue a write nobody waits for (a failure is logged with its batch)."""
        if self._stopped:
            log.error("writer stopped: %s write dropped", kind)
            return
        self._append((kind, item, None))

    def _append(self, entry: tuple[str, Any, Waiter]) -> None:
        # Append, then look at _idle; the thread raises _idle, then looks at the
        # deque (_run). Under the GIL one of the two looks sees the other's
        # write: the thread finds the item, or we wake it.
        self._items.append(entry)
        if self._idle:
            self._idle = False
            _signal(self._wake)

    def stop(self) -> defer.Deferred:
        """Drain what is queued, then end the thread."""
        self._stopped = True
        self._stopping = True
        _signal(self._wake)
        if self._thread is None:
            return defer.succeed(None)
        from twisted.internet import threads

        return threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self._thread.join
        )

    # ------------------------------------------------------------- the thread

    def _run(self) -> None:
        items = self._items
        collect_from = time.monotonic()
        while True:
            if not items:
                # _idle goes up before every look at the deque: an append that
                # this look misses sees _idle and wakes us (_append). Up again
                # after each wake-up: an _append that read _idle before our
                # previous look found its item wakes us late, for nothing (the
                # pending release), and lowers it (tests/store/test_writer_wakeup.py).
                while True:
                    self._idle = True
                    if items or self._stopping:
                        break
                    self._wake.acquire()
                self._idle = False
                if not items:  # stopping, and all is written
                    self._drop_connection()
                    return
            # Paced on the reactor (module docstring): while it has not taken the
            # previous batch's results, items gather. Bounded, so a reactor that
            # stopped or stalls delays a batch by handback_wait at most. The same
            # handshake as _idle's: raise _awaiting, then look at _handed.
            if not self._handed and not self._stopping:
                self._awaiting = True
                if not self._handed:
                    self._handed_wake.acquire(timeout=self.handback_wait)
                self._awaiting = False
            # Group commit: a batch begins no sooner than max_delay after the
            # previous one began. An item that wakes a writer idle for longer is
            # written at once (no wait on a quiet hub); under load, items gather
            # while the previous batch is written.
            remaining = collect_from + self.max_delay - time.monotonic()
            if remaining > 0 and len(items) < self.max_batch and not self._stopping:
                time.sleep(remaining)
            collect_from = time.monotonic()
            n = min(len(items), self.max_batch)
            batch = [items.popleft() for _ in range(n)]
            self._write(batch)

    def _drop_connection(self) -> None:
        """After a failure, start the next batch on a fresh connection (PostgreSQL may have gone)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing more to lose
                log.debug("closing the writer's connection failed", exc_info=True)

    def _write(self, batch: list) -> None:
        started = time.monotonic()
        outcome: list[tuple[Waiter, bool, Any]] = []
        try:
            conn = self._conn
            if conn is None or conn.invalidated or conn.closed:
                # One connection for the thread's life: a pool checkout and reset
                # per batch cost as much as a small batch's SQL.
                conn = self._conn = self.engine.connect()
            with conn.begin():
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
                        results = repeat(None)
                    elif len(results) != j - i:
                        raise ValueError(f"{kind}: {len(results)} results for {j - i} items")
                    # zip in C: a generator expression here cost ~200 instructions an item.
                    outcome.extend(zip([b[2] for b in run], repeat(True), results))
                    i = j
        except Exception as exc:  # the whole batch failed: every waiter hears it
            log.exception("group commit of %d items failed", len(batch))
            outcome = [(b[2], False, exc) for b in batch]
            self._drop_connection()
        self.batches += 1
        self.items += len(batch)
        if self._on_batch is not None:
            self._on_batch(len(batch), time.monotonic() - started)
        # A release left by a hand-back that came as we stopped waiting for it
        # would end the next wait at once: take it back first.
        self._handed_wake.acquire(blocking=False)
        self._handed = False
        self.reactor.callFromThread(self._hand_back, outcome)

    def _hand_back(self, outcome: list[tuple[Waiter, bool, Any]]) -> None:
        """In the reactor: a batch's results to their waiters, then let the next batch begin."""
        try:
            _fire(outcome)
        finally:
            self._handed = True
            if self._awaiting:
                _signal(self._handed_wake)


def _signal_lock() -> threading.Lock:
    """A lock used as a binary semaphore: acquired (no signal pending) until :func:`_signal`."""
    lock = threading.Lock()
    lock.acquire()
    return lock


def _signal(lock: threading.Lock) -> None:
    """Let one ``acquire`` of a :func:`_signal_lock` through, now or at its next call.

    Signals do not add up: one already pending is enough (release raises then).
    """
    try:
        lock.release()
    except RuntimeError:
        pass


def _fire(outcome: list[tuple[Waiter, bool, Any]]) -> None:
    for waiter, ok, value in outcome:
        if waiter is None:
            continue  # enqueue(): the failure was logged with the batch
        if type(waiter) is tuple:
            try:
                waiter[0](value) if ok else waiter[1](value)
            except Exception:  # one waiter's bug must not starve the others
                log.exception("group commit callback failed")
        elif ok:
            waiter.callback(value)
        else:
            waiter.errback(value)
