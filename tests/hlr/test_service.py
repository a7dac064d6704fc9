"""HlrService over real HTTP against the simulator: cache and charge, coalescing, timeouts,
the circuit breaker, ported numbers, the submit-path policy, the Redis mirror."""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select
from twisted.internet import defer, reactor, task

import staffetta.billing.accounts as accounts
from staffetta.billing.ledger import ledger
from staffetta.hlr.cache import HlrCache, hlr_cache
from staffetta.hlr.model import HlrMetrics
from staffetta.hlr.providers import CLOSED, OPEN
from staffetta.hlr.service import FAIL_CLOSED, FAIL_OPEN, REFUSE_DEST, REFUSE_SYSERR, SEND, ChargeRefused
from staffetta.store.db import create_schema, make_engine
from tests.conftest import port_open, require_service
from tests.hlr.conftest import balance, count, hlr_charges, within

ensure = pytest_twisted.ensureDeferred
N1 = "393331234567"


@ensure
async def test_miss_is_charged_hit_is_free(engine, account, sim, make_service) -> None:
    svc = make_service()
    r1 = await within(svc.lookup(N1, account))
    assert r1.source == "simulator" and r1.status == "valid" and r1.network == "TIM"
    assert hlr_charges(engine) == [(account, -50)]
    assert balance(engine, account) == 1_000_000 - 50
    r2 = await within(svc.lookup(N1, account))
    assert r2.source == "cache" and r2.status == r1.status and r2.looked_up_at == r1.looked_up_at
    assert sim.calls == 1 and hlr_charges(engine) == [(account, -50)]
    # Another process (fresh memory) finds it in SQL: still free, no provider call.
    other = make_service()
    r3 = await within(other.lookup(N1, account))
    assert r3.source == "cache" and other.cache.stats["sql"] == 1 and sim.calls == 1
    # Too old for this caller: a real lookup, charged again.
    await task.deferLater(reactor, 0.05)
    r4 = await within(other.lookup(N1, account, max_age=0.01))
    assert r4.source == "simulator" and sim.calls == 2
    # mode always: a real lookup even with a fresh answer cached.
    r5 = await within(svc.lookup(N1, account, mode="always"))
    assert r5.source == "simulator" and sim.calls == 3
    assert hlr_charges(engine) == [(account, -50)] * 3
    with engine.connect() as c:
        row = c.execute(select(hlr_cache).where(hlr_cache.c.number == N1)).one()
    assert row.looked_up_at == r5.looked_up_at and row.provider == "simulator"


@ensure
async def test_unknown_is_charged_and_refused_before_any_message_debit(engine, account, sim, make_service):
    """hlr: always on an unknown number: ESME_RINVDSTADR, nothing debited but the lookup."""
    sim.fix("393339999999", "unknown")
    svc = make_service()
    decision, result = await within(svc.check("393339999999", account, mode="always"))
    assert decision == REFUSE_DEST and result.status == "unknown"
    with engine.connect() as c:
        kinds = c.execute(select(ledger.c.kind, ledger.c.amount).where(ledger.c.account_id == account)
                          .order_by(ledger.c.id)).all()
    assert [tuple(k) for k in kinds] == [("topup", 1_000_000), ("hlr", -50)]
    # invalid by the provider: charged too; invalid by our own check: free, no provider call
    sim.fix("393338888888", "invalid")
    assert (await svc.lookup("393338888888", account)).status == "invalid"
    local = await svc.lookup("12ab", account)
    assert (local.status, local.source) == ("invalid", "local")
    assert sim.calls == 2 and len(hlr_charges(engine)) == 2
    off = await svc.check("393339999999", account, mode="off")
    assert off == (SEND, None)


@ensure
async def test_100_concurrent_lookups_make_one_provider_call(engine, account, sim, make_service) -> None:
    sim.configure(latency=0.05)
    svc = make_service()
    results = await within(defer.gatherResults([svc.lookup(N1, account) for _ in range(100)]))
    assert sim.calls_for(N1) == 1 and sim.calls == 1
    assert len({(r.status, r.mccmnc, r.looked_up_at) for r in results}) == 1
    assert hlr_charges(engine) == [(account, -50)]  # only the request that started it pays
    # mode always coalesces as well
    results = await within(defer.gatherResults(
        [svc.lookup(N1, account, mode="always") for _ in range(100)]))
    assert sim.calls_for(N1) == 2 and len(hlr_charges(engine)) == 2


