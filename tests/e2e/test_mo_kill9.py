"""kill -9 of a hub process on the MO path: what the carrier heard ESME_ROK for is never lost."""

from __future__ import annotations

from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import Command
from staffetta.pdu.receipt import DELIVER_SM_NULL
from staffetta.pdu.segments import udh_concat
from tests.e2e.test_kill9 import _cli, rig  # noqa: F401 - the fixture: a hub process and a recording carrier
from tests.syncesme import SyncEsme

NUMBER, HANDSET = "393400000099", "393331234567"


def _mo(short_message: bytes, esm_class: int = 0) -> Pdu:
    return Pdu(Command.DELIVER_SM, 0, 0, {
        **DELIVER_SM_NULL, "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": HANDSET.encode(),
        "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": NUMBER.encode(), "esm_class": esm_class,
        "short_message": short_message})


def test_kill9_after_the_ack_loses_neither_an_mo_nor_a_part(rig):  # noqa: F811
    carrier, hub = rig
    _cli("account", "create", "demo", "--password", "demo", "--data-dir", str(hub.data))
    _cli("number", "dedicated", "assign", NUMBER, "--account", "demo", "--data-dir", str(hub.data))
    # The client is not bound: a whole MO, and the first of two parts of a long one.
    carrier.pending_pdus += [_mo(b"whole one"), _mo(udh_concat(5, 2, 1) + b"first half, ", 0x40)]
    hub.start()
    carrier.wait(lambda: carrier.receipt_answers == [0, 0])  # ESME_ROK: durable
    hub.kill9()

    carrier.pending_pdus.append(_mo(udh_concat(5, 2, 2) + b"second half", 0x40))
    hub.start()
    carrier.wait(lambda: carrier.receipt_answers == [0, 0, 0])
    c = SyncEsme(hub.port)
    assert c.bind("demo", "demo", Command.BIND_RECEIVER).status == 0
    got = c.delivered_texts(2)
    assert got == [b"whole one", b"first half, second half"]
    assert hub.sql("SELECT count(*) FROM mo_parts") == [(0,)]
    assert hub.sql("SELECT account_id, how, parts_total FROM mo ORDER BY id") == [(1, "dedicated", 1),
                                                                                 (1, "dedicated", 2)]
    c.close()
