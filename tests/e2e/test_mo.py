"""MO end to end over real SMPP: carrier (the simulator) -> hub -> owner's bind, durable first.

The numbers (pools, dedicated numbers, codes, keywords) are configured in
the store as ``staffetta number ...`` does (router/number_store.py); the hub
takes them at its next settings poll (:func:`configure` waits for it).
"""

from __future__ import annotations

import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer, reactor

from staffetta.billing.wallet import balance
from staffetta.pdu.constants import Command, Status, Tag
from staffetta.pdu.segments import udh_concat
from staffetta.router.mo_store import mo
from staffetta.router.numbers import Keyword
from staffetta.router.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, Schedule, verify
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.esme import connect_esme

HANDSET = "393331234567"
HANDSET2 = "393339876543"
POOL1, POOL2 = "393400000001", "393400000002"
DEDICATED = "393400000099"
SHARED = "393400000050"
ACCOUNTS = (("acme", "acme"), ("beta", "beta"))
ACME, BETA = 1, 2
#: A REPLY submit with no sender of its own: the pool gives one (router/numbers.py).
REPLY_FROM_POOL = {"service_type": b"REPLY", "source_addr": b"", "source_addr_ton": 1, "source_addr_npi": 1}


@defer.inlineCallbacks
def configure(env, *, pools=(), shared=(), dedicated=(), aliases=(), keywords=(), code_for=None):
    """Numbers into the store; returns the numeric code given to ``code_for`` (if any)."""
    from staffetta.billing.accounts import current_settings_version
    from staffetta.router import number_store as ns

    now = reactor.seconds()
    code = None
    with env.hub.engine.begin() as conn:
        for number, kind, account_id in pools:
            ns.add_pool_number(conn, number, kind, account_id, now)
        for number in shared:
            ns.add_shared_number(conn, number, now)
        for number, account_id in dedicated:
            ns.assign_dedicated(conn, number, account_id, now)
        for account_id, alias in aliases:
            ns.add_alias(conn, account_id, alias, now)
        for k in keywords:
            ns.add_keyword(conn, k)
        if code_for is not None:
            code, _ = ns.assign_code(conn, code_for, now)
        version = current_settings_version(conn)
    yield wait_until(lambda: env.hub._settings_version >= version)
    return code


def sent_from(env, message_id: bytes) -> str:
    """The source address an accepted MT was given (a pool number for SMART/REPLY)."""
    with env.hub.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT source_addr FROM messages WHERE id = ?",
                                    (int(message_id),)).scalar()


def rows(env) -> list:
    with env.hub.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(mo).order_by(mo.c.id))]


def credit(env, account_id: int) -> int:
    with env.hub.engine.connect() as conn:
        return balance(conn, account_id)


@defer.inlineCallbacks
def bound(env, name: str, command=Command.BIND_TRANSCEIVER, **kw):
    c = yield connect_esme(reactor, env.port, **kw)
    r = yield with_timeout(c.bind(name, name, command))
    assert r.status == Status.ESME_ROK
    return c


@defer.inlineCallbacks
def next_mo(client, timeout: float = 10.0):
    """The next MO deliver_sm a client gets (receipts of its own MT are skipped)."""
    while True:
        pdu = yield with_timeout(client.delivered.get(), timeout)
        if pdu.fields["esm_class"] & 0x3C == 0:
            return pdu


def text(pdu) -> bytes:
    return pdu.fields["short_message"] or pdu.tlvs.get(Tag.message_payload, b"")


