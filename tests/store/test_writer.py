"""The group-commit writer on a real SQLite file: order, batching, failures, wake-ups, stop."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from twisted.internet import defer, reactor, task

from staffetta.store.db import make_engine
from staffetta.store.writer import GroupCommitWriter, WriterStopped

ensure = pytest_twisted.ensureDeferred
meta = MetaData()
log_table = Table("log", meta, Column("seq", Integer, primary_key=True), Column("what", String(16)))


def write_rows(conn, items):
    conn.exec_driver_sql("INSERT INTO log (seq, what) VALUES (?, ?)", [(s, w) for s, w in items])
    return [s * 10 for s, _ in items]


def update_rows(conn, items):
    conn.exec_driver_sql("UPDATE log SET what = ? WHERE seq = ?", [(w, s) for s, w in items])


def boom(conn, items):
    raise RuntimeError("disk on fire")


@pytest.fixture
def engine(tmp_path):
    e = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    meta.create_all(e)
    yield e
    e.dispose()


def make_writer(engine, **kw) -> GroupCommitWriter:
    w = GroupCommitWriter(engine, reactor, **kw)
    w.register("insert", write_rows)
    w.register("update", update_rows)
    w.register("boom", boom)
    w.start()
    return w


def rows(engine) -> dict[int, str]:
    with engine.connect() as c:
        return dict(c.execute(select(log_table.c.seq, log_table.c.what)).all())


def within(d: defer.Deferred, seconds: float = 10.0) -> defer.Deferred:
    return d.addTimeout(seconds, reactor)


async def until(pred, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await task.deferLater(reactor, 0.001, lambda: None)


@ensure
async def test_results_reach_their_waiters_in_submission_order(engine) -> None:
    w = make_writer(engine)
    try:
        seen: list[tuple[str, int]] = []
        ds = []
        for i in range(1, 301):
            if i % 3 == 0:
                w.submit_then("insert", (i, "new"), lambda r, i=i: seen.append(("then", r)), seen.append)
            elif i % 3 == 1:
                ds.append(w.submit("insert", (i, "new")).addCallback(lambda r: seen.append(("d", r))))
            else:
                w.enqueue("insert", (i, "new"))
            # An update queued after its insert is applied after it, in whatever batch.
            w.enqueue("update", (i, f"upd{i}"))
        await within(defer.gatherResults(ds))
        await until(lambda: len(seen) == 200)
        assert [r for _, r in seen] == [i * 10 for i in range(1, 301) if i % 3 != 2]
        assert rows(engine) == {i: f"upd{i}" for i in range(1, 301)}
    finally:
        await w.stop()


@ensure
async def test_items_of_one_turn_share_a_transaction(engine) -> None:
    w = make_writer(engine, max_batch=200, max_delay=0.05)
    try:
        ds = [w.submit("insert", (i, "x")) for i in range(1, 501)]
        await within(defer.gatherResults(ds))
        assert w.items == 500
        assert w.batches <= 5  # 500 items, at most 200 a batch: not one commit each
    finally:
        await w.stop()


@ensure
async def test_a_failed_batch_fails_every_waiter_and_writes_nothing(engine) -> None:
    w = make_writer(engine, max_delay=0.05)
    try:
        failures: list[Exception] = []
        d = w.submit("insert", (1, "x"))
        w.submit_then("boom", None, lambda r: failures.append(None), failures.append)
        w.enqueue("insert", (2, "y"))
        with pytest.raises(RuntimeError, match="disk on fire"):
            await d
        await until(lambda: failures)
        assert isinstance(failures[0], RuntimeError)
        assert rows(engine) == {}  # one transaction: rolled back whole
        # The writer goes on with the next batch.
        assert await w.submit("insert", (3, "z")) == 30
    finally:
        await w.stop()


@ensure
async def test_a_callback_that_raises_does_not_starve_the_others(engine) -> None:
    w = make_writer(engine, max_delay=0.05)
    try:
        def bad(_):
            raise ValueError("bug in a caller")

        w.submit_then("insert", (1, "x"), bad, bad)
        assert await w.submit("insert", (2, "y")) == 20
    finally:
        await w.stop()


@ensure
async def test_an_idle_writer_always_wakes_for_the_next_item(engine) -> None:
    """The race between "the deque looks empty, go to sleep" and an append."""
    w = make_writer(engine, max_delay=0)
    try:
        for i in range(1, 301):
            if i % 2:
                await until(lambda: w._idle)  # let it fall asleep first
            assert await within(w.submit("insert", (i, "x"))) == i * 10
    finally:
        await w.stop()


@ensure
async def test_a_writer_idle_for_longer_than_the_delay_writes_at_once(engine) -> None:
    """Batches begin at least max_delay apart; a lone item on a quiet hub does not wait for it."""
    w = make_writer(engine, max_delay=0.3)
    try:
        await within(w.submit("insert", (1, "x")))
        await task.deferLater(reactor, 0.4, lambda: None)  # idle for longer than the delay
        started = time.monotonic()
        await within(w.submit("insert", (2, "x")))
        assert time.monotonic() - started < 0.15
        # Right after a batch began, the next one waits out the rest of the delay.
        started = time.monotonic()
        await within(w.submit("insert", (3, "x")))
        assert time.monotonic() - started > 0.2
    finally:
        await w.stop()


@ensure
async def test_stop_drains_what_is_queued_then_refuses(engine) -> None:
    w = make_writer(engine, max_delay=0.2)
    for i in range(1, 101):
        w.enqueue("insert", (i, "x"))
    await w.stop()
    assert len(rows(engine)) == 100
    with pytest.raises(WriterStopped):
        await w.submit("insert", (101, "x"))
    failures: list[Exception] = []
    w.submit_then("insert", (102, "x"), failures.append, failures.append)
    assert isinstance(failures[0], WriterStopped)
