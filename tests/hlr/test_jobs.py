"""Verification jobs: input, normalisation, freshness, interruption and resumption, charged once."""

from __future__ import annotations

import csv
import json
import time

import pytest
import pytest_twisted
from sqlalchemy import func, select
from twisted.internet import defer, reactor

import staffetta.billing.accounts as accounts
import staffetta.billing.wallet as wallet
from staffetta.billing.ledger import ledger
from staffetta.hlr.cache import hlr_cache, upsert_results
from staffetta.hlr.jobs import (
    DONE,
    ERRORED,
    FINISHED,
    FRESH,
    INCOMPLETE,
    INTERRUPTED,
    INVALID_ITEM,
    NO_CREDIT,
    PENDING,
    JobRunner,
    Progress,
    create_job,
    find_resumable,
    fingerprint,
    format_progress,
    get_job,
    hlr_job_items,
    iter_results,
    list_jobs,
    normalize_number,
    prepare_items,
    read_numbers,
    write_results,
)
from staffetta.hlr.model import DAY, HlrResult
from staffetta.smsc.hlr_billing import billing_charge_tx
from tests.hlr.conftest import balance, hlr_charges, within

ensure = pytest_twisted.ensureDeferred


# --------------------------------------------------------------------- input


def test_read_numbers_plain_and_csv() -> None:
    assert read_numbers("numbers\n+39 333 1234567\n\n# a comment\n3471234567\n") == [
        "+39 333 1234567", "3471234567"]
    text = "name;msisdn;city\nAda;+393331234567;Roma\nBob;393471234567;Milano\n"
    assert read_numbers(text) == ["+393331234567", "393471234567"]
    assert read_numbers(text, "city") == ["Roma", "Milano"]
    assert read_numbers(text, 1) == ["Ada", "Bob"]
    assert read_numbers("393331234567,x\n393471234567,y\n") == ["393331234567", "393471234567"]
    with pytest.raises(ValueError, match="--column: no column named 'phone'"):
        read_numbers(text, "phone")
    with pytest.raises(ValueError, match="outside 1-3"):
        read_numbers(text, 4)


def test_normalise_and_deduplicate() -> None:
    assert normalize_number("+39 333 123-4567") == ("393331234567", "")
    assert normalize_number("0039 (333) 1234567") == ("393331234567", "")
    assert normalize_number("3331234567", 39) == ("393331234567", "")
    assert normalize_number("+44 7911 123456")[0] == "447911123456"  # foreign numbers included
    assert normalize_number("06 1234 5678")[0] is None  # a landline is not verified (nor charged)
    assert normalize_number("call me")[0] is None
    items = prepare_items(["+393331234567", "3331234567", "00393331234567", "0612345678", "0612345678",
                           "+4915112345678"], 39)
    assert items == [("393331234567", PENDING, None), ("0612345678", INVALID_ITEM, items[1][2]),
                     ("4915112345678", PENDING, None)]
    assert "not a valid mobile number" in items[1][2]


def test_progress_line() -> None:
    p = Progress(1, 10_000, {PENDING: 5_800, DONE: 4_000, FRESH: 200}, time.monotonic() - 2.0,
                 done_this_run=4_000)
    line = format_progress(p)
    assert line.startswith("[############") and "4,200/10,000" in line and "42%" in line
    assert "/s ETA 0:0" in line and "200 fresh" in line


# ------------------------------------------------------------------- running


def new_job(engine, account_id: int, numbers, *, stale_after=None, price=50) -> int:
    items = prepare_items(numbers, 39)
    with engine.begin() as c:
        return create_job(c, account_id, "acme", items, stale_after=stale_after, price=price)


def states(engine, job_id: int) -> dict[str, int]:
    with engine.connect() as c:
        return dict(c.execute(select(hlr_job_items.c.state, func.count())
                              .where(hlr_job_items.c.job_id == job_id).group_by(hlr_job_items.c.state)).all())


def numbers_charged(engine, account_id: int) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(ledger)
                         .where(ledger.c.kind == "hlr", ledger.c.account_id == account_id)).scalar()


