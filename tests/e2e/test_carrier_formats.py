"""Correlation holds whatever id and receipt format the carrier uses (conformance §22, §25)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from staffetta.pdu.codec import tlv_cstr
from staffetta.pdu.constants import MessageState, Tag
from staffetta.pdu.receipt import parse_receipt
from tests.e2e.harness import make_env, with_timeout
from tests.esme import connect_esme


@pytest.mark.parametrize(
    "id_format,receipt_format",
    [("hex", "strict"), ("decimal", "12digit"), ("uuid", "Text"), ("hex", "tlv_only"), ("decimal", "strict")],
)
@pytest_twisted.inlineCallbacks
def test_receipt_correlates_for_every_carrier_format(data_dir, id_format, receipt_format):
    env = make_env(data_dir, id_format=id_format, receipt_format=receipt_format,
                   outcomes={"UNDELIV": 1.0})
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit())
        mid = r.fields["message_id"].decode()
        dlr = yield with_timeout(c.delivered.get())
        assert tlv_cstr(dlr.tlvs[Tag.receipted_message_id]).decode() == mid
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.UNDELIVERABLE])
        # Whatever the carrier wrote, the client gets our strict Appendix B text.
        text = parse_receipt(dlr.fields["short_message"])
        assert (text.id, text.stat, text.sub, text.dlvrd) == (mid, "UNDELIV", 1, 0)
        assert b" text:hello" in dlr.fields["short_message"]
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_failure_only_receipts_skip_delivered(data_dir):
    env = make_env(data_dir)
    try:
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        env.carrier.script("39333000", stat="REJECTD")
        ok = yield with_timeout(c.submit(registered_delivery=2))
        bad = yield with_timeout(c.submit(destination=b"393330001234", registered_delivery=2))
        dlr = yield with_timeout(c.delivered.get())
        assert tlv_cstr(dlr.tlvs[Tag.receipted_message_id]) == bad.fields["message_id"]
        assert ok.fields["message_id"] != bad.fields["message_id"]
        assert c.delivered.pending == []
    finally:
        yield env.stop()
