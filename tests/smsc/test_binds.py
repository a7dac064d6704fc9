"""Binds that cost what they should (issue 12 item 3) and say what happened (issue 11 item 7).

Sans-IO parts with a fake clock (task.Clock), the rest against an in-process
hub over real TCP on 127.0.0.x with a real SQLite store.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from staffetta.billing import accounts as acc
from staffetta.conf.settings import BindLimit, ConfigError, from_dict
from staffetta.pdu.codec import Pdu, decode, encode
from staffetta.pdu.constants import Command, Status
from staffetta.pdu.session import ProtocolViolation, RequestReceived, Session, Side, State
from staffetta.smsc.binds import BindLimiter, CheckCache, PasswordChecks
from tests.builders import split_frames
from tests.e2e.harness import make_env, wait_until, with_settings, with_timeout
from tests.esme import RawPeer, connect_esme


def bind_frame(seq: int, system_id: bytes = b"demo", password: bytes = b"demo",
               command_id: int = Command.BIND_TRANSCEIVER) -> bytes:
    return encode(Pdu(command_id, seq, 0, {"system_id": system_id, "password": password,
                                           "interface_version": 0x34}))


def legacy_hash(password: str) -> str:
    """A hash as stored before this change: scrypt N=2**14, r=8, p=1 (16 MiB)."""
    salt = os.urandom(16)
    d = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(d).decode()}"


# ------------------------------------------------------------------ session


def test_a_second_bind_while_one_is_checked_is_refused_and_the_first_goes_on():
    s = Session(Side.SMSC, clock=lambda: 0.0)
    events = s.receive(bind_frame(1) + bind_frame(2, password=b"other"))
    assert [type(e) for e in events] == [RequestReceived, ProtocolViolation]
    assert events[1].reason == "bind in progress"
    [resp] = [decode(f) for f in split_frames(s.data_to_send())]
    assert (resp.command_id, resp.sequence, resp.status) == (
        Command.BIND_TRANSCEIVER_RESP, 2, Status.ESME_RALYBND)
    s.accept_bind(events[0].pdu, b"hub")
    assert s.state == State.BOUND_TRX
    # What the bound session keeps of its bind holds no password.
    assert s.bind_pdu.fields["password"] == b""


def test_a_bind_counts_toward_the_inbound_window():
    s = Session(Side.SMSC, clock=lambda: 0.0, inbound_window=0)
    [ev] = s.receive(bind_frame(1))
    assert isinstance(ev, ProtocolViolation) and ev.status == Status.ESME_RTHROTTLED
    assert s.state == State.OPEN



# ----------------------------------------------------------------- limiter


def test_limiter_allows_a_burst_then_the_configured_rate():
    clock = task.Clock()
    lim = BindLimiter(5, 60.0, clock)
    for _ in range(4):
        lim.failed("127.0.0.2")
    assert not lim.blocked("127.0.0.2")
    lim.failed("127.0.0.2")
    assert lim.blocked("127.0.0.2") and not lim.blocked("127.0.0.3")
    clock.advance(11.9)
    assert lim.blocked("127.0.0.2")
    clock.advance(0.1)  # 5 per 60 s in the long run: one more attempt every 12 s
    assert not lim.blocked("127.0.0.2")
    lim.failed("127.0.0.2")
    assert lim.blocked("127.0.0.2")
    clock.advance(60)
    assert not lim.blocked("127.0.0.2") and len(lim) == 0  # drained: forgotten


def test_limiter_memory_is_one_float_per_address_and_bounded():
    clock = task.Clock()
    lim = BindLimiter(5, 60.0, clock, max_addresses=100)
    for _ in range(10_000):  # failures beyond the window do not pile up
        lim.failed("127.0.0.2")
    assert lim.blocked("127.0.0.2")
    clock.advance(12)
    assert not lim.blocked("127.0.0.2")
    for i in range(1000):
        lim.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(lim) <= 100
    assert all(isinstance(v, float) for v in lim._tat.values())


# ------------------------------------------------------------------- cache


def _cred(cid: int = 1, stored: str = "scrypt$4096$8$4$c2FsdA==$ZGlnZXN0", system_id: str = "demo"):
    account = acc.Account(1, "demo", True, "PRO", 39, None)
    return acc.Credential(cid, system_id, account, (), 10, False, stored)


def test_cache_answers_the_right_password_only_and_keeps_no_password():
    clock = task.Clock()
    cache = CheckCache(300.0, clock)
    cred = _cred()
    assert not cache.hit(cred, b"s3cret")
    cache.remember(cred, cred.password_hash, b"s3cret")
    assert cache.candidate("demo", b"s3cret") and cache.hit(cred, b"s3cret")
    assert not cache.candidate("demo", b"s3cre") and not cache.hit(cred, b"wrong")
    assert b"s3cret" not in repr(cache._entries).encode()
    # Another process (another secret) cannot use this one's entries.
    other = CheckCache(300.0, clock)
    assert other._digest(1, cred.password_hash, b"s3cret") != cache._digest(1, cred.password_hash, b"s3cret")


def test_cache_entry_ends_with_its_ttl_a_changed_credential_or_a_refusal():
    clock = task.Clock()
    cache = CheckCache(300.0, clock)
    cred = _cred()
    cache.remember(cred, cred.password_hash, b"pw")
    clock.advance(299)
    assert cache.hit(cred, b"pw")
    clock.advance(1)
    assert not cache.hit(cred, b"pw") and len(cache) == 0
    cache.remember(cred, cred.password_hash, b"pw")
    changed = _cred(stored="scrypt$4096$8$4$b3RoZXI=$ZGlnZXN0")  # password changed (or rehashed)
    assert not cache.hit(changed, b"pw") and len(cache) == 0
    cache.remember(cred, cred.password_hash, b"pw")
    assert not cache.hit(_cred(cid=2), b"pw")  # system_id now names another credential
    cache.remember(cred, cred.password_hash, b"pw")
    cache.forget("demo")
    assert not cache.hit(cred, b"pw")
    off = CheckCache(0.0, clock)
    off.remember(cred, cred.password_hash, b"pw")
    assert not off.hit(cred, b"pw")


# ------------------------------------------------------------------ hashes


@settings(max_examples=8, deadline=None)
@given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8))
def test_hash_verifies_its_password_only_with_todays_parameters(password):
    h = acc.hash_password(password)
    assert h.startswith(f"scrypt${acc.SCRYPT_N}${acc.SCRYPT_R}${acc.SCRYPT_P}$")
    assert acc.scrypt_memory(acc.SCRYPT_N, acc.SCRYPT_R) == 4 * 1024 * 1024
    assert acc.verify_password(password, h) and not acc.verify_password(password + "x", h)
    assert not acc.needs_rehash(h)


def test_a_hash_made_with_the_old_parameters_still_verifies_and_asks_for_a_rehash():
    h = legacy_hash("demo")
    assert acc.verify_password("demo", h) and not acc.verify_password("demX", h)
    assert acc.needs_rehash(h)


@pytest.mark.parametrize("stored", [
    "scrypt$1048576$8$1$c2FsdA==$ZGlnZXN0",  # 1 GiB: refused, not computed
    "scrypt$4096$8$100$c2FsdA==$ZGlnZXN0",
    "scrypt$1000$8$1$c2FsdA==$ZGlnZXN0",  # N not a power of two
    "bcrypt$x", "scrypt$a$b$c$d$e", "",
])
def test_a_hash_we_will_not_compute_never_verifies(stored):
    assert not acc.verify_password("demo", stored)


def test_bind_settings_name_a_bad_thread_count():
    with pytest.raises(ConfigError, match=r"^bind_limit\.check_threads: expected at least 1, got 0$"):
        from_dict({"bind_limit": {"check_threads": 0},
                   "upstreams": [{"name": "a", "host": "h", "port": 1, "system_id": "s", "password": "p"}]})
    assert BindLimit().check_threads == 1


# ------------------------------------------------------------ check pool


@pytest_twisted.inlineCallbacks
def test_pool_runs_one_check_at_a_time_drops_closed_ones_and_refuses_beyond_its_queue():
    checks = PasswordChecks(reactor, 1, 2)
    h = acc.hash_password("pw")
    try:
        alive = {"a": True, "b": True, "c": True}
        da = checks.submit(b"pw", h, lambda: alive["a"])
        db = checks.submit(b"no", h, lambda: alive["b"])
        dc = checks.submit(b"pw", h, lambda: alive["c"])
        assert checks.waiting == 2 and checks.full  # one running, two waiting
        assert checks.submit(b"pw", h, lambda: True) is None
        alive["b"] = False  # its connection closed while it waited
        results = yield with_timeout(defer.gatherResults([da, db, dc]))
        assert results == [(True, None), None, (True, None)]
        assert (checks.computed, checks.dropped) == (2, 1)
        # Old parameters: the thread also makes today's hash.
        ok, new = yield with_timeout(checks.submit(b"demo", legacy_hash("demo"), lambda: True))
        assert ok and acc.verify_password("demo", new) and not acc.needs_rehash(new)
    finally:
        checks.stop()


# --------------------------------------------------- an in-process hub, TCP


def connect_raw_from(port: int, source: str) -> defer.Deferred:
    ep = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    return connectProtocol(ep, RawPeer())


@pytest_twisted.inlineCallbacks
def test_every_failed_attempt_counts_not_every_connection(data_dir):
    env = make_env(data_dir)
    try:
        # Six wrong binds in one TCP write: one is checked, five refused as "in progress".
        raw = yield connect_raw_from(env.port, "127.0.0.7")
        raw.transport.write(b"".join(bind_frame(i, password=b"wrong") for i in range(1, 7)))
        frames = yield with_timeout(raw.wait_frames(6))
        assert sorted((f.sequence, f.status) for f in frames) == [
            (1, Status.ESME_RBINDFAIL)] + [(i, Status.ESME_RALYBND) for i in range(2, 7)]
        yield with_timeout(raw.lost)
        # The address used its five attempts: the right password is now refused unchecked.
        raw = yield connect_raw_from(env.port, "127.0.0.7")
        raw.transport.write(bind_frame(1))
        [f] = yield with_timeout(raw.wait_frames(1))
        assert f.status == Status.ESME_RBINDFAIL
        assert env.hub.metrics.bind_failures.labels("rate_limited")._value.get() == 1
        assert env.hub.binds.checks.computed == 1
        # Another address is not concerned.
        raw = yield connect_raw_from(env.port, "127.0.0.8")
        raw.transport.write(bind_frame(1))
        [f] = yield with_timeout(raw.wait_frames(1))
        assert f.status == Status.ESME_ROK
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_a_bind_whose_connection_closed_is_never_checked(data_dir):
    env = make_env(data_dir)
    try:
        checks = env.hub.binds.checks
        # Keep the check thread busy with binds from other addresses...
        busy = []
        for i in range(4):
            r = yield connect_raw_from(env.port, f"127.0.0.{20 + i}")
            r.transport.write(bind_frame(1, password=b"wrong"))
            busy.append(r)
        # ...then a bind that hangs up at once.
        quitter = yield connect_raw_from(env.port, "127.0.0.30")
        quitter.transport.write(bind_frame(1, password=b"wrong"))
        quitter.transport.loseConnection()
        for r in busy:
            yield with_timeout(r.wait_frames(1))
        yield wait_until(lambda: env.hub.binds.metrics.checks.labels("dropped")._value.get() == 1)
        assert checks.computed == 4  # the four that waited for their answer, not the fifth
        assert env.hub.metrics.bind_failures.labels("bad_password")._value.get() == 4
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_binds_beyond_the_check_queue_are_throttled_at_once(data_dir):
    env = make_env(data_dir)
    yield env.stop_hub()
    with_settings(env, bind_limit=BindLimit(check_queue=1))
    env.start_hub()
    try:
        peers = []
        for i in range(6):
            r = yield connect_raw_from(env.port, f"127.0.0.{40 + i}")
            r.transport.write(bind_frame(1, password=b"wrong"))
            peers.append(r)
        statuses = []
        for r in peers:
            [f] = yield with_timeout(r.wait_frames(1))
            statuses.append(f.status)
        assert Status.ESME_RTHROTTLED in statuses
        assert set(statuses) == {Status.ESME_RTHROTTLED, Status.ESME_RBINDFAIL}
        assert env.hub.binds.checks.computed == statuses.count(Status.ESME_RBINDFAIL)
        # A busy refusal examined nothing: it is no attempt of that address.
        assert not any(env.hub.binds.limiter.blocked(f"127.0.0.{40 + i}") for i in range(6))
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_a_returning_client_is_checked_by_the_cache_until_its_credential_changes(data_dir):
    env = make_env(data_dir)
    try:
        hub = env.hub
        checks = hub.binds.metrics.checks
        for _ in range(3):
            c = yield connect_esme(reactor, env.port)
            assert (yield with_timeout(c.bind("demo", "demo"))).status == Status.ESME_ROK
            c.transport.loseConnection()
            yield with_timeout(c.closed)
        assert (checks.labels("scrypt")._value.get(), checks.labels("cache")._value.get()) == (1, 2)
        # A wrong password for a cached credential still costs a full check.
        c = yield connect_esme(reactor, env.port)
        assert (yield with_timeout(c.bind("demo", "demX"))).status == Status.ESME_RBINDFAIL
        assert checks.labels("scrypt")._value.get() == 2
        # Revoked: refused at once although the cache knows the password, and forgotten.
        with hub.engine.begin() as conn:
            assert acc.revoke_credential(conn, "demo")
        c = yield connect_esme(reactor, env.port)
        assert (yield with_timeout(c.bind("demo", "demo"))).status == Status.ESME_RBINDFAIL
        assert len(hub.binds.cache) == 0
        # A new password (a new hash): the old one is refused, the new one checked by scrypt.
        with hub.engine.begin() as conn:
            conn.execute(acc.credentials.update().values(revoked=False, password_hash=acc.hash_password("new")))
        c = yield connect_esme(reactor, env.port)
        assert (yield with_timeout(c.bind("demo", "new"))).status == Status.ESME_ROK
        assert checks.labels("scrypt")._value.get() == 3
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_a_hash_with_old_parameters_is_rehashed_at_its_next_good_bind(data_dir):
    env = make_env(data_dir)
    try:
        with env.hub.engine.begin() as conn:
            conn.execute(acc.credentials.update().values(password_hash=legacy_hash("demo")))
        c = yield connect_esme(reactor, env.port)
        assert (yield with_timeout(c.bind("demo", "demo"))).status == Status.ESME_ROK

        def stored() -> str:
            with env.hub.engine.connect() as conn:
                return conn.execute(select(acc.credentials.c.password_hash)).scalar_one()

        yield wait_until(lambda: not acc.needs_rehash(stored()))
        assert acc.verify_password("demo", stored())
        # The cache entry was made for the new hash: the next bind needs no scrypt.
        c2 = yield connect_esme(reactor, env.port)
        assert (yield with_timeout(c2.bind("demo", "demo"))).status == Status.ESME_ROK
        assert env.hub.binds.metrics.checks.labels("cache")._value.get() == 1
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_every_bind_is_logged_with_account_type_peer_result_and_reason(data_dir, caplog):
    env = make_env(data_dir, accounts=(("demo", "demo"), ("off", "off")))
    caplog.set_level(logging.INFO, logger="staffetta.smsc.binds")
    try:
        with env.hub.engine.begin() as conn:
            acc.update_account(conn, acc.get_account(conn, "off").id, enabled=False)
        c = yield connect_esme(reactor, env.port)
        yield with_timeout(c.bind("demo", "demo", Command.BIND_RECEIVER))
        for system_id, password in (("demo", "bad"), ("nobody", "x"), ("off", "off")):
            raw = yield connect_raw_from(env.port, "127.0.0.60")
            raw.transport.write(bind_frame(1, system_id.encode(), password.encode(), Command.BIND_TRANSMITTER))
            yield with_timeout(raw.wait_frames(1))
        raw = yield connect_raw_from(env.port, "127.0.0.61")
        raw.transport.write(bind_frame(1) + bind_frame(2))
        yield with_timeout(raw.wait_frames(2))
        lines = [r.getMessage() for r in caplog.records if r.name == "staffetta.smsc.binds"]
        assert "bind ok: system_id='demo' account=demo type=rx peer=127.0.0.1 reason=checked by scrypt" in lines
        assert ("bind refused: system_id='demo' account=demo type=tx peer=127.0.0.60 status=ESME_RBINDFAIL "
                "reason=bad_password") in lines
        assert ("bind refused: system_id='nobody' account=- type=tx peer=127.0.0.60 status=ESME_RBINDFAIL "
                "reason=unknown_system_id") in lines
        assert ("bind refused: system_id='off' account=off type=tx peer=127.0.0.60 status=ESME_RBINDFAIL "
                "reason=disabled") in lines
        assert ("bind refused: system_id='?' account=- type=trx peer=127.0.0.61 status=ESME_RALYBND "
                "reason=bind in progress") in lines
        assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "staffetta.smsc.binds")
    finally:
        yield env.stop()



@pytest_twisted.inlineCallbacks
def test_a_pool_without_a_queue_still_runs_its_threads():
    checks = PasswordChecks(reactor, 1, 0)
    try:
        d = checks.submit(b"pw", acc.hash_password("pw"), lambda: True)
        assert d is not None and checks.full
        assert checks.submit(b"pw", acc.hash_password("pw"), lambda: True) is None
        assert (yield with_timeout(d)) == (True, None)
        assert not checks.full
    finally:
        checks.stop()
