"""The whole path over real sockets: client -> hub -> simulator -> receipt -> client."""

from __future__ import annotations

import urllib.request

import pytest_twisted
from twisted.internet import defer, reactor, threads

from staffetta.pdu.codec import tlv_cstr
from staffetta.pdu.constants import ESM_RECEIPT, Command, MessageState, Status, Tag
from staffetta.pdu.receipt import parse_receipt
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.esme import connect_esme, connect_raw


def _receipt_id(pdu) -> str:
    return tlv_cstr(pdu.tlvs[Tag.receipted_message_id]).decode()


@pytest_twisted.inlineCallbacks
def test_submit_and_receipt_round_trip(data_dir):
    env = make_env(data_dir)
    try:
        esme = yield connect_esme(reactor, env.port)
        resp = yield with_timeout(esme.bind("demo", "demo"))
        assert resp.status == Status.ESME_ROK
        resp = yield with_timeout(esme.submit(b"Ciao @ mondo"))
        assert resp.status == Status.ESME_ROK
        mid = resp.fields["message_id"].decode()
        assert mid.isdigit() and len(mid) <= 10
        dlr = yield with_timeout(esme.delivered.get())
        assert dlr.command_id == Command.DELIVER_SM
        assert dlr.fields["esm_class"] & 0x3C == ESM_RECEIPT
        assert _receipt_id(dlr) == mid
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.DELIVERED])
        text = parse_receipt(dlr.fields["short_message"])
        assert text.id == mid and text.stat == "DELIVRD"
        # Addresses are swapped: the receipt comes from the handset.
        assert dlr.fields["source_addr"] == b"393331234567"
        assert dlr.fields["destination_addr"] == b"Staffetta"
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_receipt_goes_to_the_receiver_bind_not_the_transmitter(data_dir):
    env = make_env(data_dir)
    try:
        tx = yield connect_esme(reactor, env.port)
        rx = yield connect_esme(reactor, env.port)
        assert (yield tx.bind("demo", "demo", Command.BIND_TRANSMITTER)).status == 0
        assert (yield rx.bind("demo", "demo", Command.BIND_RECEIVER)).status == 0
        resp = yield with_timeout(tx.submit())
        dlr = yield with_timeout(rx.delivered.get())
        assert _receipt_id(dlr) == resp.fields["message_id"].decode()
        assert tx.delivered.pending == []
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_client_sees_only_its_own_messages_in_query_sm(data_dir):
    env = make_env(data_dir, accounts=(("demo", "demo"), ("other", "other")))
    try:
        a = yield connect_esme(reactor, env.port)
        b = yield connect_esme(reactor, env.port)
        yield a.bind("demo", "demo")
        yield b.bind("other", "other")
        resp = yield with_timeout(a.submit())
        mid = resp.fields["message_id"]
        yield with_timeout(a.delivered.get())
        q = yield with_timeout(a.request(Command.QUERY_SM, {"message_id": mid}))
        assert q.status == Status.ESME_ROK
        assert q.fields["message_id"] == mid
        assert q.fields["message_state"] == MessageState.DELIVERED
        assert len(q.fields["final_date"]) == 16
        q = yield with_timeout(b.request(Command.QUERY_SM, {"message_id": mid}))
        assert q.status == Status.ESME_RQUERYFAIL
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_wrong_password_is_bind_fail_and_binds_are_rate_limited(data_dir):
    env = make_env(data_dir)
    try:
        statuses = []
        for _ in range(6):
            c = yield connect_esme(reactor, env.port)
            r = yield with_timeout(c.bind("demo", "wrong"))
            statuses.append(r.status)
            yield with_timeout(c.closed)
        assert statuses == [Status.ESME_RBINDFAIL] * 6
        # After 5 failures from this address even the right password is refused.
        c = yield connect_esme(reactor, env.port)
        r = yield with_timeout(c.bind("demo", "demo"))
        assert r.status == Status.ESME_RBINDFAIL
        assert env.hub.metrics.bind_failures.labels("rate_limited")._value.get() >= 1
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_invalid_submit_fields_get_their_status(data_dir):
    env = make_env(data_dir)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit(b""))
        assert r.status == Status.ESME_RINVMSGLEN
        r = yield with_timeout(c.submit(b"hi", service_type=b"XYZ"))
        assert r.status == Status.ESME_RINVSERTYP
        r = yield with_timeout(c.submit(b"hi", destination=b"12"))
        assert r.status == Status.ESME_RINVDSTADR
        r = yield with_timeout(c.submit(b"hi", priority_flag=4))
        assert r.status == Status.ESME_RINVPRTFLG
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_malformed_input_is_answered_and_other_sessions_keep_working(data_dir):
    env = make_env(data_dir)
    try:
        good = yield connect_esme(reactor, env.port)
        yield good.bind("demo", "demo")
        cases = [
            # (bytes, expected (command_id, status, sequence), connection closed?)
            ((15).to_bytes(4, "big") + bytes(11), (Command.GENERIC_NACK, Status.ESME_RINVCMDLEN, 0), True),
            ((0x00100000).to_bytes(4, "big") + bytes(12), (Command.GENERIC_NACK, Status.ESME_RINVCMDLEN, 0), True),
            ((16).to_bytes(4, "big") + (0x77).to_bytes(4, "big") + bytes(4) + (5).to_bytes(4, "big"),
             (Command.GENERIC_NACK, Status.ESME_RINVCMDID, 5), False),
            ((20).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes(4) + (6).to_bytes(4, "big") + b"ab\x00\x01",
             (Command.SUBMIT_SM_RESP, Status.ESME_RINVBNDSTS, 6), False),
        ]
        for data, expected, closes in cases:
            raw = yield connect_raw(reactor, env.port)
            raw.transport.write(data)
            [frame] = yield with_timeout(raw.wait_frames(1))
            assert (frame.command_id, frame.status, frame.sequence) == expected
            if closes:
                yield with_timeout(raw.lost)
            else:
                raw.transport.loseConnection()
        # A bound raw peer sending a truncated submit_sm and garbage after a valid PDU.
        raw = yield connect_raw(reactor, env.port)
        from staffetta.pdu.codec import Pdu, encode

        raw.transport.write(encode(Pdu(Command.BIND_TRANSCEIVER, 1, 0, {"system_id": b"demo", "password": b"demo"})))
        [bind] = yield with_timeout(raw.wait_frames(1))
        assert bind.status == 0
        raw.transport.write(
            (20).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes(4) + (2).to_bytes(4, "big") + b"ab\x00\x01"
        )
        frames = yield with_timeout(raw.wait_frames(2))
        assert (frames[1].command_id, frames[1].status) == (Command.SUBMIT_SM_RESP, Status.ESME_RINVCMDLEN)
        raw.transport.write(encode(Pdu(Command.ENQUIRE_LINK, 3)) + b"\xff\xff\xff\xff" + bytes(12))
        frames = yield with_timeout(raw.wait_frames(4))
        assert frames[2].command_id == Command.ENQUIRE_LINK_RESP
        assert (frames[3].command_id, frames[3].status) == (Command.GENERIC_NACK, Status.ESME_RINVCMDLEN)
        yield with_timeout(raw.lost)
        # Meanwhile the well-behaved session is unaffected.
        r = yield with_timeout(good.submit())
        assert r.status == Status.ESME_ROK
        dlr = yield with_timeout(good.delivered.get())
        assert _receipt_id(dlr) == r.fields["message_id"].decode()
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_receipt_waits_for_an_unbound_client_and_arrives_on_bind(data_dir):
    env = make_env(data_dir)
    try:
        tx = yield connect_esme(reactor, env.port)
        yield tx.bind("demo", "demo", Command.BIND_TRANSMITTER)
        ids = []
        for _ in range(5):
            r = yield with_timeout(tx.submit())
            ids.append(r.fields["message_id"].decode())
        yield wait_until(lambda: env.hub.metrics.count("receipts", "demo", "queued") >= 5)
        rx = yield connect_esme(reactor, env.port)
        yield rx.bind("demo", "demo", Command.BIND_RECEIVER)
        got = []
        for _ in range(5):
            dlr = yield with_timeout(rx.delivered.get())
            got.append(_receipt_id(dlr))
        assert sorted(got) == sorted(ids)
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_unanswered_deliver_sm_is_retried_never_lost(data_dir):
    from staffetta.conf.settings import SessionSettings

    env = make_env(data_dir, session=SessionSettings(response=0.3))
    env.hub.outbox.retry_delay = 0.05
    try:
        c = yield connect_esme(reactor, env.port, auto_ack=None)  # never answers deliver_sm
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit())
        first = yield with_timeout(c.delivered.get())
        # The hub times out and sends it again on the same session.
        again = yield with_timeout(c.delivered.get(), 10)
        assert _receipt_id(first) == _receipt_id(again) == r.fields["message_id"].decode()
        c.session.respond(again, Status.ESME_ROK)
        c.flush()
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_upstream_drop_and_reconnect_loses_nothing(data_dir):
    env = make_env(data_dir, dlr_delay=0.05)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        ids = set()
        for batch in range(4):
            ds = [c.submit() for _ in range(50)]
            if batch == 1:
                # The carrier link drops while messages are in flight.
                yield wait_until(lambda: env.carrier.stats["submits"] >= 60)
                env.carrier.stop_sessions()
            for d in ds:
                r = yield with_timeout(d)
                assert r.status == Status.ESME_ROK
                ids.add(r.fields["message_id"].decode())
        got = set()
        while got != ids:
            dlr = yield with_timeout(c.delivered.get(), 15)
            got.add(_receipt_id(dlr))
        assert got == ids
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_hub_restart_between_submit_and_receipt_still_delivers(data_dir):
    env = make_env(data_dir, dlr_delay=0.5)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit())
        mid = r.fields["message_id"].decode()
        # Wait until the carrier has the message, then take the hub down.
        yield wait_until(lambda: env.carrier.stats["submits"] >= 1)
        yield env.stop_hub()
        yield with_timeout(c.closed)
        env.start_hub()
        c2 = yield connect_esme(reactor, env.port)
        yield c2.bind("demo", "demo")
        dlr = yield with_timeout(c2.delivered.get(), 15)
        assert _receipt_id(dlr) == mid
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_metrics_endpoint_exposes_the_hub(data_dir):
    env = make_env(data_dir)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        yield with_timeout(c.submit())
        yield with_timeout(c.delivered.get())
        port = env.hub.metrics_port.getHost().port
        body = yield threads.deferToThread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
        for needle in (
            'staffetta_sessions_bound{account="demo",bind_type="trx"} 1.0',
            'staffetta_pdus_total{command="submit_sm",direction="in",status="ESME_ROK"} 1.0',
            "staffetta_submit_latency_seconds_bucket",
            'staffetta_receipts_total{account="demo",event="delivered"} 1.0',
            'staffetta_upstream_up{connector="sim"} 1.0',
            'staffetta_upstream_window_used{connector="sim"}',
        ):
            assert needle in body, needle
        assert "393331234567" not in body  # never a label per destination
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_the_enquire_link_before_bind_and_unbind(data_dir):
    env = make_env(data_dir)
    try:
        c = yield connect_esme(reactor, env.port)
        r = yield with_timeout(c.request(Command.ENQUIRE_LINK))
        assert (r.command_id, r.status) == (Command.ENQUIRE_LINK_RESP, 0)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.request(Command.UNBIND))
        assert (r.command_id, r.status) == (Command.UNBIND_RESP, 0)
        yield with_timeout(c.closed)
    finally:
        yield env.stop()


_ = defer  # pytest-twisted's inlineCallbacks tests are Deferred-based
