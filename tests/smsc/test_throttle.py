"""Token bucket arithmetic (no reactor) and the limit over SMPP."""

from __future__ import annotations

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, reactor

from staffetta.billing.accounts import credentials
from staffetta.pdu.constants import Status
from staffetta.smsc.throttle import TokenBucket
from staffetta.store.db import make_engine
from tests.e2e.harness import make_env
from tests.esme import connect_esme


def test_bucket_allows_a_burst_then_the_rate():
    b = TokenBucket(10, now=0.0)
    assert all(b.take(1, 0.0) for _ in range(10))
    assert not b.take(1, 0.0)
    assert b.take(1, 0.1)  # 0.1 s refills one token
    assert not b.take(1, 0.1)
    assert b.take(3, 0.4)


def test_long_message_passes_on_a_full_bucket():
    b = TokenBucket(2, now=0.0)
    assert b.take(4, 0.0)  # 4 segments > burst of 2: allowed when full, then owes
    assert not b.take(1, 0.5)
    assert b.take(1, 2.0)


@given(st.lists(st.tuples(st.floats(0, 2), st.integers(1, 4)), max_size=60))
def test_bucket_never_exceeds_rate_times_time_plus_burst(steps):
    b = TokenBucket(5, now=0.0)
    now, spent = 0.0, 0
    for dt, n in steps:
        now += dt
        if b.take(n, now):
            spent += n
        # Over any run: spent <= burst + rate * elapsed (+ one over-burst message).
        assert spent <= 5 + 5 * now + 4


@pytest_twisted.inlineCallbacks
def test_credential_over_its_rate_is_throttled_not_closed(data_dir):
    env = make_env(data_dir)
    engine = make_engine(env.settings.db_url)
    with engine.begin() as conn:
        conn.execute(credentials.update().values(max_rate=3))
    engine.dispose()
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        results = yield defer.gatherResults([c.submit(b"m%d" % i) for i in range(6)])
        statuses = [r.status for r in results]
        assert statuses.count(Status.ESME_ROK) == 3
        assert statuses.count(Status.ESME_RTHROTTLED) == 3
        assert c.session.bound  # never closed for throttling
    finally:
        yield env.stop()