@ensure
async def test_10000_numbers_interrupted_and_resumed_are_charged_once(engine, account, sim, make_provider,
                                                                      job_writer) -> None:
    numbers = [f"+39333{i:07d}" for i in range(10_000)]
    job = new_job(engine, account, numbers)
    provider = make_provider(max_concurrency=50, retries=0)
    first = JobRunner(reactor, engine, provider, billing_charge_tx, job_writer, concurrency=50)

    def watch(p: Progress) -> None:
        if p.done_this_run >= 3_000:
            first.stop(graceful=False)  # a crash: answers in flight are lost, not committed

    first.on_progress = watch
    info = await within(first.run(job), 60)
    assert info.state == INTERRUPTED
    done_first = info.counts[DONE]
    assert 3_000 <= done_first < 10_000 and info.counts[PENDING] == 10_000 - done_first
    assert numbers_charged(engine, account) == done_first
    calls_first = sim.calls
    # Answers in flight at the "crash" are lost (asked again below, paid once); the
    # crash can also land between two batches with none in flight.
    assert calls_first >= done_first

    with engine.begin() as c:  # `staffetta hlr verify` with the same file finds the job again
        fp = fingerprint(account, None, prepare_items(numbers, 39))
        assert find_resumable(c, fp) == job

    second = JobRunner(reactor, engine, provider, billing_charge_tx, job_writer, concurrency=50)
    info = await within(second.run(job), 60)
    assert info.state == FINISHED and info.counts[DONE] == 10_000 and info.counts["charged"] == 500_000
    assert second.lookups == 10_000 - done_first  # the done ones were not asked again
    charges = hlr_charges(engine, account)
    assert len(charges) == 10_000 and {a for _, a in charges} == {-50}
    assert balance(engine, account) == 1_000_000 - 500_000
    e164 = [n[1:] for n in numbers]
    assert all(sim.calls_for(n) >= 1 for n in e164)
    assert sum(1 for n in e164 if sim.calls_for(n) == 2) == calls_first - done_first  # re-asked, paid once
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(hlr_cache)).scalar() == 10_000
        finished = get_job(c, job)
        assert finished.finished_at is not None
        assert [j.id for j in list_jobs(c)] == [job]


@ensure
async def test_two_runners_on_one_job_never_charge_twice(engine, account, sim, make_provider, job_writer):
    job = new_job(engine, account, [f"+39347{i:07d}" for i in range(400)])
    provider = make_provider(max_concurrency=20, retries=0)
    a = JobRunner(reactor, engine, provider, billing_charge_tx, job_writer, concurrency=10)
    b = JobRunner(reactor, engine, provider, billing_charge_tx, job_writer, concurrency=10)
    ia, ib = await within(defer.gatherResults([a.run(job), b.run(job)]), 60)
    assert states(engine, job) == {DONE: 400}
    assert a.lookups + b.lookups >= 400
    assert numbers_charged(engine, account) == 400


async def seed_cache(engine, ages_days: dict[str, float]) -> None:
    now = time.time()
    with engine.begin() as c:
        upsert_results(c, [HlrResult(n, "valid", "222", "01", "TIM", "222", "01", "TIM", False, None,
                                     now - days * DAY, "simulator") for n, days in ages_days.items()])


@pytest.mark.parametrize(("stale_after", "looked_up"), [
    (30 * DAY, {"393330000002", "393330000003", "393330000004"}),  # --stale-after 1m
    (90 * DAY, {"393330000003", "393330000004"}),  # 3m
    (180 * DAY, {"393330000004"}),  # 6m
    (None, {"393330000001", "393330000002", "393330000003", "393330000004"}),  # check them all
])
@ensure
async def test_stale_after_is_honoured(engine, account, sim, make_provider, job_writer, stale_after,
                                       looked_up) -> None:
    await seed_cache(engine, {"393330000001": 10, "393330000002": 40, "393330000003": 100})
    job = new_job(engine, account, ["+393330000001", "+393330000002", "+393330000003", "+393330000004"],
                  stale_after=stale_after)
    runner = JobRunner(reactor, engine, make_provider(), billing_charge_tx, job_writer, concurrency=4)
    info = await within(runner.run(job))
    assert info.state == FINISHED
    assert {n for n in sim.per_number} == looked_up
    assert numbers_charged(engine, account) == len(looked_up)
    assert info.counts[FRESH] == 4 - len(looked_up) and info.counts[DONE] == len(looked_up)
    with engine.connect() as c:
        rows = {r["number"]: r for r in iter_results(c, job)}
    for n, row in rows.items():
        assert row["source"] == ("simulator" if n in looked_up else "cache")
        assert row["charged"] == (50 if n in looked_up else 0)


