"""What the hub does with the carrier's answers (conformance §22, §25)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from staffetta.pdu.codec import tlv_cstr
from staffetta.pdu.constants import MessageState, Status, Tag
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.esme import connect_esme


@pytest_twisted.inlineCallbacks
def test_refused_upstream_ends_in_a_rejected_receipt(data_dir):
    env = make_env(data_dir)
    try:
        env.carrier.script("39333999", submit_status=Status.ESME_RINVDSTADR)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit(destination=b"393339991234"))
        assert r.status == Status.ESME_ROK  # accepted by the hub: the carrier says no later
        dlr = yield with_timeout(c.delivered.get())
        assert tlv_cstr(dlr.tlvs[Tag.receipted_message_id]) == r.fields["message_id"]
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.REJECTED])
        assert b"stat:REJECTD" in dlr.fields["short_message"]
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_throttled_upstream_backs_off_and_retries(data_dir):
    env = make_env(data_dir)
    try:
        rule = env.carrier.script("39333888", submit_status=Status.ESME_RTHROTTLED)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit(destination=b"393338881234"))
        assert r.status == Status.ESME_ROK
        yield wait_until(lambda: env.carrier.stats["submits"] >= 2)  # refused, then tried again
        assert c.delivered.pending == []
        env.carrier.clear_scripts()
        dlr = yield with_timeout(c.delivered.get())
        assert tlv_cstr(dlr.tlvs[Tag.receipted_message_id]) == r.fields["message_id"]
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.DELIVERED])
        del rule
    finally:
        yield env.stop()
