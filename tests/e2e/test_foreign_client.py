"""An independent SMPP implementation (smpp.twisted3) as the ESME.

It is used only here, as a foreign peer: it pins an old Twisted (installed
without its pin) and is not part of the product.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.e2e.harness import make_env, with_timeout

smpp_client = pytest.importorskip("smpp.twisted.client", reason="smpp.twisted3 is a test-only dependency")
pytest.importorskip("smpp.twisted.config")


@pytest_twisted.inlineCallbacks
def test_foreign_esme_binds_submits_and_gets_its_receipt(data_dir):
    from smpp.pdu.operations import SubmitSM
    from smpp.pdu.pdu_types import AddrNpi, AddrTon, RegisteredDelivery, RegisteredDeliveryReceipt
    from smpp.twisted.config import SMPPClientConfig

    env = make_env(data_dir)
    receipts: defer.DeferredQueue = defer.DeferredQueue()

    def on_message(smpp, pdu):
        receipts.put(pdu)

    try:
        config = SMPPClientConfig(host="127.0.0.1", port=env.port, username="demo", password="demo",
                                  enquireLinkTimerSecs=30)
        client = yield with_timeout(
            smpp_client.SMPPClientTransceiver(config, on_message).connectAndBind()
        )
        resp = yield with_timeout(client.sendDataRequest(SubmitSM(
            source_addr_ton=AddrTon.ALPHANUMERIC,
            source_addr_npi=AddrNpi.UNKNOWN,
            source_addr="Staffetta",
            dest_addr_ton=AddrTon.INTERNATIONAL,
            dest_addr_npi=AddrNpi.ISDN,
            destination_addr="393331234567",
            short_message=b"hello from elsewhere",
            registered_delivery=RegisteredDelivery(RegisteredDeliveryReceipt.SMSC_DELIVERY_RECEIPT_REQUESTED),
        )))
        mid = resp.response.params["message_id"]
        dlr = yield with_timeout(receipts.get())
        assert dlr.params["receipted_message_id"] == mid
        assert f"id:{mid.decode()} ".encode() in dlr.params["short_message"]
        yield client.unbindAndDisconnect()
    finally:
        yield env.stop()