@pytest_twisted.inlineCallbacks
def test_a_reply_in_the_window_reaches_the_sender_uncharged_then_falls_through(data_dir):
    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        yield configure(env, pools=[(POOL1, "REPLY", None), (POOL2, "REPLY", None)], shared=[SHARED],
                        aliases=[(BETA, "beta1")])
        acme = yield bound(env, "acme")
        r = yield with_timeout(acme.submit(b"Rispondi pure", **REPLY_FROM_POOL))
        assert r.status == Status.ESME_ROK
        pool = sent_from(env, r.fields["message_id"])  # the submit path took it from the pool
        assert pool in (POOL1, POOL2)
        before = credit(env, ACME)
        status = yield with_timeout(env.carrier.inject_mo(HANDSET, pool, "Si grazie"))
        assert status == Status.ESME_ROK
        got = yield next_mo(acme)
        assert got.command_id == Command.DELIVER_SM
        assert (got.fields["source_addr"], got.fields["destination_addr"]) == (HANDSET.encode(), pool.encode())
        assert got.fields["esm_class"] == 0 and text(got) == b"Si grazie"
        assert credit(env, ACME) == before  # the reply costs the account nothing
        [row] = rows(env)
        assert (row["account_id"], row["how"], row["free"]) == (ACME, "reply_window", True)
        # After the window, the same number is a shared one: first word decides, else dead letter.
        env.hub.numbers.window = 0.0
        beta = yield bound(env, "beta")
        status = yield with_timeout(env.carrier.inject_mo(HANDSET, pool, "beta1 ciao"))
        assert status == Status.ESME_ROK
        got = yield next_mo(beta)
        assert text(got) == b"beta1 ciao"
        status = yield with_timeout(env.carrier.inject_mo(HANDSET, pool, "Si grazie ancora"))
        assert status == Status.ESME_ROK  # a dead letter is stored, counted, acknowledged
        last = rows(env)[-1]
        assert (last["account_id"], last["how"], last["cause"]) == (None, "dead_letter", "no_code")
        assert env.hub.metrics.count("mo_dead", "no_code") == 1
        assert env.hub.metrics.count("mo_in", "sim") == 3
        # Neither later MO went to acme: only its own receipt may be waiting.
        assert all(p.fields["esm_class"] & 0x3C for p in acme.delivered.pending)
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_two_accounts_writing_to_one_handset_get_their_own_replies(data_dir):
    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        yield configure(env, pools=[(POOL1, "REPLY", None), (POOL2, "REPLY", None)])
        acme = yield bound(env, "acme")
        beta = yield bound(env, "beta")
        ra = yield with_timeout(acme.submit(b"da acme", **REPLY_FROM_POOL))
        rb = yield with_timeout(beta.submit(b"da beta", **REPLY_FROM_POOL))
        n1, n2 = sent_from(env, ra.fields["message_id"]), sent_from(env, rb.fields["message_id"])
        assert {n1, n2} == {POOL1, POOL2}
        yield with_timeout(env.carrier.inject_mo(HANDSET, n2, "for beta"))
        yield with_timeout(env.carrier.inject_mo(HANDSET, n1, "for acme"))
        a = yield next_mo(acme)
        b = yield next_mo(beta)
        assert (text(a), a.fields["destination_addr"]) == (b"for acme", n1.encode())
        assert (text(b), b.fields["destination_addr"]) == (b"for beta", n2.encode())
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_a_keyword_an_alias_and_a_dedicated_number_reach_their_owner(data_dir):
    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        code = yield configure(env, shared=[SHARED], dedicated=[(DEDICATED, BETA)], aliases=[(ACME, "acmeshop")],
                               keywords=[Keyword(ACME, "PROMO", "reply", "Sconto 10% con PROMO10", "PRO")],
                               code_for=BETA)
        acme = yield bound(env, "acme", Command.BIND_RECEIVER)
        beta = yield bound(env, "beta", Command.BIND_RECEIVER)
        before = credit(env, ACME)
        submits = env.carrier.stats["submits"]
        yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, "hello dedicated"))
        yield with_timeout(env.carrier.inject_mo(HANDSET, SHARED, f"{code} by code"))
        yield with_timeout(env.carrier.inject_mo(HANDSET, SHARED, "acmeshop promo please"))
        got = [(yield next_mo(beta)), (yield next_mo(beta)), (yield next_mo(acme))]
        assert [text(p) for p in got] == [b"hello dedicated", f"{code} by code".encode(), b"acmeshop promo please"]
        r = rows(env)
        assert [(x["account_id"], x["how"], x["keyword"]) for x in r] == [
            (BETA, "dedicated", None), (BETA, "code", None), (ACME, "alias", "PROMO")]
        # The keyword's automatic reply: one MT, to the handset, from the number written to, paid.
        yield wait_until(lambda: env.carrier.stats["submits"] == submits + 1)
        assert r[2]["reply_id"] is not None
        assert credit(env, ACME) == before - 160  # one PRO segment of the default plan
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_stop_records_the_opt_out_before_the_carrier_hears_ok(data_dir):
    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        from staffetta.router.number_store import list_opt_outs

        yield configure(env, dedicated=[(DEDICATED, ACME)])
        acme = yield bound(env, "acme")
        status = yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, "stop"))
        assert status == Status.ESME_ROK
        # Stored when the carrier hears OK, and in force: this account's next MT there is refused.
        with env.hub.engine.connect() as conn:
            assert [(r.account_id, r.handset) for r in list_opt_outs(conn)] == [(ACME, HANDSET)]
        assert env.hub.numbers.opted_out(ACME, HANDSET)
        r = yield with_timeout(acme.submit(b"promo"))
        assert r.status == 0x411
        got = yield next_mo(acme)
        assert text(got) == b"stop"
        assert rows(env)[0]["action"] == "stop"
        status = yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, "START"))
        assert status == Status.ESME_ROK and not env.hub.numbers.opted_out(ACME, HANDSET)
        r = yield with_timeout(acme.submit(b"welcome back"))
        assert r.status == Status.ESME_ROK
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_an_mo_for_an_unbound_client_arrives_on_its_next_bind(data_dir):
    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        yield configure(env, dedicated=[(DEDICATED, ACME)])
        tx = yield bound(env, "acme", Command.BIND_TRANSMITTER)  # a transmitter takes no MO
        for i in range(3):
            status = yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, f"msg {i}"))
            assert status == Status.ESME_ROK
        yield env.stop_hub()  # across a restart too
        env.start_hub()
        rx = yield bound(env, "acme", Command.BIND_RECEIVER)
        got = []
        for _ in range(3):
            got.append(text((yield next_mo(rx))))
        assert got == [b"msg 0", b"msg 1", b"msg 2"]
        assert tx.delivered.pending == []
        yield wait_until(lambda: env.hub.metrics.count("mo_delivered", "acme", "smpp") == 3)
    finally:
        yield env.stop()


