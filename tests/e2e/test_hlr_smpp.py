"""HLR on the submit path over real SMPP and real HTTP (issue 5 item 4)."""

from __future__ import annotations

import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer, reactor

from staffetta.billing.accounts import get_account
from staffetta.billing.ledger import ledger
from staffetta.billing.wallet import balance
from staffetta.conf.settings import HlrSettings
from staffetta.pdu.constants import Command, Status
from staffetta.router.messages import messages
from staffetta.simulator.hlr import listen_hlr
from staffetta.store.db import make_engine
from tests.e2e.harness import make_env, with_timeout
from tests.esme import connect_esme

CREDIT = 100_000


def _books(env) -> tuple[int, list[tuple[str, int]]]:
    engine = make_engine(env.settings.db_url)
    with engine.connect() as conn:
        value = balance(conn, get_account(conn, "demo").id)
        rows = [(r.kind, r.amount) for r in conn.execute(select(ledger.c.kind, ledger.c.amount).order_by(ledger.c.id))]
    engine.dispose()
    return value, rows


def _mccmnc(env, message_id: bytes) -> str | None:
    engine = make_engine(env.settings.db_url)
    with engine.connect() as conn:
        value = conn.execute(select(messages.c.mccmnc).where(messages.c.id == int(message_id))).scalar_one()
    engine.dispose()
    return value


def hlr_env(data_dir, mode="always", failure_policy="fail-open", **sim_kw):
    sim = listen_hlr(reactor, 0, p_absent=0, p_unknown=0, p_ported=0, p_roaming=0, **sim_kw)
    env = make_env(data_dir, accounts=(("demo", "demo", CREDIT),), hlr=HlrSettings(
        mode=mode, failure_policy=failure_policy,
        provider={"type": "simulator", "url": sim.url, "timeout": 1, "retries": 0,
                  "circuit": {"failures": 2, "reset_after": 30}},
    ))
    return env, sim


@defer.inlineCallbacks
def _stop(env, sim):
    yield env.stop()
    for p in sim.ports:
        yield p.stopListening()


@pytest_twisted.inlineCallbacks
def test_always_refuses_an_unknown_number_charging_only_the_lookup(data_dir):
    env, sim = hlr_env(data_dir)
    try:
        sim.fix("393331112222", "unknown")
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit(destination=b"393331112222"))
        assert r.status == Status.ESME_RINVDSTADR
        value, rows = _books(env)
        assert value == CREDIT - 50
        assert [k for k, _ in rows] == ["topup", "hlr"]  # no message debit
        assert env.carrier.stats["submits"] == 0
    finally:
        yield _stop(env, sim)


@pytest_twisted.inlineCallbacks
def test_ported_number_carries_its_serving_network_and_cached_mode_charges_once(data_dir):
    env, sim = hlr_env(data_dir, mode="cached")
    try:
        sim.fix("393331234567", "valid", mcc="222", mnc="88", network="WindTre", ported=True,
                original_mcc="222", original_mnc="10", original_network="Vodafone")
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r1 = yield with_timeout(c.submit())
        r2 = yield with_timeout(c.submit())
        assert r1.status == r2.status == Status.ESME_ROK
        assert _mccmnc(env, r1.fields["message_id"]) == "22288"
        assert _mccmnc(env, r2.fields["message_id"]) == "22288"
        value, rows = _books(env)
        assert [k for k, _ in rows].count("hlr") == 1  # the second answer came from the cache, free
        assert value == CREDIT - 50 - 2 * 160
        assert sim.calls == 1
    finally:
        yield _stop(env, sim)


@pytest_twisted.inlineCallbacks
def test_a_slow_lookup_does_not_stall_the_session(data_dir):
    env, sim = hlr_env(data_dir, latency=0.5)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        order = []
        d_submit = c.submit().addCallback(lambda r: order.append("submit") or r)
        d_link = c.request(Command.ENQUIRE_LINK).addCallback(lambda r: order.append("enquire_link") or r)
        yield with_timeout(defer.gatherResults([d_submit, d_link]))
        assert order == ["enquire_link", "submit"]
    finally:
        yield _stop(env, sim)


@pytest_twisted.inlineCallbacks
def test_provider_outage_fail_closed_refuses_and_fail_open_sends(data_dir):
    env, sim = hlr_env(data_dir, failure_policy="fail-closed")
    try:
        sim.down = True
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit())
        assert r.status == Status.ESME_RSYSERR
        value, _ = _books(env)
        assert value == CREDIT  # a failed lookup is not charged
    finally:
        yield _stop(env, sim)
    env, sim = hlr_env(data_dir + "-open", failure_policy="fail-open")
    try:
        sim.down = True
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit())
        assert r.status == Status.ESME_ROK
        assert _mccmnc(env, r.fields["message_id"]) is None  # sent on the prefix's network
    finally:
        yield _stop(env, sim)
