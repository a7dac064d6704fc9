"""The hold of scheduled messages (router/schedule.py), on a task.Clock: time, order, cancel, expiry."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from staffetta.conf.settings import UpstreamSettings
from staffetta.pdu.constants import MessageState, Status
from staffetta.pdu.window import Line
from staffetta.router.record import SCHEDULED, MessageRecord
from staffetta.router.router import Router
from staffetta.router.routes import Routing
from staffetta.router.schedule import Schedule, lifetime
from staffetta.router.table import table_from_config
from staffetta.router.upstream import Connector, Forward

T0 = 1_000_000.0
DAY = 86400.0


def _record(mid: int, deliver_at: float | None, expires_at: float | None = None, *,
            account_id: int = 1, source: str = "Shop", destination: str = "393331234567") -> MessageRecord:
    r = MessageRecord.__new__(MessageRecord)
    r.id, r.account_id, r.source_addr, r.destination = mid, account_id, source, destination
    r.deliver_at = deliver_at
    r.expires_at = expires_at if expires_at is not None else (deliver_at or T0) + 3 * DAY
    r.state = SCHEDULED if deliver_at is not None else MessageState.ENROUTE
    r.route, r.connector, r.mccmnc, r.msg_type = "default", None, None, "PRO"
    r.upstream_id = None  # as from_submit leaves it: no carrier has answered yet
    return r


class Held:
    """A schedule on a task.Clock, with what it released and expired, and when."""

    def __init__(self, **kw) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.released: list[tuple[int, float]] = []
        self.expired: list[tuple[int, float]] = []
        kw.setdefault("horizon", 7 * DAY)
        self.schedule = Schedule(
            self.clock,
            lambda r: self.released.append((r.id, self.clock.seconds())),
            lambda r: self.expired.append((r.id, self.clock.seconds())),
            **kw,
        )

    def timers(self) -> int:
        return len(self.clock.getDelayedCalls())


# ------------------------------------------------------------------ the dates


def test_lifetime_counts_the_default_validity_and_the_clamp_from_the_release():
    at = datetime.fromtimestamp(T0 + 3600, UTC)
    assert lifetime(None, None, T0, 3 * DAY, 7 * DAY) == (None, T0 + 3 * DAY)
    # A time already past is "now".
    assert lifetime(datetime.fromtimestamp(T0 - 5, UTC), None, T0, 3 * DAY, 7 * DAY) == (None, T0 + 3 * DAY)
    assert lifetime(at, None, T0, 3 * DAY, 7 * DAY) == (T0 + 3600, T0 + 3600 + 3 * DAY)
    # The client's own validity, clamped to the maximum after the release.
    assert lifetime(at, datetime.fromtimestamp(T0 + 7200, UTC), T0, 3 * DAY, 7 * DAY) == (T0 + 3600, T0 + 7200)
    far = datetime.fromtimestamp(T0 + 30 * DAY, UTC)
    assert lifetime(at, far, T0, 3 * DAY, 7 * DAY) == (T0 + 3600, T0 + 3600 + 7 * DAY)


def test_admission_refuses_a_schedule_beyond_the_horizon_or_a_full_hold():
    h = Held(limit=2)
    s = h.schedule
    assert s.admit(T0 - 1, T0) is None  # not held at all
    assert s.admit(T0 + 7 * DAY, T0) is None
    status, reason = s.admit(T0 + 7 * DAY + 1, T0)
    assert status == Status.ESME_RINVSCHED and "7 days" in reason
    s.hold(_record(1, T0 + 10))
    s.hold(_record(2, T0 + 10))
    assert s.admit(T0 + 10, T0)[0] == Status.ESME_RMSGQFUL


# ------------------------------------------------------------------ the hold


def test_a_message_is_released_at_its_time_not_before():
    h = Held()
    assert h.schedule.hold(_record(1, T0 + 2.0))
    assert not h.schedule.hold(_record(2, T0))  # due now: the caller sends it
    assert not h.schedule.hold(_record(3, None))
    h.clock.advance(1.999)
    assert h.released == []
    h.clock.advance(0.001)
    assert h.released == [(1, T0 + 2.0)]
    assert len(h.schedule) == 0 and h.timers() == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 500), st.integers(0, 3)), min_size=1, max_size=60))
def test_release_order_is_time_then_acceptance_with_one_timer(plan):
    """Any mix of times (in tenths) and later arrivals: each leaves at its time, ties by id, one timer."""
    h = Held()
    mid = 0
    expected = []
    for tenths, pause in plan:
        mid += 1
        now = h.clock.seconds()
        at = now + tenths / 10
        h.schedule.hold(_record(mid, at))
        expected.append((at, mid))
        assert h.timers() == 1  # one reactor timer, however many are held
        h.clock.pump([0.05] * (2 * pause))
    h.clock.pump([0.05] * 1200)  # task.Clock runs a call when time passes it: small steps
    got_ids = [m for m, _ in h.released]
    assert got_ids == [m for _, m in sorted(expected)]
    when = dict(h.released)
    for at, m in expected:
        assert at <= when[m] <= at + 0.05 + 1e-6  # at its time, to the step
    assert h.timers() == 0


def test_an_earlier_message_rearms_the_timer():
    h = Held()
    h.schedule.hold(_record(1, T0 + 100))
    h.schedule.hold(_record(2, T0 + 5))
    assert h.timers() == 1
    h.clock.advance(5)
    assert h.released == [(2, T0 + 5)]
    h.clock.advance(95)
    assert [m for m, _ in h.released] == [2, 1]


def test_cancel_withdraws_before_release_and_the_heap_stays_small():
    h = Held()
    for i in range(1, 201):
        h.schedule.hold(_record(i, T0 + 10 + i % 7, source="Shop" if i % 2 else "Other"))
    got = h.schedule.take(lambda r: True, message_id=5)
    assert [r.id for r in got] == [5]
    assert h.schedule.take(lambda r: True, message_id=5) == []  # already gone
    got = h.schedule.take(lambda r: r.source_addr == "Other")
    assert [r.id for r in got] == list(range(2, 201, 2))  # in order of acceptance
    assert len(h.schedule._heap) <= 2 * len(h.schedule) + 64
    h.clock.advance(60)
    released = sorted(m for m, _ in h.released)
    assert released == [i for i in range(1, 201, 2) if i != 5]


def test_cancelling_the_earliest_leaves_the_others_on_time():
    h = Held()
    h.schedule.hold(_record(1, T0 + 1))
    h.schedule.hold(_record(2, T0 + 3))
    h.schedule.take(lambda r: True, message_id=1)
    h.clock.advance(1)
    assert h.released == []
    h.clock.advance(2)
    assert h.released == [(2, T0 + 3)]


def test_validity_is_enforced_while_waiting():
    """A message whose validity ends before its time (e.g. rows of a hub with a shorter cap) expires then."""
    h = Held()
    h.schedule.hold(_record(1, T0 + 50, expires_at=T0 + 20))
    h.schedule.hold(_record(2, T0 + 30))
    h.clock.advance(20)
    assert h.expired == [(1, T0 + 20)] and h.released == []
    h.clock.advance(10)
    assert h.released == [(2, T0 + 30)] and h.expired == [(1, T0 + 20)]


def test_a_failing_release_does_not_stop_the_others():
    clock = task.Clock()
    out = []

    def release(r):
        if r.id == 1:
            raise RuntimeError("boom")
        out.append(r.id)

    s = Schedule(clock, release, out.append, horizon=DAY)
    s.hold(_record(1, 1.0))
    s.hold(_record(2, 1.0))
    clock.advance(1)
    assert out == [2]


# ------------------------------------------------------------- in the router


class Writes:
    """The writer's two doors the router uses, recorded (the real writer runs in the e2e tests)."""

    def __init__(self) -> None:
        self.enqueued: list[tuple] = []
        self.outcomes: list[tuple] = []

    def enqueue(self, kind, item) -> None:
        self.enqueued.append((kind, item))

    def submit_then(self, kind, item, ok, failed) -> None:
        self.outcomes.append((kind, item))


