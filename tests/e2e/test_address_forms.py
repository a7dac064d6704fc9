"""One address normalisation: query_sm and cancel_sm read addresses as submit_sm did (national or '+')."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from staffetta.pdu.constants import Command, MessageState, Status, Tag
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.e2e.test_never_sent import _carrier_down
from tests.esme import connect_esme

SENDER = b"+393331112222"  # stored as 393331112222


@pytest_twisted.inlineCallbacks
def test_query_and_cancel_find_a_message_by_any_form_of_its_addresses(data_dir):
    env = make_env(data_dir)
    try:
        yield _carrier_down(env)
        yield wait_until(lambda: not env.hub.router.connectors["sim"].up)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit(source_addr_ton=1, source_addr_npi=1, source_addr=SENDER,
                                        dest_addr_ton=2, destination=b"3481234567"))  # national
        assert r.status == Status.ESME_ROK
        mid = r.fields["message_id"]
        forms = [(1, b"393331112222"), (1, b"+393331112222"), (2, b"3331112222"), (0, b"00393331112222")]
        for ton, addr in forms:
            q = yield with_timeout(c.request(Command.QUERY_SM, {
                "message_id": mid, "source_addr_ton": ton, "source_addr_npi": 1, "source_addr": addr}))
            assert q.status == Status.ESME_ROK, (ton, addr)
        q = yield with_timeout(c.request(Command.QUERY_SM, {
            "message_id": mid, "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"393330000000"}))
        assert q.status == Status.ESME_RQUERYFAIL  # another sender
        # cancel_sm without an id: the '+' sender and the international destination, as the client wrote neither.
        x = yield with_timeout(c.request(Command.CANCEL_SM, {
            "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"393331112222",
            "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": b"+393481234567"}))
        assert x.status == Status.ESME_ROK
        dlr = yield with_timeout(c.delivered.get())
        assert dlr.tlvs[Tag.message_state] == bytes([MessageState.DELETED])
        # And a national destination finds a message submitted in international form.
        r = yield with_timeout(c.submit(source_addr_ton=1, source_addr_npi=1, source_addr=SENDER,
                                        destination=b"393481234567"))
        x = yield with_timeout(c.request(Command.CANCEL_SM, {
            "source_addr_ton": 2, "source_addr_npi": 1, "source_addr": b"3331112222",
            "dest_addr_ton": 2, "dest_addr_npi": 1, "destination_addr": b"3481234567"}))
        assert x.status == Status.ESME_ROK
    finally:
        yield env.stop_hub()
