"""The client's receipt, put together as octets, equals the general encoder's output."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staffetta.pdu.codec import Pdu, decode, encode
from staffetta.pdu.constants import ESM_RECEIPT, Command, MessageState, Tag
from staffetta.pdu.receipt import STATE_TO_STAT, format_receipt, parse_receipt, receipt_fields, receipt_octets
from staffetta.router.record import MessageRecord
from staffetta.router.router import client_receipt, receipt_pdu


def _record(message_id, account_id, source, source_ton, source_npi, destination, registered_delivery,
             submitted_at, text20, umr=None) -> MessageRecord:
    """What a receipt reads of a record; the rest of the row does not matter here."""
    t = MessageRecord.__new__(MessageRecord)
    t.id, t.account_id, t.source_addr, t.source_ton, t.source_npi = message_id, account_id, source, source_ton, source_npi
    t.destination, t.registered_delivery, t.submitted_at = destination, registered_delivery, submitted_at
    t.text20, t.umr = text20, umr
    return t


addresses = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=24)
trackeds = st.builds(
    _record,
    message_id=st.integers(0, 10**19),
    account_id=st.just(1),
    source=addresses,
    source_ton=st.integers(0, 300),
    source_npi=st.integers(0, 300),
    destination=addresses,
    registered_delivery=st.just(1),
    submitted_at=st.floats(0, 4e9),
    text20=st.text(max_size=20),
    umr=st.none() | st.binary(min_size=1, max_size=3),
)


def _general(t: MessageRecord, state: int, err: int, now: float) -> bytes:
    text = format_receipt(str(t.message_id), 1, 1 if state == MessageState.DELIVERED else 0,
                          t.submitted_at, now, STATE_TO_STAT[state], err, t.text20)
    return encode(receipt_pdu(t, state, err, text))


@settings(max_examples=400, deadline=None)
@given(trackeds, st.sampled_from(sorted(STATE_TO_STAT)), st.integers(0, 0x1FFFF), st.floats(0, 4e9))
def test_same_octets_as_the_general_encoder(t, state, err, now):
    try:
        want = _general(t, state, err, now)
    except ValueError as exc:  # e.g. a ton over 255: both refuse
        with pytest.raises(type(exc)):
            client_receipt(t, state, err, now)
        return
    assert client_receipt(t, state, err, now) == want


def test_reads_back_as_a_receipt_for_our_id():
    t = _record(4242, 1, "Staffetta", 5, 0, "393331234567", 1, 1_700_000_000.5, "hello", b"\x00\x07")
    pdu = decode(client_receipt(t, MessageState.UNDELIVERABLE, 27, 1_700_000_100.0))
    assert pdu.fields["esm_class"] == ESM_RECEIPT
    assert pdu.fields["source_addr"] == b"393331234567" and pdu.fields["destination_addr"] == b"Staffetta"
    assert pdu.tlvs[Tag.receipted_message_id] == b"4242\x00"
    assert pdu.tlvs[Tag.message_state] == bytes([MessageState.UNDELIVERABLE])
    assert pdu.tlvs[Tag.network_error_code] == b"\x03\x00\x1b"
    assert pdu.tlvs[Tag.user_message_reference] == b"\x00\x07"
    r = parse_receipt(pdu.fields["short_message"])
    assert (r.id, r.stat, r.err, r.text) == ("4242", "UNDELIV", "027", "hello")
    assert r.submit_date == datetime(2023, 11, 14, 22, 13) and r.done_date == datetime(2023, 11, 14, 22, 15)


octets = st.binary(min_size=1, max_size=24).filter(lambda b: 0 not in b)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=66).filter(lambda b: 0 not in b), octets, st.integers(0, 300),
       st.integers(0, 300), octets, st.integers(0, 300), st.integers(0, 300),
       st.sampled_from(sorted(STATE_TO_STAT)), st.binary(max_size=256),
       st.none() | st.integers(0, 0x1FFFF), st.none() | st.binary(min_size=1, max_size=3))
def test_one_receipt_builder_fast_form_equals_its_fields(mid, handset, hton, hnpi, owner, oton, onpi,
                                                         state, text, nec, umr):
    """pdu.receipt: the octets the hub stores equal the (fields, tlvs) the simulator sends, encoded."""
    args = (mid, handset, hton, hnpi, owner, oton, onpi, state, text, nec, umr)
    try:
        want = encode(Pdu(Command.DELIVER_SM, 0, 0, *receipt_fields(*args)))
    except ValueError as exc:
        with pytest.raises(type(exc)):
            receipt_octets(*args)
        return
    assert receipt_octets(*args) == want
