"""Correlation memory: insert and eviction in O(1), the carrier key of an evicted message deleted directly."""

from __future__ import annotations

from twisted.internet import task

from staffetta.router.record import MessageRecord
from staffetta.router.router import Router, UpstreamIndex


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


class NeverScanned(UpstreamIndex):
    """The carrier-key index, refusing every whole-table walk: eviction must go to its key."""

    __slots__ = ()

    def _scan(self, *args):
        raise AssertionError("the whole index was walked")

    __iter__ = items = keys = values = copy = _scan


def test_eviction_never_walks_the_index():
    """A carrier that never sends receipts: every message evicts one, and costs the same as the first."""
    router = _router(1000)
    router._by_upstream = NeverScanned()
    for i in range(5000):
        r = _record(i)
        router._track(r)
        _answered(router, r, str(i))
    assert len(router._by_upstream) == len(router._by_message) == 1000
    assert dict.get(router._by_upstream, ("sim", "3999")) is None
    assert dict.get(router._by_upstream, ("sim", "4000")) is router._by_message[4000]