@ensure
async def test_lookup_never_stalls_other_work(engine, account, sim, make_service) -> None:
    svc = make_service()
    await svc.lookup(N1, account)
    sim.configure(latency=0.3)
    slow = svc.lookup("393471234567", account)
    fast = svc.lookup(N1, account)
    assert fast.called and not slow.called  # a cached answer is there at once, in the same tick
    assert (await fast).source == "cache"
    assert (await within(slow)).source == "simulator"


@ensure
async def test_provider_timeout_is_an_error_not_cached_not_charged(engine, account, sim, make_provider,
                                                                   make_service) -> None:
    sim.configure(latency=2.0)
    provider = make_provider(timeout=0.2, retries=1, backoff=0.05, failures_to_open=20)
    svc = make_service(provider)
    started = reactor.seconds()
    r = await within(svc.lookup(N1, account))
    assert r.status == "error" and "no answer within 0.2s" in r.detail and r.source == "simulator"
    assert reactor.seconds() - started < 1.5
    assert sim.calls_for(N1) == 2  # one retry
    assert hlr_charges(engine) == [] and count(engine, hlr_cache) == 0
    assert (await svc.check(N1, account, failure_policy=FAIL_OPEN))[0] == SEND
    assert (await svc.check(N1, account, failure_policy=FAIL_CLOSED))[0] == REFUSE_SYSERR
    sim.configure(latency=0)
    assert (await within(svc.lookup(N1, account))).status == "valid"
    assert hlr_charges(engine) == [(account, -50)]


@ensure
async def test_circuit_opens_fails_fast_and_recovers(engine, account, sim, make_provider, make_service):
    reg = CollectorRegistry()
    metrics = HlrMetrics(reg)
    provider = make_provider(retries=0, timeout=1.0, failures_to_open=3, reset_after=0.5, metrics=metrics)
    svc = make_service(provider, metrics=metrics)
    sim.configure(down=True)
    for i in range(3):
        r = await within(svc.lookup(f"39333000000{i}", account))
        assert r.status == "error" and "HTTP 503" in r.detail
    assert provider.breaker.state == OPEN and sim.calls == 3
    assert 'staffetta_hlr_circuit_state{provider="simulator"} 2.0' in generate_latest(reg).decode()
    started = reactor.seconds()
    fast = await within(defer.gatherResults([svc.lookup(f"39333100000{i}", account) for i in range(10)]))
    assert all(r.status == "error" and "circuit open" in r.detail for r in fast)
    assert sim.calls == 3 and reactor.seconds() - started < 0.2  # nobody asked the provider
    sim.configure(down=False)
    await task.deferLater(reactor, 0.55)
    r = await within(svc.lookup(N1, account))  # the half-open probe
    assert r.status == "valid" and provider.breaker.state == CLOSED and sim.calls == 4
    assert hlr_charges(engine) == [(account, -50)]
    text = generate_latest(reg).decode()
    assert 'staffetta_hlr_circuit_state{provider="simulator"} 0.0' in text
    assert 'staffetta_hlr_lookups_total{provider="simulator",status="error"} 13.0' in text


@ensure
async def test_ported_number_carries_its_serving_network(engine, account, sim, make_service) -> None:
    sim.fix("393335550000", "valid", mcc="222", mnc="50", network="Iliad", ported=True,
            original_mcc="222", original_mnc="01", original_network="TIM")
    svc = make_service()
    r = await within(svc.lookup("393335550000", account))
    assert r.ported and (r.mccmnc, r.network) == ("22250", "Iliad")
    assert (r.original_mccmnc, r.original_network) == ("22201", "TIM")
    cached = await svc.lookup("393335550000", account)
    assert cached.source == "cache" and cached.mccmnc == "22250" and cached.ported
    # and by the seeded rules: every ported answer is served by another network than its prefix's
    ported = [n for n in (f"39347{i:07d}" for i in range(400)) if sim.answer(n)["ported"]
              and sim.answer(n)["serving"]]
    assert ported
    for n in ported[:5]:
        got = await within(svc.lookup(n, account))
        assert got.ported and got.mccmnc == sim.answer(n)["serving"]["mccmnc"] != got.original_mccmnc


