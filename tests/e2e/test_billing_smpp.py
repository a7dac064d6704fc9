"""Credits over real SMPP: the debit is the quote, exactly once, before the ack (issue 4)."""

from __future__ import annotations

import json

import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer, reactor
from twisted.web import resource, server

from staffetta.billing.accounts import accounts, get_account, update_account
from staffetta.billing.ledger import ledger
from staffetta.billing.wallet import balance, check, set_threshold
from staffetta.pdu.constants import MessageState, Status, Tag
from staffetta.store.db import make_engine
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.esme import connect_esme


def _db(env):
    return make_engine(env.settings.db_url)


def _balance(env, name: str = "demo") -> int:
    engine = _db(env)
    with engine.connect() as conn:
        value = balance(conn, get_account(conn, name).id)
    engine.dispose()
    return value


def _ledger_kinds(env) -> list[tuple[str, int]]:
    engine = _db(env)
    with engine.connect() as conn:
        rows = conn.execute(select(ledger.c.kind, ledger.c.amount).order_by(ledger.c.id)).all()
    engine.dispose()
    return [(r.kind, r.amount) for r in rows]


@pytest_twisted.inlineCallbacks
def test_credit_for_exactly_n_segments_accepts_n_then_refuses(data_dir):
    env = make_env(data_dir, accounts=(("demo", "demo", 5 * 160),))
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        # Sent together: they share group commits, and the debit is still exact.
        results = yield defer.gatherResults([c.submit(b"hi %d" % i) for i in range(7)])
        statuses = [r.status for r in results]
        assert statuses.count(Status.ESME_ROK) == 5
        assert statuses.count(Status.STAFFETTA_RNOCREDIT) == 2
        assert _balance(env) == 0
        # Nothing refused was stored or sent.
        yield wait_until(lambda: env.carrier.stats["submits"] >= 5)
        for _ in range(5):
            yield with_timeout(c.delivered.get())
        assert env.carrier.stats["submits"] == 5
        m = env.hub.metrics.rejected_for_credit.labels("demo", "no_credit")._value.get()
        assert m == 2
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_four_segment_pro_debits_640_and_a_300_character_payload_320(data_dir):
    env = make_env(data_dir)
    try:
        start = _balance(env)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit(b"", service_type=b"PRO", tlvs={Tag.message_payload: b"x" * 600}))
        assert r.status == Status.ESME_ROK
        assert _balance(env) == start - 640
        r = yield with_timeout(c.submit(b"", tlvs={Tag.message_payload: b"y" * 300}))
        assert r.status == Status.ESME_ROK
        assert _balance(env) == start - 640 - 320
        # 613 characters do not fit 4 segments: refused, nothing debited.
        r = yield with_timeout(c.submit(b"", tlvs={Tag.message_payload: b"z" * 613}))
        assert r.status == Status.ESME_RINVMSGLEN
        assert _balance(env) == start - 960
        assert [k for k in _ledger_kinds(env) if k[0] == "debit"] == [("debit", -640), ("debit", -320)]
        debited = env.hub.metrics.count("debited", "demo", "PRO")
        assert debited == 960
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_refused_upstream_is_refunded_and_network_failure_is_not(data_dir):
    env = make_env(data_dir)
    try:
        start = _balance(env)
        env.carrier.script("39333999", submit_status=Status.ESME_RINVDSTADR)
        env.carrier.script("39333777", stat="UNDELIV")
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        yield with_timeout(c.submit(destination=b"393339991234"))
        dlr = yield with_timeout(c.delivered.get())
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.REJECTED])
        yield wait_until(lambda: _balance(env) == start)  # the refund landed
        yield with_timeout(c.submit(destination=b"393337771234"))
        dlr = yield with_timeout(c.delivered.get())
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.UNDELIVERABLE])
        assert _balance(env) == start - 160  # failed in the network: not refunded by default
        kinds = [k for k, _ in _ledger_kinds(env)]
        assert kinds.count("refund") == 1
        engine = _db(env)
        with engine.connect() as conn:
            assert check(conn) == []
        engine.dispose()
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_network_failure_refunded_when_the_account_says_so(data_dir):
    env = make_env(data_dir, accounts=(("demo", "demo", 1000, {}),))
    engine = _db(env)
    with engine.begin() as conn:
        update_account(conn, get_account(conn, "demo").id, refund_on_network_failure=True)
    engine.dispose()
    try:
        env.carrier.script("39333777", stat="UNDELIV")
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        yield with_timeout(c.submit(destination=b"393337771234"))
        yield with_timeout(c.delivered.get())
        yield wait_until(lambda: _balance(env) == 1000)
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_nocredit_status_is_configurable_per_account(data_dir):
    env = make_env(data_dir, accounts=(("demo", "demo", 0, {"nocredit_status": Status.ESME_RSUBMITFAIL}),))
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit())
        assert r.status == Status.ESME_RSUBMITFAIL
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_destination_without_a_rate_is_refused(data_dir):
    env = make_env(data_dir)
    try:
        start = _balance(env)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit(destination=b"447911123456"))  # UK: no rate in the default plan
        assert r.status == Status.STAFFETTA_RNORATE
        assert _balance(env) == start
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_disabled_account_cannot_bind_and_live_sessions_are_unbound(data_dir):
    env = make_env(data_dir)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        engine = _db(env)
        with engine.begin() as conn:
            conn.execute(accounts.update().values(enabled=False))
        engine.dispose()
        reason = yield with_timeout(c.closed, 10)
        assert reason == "unbound by peer"  # the hub sent unbind; the client answered it
        c2 = yield connect_esme(reactor, env.port)
        r = yield with_timeout(c2.bind("demo", "demo"))
        assert r.status == Status.ESME_RBINDFAIL
    finally:
        yield env.stop()


class _Hook(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: defer.DeferredQueue = defer.DeferredQueue()

    def render_POST(self, request):  # noqa: N802
        self.received.put(json.loads(request.content.read()))
        return b"ok"


@pytest_twisted.inlineCallbacks
def test_crossing_the_threshold_posts_exactly_one_alert(data_dir):
    hook = _Hook()
    site = reactor.listenTCP(0, server.Site(hook), interface="127.0.0.1")
    url = f"http://127.0.0.1:{site.getHost().port}/alert"
    env = make_env(data_dir, accounts=(("demo", "demo", 1000, {"alert_url": url}),))
    engine = _db(env)
    with engine.begin() as conn:
        set_threshold(conn, get_account(conn, "demo").id, 500)
    engine.dispose()
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        for _ in range(5):  # 1000 -> 840 -> 680 -> 520 -> 360 (crossing) -> 200
            r = yield with_timeout(c.submit())
            assert r.status == 0
        doc = yield with_timeout(hook.received.get())
        assert doc["account"] == "demo" and doc["threshold_centi"] == 500 and doc["balance_centi"] == 360
        yield wait_until(
            lambda: env.hub.metrics.low_credit_alerts.labels("demo", "delivered")._value.get() == 1
        )
        assert hook.received.pending == []
    finally:
        yield env.stop()
        yield site.stopListening()
