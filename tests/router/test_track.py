"""Correlation memory: insert and eviction in O(1), the carrier key of an evicted message deleted directly."""

from __future__ import annotations

import time

from twisted.internet import task

from staffetta.router.record import MessageRecord
from staffetta.router.router import Router


def _router(max_tracked: int) -> Router:
    return Router(None, task.Clock(), None, None, lambda: 0, max_tracked=max_tracked)


def _record(mid: int) -> MessageRecord:
    r = MessageRecord.__new__(MessageRecord)
    r.id, r.connector, r.upstream_id = mid, None, None
    return r


def _answered(router: Router, record: MessageRecord, uid: str) -> None:
    """What Router.submit_answered files for a carrier's submit_sm_resp."""
    router._by_upstream[("sim", uid)] = record


def test_the_oldest_is_evicted_with_its_carrier_key():
    router = _router(3)
    index = router._by_upstream
    records = [_record(i) for i in range(5)]
    for r in records:
        router._track(r)
        _answered(router, r, f"c{r.id}")
    assert list(router._by_message) == [2, 3, 4]
    assert sorted(router._by_upstream) == [("sim", "c2"), ("sim", "c3"), ("sim", "c4")]
    assert router._by_upstream is index  # deleted from, never rebuilt
    assert (records[0].connector, records[0].upstream_id) == ("sim", "c0")


def test_a_message_sent_again_keeps_only_its_newest_carrier_key():
    router = _router(2)
    r = _record(1)
    router._track(r)
    _answered(router, r, "first")
    _answered(router, r, "second")  # resent after the link dropped
    assert list(router._by_upstream) == [("sim", "second")]
    router._track(_record(2))
    router._track(_record(3))  # evicts 1
    assert router._by_upstream == {}


def test_cost_per_message_does_not_grow_with_the_table():
    """A carrier that never sends receipts: every message evicts one; time stays linear in messages."""

    def run(max_tracked: int, n: int) -> float:
        router = _router(max_tracked)
        started = time.perf_counter()
        for i in range(n):
            r = _record(i)
            router._track(r)
            _answered(router, r, str(i))
        assert len(router._by_upstream) == max_tracked
        return time.perf_counter() - started

    small = run(100, 30_000)
    large = run(10_000, 30_000)  # the old rebuild: 20,000 evictions x 10,000 keys
    assert large < max(5 * small, 0.5)