@ensure
async def test_no_credit_refuses_and_keeps_nothing(engine, account, sim, make_service) -> None:
    with engine.begin() as c:
        broke = accounts.create_account(c, "broke", "pw").id
    svc = make_service()
    with pytest.raises(ChargeRefused):
        await within(svc.lookup(N1, broke))
    assert count(engine, hlr_cache) == 0 and hlr_charges(engine) == []
    r = await within(svc.lookup(N1, account))  # not a free ride from the refused lookup
    assert r.source == "simulator" and sim.calls == 2 and hlr_charges(engine) == [(account, -50)]


@ensure
async def test_price_per_account(engine, account, sim, make_service) -> None:
    svc = make_service(price=lambda account_id: 75)
    await within(svc.lookup(N1, account))
    assert hlr_charges(engine) == [(account, -75)]


@ensure
async def test_auth_header_post_body_and_4xx_not_retried(engine, account, make_service) -> None:
    """A generic vendor: POST with a body template and a bearer token; a 401 is not retried."""
    from staffetta.hlr.providers import SIMULATOR_MAPPING, HttpJsonProvider
    from staffetta.simulator.hlr import HlrSimulator

    s = HlrSimulator(reactor, token="t0k")
    s.listen(0)
    made = []

    def vendor(**kw) -> HttpJsonProvider:
        p = HttpJsonProvider(reactor, "vendor", s.url + "/lookup", method="POST",
                             body_template='{"msisdn": "{number}"}', field_mapping=SIMULATOR_MAPPING,
                             retries=2, backoff=0.01, timeout=2.0, **kw)
        made.append(p)
        return p

    try:
        bad = vendor()
        r = await within(make_service(bad).lookup(N1, account))
        assert r.status == "error" and "HTTP 401" in r.detail
        assert s.rejected == 1 and bad.breaker.state == CLOSED  # not retried; the vendor is up
        good = vendor(auth_header="Authorization: Bearer t0k")
        r = await within(make_service(good).lookup(N1, account))
        assert (r.status, r.source, r.mccmnc) == ("valid", "vendor", "22201")
        assert hlr_charges(engine) == [(account, -50)]
    finally:
        for p in made:
            await p.close()
        await s.close()


# --------------------------------------------------------------------- Redis


def _redis_ok() -> None:
    require_service(port_open("127.0.0.1", 6379), "Redis not running on 127.0.0.1:6379")


@ensure
async def test_redis_mirror_shares_answers_between_hubs(tmp_path, engine, account, sim, writer,
                                                        make_service) -> None:
    _redis_ok()
    prefix = f"test:hlr:{uuid.uuid4().hex}:"
    a = make_service(cache=HlrCache(reactor, engine, writer=writer, redis_url="redis://127.0.0.1:6379/0",
                                    key_prefix=prefix))
    r = await within(a.lookup(N1, account))
    assert r.source == "simulator"
    # another hub: its own (empty) database, the same Redis
    other_engine = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    create_schema(other_engine)
    try:
        b = make_service(cache=HlrCache(reactor, other_engine, redis_url="redis://127.0.0.1:6379/0",
                                        key_prefix=prefix))
        got = await within(b.lookup(N1, account))
        assert got.source == "cache" and got.mccmnc == r.mccmnc and got.looked_up_at == r.looked_up_at
        assert b.cache.stats["redis"] == 1 and sim.calls == 1
        raw = await within(b.cache.redis.get(prefix + N1))
        assert '"status":"valid"' in raw
        ttl = await within(b.cache.redis.ttl(prefix + N1))
        assert 0 < ttl <= b.cache.redis_ttl
        await b.cache.redis.delete(prefix + N1)
    finally:
        other_engine.dispose()


@ensure
async def test_redis_outage_costs_speed_not_answers(engine, account, sim, writer, make_service) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    svc = make_service(cache=HlrCache(reactor, engine, writer=writer, redis_url=f"redis://127.0.0.1:{dead}/0",
                                      redis_timeout=0.1))
    r = await within(svc.lookup(N1, account))
    assert r.status == "valid" and svc.cache.redis_errors >= 1
    svc.cache.forget()
    assert (await within(svc.lookup(N1, account))).source == "cache"  # from SQL
    assert hlr_charges(engine) == [(account, -50)]
