"""The writer's wake-up handshake under the interleaving that stalled the hub.

Seen under load (bench_spine, window 50, several times, with the earlier
Condition-based wake-up): the writer asleep in its wait with items queued, the
reactor idle, every later submit unanswered. The cause: an ``_append`` that
read ``_idle`` while the writer was about to find that very item, then woke it
only after the writer had written it and gone back to sleep. That wake-up was
for nothing; the writer slept again with ``_idle`` still False, so no later
``_append`` ever woke it.

The interleaving is forced here, with the real ``_append`` and ``_run``: the
deque holds the writer inside its look (``_idle`` up) until the other thread
has read ``_idle``, and the wake-up lock holds that thread's release back
until the writer sleeps again. Real SQLite, real reactor.
"""

from __future__ import annotations

import collections
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from staffetta.store.db import make_engine
from staffetta.store.writer import GroupCommitWriter

from .test_writer import meta, rows, until, within

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def engine(tmp_path):
    e = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    meta.create_all(e)
    yield e
    e.dispose()


def write_rows(conn, items):
    conn.exec_driver_sql("INSERT INTO log (seq, what) VALUES (?, ?)", [(s, w) for s, w in items])
    return [s * 10 for s, _ in items]


class _HeldLook(collections.deque):
    """Holds the writer's first look at the deque made with ``_idle`` up until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.writer: GroupCommitWriter | None = None
        self.looking = threading.Event()
        self.go = threading.Event()

    def __len__(self) -> int:
        w = self.writer
        if w is not None and w._idle and threading.current_thread() is w._thread and not self.go.is_set():
            self.looking.set()
            self.go.wait(10)
        return super().__len__()


class _GatedSignal:
    """The writer's wake-up lock, whose release by one named thread waits for ``gate``;
    counts the writer's sleeps (its blocking acquires)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.gated: threading.Thread | None = None
        self.arrived = threading.Event()
        self.gate = threading.Event()
        self.sleeps = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking:
            self.sleeps += 1
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        if threading.current_thread() is self.gated and not self.gate.is_set():
            self.arrived.set()
            self.gate.wait(10)
        self._lock.release()

    def asleep(self) -> bool:
        """Whether the writer waits in a blocking acquire now."""
        return self._lock.locked()


@ensure
async def test_a_late_wake_up_for_an_item_already_written_does_not_leave_the_writer_deaf(engine) -> None:
    w = GroupCommitWriter(engine, reactor, max_delay=0)
    w.register("insert", write_rows)
    look = _HeldLook()
    look.writer = w
    signal = _GatedSignal()
    w._items, w._wake = look, signal
    w.start()
    try:
        # The writer is inside its look at an empty deque, _idle up.
        assert await threads.deferToThread(look.looking.wait, 10)
        first = []

        def append_late() -> None:  # the reactor's _append, its wake-up delayed
            signal.gated = threading.current_thread()
            w.submit_then("insert", (1, "a"), first.append, first.append)

        appender = threading.Thread(target=append_late)
        appender.start()
        assert await threads.deferToThread(signal.arrived.wait, 10)  # it read _idle (True), lowered it
        look.go.set()  # the writer finds the item, writes it, and sleeps again
        await until(lambda: first == [10] and signal.sleeps == 1 and signal.asleep())
        signal.gate.set()  # the late wake-up: for nothing
        await threads.deferToThread(appender.join, 10)
        await until(lambda: signal.sleeps == 2)  # asleep again, _idle up
        assert w._idle
        # The next item must wake it.
        assert await within(w.submit("insert", (2, "b")), 5) == 20
        assert rows(engine) == {1: "a", 2: "b"}
    finally:
        look.go.set()
        signal.gate.set()
        await w.stop()