@ensure
async def test_out_of_credit_stops_and_resumes_after_a_top_up(engine, sim, make_provider, job_writer):
    with engine.begin() as c:
        a = accounts.create_account(c, "lean", "pw").id
        wallet.topup(c, a, 5 * 50)
    job = new_job(engine, a, [f"+39320{i:07d}" for i in range(20)])
    provider = make_provider()
    info = await within(JobRunner(reactor, engine, provider, billing_charge_tx, job_writer,
                                  concurrency=1).run(job))
    assert info.state == NO_CREDIT and info.counts[DONE] == 5 and info.counts[PENDING] == 15
    with engine.connect() as c:  # the unpaid answer is not kept: it is not a free ride later
        assert c.execute(select(func.count()).select_from(hlr_cache)).scalar() == 5
    with engine.begin() as c:
        wallet.topup(c, a, 100 * 50)
    info = await within(JobRunner(reactor, engine, provider, billing_charge_tx, job_writer,
                                  concurrency=4).run(job))
    assert info.state == FINISHED and info.counts[DONE] == 20
    assert numbers_charged(engine, a) == 20 and balance(engine, a) == 105 * 50 - 20 * 50


@ensure
async def test_failed_lookups_are_free_and_retried_on_resume(engine, account, sim, make_provider, job_writer):
    sim.configure(error_rate=0.3)
    job = new_job(engine, account, [f"+39340{i:07d}" for i in range(200)] + ["0612345678"])
    provider = make_provider(retries=0, failures_to_open=1000)
    info = await within(JobRunner(reactor, engine, provider, billing_charge_tx, job_writer,
                                  concurrency=10).run(job))
    errors = info.counts[ERRORED]
    assert info.state == INCOMPLETE and 20 < errors < 110 and info.counts[INVALID_ITEM] == 1
    assert numbers_charged(engine, account) == 200 - errors
    sim.configure(error_rate=0)
    runner = JobRunner(reactor, engine, provider, billing_charge_tx, job_writer, concurrency=10)
    info = await within(runner.run(job))
    assert info.state == FINISHED and runner.lookups == errors
    assert numbers_charged(engine, account) == 200


@ensure
async def test_job_waits_out_an_open_circuit_instead_of_failing_every_item(engine, account, sim, make_provider,
                                                                           job_writer) -> None:
    job = new_job(engine, account, [f"+39345{i:07d}" for i in range(60)])
    provider = make_provider(retries=0, failures_to_open=3, reset_after=0.2)
    sim.configure(down=True)
    reactor.callLater(0.8, sim.configure, down=False)
    waits: list[str] = []
    runner = JobRunner(reactor, engine, provider, billing_charge_tx, job_writer, concurrency=4,
                       progress=lambda p: p.waiting and waits.append(p.waiting))
    info = await within(runner.run(job))
    assert any("circuit open" in w for w in waits), waits  # (a provider error may be said first)
    assert info.counts[ERRORED] <= 3 and info.counts[DONE] == 60 - info.counts[ERRORED]
    assert provider.breaker.state == "closed"


@ensure
async def test_results_files(tmp_path, engine, account, sim, make_provider, job_writer) -> None:
    sim.fix("393335550000", "valid", mcc="222", mnc="50", network="Iliad", ported=True,
            original_mcc="222", original_mnc="01", original_network="TIM")
    sim.fix("393336660000", "unknown")
    await seed_cache(engine, {"393471234567": 1})
    job = new_job(engine, account, ["+393335550000", "393336660000", "0612345678", "+393471234567"],
                  stale_after=30 * DAY)
    await within(JobRunner(reactor, engine, make_provider(), billing_charge_tx, job_writer).run(job))
    out = tmp_path / "r.csv"
    assert write_results(engine, job, str(out)) == 4
    rows = list(csv.DictReader(out.open()))
    assert [r["number"] for r in rows] == ["393335550000", "393336660000", "0612345678", "393471234567"]
    assert rows[0]["status"] == "valid" and rows[0]["mnc"] == "50" and rows[0]["ported"] == "True"
    assert rows[0]["original_network"] == "TIM" and rows[0]["charged"] == "50"
    assert rows[1]["status"] == "unknown" and rows[1]["charged"] == "50"
    assert rows[2]["status"] == "invalid" and rows[2]["source"] == "local" and rows[2]["charged"] == "0"
    assert rows[3]["source"] == "cache" and rows[3]["state"] == "fresh" and rows[3]["charged"] == "0"
    jout = tmp_path / "r.json"
    write_results(engine, job, str(jout))
    doc = json.loads(jout.read_text())
    assert doc["job"]["id"] == job and doc["job"]["charged"] == 100 and len(doc["results"]) == 4
    assert doc["results"][0]["mcc"] == "222" and doc["results"][0]["ported"] is True