def _part(ref: int, total: int, seq: int, data: bytes, ref16: bool = False) -> tuple[bytes, int]:
    return udh_concat(ref, total, seq, ref16) + data, 0x40


@pytest_twisted.inlineCallbacks
def test_a_restart_mid_reassembly_loses_no_part(data_dir):
    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        yield configure(env, dedicated=[(DEDICATED, ACME)])
        chunks = [b"A" * 153, b"B" * 153, b"C" * 40]
        # Parts 3 and 1 (out of order), then the hub stops.
        for seq in (3, 1):
            sm, esm = _part(7, 3, seq, chunks[seq - 1])
            status = yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, sm, esm_class=esm))
            assert status == Status.ESME_ROK
        assert rows(env) == []
        yield env.stop_hub()
        env.start_hub()
        acme = yield bound(env, "acme", Command.BIND_RECEIVER)
        sm, esm = _part(7, 3, 2, chunks[1])
        status = yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, sm, esm_class=esm))
        assert status == Status.ESME_ROK
        got = yield next_mo(acme)
        assert got.fields["esm_class"] == 0
        assert got.tlvs[Tag.message_payload] == b"".join(chunks)  # one deliver_sm, whole
        [row] = rows(env)
        assert (row["parts_total"], row["parts_present"]) == (3, None)
        with env.hub.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM mo_parts").scalar() == 0
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_sar_and_16_bit_parts_in_any_order(data_dir):
    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        yield configure(env, dedicated=[(DEDICATED, ACME)])
        acme = yield bound(env, "acme", Command.BIND_RECEIVER)
        for seq, data in ((2, b" world"), (1, b"hello")):
            tlvs = {Tag.sar_msg_ref_num: (300).to_bytes(2, "big"), Tag.sar_total_segments: b"\x02",
                    Tag.sar_segment_seqnum: bytes([seq])}
            yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, data, tlvs=tlvs))
        got = yield next_mo(acme)
        assert text(got) == b"hello world"
        for seq, data in ((2, b"two"), (1, b"one ")):
            sm, esm = _part(0x1234, 2, seq, data, ref16=True)
            yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, sm, esm_class=esm))
        got = yield next_mo(acme)
        assert text(got) == b"one two"
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_an_incomplete_mo_is_delivered_as_its_parts_flagged_after_the_timeout(data_dir):
    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        yield configure(env, dedicated=[(DEDICATED, ACME)])
        env.hub.mo.router.reassembler.timeout = 0.3
        acme = yield bound(env, "acme", Command.BIND_RECEIVER)
        for seq in (1, 3):
            sm, esm = _part(9, 3, seq, b"part%d" % seq)
            yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, sm, esm_class=esm))
        first = yield next_mo(acme)
        third = yield next_mo(acme)
        # As they came: each with its concatenation header, so the client sees part 2 is missing.
        assert first.fields["esm_class"] == third.fields["esm_class"] == 0x40
        assert first.fields["short_message"] == udh_concat(9, 3, 1) + b"part1"
        assert third.fields["short_message"] == udh_concat(9, 3, 3) + b"part3"
        [row] = rows(env)
        assert (row["parts_present"], row["part_sizes"]) == ("1,3", "5,5")
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_a_malformed_mo_gets_a_precise_status(data_dir):
    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        status = yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, b"\x09\x00\x03", esm_class=0x40))
        assert status == Status.ESME_RINVMSGLEN
        assert rows(env) == []
        assert env.hub.metrics.count("mo_rejected", "sim") == 1
    finally:
        yield env.stop()



