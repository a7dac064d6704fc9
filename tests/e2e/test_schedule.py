"""Scheduled delivery over real SMPP: hub + simulator on 127.0.0.1 (A18, C9)."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime

import pytest_twisted
from sqlalchemy import select
from twisted.internet import reactor, task, threads

from staffetta.pdu.codec import tlv_cstr
from staffetta.pdu.constants import Command, MessageState, Status, Tag
from staffetta.pdu.smpptime import format_smpp_time
from staffetta.router.messages import messages
from staffetta.router.record import SCHEDULED
from staffetta.store.db import make_engine
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.e2e.test_billing_smpp import _balance, _ledger_kinds
from tests.esme import connect_esme


def _row(env, mid: int):
    engine = make_engine(env.settings.db_url)
    with engine.connect() as conn:
        row = conn.execute(select(messages).where(messages.c.id == mid)).first()
    engine.dispose()
    return row


def _metrics(env):
    port = env.hub.metrics_port.getHost().port
    return threads.deferToThread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())


def _query(c, mid: bytes):
    return with_timeout(c.request(Command.QUERY_SM, {"message_id": mid, "source_addr_ton": 5,
                                                     "source_addr": b"Staffetta"}))


@pytest_twisted.inlineCallbacks
def test_a_relative_schedule_of_two_seconds_is_released_on_time(data_dir):
    env = make_env(data_dir)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        start = _balance(env)
        before = time.time()
        r = yield with_timeout(c.submit(schedule_delivery_time=b"000000000002000R"))
        answered = time.time()
        assert r.status == Status.ESME_ROK
        mid = r.fields["message_id"]
        assert _balance(env) == start - 160  # debited at acceptance
        row = _row(env, int(mid))
        assert (row.phase, row.state) == (0, SCHEDULED)
        assert before + 2 <= row.deliver_at <= answered + 2
        # Waiting: the carrier has nothing, query_sm says SCHEDULED (the default), final_date null.
        q = yield _query(c, mid)
        assert (q.status, q.fields["message_state"], q.fields["final_date"]) == (0, SCHEDULED, b"")
        assert env.carrier.stats["submits"] == 0
        assert "staffetta_scheduled_messages 1.0" in (yield _metrics(env))
        yield wait_until(lambda: env.carrier.stats["submits"] == 1, timeout=5, interval=0.005)
        sent = time.time()
        assert row.deliver_at <= sent <= row.deliver_at + 1.0, sent - row.deliver_at
        dlr = yield with_timeout(c.delivered.get())
        assert tlv_cstr(dlr.tlvs[Tag.receipted_message_id]) == mid
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.DELIVERED])
        assert env.carrier.stats["submits"] == 1
        assert _balance(env) == start - 160
        assert "staffetta_scheduled_messages 0.0" in (yield _metrics(env))
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_cancel_sm_before_release_refunds_in_full_and_nothing_is_sent(data_dir):
    env = make_env(data_dir)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        start = _balance(env)
        due = time.time() + 3
        at = format_smpp_time(datetime.fromtimestamp(due, UTC))
        r = yield with_timeout(c.submit(b"x" * 200, schedule_delivery_time=at))  # two segments
        assert r.status == Status.ESME_ROK
        mid = r.fields["message_id"]
        assert _balance(env) == start - 320
        x = yield with_timeout(c.request(Command.CANCEL_SM, {"message_id": mid, "source_addr": b"Staffetta"}))
        assert (x.command_id, x.status) == (Command.CANCEL_SM_RESP, Status.ESME_ROK)
        dlr = yield with_timeout(c.delivered.get())
        assert tlv_cstr(dlr.tlvs[Tag.receipted_message_id]) == mid
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.DELETED])
        yield wait_until(lambda: _balance(env) == start)  # refunded in full
        assert [k for k, _ in _ledger_kinds(env)][-2:] == ["debit", "refund"]
        q = yield _query(c, mid)
        assert q.fields["message_state"] == MessageState.DELETED and q.fields["final_date"]
        # Nothing left to cancel, and its time passes without a send.
        x = yield with_timeout(c.request(Command.CANCEL_SM, {"message_id": mid}))
        assert x.status == Status.ESME_RCANCELFAIL
        # Proving an absence: wait past its time (+1 s), then look.
        yield task.deferLater(reactor, max(0.0, due + 1.0 - time.time()), lambda: None)
        assert env.carrier.stats["submits"] == 0
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_query_sm_answers_enroute_when_configured_and_far_schedules_are_refused(data_dir):
    env = make_env(data_dir)
    try:
        env.hub.settings = replace(env.hub.settings, query_scheduled_state="enroute")
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit(schedule_delivery_time=b"000000010000000R"))  # in an hour
        q = yield _query(c, r.fields["message_id"])
        assert (q.fields["message_state"], q.fields["final_date"]) == (MessageState.ENROUTE, b"")  # 3.4's word
        # More than 7 days ahead: refused, nothing charged or stored.
        start = _balance(env)
        far = yield with_timeout(c.submit(schedule_delivery_time=b"000008000000000R"))
        assert far.status == Status.ESME_RINVSCHED
        assert _balance(env) == start
        # A validity that ends before the schedule.
        bad = yield with_timeout(c.submit(schedule_delivery_time=b"000000020000000R",
                                          validity_period=b"000000010000000R"))
        assert bad.status == Status.ESME_RINVEXPIRY
    finally:
        yield env.stop()
