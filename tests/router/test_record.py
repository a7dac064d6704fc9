"""One MessageRecord: built from a submit, written and read back as a row, sent upstream the same way."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

import staffetta.billing.accounts  # noqa: F401 - registers its tables
from staffetta.pdu import gsm
from staffetta.pdu.codec import Pdu, encode
from staffetta.pdu.constants import Command, Tag
from staffetta.pdu.message import AccountPolicy, assess_submit
from staffetta.pdu.smpptime import format_smpp_time
from staffetta.router import messages as M
from staffetta.router.record import MESSAGE_COLUMNS, MessageRecord, row_tuple
from staffetta.store.db import create_schema, make_engine
from tests.builders import submit_fields

NOW = 1_800_000_000.25


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = make_engine(f"sqlite:///{tmp_path_factory.mktemp('rec') / 'm.db'}")
    create_schema(e)
    yield e
    e.dispose()


def _octets(record: MessageRecord) -> bytes:
    return record.forward().frame


def _general(record: MessageRecord) -> bytes:
    return encode(Pdu(Command.SUBMIT_SM, 0, 0, *record.submit_fields()))


def _record(mid: int, fields: dict, tlvs: dict, expires_at: float) -> MessageRecord:
    a = assess_submit(fields, tlvs, AccountPolicy())
    return MessageRecord.from_submit(mid, 3, fields, tlvs, a, NOW, expires_at, "default", "22201")


gsm_text = st.text(alphabet=st.sampled_from(sorted(set(gsm.BASIC) - {"\x1b"})), min_size=1, max_size=160)
extra_tlvs = st.dictionaries(
    st.sampled_from([int(Tag.user_message_reference), int(Tag.source_port), int(Tag.destination_port)]),
    st.binary(min_size=2, max_size=2), max_size=3,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gsm_text, extra_tlvs, st.floats(NOW + 60, NOW + 6 * 86400), st.integers(0, 3), st.integers(0, 2))
def test_first_send_and_resumed_send_are_the_same_octets(engine, body, tlvs, expires_at, priority, rd):
    fields = submit_fields(body, priority_flag=priority, registered_delivery=rd,
                           validity_period=format_smpp_time(datetime.fromtimestamp(expires_at, UTC)))
    mid = abs(hash((body, expires_at))) % 10**9 + 1
    first = _record(mid, fields, tlvs, expires_at)
    with engine.begin() as conn:
        M.insert_messages(conn, [first])
        back = M.message_for_account(conn, mid, 3)
        conn.execute(text("DELETE FROM messages"))
    for name in (*MESSAGE_COLUMNS, "text20", "umr"):
        assert getattr(back, name) == getattr(first, name), name
    assert _octets(back) == _octets(first)
    assert _octets(first) == encode(Pdu(Command.SUBMIT_SM, 0, 0, first.submit_fields()[0], tlvs))


def test_columns_are_the_tables_and_the_insert_writes_them_in_order(engine):
    with engine.connect() as conn:
        assert [c["name"] for c in inspect(conn).get_columns("messages")] == list(MESSAGE_COLUMNS)
    r = _record(5, submit_fields(), {}, NOW + 100)
    assert dict(zip(MESSAGE_COLUMNS, row_tuple(r), strict=True))["route"] == "default"
    assert "route" in MESSAGE_COLUMNS and "mccmnc" in MESSAGE_COLUMNS


def test_upstream_submit_keeps_the_clients_validity():
    expires = NOW + 86400
    r = _record(9, submit_fields(validity_period=format_smpp_time(datetime.fromtimestamp(expires, UTC))), {}, expires)
    f = r.forward().fields
    assert f["validity_period"] == format_smpp_time(datetime.fromtimestamp(expires, UTC))
    assert f["registered_delivery"] == 1 and f["destination_addr"] == b"393481234567"


def test_an_old_store_gains_the_route_column(tmp_path):
    e = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        create_schema(e)
        with e.begin() as conn:
            conn.execute(text("ALTER TABLE messages DROP COLUMN route"))
        assert "messages.route" in M.upgrade(e)
        with e.connect() as conn:
            assert "route" in {c["name"] for c in inspect(conn).get_columns("messages")}
        assert M.upgrade(e) == []
    finally:
        e.dispose()


def _bare(mid, source, ton, npi, destination, esm, pid, priority, coding, sm, tlvs, expires_at) -> MessageRecord:
    """What the upstream submit_sm reads of a record; the rest of the row does not matter here."""
    r = MessageRecord.__new__(MessageRecord)
    r.id, r.source_addr, r.source_ton, r.source_npi, r.destination = mid, source, ton, npi, destination
    r.esm_class, r.protocol_id, r.priority, r.data_coding, r.short_message = esm, pid, priority, coding, sm
    r.tlvs, r.expires_at = tlvs, expires_at
    return r


_addresses = st.text(st.characters(min_codepoint=0, max_codepoint=0x17F), max_size=24)
_tlv_streams = st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=40), max_size=4).map(
    lambda d: b"".join(t.to_bytes(2, "big") + len(v).to_bytes(2, "big") + v for t, v in d.items()))
_records = st.builds(
    _bare, st.integers(1, 10**12), _addresses, st.integers(0, 300), st.integers(0, 300), _addresses,
    st.integers(0, 300), st.integers(0, 255), st.integers(0, 3), st.integers(0, 300),
    st.binary(max_size=260), _tlv_streams, st.floats(NOW, NOW + 400 * 86400),
)


@settings(max_examples=500, deadline=None)
@given(_records)
def test_submit_octets_are_the_general_encoders(r):
    """The fast form equals the general encoder's submit_sm octet for octet, and refuses what it refuses."""
    try:
        want = _general(r)
    except ValueError as exc:  # an address over 20 octets or holding a NUL, a value outside a byte...
        with pytest.raises(type(exc)):
            r.submit_octets()
        return
    assert r.submit_octets() == want
