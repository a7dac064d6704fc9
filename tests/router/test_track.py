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


def _due(mid: int, expires_at: float) -> MessageRecord:
    r = _record(mid)
    r.expires_at = expires_at
    return r


def test_messages_are_forgotten_once_validity_and_grace_have_passed():
    """A carrier that never answers: state expires by rule (validity + grace), oldest first."""
    clock = task.Clock()
    router = Router(None, clock, None, None, lambda: 0, max_tracked=100, track_grace=60.0)
    for i, expires in enumerate([100.0, 100.0, 500.0, 200.0]):
        r = _due(i, expires)
        router._track(r)
        _answered(router, r, f"c{i}")
    clock.advance(159)
    assert router.forget_expired() == 0
    clock.advance(1)  # 160 = 100 + 60: the first two are due
    assert router.forget_expired() == 2
    assert list(router._by_message) == [2, 3]
    assert sorted(router._by_upstream) == [("sim", "c2"), ("sim", "c3")]
    clock.advance(1000)
    assert router.forget_expired() == 2 and not router._by_message and not router._by_upstream


def test_memory_per_message_in_flight_is_within_its_documented_bound():
    """docs/operations.md: a message awaiting its receipt holds at most 1 KB (short GSM text)."""
    import gc
    import tracemalloc

    from staffetta.pdu.message import AccountPolicy, assess_submit
    from tests.builders import submit_fields

    n = 5_000
    fields = submit_fields(text="Your code is 123456. It expires in 10 minutes.", registered_delivery=1)
    policy = AccountPolicy()
    router = _router(n + 1)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        # Each message its own objects, as they come off the wire.
        f = dict(fields, destination_addr=b"3933312%05d" % i, short_message=bytes(fields["short_message"]))
        a = assess_submit(f, {}, policy)
        r = MessageRecord.from_submit(1_000_000 + i, 3, f, {}, a, 1.8e9 + i, 1.8e9 + 86400, "default", None)
        router._track(r)
        _answered(router, r, "%08x" % (0x10000000 + i))
    per_message = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    assert per_message <= 1024, per_message


def test_memory_per_queued_receipt_is_within_its_documented_bound():
    """docs/operations.md: a client receipt queued in memory for a bound client holds at most 0.6 KB."""
    import gc
    import tracemalloc

    from staffetta.pdu.message import AccountPolicy, assess_submit
    from staffetta.pdu.window import Line
    from staffetta.router.messages import Delivery
    from staffetta.router.router import client_receipt
    from tests.builders import submit_fields

    n = 5_000
    f = submit_fields(text="Your code is 123456. It expires in 10 minutes.")
    a = assess_submit(f, {}, AccountPolicy())
    records = [MessageRecord.from_submit(1_000_000 + i, 3, dict(f), {}, a, 1.8e9, 1.8e9 + 86400, "default", None)
               for i in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    line = Line()
    for i, r in enumerate(records):
        line.put(Delivery(10_000 + i, 3, r.id, "dlr", client_receipt(r, 2, 0, 1.8e9 + 5), 1.8e9, 1.8e9 + 86400))
    per_receipt = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    assert per_receipt <= 600, per_receipt


def test_eviction_costs_the_same_with_a_full_table_as_with_a_small_one():
    """A carrier that never sends receipts: past max_tracked every message evicts the oldest.

    A plain dict's first item costs a scan of the slots its earlier deletions
    left (CPython), so eviction from a dict of 200,000 costs ~100x what it does
    from one of 2,000: the cliff of the soak benchmark. Both sizes must cost
    about the same (a wide margin: timing on a shared machine).
    """
    import time

    def per_eviction(size: int, warm: int = 100_000, n: int = 20_000) -> float:
        """Seconds per message once ``warm`` messages have already evicted as many."""
        router = _router(size)
        for i in range(size + warm):
            router._track(_record(i))
        start = time.perf_counter()
        for i in range(size + warm, size + warm + n):
            router._track(_record(i))
        return (time.perf_counter() - start) / n

    small, large = per_eviction(2_000), per_eviction(200_000)
    assert large < 10 * small, (small, large)
