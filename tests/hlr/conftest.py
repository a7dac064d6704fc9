"""Fixtures for the HLR tests: a real store with billing, the simulator's HLR over real HTTP.

Charging goes through ``billing.wallet.debit_batch`` (ledger rows of kind
``hlr``) on the group-commit writer, exactly as the hub wires it, so "charged
once" is read back from the ledger, not from a mock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import func, select
from twisted.internet import reactor

import staffetta.billing.accounts as accounts
import staffetta.billing.wallet as wallet
from staffetta import hlr  # noqa: F401 - registers the hlr tables
from staffetta.billing.ledger import ledger
from staffetta.hlr.providers import simulator_provider
from staffetta.hlr.service import HlrService, writer_charge
from staffetta.simulator.hlr import HlrSimulator
from staffetta.smsc.hlr_cli import billing_charge_tx
from staffetta.store.db import create_schema, make_engine
from staffetta.store.writer import GroupCommitWriter

TIMEOUT = 20.0


def within(d, seconds: float = TIMEOUT):
    """Fail the test instead of hanging."""
    return d.addTimeout(seconds, reactor)


@pytest.fixture
def engine(tmp_path):
    e = make_engine(f"sqlite:///{tmp_path / 'hlr.db'}")
    create_schema(e)
    yield e
    e.dispose()


@pytest.fixture
def account(engine) -> int:
    """An account with 1,000,000 centi-credits."""
    with engine.begin() as c:
        a = accounts.create_account(c, "acme", "pw").id
        wallet.topup(c, a, 1_000_000)
    return a


def hlr_charges(engine, account_id: int | None = None) -> list[tuple[int, int]]:
    """(account_id, amount) of every ``hlr`` ledger row."""
    q = select(ledger.c.account_id, ledger.c.amount).where(ledger.c.kind == "hlr").order_by(ledger.c.id)
    if account_id is not None:
        q = q.where(ledger.c.account_id == account_id)
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(q)]


def balance(engine, account_id: int) -> int:
    with engine.connect() as c:
        assert wallet.check(c) == []
        return wallet.balance(c, account_id)


def count(engine, table) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(table)).scalar()


@pytest.fixture
def sim():
    """An HlrSimulator (seed 1) listening on a free 127.0.0.1 port."""
    s = HlrSimulator(reactor, seed=1)
    s.listen(0)
    yield s
    pytest_twisted.blockon(s.close())


@pytest.fixture
def make_provider(sim) -> Callable[..., Any]:
    made = []

    def make(**kw: Any):
        p = simulator_provider(reactor, sim.url, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        pytest_twisted.blockon(p.close())


@pytest.fixture
def writer(engine):
    w = GroupCommitWriter(engine, reactor)
    w.start()
    yield w
    pytest_twisted.blockon(w.stop())


@pytest.fixture
def job_writer(engine):
    """The writer a job uses: bigger batches than the submit path (throughput over latency)."""
    w = GroupCommitWriter(engine, reactor, max_batch=1000, max_delay=0.02)
    w.start()
    yield w
    pytest_twisted.blockon(w.stop())


@pytest.fixture
def make_service(engine, writer, make_provider) -> Callable[..., HlrService]:
    made: list[HlrService] = []

    def make(provider=None, *, charge="billing", **kw: Any) -> HlrService:
        provider = provider or make_provider(retries=0, timeout=2.0)
        if charge == "billing":
            charge = writer_charge(writer, billing_charge_tx)
        svc = HlrService(reactor, engine, writer, provider, charge, **kw)
        made.append(svc)
        return svc

    yield make
    for s in made:
        pytest_twisted.blockon(s.cache.close())
