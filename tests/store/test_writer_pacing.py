"""The writer paces itself on the reactor: no batch begins before the previous batch's results were taken.

A commit costs about the same whatever its size, and the results of a commit
made while the reactor still holds the previous ones answer nobody sooner, so
items gather until the reactor has run the hand-back (``handback_wait`` at
most). A reactor here is a queue of ``callFromThread`` calls the test runs
when it chooses, on a real SQLite file.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Column, Integer, MetaData, Table

from staffetta.store.db import make_engine
from staffetta.store.writer import GroupCommitWriter, _signal
from tests.polling import wait_for

meta = MetaData()
Table("paced", meta, Column("n", Integer, primary_key=True))


class HeldReactor:
    """``callFromThread`` queues; :meth:`run_pending` plays the reactor's turn."""

    def __init__(self) -> None:
        self.calls: list = []
        self.lock = threading.Lock()

    def callFromThread(self, f, *args) -> None:  # noqa: N802 - Twisted's name
        with self.lock:
            self.calls.append((f, args))

    def run_pending(self) -> int:
        with self.lock:
            calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)
        return len(calls)

    def run_until(self, predicate, timeout: float = 10.0) -> None:
        """Play the reactor's turns until ``predicate()`` holds."""
        def turn() -> bool:
            self.run_pending()
            return bool(predicate())

        wait_for(turn, timeout, "reactor", interval=0.002)


def insert(conn, items):
    conn.exec_driver_sql("INSERT INTO paced (n) VALUES (?)", [(n,) for n in items])


@pytest.fixture
def engine(tmp_path):
    e = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    meta.create_all(e)
    yield e
    e.dispose()


def start(engine, reactor, **kw) -> GroupCommitWriter:
    w = GroupCommitWriter(engine, reactor, max_delay=0, **kw)
    w.register("insert", insert)
    w.start()
    return w


def end(w: GroupCommitWriter, reactor: HeldReactor) -> None:
    w._stopped = True
    w._stopping = True
    _signal(w._wake)
    while w._thread.is_alive():
        reactor.run_pending()
        w._thread.join(0.01)


def test_no_batch_begins_before_the_reactor_took_the_previous_results(engine):
    reactor = HeldReactor()
    w = start(engine, reactor, handback_wait=30.0)
    try:
        w.enqueue("insert", 1)
        wait_for(lambda: w.batches == 1, interval=0.002)
        for n in range(2, 11):
            w.enqueue("insert", n)
        # The writer has woken for 2..10 and now waits on the reactor's hand-back
        # (without pacing it would never wait there, and 2..10 would be written).
        wait_for(lambda: w._awaiting, what="writer waiting for the hand-back")
        assert w.batches == 1 and w.items == 1
        assert reactor.run_pending() == 1  # the reactor's turn: batch 1's results
        wait_for(lambda: w.items == 10, interval=0.002)
        assert w.batches == 2  # 2..10 in one commit
    finally:
        end(w, reactor)


def test_a_reactor_that_never_takes_the_results_delays_a_batch_by_handback_wait_only(engine):
    reactor = HeldReactor()
    w = start(engine, reactor, handback_wait=0.1)
    try:
        w.enqueue("insert", 1)
        wait_for(lambda: w.batches == 1, interval=0.002)
        began = time.monotonic()
        w.enqueue("insert", 2)
        wait_for(lambda: w.batches == 2, timeout=5.0, interval=0.002)
        assert time.monotonic() - began < 2.0
    finally:
        end(w, reactor)


def test_results_handed_back_run_before_the_next_batch_and_in_order(engine):
    """Each hand-back runs its waiters; what they append goes into the next batch."""
    reactor = HeldReactor()
    w = start(engine, reactor, handback_wait=30.0)
    seen: list[int] = []
    try:
        def then(n):
            seen.append(n)
            if n < 5:  # a result that queues the next write, as a committed submit does
                w.submit_then("insert", n + 1, lambda _r, n=n + 1: then(n), pytest.fail)

        w.submit_then("insert", 1, lambda _r: then(1), pytest.fail)
        reactor.run_until(lambda: len(seen) == 5)
        assert seen == [1, 2, 3, 4, 5]
        assert w.batches == 5
    finally:
        end(w, reactor)
