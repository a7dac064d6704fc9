"""Messages the carrier never took: expiry in the hub's queue and cancel_sm (issue 4 refunds)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from staffetta.pdu.codec import tlv_cstr
from staffetta.pdu.constants import Command, MessageState, Status, Tag
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.e2e.test_billing_smpp import _balance, _ledger_kinds
from tests.esme import connect_esme


def _carrier_down(env):
    env.carrier.stop_sessions()
    return env.carrier_port.stopListening()


@pytest_twisted.inlineCallbacks
def test_message_expiring_in_the_queue_is_refunded_with_an_expired_receipt(data_dir):
    env = make_env(data_dir)
    try:
        yield _carrier_down(env)
        yield wait_until(lambda: not env.hub.router.connectors["sim"].up)
        start = _balance(env)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit(validity_period=b"000000000001000R"))  # valid for 1 s
        assert r.status == Status.ESME_ROK
        assert _balance(env) == start - 160
        dlr = yield with_timeout(c.delivered.get(), 15)  # the sweep runs every 5 s
        assert tlv_cstr(dlr.tlvs[Tag.receipted_message_id]) == r.fields["message_id"]
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.EXPIRED])
        yield wait_until(lambda: _balance(env) == start)
        assert [k for k, _ in _ledger_kinds(env)][-2:] == ["debit", "refund"]
    finally:
        yield env.stop_hub()


@pytest_twisted.inlineCallbacks
def test_cancel_sm_withdraws_a_pending_message_and_refunds_it(data_dir):
    env = make_env(data_dir, accounts=(("demo", "demo"), ("other", "other")))
    try:
        yield _carrier_down(env)
        yield wait_until(lambda: not env.hub.router.connectors["sim"].up)
        start = _balance(env)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        o = yield connect_esme(reactor, env.port)
        yield o.bind("other", "other")
        r = yield with_timeout(c.submit())
        mid = r.fields["message_id"]
        # Another account cannot cancel it.
        x = yield with_timeout(o.request(Command.CANCEL_SM, {"message_id": mid}))
        assert x.status == Status.ESME_RCANCELFAIL
        x = yield with_timeout(c.request(Command.CANCEL_SM, {"message_id": mid, "source_addr": b"Staffetta"}))
        assert (x.command_id, x.status) == (Command.CANCEL_SM_RESP, Status.ESME_ROK)
        dlr = yield with_timeout(c.delivered.get())
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.DELETED])
        yield wait_until(lambda: _balance(env) == start)
        # Already cancelled: nothing left to cancel.
        x = yield with_timeout(c.request(Command.CANCEL_SM, {"message_id": mid}))
        assert x.status == Status.ESME_RCANCELFAIL
        # Without a message id: every pending message from that source to that destination.
        for _ in range(3):
            yield with_timeout(c.submit(destination=b"393331111111"))
        yield with_timeout(c.submit(destination=b"393332222222"))
        x = yield with_timeout(c.request(Command.CANCEL_SM, {
            "source_addr": b"Staffetta", "destination_addr": b"393331111111"}))
        assert x.status == Status.ESME_ROK
        for _ in range(3):
            dlr = yield with_timeout(c.delivered.get())
            assert dlr.tlvs[Tag.message_state] == bytes([MessageState.DELETED])
        assert len(env.hub.router.connectors["sim"].queue) == 1  # the other destination waits on
    finally:
        yield env.stop_hub()


@pytest_twisted.inlineCallbacks
def test_validity_defaults_to_72_hours_and_is_clamped_to_7_days(data_dir):
    from sqlalchemy import select

    from staffetta.router.messages import messages
    from staffetta.store.db import make_engine

    env = make_env(data_dir)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        plain = yield with_timeout(c.submit())
        month = yield with_timeout(c.submit(validity_period=b"000030000000000R"))  # 30 days
        engine = make_engine(env.settings.db_url)
        with engine.connect() as conn:
            rows = {r.id: r.expires_at - r.submitted_at for r in conn.execute(
                select(messages.c.id, messages.c.expires_at, messages.c.submitted_at))}
        engine.dispose()
        assert abs(rows[int(plain.fields["message_id"])] - 72 * 3600) < 5
        assert abs(rows[int(month.fields["message_id"])] - 7 * 86400) < 5
    finally:
        yield env.stop()