def _router() -> tuple[Router, task.Clock, Writes, Line[Forward]]:
    clock = task.Clock()
    clock.advance(T0)
    writes = Writes()
    router = Router(writes, clock, None, None, lambda: 0)
    for name in ("c", "d"):
        router.add_connector(Connector(UpstreamSettings(name, "h", 1, "s", "p"), None, clock))
    router.set_routing(Routing(table_from_config([{"name": "default", "connectors": ["c"]}], ["c", "d"])))
    return router, clock, writes, router.connectors["c"].line


def _full(mid: int, deliver_at: float | None, **kw) -> MessageRecord:
    r = _record(mid, deliver_at, **kw)
    r.source_ton, r.source_npi, r.esm_class, r.protocol_id, r.priority = 5, 0, 0, 0, 0
    r.registered_delivery, r.data_coding, r.short_message, r.tlvs, r.umr = 1, 0, b"hi", b"", None
    r.submitted_at, r.text20, r.msg_type = T0, "hi", "PRO"
    return r


def test_router_holds_a_scheduled_message_and_queues_it_at_its_time():
    router, clock, writes, line = _router()
    router.forward(_full(1, T0 + 2))
    router.forward(_full(2, None))
    router.forward(_full(3, T0 + 1))
    assert [i.message_id for i in line] == [2]  # the scheduled ones wait outside the route's line
    assert 1 not in router._by_message
    clock.advance(1)
    assert [i.message_id for i in line] == [2, 3]
    clock.advance(1)
    assert [i.message_id for i in line] == [2, 3, 1]
    assert writes.enqueued == [("released", 3), ("released", 1)]  # the row says ENROUTE from now
    assert router._by_message[1].state == MessageState.ENROUTE


