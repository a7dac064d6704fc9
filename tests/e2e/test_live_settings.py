"""Settings are live: a change made with the command line reaches a bound client's next message within 5 s."""

from __future__ import annotations

import os
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import reactor, task, utils

from staffetta.billing.accounts import (
    add_credential,
    create_account,
    current_settings_version,
    revoke_credential,
    update_account,
    upgrade,
)
from staffetta.pdu.constants import MessageState, Status, Tag
from staffetta.store.db import create_schema, make_engine
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.e2e.test_billing_smpp import _balance
from tests.esme import connect_esme

LIVE_WITHIN = 5.0


def _cli(env, *args: str):
    """``staffetta account …`` as an operator runs it, in its own process, on the hub's store."""
    d = utils.getProcessOutputAndValue(
        sys.executable, ["-m", "staffetta.smsc.cli", "account", *args, "--data-dir", env.settings.data_dir],
        env=os.environ,
    )

    def check(result):
        out, err, code = result
        assert code == 0, err
        return out

    return d.addCallback(check)


@pytest_twisted.inlineCallbacks
def test_refund_flag_flipped_while_bound_applies_to_the_next_message(data_dir):
    env = make_env(data_dir)
    try:
        env.carrier.script("39333777", stat="UNDELIV")
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        start = _balance(env)
        yield with_timeout(c.submit(destination=b"393337771234"))
        dlr = yield with_timeout(c.delivered.get())
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.UNDELIVERABLE])
        yield wait_until(lambda: _balance(env) == start - 160)  # not refunded: the flag is off

        yield _cli(env, "set", "demo", "--refund-network-failure", "yes")
        changed = time.monotonic()
        # Within 5 s, without a rebind, the same session's next message is refunded.
        yield wait_until(lambda: env.hub.accounts[1].refund_on_network_failure, LIVE_WITHIN)
        yield with_timeout(c.submit(destination=b"393337771234"))
        yield with_timeout(c.delivered.get())
        yield wait_until(lambda: _balance(env) == start - 160, LIVE_WITHIN)
        assert time.monotonic() - changed < LIVE_WITHIN + 1
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_nocredit_status_changed_while_bound(data_dir):
    env = make_env(data_dir, accounts=(("demo", "demo", 0),))
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit())
        assert r.status == Status.STAFFETTA_RNOCREDIT
        yield _cli(env, "set", "demo", "--nocredit-status", "0x45")
        changed = time.monotonic()
        while True:  # the session is never rebound
            r = yield with_timeout(c.submit())
            if r.status == Status.ESME_RSUBMITFAIL:
                break
            assert r.status == Status.STAFFETTA_RNOCREDIT
            assert time.monotonic() - changed < LIVE_WITHIN, "the change did not reach the bound session"
            yield task.deferLater(reactor, 0.2, lambda: None)
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_a_topup_made_while_bound_is_spent_at_once(data_dir):
    env = make_env(data_dir, accounts=(("demo", "demo", 0),))
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit())
        assert r.status == Status.STAFFETTA_RNOCREDIT
        yield _cli(env, "topup", "demo", "1.60")
        r = yield with_timeout(c.submit())  # the balance is never cached
        assert r.status == Status.ESME_ROK
    finally:
        yield env.stop()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_every_settings_change_bumps_the_version_hubs_poll(store, tmp_path, request):
    """What several hubs on one PostgreSQL watch: one number, moved in the change's own transaction."""
    url = f"sqlite:///{tmp_path / 's.db'}" if store == "sqlite" else request.getfixturevalue("pg_schema_url")
    engine = make_engine(url)
    try:
        create_schema(engine)
        upgrade(engine)
        seen = []
        with engine.begin() as conn:
            seen.append(current_settings_version(conn))
            a = create_account(conn, "acme", "pw")
            seen.append(current_settings_version(conn))
            update_account(conn, a.id, refund_on_network_failure=True)
            seen.append(current_settings_version(conn))
            add_credential(conn, a.id, "acme2", "pw", max_rate=5)
            seen.append(current_settings_version(conn))
            revoke_credential(conn, "acme2")
            seen.append(current_settings_version(conn))
        with engine.begin() as conn:
            update_account(conn, a.id)  # nothing changed: nothing to reload
            seen.append(current_settings_version(conn))
        assert seen == [0, 1, 2, 3, 4, 4]
    finally:
        engine.dispose()