# ------------------------------------------------------------------ webhooks


class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that checks the signature as docs/two-way.md says."""

    def __init__(self, secret: str, codes: list[int]) -> None:
        from twisted.web import resource, server

        self.secret = secret
        self.codes = codes  # answers in turn; the last one repeats
        self.seen: list[tuple[dict, bytes, bool]] = []
        outer = self

        class Hook(resource.Resource):
            isLeaf = True

            def render_POST(self, request):  # noqa: N802
                body = request.content.read()
                header = request.getHeader(SIGNATURE_HEADER) or ""
                ok = verify(outer.secret, header, body)
                outer.seen.append(({"delivery": request.getHeader(DELIVERY_HEADER),
                                    "type": request.getHeader("content-type")}, body, ok))
                code = outer.codes.pop(0) if len(outer.codes) > 1 else outer.codes[0]
                request.setResponseCode(code if ok else 401)
                return b"ok"

        site = server.Site(Hook())
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/mo"


SECRET = "s3cret-key-of-16+chars"


@defer.inlineCallbacks
def webhook_account(env, account_id: int, url: str, channel: str = "http"):
    from staffetta.billing.accounts import update_account

    with env.hub.engine.begin() as conn:
        update_account(conn, account_id, mo_url=url, mo_secret=SECRET, mo_channel=channel)
    yield wait_until(lambda: env.hub.accounts[account_id].mo_url == url)


@defer.inlineCallbacks
def webhooked(data_dir, codes: list[int], schedule: Schedule | None = None):
    """A hub where ACME owns DEDICATED and takes its MO by webhook at a receiver answering ``codes`` in turn."""
    env = make_env(data_dir, accounts=ACCOUNTS)
    rx = Receiver(SECRET, codes)
    try:
        if schedule is not None:
            env.hub.mo.webhooks.schedule = schedule
        yield configure(env, dedicated=[(DEDICATED, ACME)])
        yield webhook_account(env, ACME, rx.url)
    except BaseException:
        yield unhook(env, rx)
        raise
    return env, rx


@defer.inlineCallbacks
def unhook(env, rx):
    yield rx.port.stopListening()
    yield env.stop()


@pytest_twisted.inlineCallbacks
def test_a_webhook_receiver_verifies_the_signature(data_dir):
    import json

    env, rx = yield webhooked(data_dir, [200])
    try:
        status = yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, "Ciao €uro"))
        assert status == Status.ESME_ROK
        yield wait_until(lambda: rx.seen)
        headers, body, ok = rx.seen[0]
        assert ok and headers["type"] == "application/json"
        doc = json.loads(body)
        assert (doc["from"], doc["to"], doc["text"], doc["account"]) == (HANDSET, DEDICATED, "Ciao €uro", "acme")
        assert doc["owner"]["how"] == "dedicated" and doc["parts"]["complete"] is True
        # The same body with another secret does not verify (what a receiver must refuse).
        assert not verify("another-secret-16chars", f"t={int(reactor.seconds())},v1=00", body)
        yield wait_until(lambda: env.hub.metrics.count("mo_delivered", "acme", "http") == 1)
        yield wait_until(lambda: _hook_state(env) == ("delivered", 1))
        # The MO families on /metrics, labelled by connector, account, channel, cause: never a number.
        import urllib.request

        from twisted.internet import threads

        port = env.hub.metrics_port.getHost().port
        scraped = yield threads.deferToThread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        for needle in ('staffetta_mo_in_total{connector="sim"} 1.0',
                       'staffetta_mo_delivered_total{account="acme",channel="http"} 1.0',
                       'staffetta_mo_webhooks_total{account="acme",event="delivered"} 1.0'):
            assert needle in scraped, needle
        assert HANDSET not in scraped and DEDICATED not in scraped
    finally:
        yield unhook(env, rx)


def _hook_state(env):
    with env.hub.engine.connect() as conn:
        return tuple(conn.exec_driver_sql("SELECT state, attempts FROM webhooks").first() or ())


@pytest_twisted.inlineCallbacks
def test_a_failing_webhook_is_retried_then_delivered(data_dir):
    env, rx = yield webhooked(data_dir, [500, 503, 200], Schedule(first_retry=0.05, max_delay=0.2, retry_for=30))
    try:
        yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, "retry me"))
        yield wait_until(lambda: _hook_state(env) == ("delivered", 3))
        assert len(rx.seen) == 3 and all(ok for _, _, ok in rx.seen)
        assert len({b for _, b, _ in rx.seen}) == 1  # the same body each time
        assert len({h["delivery"] for h, _, _ in rx.seen}) == 1  # and the same delivery id
        assert env.hub.metrics.count("webhooks", "acme", "retried") == 2
    finally:
        yield unhook(env, rx)


@pytest_twisted.inlineCallbacks
def test_a_webhook_that_always_fails_becomes_a_dead_letter(data_dir):
    env, rx = yield webhooked(data_dir, [500], Schedule(first_retry=0.05, max_delay=0.1, retry_for=0.5))
    try:
        yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, "nobody home"))
        yield wait_until(lambda: (_hook_state(env) or ("",))[0] == "dead")
        assert len(rx.seen) >= 3
        assert env.hub.metrics.count("mo_dead", "webhook_failed") == 1
        assert len(env.hub.mo.webhooks) == 0
    finally:
        yield unhook(env, rx)


@pytest_twisted.inlineCallbacks
def test_pending_webhooks_survive_a_restart(data_dir):
    env, rx = yield webhooked(data_dir, [500], Schedule(first_retry=0.05, max_delay=0.1, retry_for=60))
    try:
        yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, "after the restart"))
        yield wait_until(lambda: len(rx.seen) >= 2)
        yield env.stop_hub()
        n = len(rx.seen)
        rx.codes[:] = [200]
        env.start_hub()
        yield wait_until(lambda: (_hook_state(env) or ("",))[0] == "delivered")
        assert len(rx.seen) > n and rx.seen[-1][2]
    finally:
        yield unhook(env, rx)


# ------------------------------------------------------------------ the command line


@pytest_twisted.inlineCallbacks
def test_mo_list_and_replay_by_id_account_and_time(data_dir, capsys):
    import json

    from staffetta.smsc.cli import main

    env = make_env(data_dir, accounts=ACCOUNTS)
    try:
        yield configure(env, dedicated=[(DEDICATED, ACME)])
        start = reactor.seconds()
        for t in ("one", "two"):
            yield with_timeout(env.carrier.inject_mo(HANDSET, DEDICATED, t))
        yield with_timeout(env.carrier.inject_mo(HANDSET, "393409999999", "nobody's"))
        capsys.readouterr()
        assert main(["mo", "list", "--data-dir", data_dir, "--json"]) == 0
        docs = json.loads(capsys.readouterr().out)
        assert [(d["text"], d["account"], d["how"]) for d in docs] == [
            ("nobody's", None, "dead_letter"), ("two", "acme", "dedicated"), ("one", "acme", "dedicated")]
        assert docs[0]["cause"] == "unknown_number"
        assert main(["mo", "list", "--data-dir", data_dir, "--dead", "--json"]) == 0
        assert [d["text"] for d in json.loads(capsys.readouterr().out)] == ["nobody's"]
        # Replay by account and time range: the running hub delivers them again.
        rx = yield bound(env, "acme", Command.BIND_RECEIVER)
        for _ in range(2):
            yield next_mo(rx)
        assert main(["mo", "replay", "--data-dir", data_dir, "--account", "acme",
                     "--since", str(start - 1), "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)["replayed"]) == 2
        again = sorted([text((yield next_mo(rx))), text((yield next_mo(rx)))])
        assert again == [b"one", b"two"]
        one = docs[2]["id"]
        assert main(["mo", "replay", "--data-dir", data_dir, "--id", str(one)]) == 0
        assert text((yield next_mo(rx))) == b"one"
        # Mistakes: one line naming the option, exit status 2.
        capsys.readouterr()
        assert main(["mo", "list", "--data-dir", data_dir, "--since", "yesterday"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--since" in err
        assert main(["mo", "replay", "--data-dir", data_dir]) == 2
        assert main(["mo", "list", "--data-dir", data_dir, "--account", "nobody"]) == 2
    finally:
        yield env.stop()