def test_resume_holds_rows_not_yet_due_and_sends_the_others():
    router, clock, _, line = _router()
    router.resume([_full(1, T0 - 5), _full(2, T0 + 60), _full(3, None)])
    assert [i.message_id for i in line] == [1, 3]
    clock.advance(60)
    assert [i.message_id for i in line] == [1, 3, 2]


def test_cancel_sm_withdraws_a_scheduled_message_deleted_and_refunded():
    router, clock, writes, line = _router()
    router.forward(_full(1, T0 + 60))
    router.forward(_full(2, T0 + 60, account_id=2))
    router.forward(_full(3, T0 + 60, destination="393339999999"))
    assert router.cancel(2, 1, "Shop", None) == 0  # another account's message
    assert router.cancel(1, 1, "Shop", None) == 1
    assert router.cancel(1, None, "Shop", "393339999999") == 1
    assert [(k, i[0], i[1], i[5]) for k, i in writes.outcomes] == [
        ("outcomes", 1, MessageState.DELETED, "cancelled"), ("outcomes", 3, MessageState.DELETED, "cancelled")]
    clock.advance(60)
    assert [i.message_id for i in line] == [2]


def test_a_scheduled_message_past_its_validity_ends_expired_and_refunded():
    router, clock, writes, line = _router()
    router.forward(_full(1, T0 + 60, expires_at=T0 + 30))
    clock.advance(30)
    assert [(k, i[0], i[1], i[5]) for k, i in writes.outcomes] == [
        ("outcomes", 1, MessageState.EXPIRED, "expired_in_queue")]
    assert list(line) == []


def test_memory_per_held_message_is_within_its_documented_bound():
    """docs/operations.md: a message held for its schedule costs at most 1 KB (short GSM text)."""
    import gc
    import tracemalloc

    from staffetta.pdu.message import AccountPolicy, assess_submit
    from tests.builders import submit_fields

    n = 5_000
    fields = submit_fields(text="Your code is 123456. It expires in 10 minutes.", registered_delivery=1)
    policy = AccountPolicy()
    h = Held(limit=n)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        f = dict(fields, destination_addr=b"3933312%05d" % i, short_message=bytes(fields["short_message"]))
        a = assess_submit(f, {}, policy)
        r = MessageRecord.from_submit(1_000_000 + i, 3, f, {}, a, T0, T0 + 4 * DAY, "default", None,
                                      T0 + DAY + i)
        assert h.schedule.hold(r)
    per_message = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    print(f"held message: {per_message:.0f} B")
    assert per_message <= 1024, per_message


def test_a_route_gone_by_the_release_is_chosen_again_or_the_message_ends_refunded():
    router, clock, writes, line = _router()
    router.forward(_full(1, T0 + 10))
    router.forward(_full(2, T0 + 20))
    # The route table changed while they waited: no rule takes Italy any more.
    router.set_routing(Routing(table_from_config([{"name": "fr", "match": {"prefix": "33"}, "connectors": ["c"]}],
                                                 ["c", "d"])))
    clock.advance(10)  # no route: refused now, refunded, with its receipt
    assert [(i[0], i[1], i[5]) for _, i in writes.outcomes] == [(1, MessageState.REJECTED, "no_route")]
    router.set_routing(Routing(table_from_config([{"name": "other", "connectors": ["d"]}], ["c", "d"])))
    clock.advance(10)
    assert [i.message_id for i in router.connectors["d"].line] == [2] and not len(line)
    assert router._by_message[2].route == "other"
