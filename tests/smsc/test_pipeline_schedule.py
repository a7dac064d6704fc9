"""The pipeline's side of scheduled delivery: what it refuses, and the dates it writes on the row."""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.internet import task

from staffetta.pdu.constants import Status
from staffetta.pdu.smpptime import format_smpp_time
from staffetta.router.record import SCHEDULED
from staffetta.router.schedule import Schedule
from staffetta.smsc.pipeline import Accepted, Refused, SubmitPipeline
from tests.builders import submit_fields
from tests.smsc.test_pipeline import DAY, NOW, Routes, who


def _at(ts: float) -> bytes:
    return format_smpp_time(datetime.fromtimestamp(ts, UTC))


def _pipeline(limit: int = 10) -> tuple[SubmitPipeline, Schedule]:
    clock = task.Clock()
    clock.advance(NOW)
    schedule = Schedule(clock, lambda r: None, lambda r: None, horizon=7 * DAY, limit=limit)
    routes = Routes()
    ids = iter(range(100, 200))
    p = SubmitPipeline(routes=routes, message_ids=lambda: next(ids), default_validity=3 * DAY,
                       max_validity=7 * DAY, check_schedule=schedule.admit)
    return p, schedule


def test_a_future_schedule_is_written_scheduled_with_its_validity_counted_from_the_release():
    p, _ = _pipeline()
    got = p.accept(submit_fields(schedule_delivery_time=_at(NOW + DAY)), {}, who(), NOW)
    assert type(got) is Accepted
    r = got.record
    assert (r.deliver_at, r.state, r.expires_at) == (NOW + DAY, SCHEDULED, NOW + DAY + 3 * DAY)
    # Not scheduled, or scheduled in the past: sent at once, as before.
    for fields in (submit_fields(), submit_fields(schedule_delivery_time=_at(NOW - 60))):
        r = p.accept(fields, {}, who(), NOW).record
        assert r.deliver_at is None and r.expires_at == NOW + 3 * DAY


def test_a_schedule_beyond_seven_days_is_refused_with_esme_rinvsched():
    p, _ = _pipeline()
    got = p.accept(submit_fields(schedule_delivery_time=_at(NOW + 8 * DAY)), {}, who(), NOW)
    assert type(got) is Refused and got.status == Status.ESME_RINVSCHED
    assert type(p.accept(submit_fields(schedule_delivery_time=_at(NOW + 7 * DAY)), {}, who(), NOW)) is Accepted


def test_a_validity_ending_before_the_schedule_is_refused():
    """assess_submit's rule, checked here as the client meets it."""
    p, _ = _pipeline()
    got = p.accept(submit_fields(schedule_delivery_time=_at(NOW + 2 * DAY), validity_period=_at(NOW + DAY)),
                   {}, who(), NOW)
    assert type(got) is Refused and got.status == Status.ESME_RINVEXPIRY


def test_a_full_hold_refuses_with_esme_rmsgqful():
    p, schedule = _pipeline(limit=1)
    first = p.accept(submit_fields(schedule_delivery_time=_at(NOW + 60)), {}, who(), NOW)
    assert schedule.hold(first.record)
    got = p.accept(submit_fields(schedule_delivery_time=_at(NOW + 60)), {}, who(), NOW)
    assert type(got) is Refused and got.status == Status.ESME_RMSGQFUL
    assert type(p.accept(submit_fields(), {}, who(), NOW)) is Accepted  # not scheduled: not held
