"""Sender pools and the opt-out ledger over real SMPP (issue 14 items 1 and 6): what the carrier sees.

A hub and the carrier simulator on 127.0.0.1; pools and opt-outs are written to
the store while the hub runs (the settings-version poll brings them in), and
one opt-out is added by ``staffetta optout add`` in its own process.
"""

from __future__ import annotations

import os
import sys
import time

import pytest_twisted
from twisted.internet import reactor, utils

from staffetta.pdu.constants import Status
from staffetta.router import number_store as ns
from staffetta.store.db import make_engine
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.esme import connect_esme

S1, S2 = "393500000001", "393500000002"
R1, R2 = "393400000001", "393400000002"
X = b"393331110001"
STOPPED = "393489999999"


def _record_submits(env) -> list[tuple[str, str]]:
    """(source, destination) of every submit_sm the carrier simulator gets, in order."""
    seen: list[tuple[str, str]] = []
    carrier = env.carrier
    original = carrier._submit

    def submit(proto, pdu):
        seen.append((pdu.fields["source_addr"].decode(), pdu.fields["destination_addr"].decode()))
        original(proto, pdu)

    carrier._submit = submit
    return seen


def _configure(env) -> None:
    engine = make_engine(env.settings.db_url)
    with engine.begin() as conn:
        for n in (S1, S2):
            ns.add_pool_number(conn, n, "SMART", None, time.time())
        for n in (R1, R2):
            ns.add_pool_number(conn, n, "REPLY", None, time.time())
        ns.set_opt_out(conn, 1, STOPPED, True, time.time(), via="cli")  # account demo
    engine.dispose()


def _submit(client, msg_type: bytes, destination: bytes, source: bytes = b"Staffetta"):
    ton, npi = (1, 1) if source.isdigit() else (5, 0)
    return with_timeout(client.submit(b"hi", destination=destination, service_type=msg_type,
                                      source_addr=source, source_addr_ton=ton, source_addr_npi=npi))


@pytest_twisted.inlineCallbacks
def test_pools_rotation_stickiness_two_accounts_exhaustion_opt_out(data_dir):
    env = make_env(data_dir, accounts=(("demo", "demo"), ("beta", "beta"), ("gamma", "gamma")))
    clients = []
    try:
        seen = _record_submits(env)
        _configure(env)
        # Live: no restart, the hub's one-second poll brings the pools in.
        yield wait_until(lambda: env.hub.numbers.pool(1, "REPLY") == (R1, R2), timeout=5)
        for _ in range(3):
            clients.append((yield connect_esme(reactor, env.port)))
        demo, beta, gamma = clients
        for c, name in ((demo, "demo"), (beta, "beta"), (gamma, "gamma")):
            yield c.bind(name, name)

        # SMART rotates; the client's own sender is ignored.
        for i in range(4):
            r = yield _submit(demo, b"SMART", b"39333222000%d" % i)
            assert r.status == Status.ESME_ROK
        yield wait_until(lambda: len(seen) >= 4)
        assert [s for s, _ in seen[:4]] == [S1, S2, S1, S2]

        # REPLY is sticky per (account, destination); a second account writing to X gets the other number.
        for c in (demo, demo, beta, demo, beta):
            assert (yield _submit(c, b"REPLY", X, b"393331234567")).status == Status.ESME_ROK
        yield wait_until(lambda: len(seen) >= 9)
        reply = [s for s, d in seen[4:9]]
        assert reply[0] == reply[1] == reply[3] and reply[2] == reply[4] and {reply[0], reply[2]} == {R1, R2}

        # A third account writing to X: every REPLY number is held for X by another account.
        r = yield _submit(gamma, b"REPLY", X, b"393331234567")
        assert r.status == Status.STAFFETTA_RPOOLEXHAUSTED == 0x410
        # REPLY from an alphanumeric sender is refused; gamma writing elsewhere is fine.
        assert (yield _submit(gamma, b"REPLY", b"393331110009")).status == Status.ESME_RINVSRCADR
        assert (yield _submit(gamma, b"REPLY", b"393331110009", b"393331234567")).status == Status.ESME_ROK

        # Opt-out: demo's MT to the handset that said STOP is refused; beta's is not.
        assert (yield _submit(demo, b"", STOPPED.encode())).status == Status.STAFFETTA_ROPTEDOUT == 0x411
        assert (yield _submit(beta, b"", STOPPED.encode())).status == Status.ESME_ROK

        # An opt-out added by the operator's command, in its own process, applies within seconds.
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ["-m", "staffetta.smsc.cli", "optout", "add", "beta", STOPPED,
                             "--data-dir", env.settings.data_dir], env=os.environ)
        assert code == 0, err
        added = time.monotonic()
        yield wait_until(lambda: env.hub.numbers.opted_out(2, STOPPED), timeout=5)
        assert time.monotonic() - added < 5
        assert (yield _submit(beta, b"", STOPPED.encode())).status == Status.STAFFETTA_ROPTEDOUT
        refused = len(seen)

        # A restart keeps the window: rebuilt from the messages table, the same number, the same refusal.
        for c in clients:
            c.transport.loseConnection()
        clients.clear()
        yield env.stop_hub()
        env.start_hub()
        for _ in range(2):
            clients.append((yield connect_esme(reactor, env.port)))
        demo, gamma = clients
        yield demo.bind("demo", "demo")
        yield gamma.bind("gamma", "gamma")
        assert (yield _submit(demo, b"REPLY", X, b"393331234567")).status == Status.ESME_ROK
        assert (yield _submit(gamma, b"REPLY", X, b"393331234567")).status == Status.STAFFETTA_RPOOLEXHAUSTED
        yield wait_until(lambda: len(seen) > refused)
        assert seen[-1] == (reply[0], X.decode())
    finally:
        for c in clients:
            if c.transport is not None:
                c.transport.loseConnection()
        yield env.stop()
