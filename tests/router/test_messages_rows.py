"""The message insert leaves out what a fresh message has none of: the stored row is the same."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import select

import staffetta.billing.accounts  # noqa: F401 - registers its tables
from staffetta.pdu.constants import MessageState, Npi, Ton
from staffetta.router import messages as M
from staffetta.store.db import create_schema

_FRESH = {
    "id": 1, "account_id": 1, "source_addr": "Staffetta", "source_ton": Ton.ALPHANUMERIC,
    "source_npi": Npi.UNKNOWN, "destination": "393331234567", "service_type": "", "msg_type": "PRO",
    "esm_class": 0, "protocol_id": 0, "priority": 0, "registered_delivery": 1, "data_coding": 0,
    "short_message": b"hi", "tlvs": b"", "segments": 1, "submitted_at": 1.5, "expires_at": 2.5,
    "phase": M.QUEUED, "state": MessageState.ENROUTE, "err": 0, "done_at": None, "connector": None,
    "upstream_id": None, "mccmnc": None, "route": "default", "deliver_at": None,
}


def _record(**changes) -> M.MessageRecord:
    return M.MessageRecord.from_row({**_FRESH, **changes})


@pytest.fixture
def engine(bare_engine):
    create_schema(bare_engine)
    return bare_engine


def _stored(engine) -> dict[int, dict]:
    with engine.connect() as conn:
        return {r.id: dict(r._mapping) for r in conn.execute(select(M.messages).order_by(M.messages.c.id))}


def _expected(r: M.MessageRecord) -> dict:
    return {c: getattr(r, c) for c in M.MESSAGE_COLUMNS}


@pytest.mark.parametrize("batch", [
    [{}, {"id": 2, "source_ton": Ton.INTERNATIONAL, "source_npi": Npi.ISDN, "tlvs": b"\x02\x04\x00\x01\x07"}],
    # One row with a column a fresh message lacks: the whole batch by the full insert.
    [{}, {"id": 2, "mccmnc": "22201"}, {"id": 3}],
    [{"deliver_at": 9.5, "state": 9}],
    [{"phase": M.FINAL, "done_at": 3.0, "connector": "sim", "upstream_id": "a1"}],
])
def test_inserted_rows_are_the_records(engine, batch) -> None:
    records = [_record(**c) for c in batch]
    with engine.begin() as conn:
        M.insert_messages(conn, records)
    stored = _stored(engine)
    assert stored == {r.id: _expected(r) for r in records}
    assert all(type(v) is int for row in stored.values() for v in (row["source_ton"], row["source_npi"]))


def test_ton_and_npi_are_bound_as_plain_ints() -> None:
    """The message row carries them as IntEnum members: an adapter, not sqlite3's PEP 246 lookup."""
    for t in (Ton, Npi, MessageState):
        assert sqlite3.adapters.get((t, sqlite3.PrepareProtocol)) is int


def test_an_outcome_names_its_connector_or_leaves_the_rows(engine) -> None:
    """``connector`` None keeps the row's (a carried message); a name sets it (a refusing carrier),
    also for the other outcomes of its batch, whose None still keeps theirs."""
    records = [_record(id=i, phase=M.FORWARDED, connector="sim" if i % 2 else None,
                       upstream_id=f"u{i}" if i % 2 else None) for i in range(1, 6)]
    with engine.begin() as conn:
        M.insert_messages(conn, records)
    with engine.begin() as conn:
        assert M.record_outcomes(conn, [(1, 2, 0, 7.0, None, None, None), (2, 8, 0, 7.5, None, None, None)]) == [0, 0]
    with engine.begin() as conn:
        M.record_outcomes(conn, [(3, 2, 0, 8.0, None, None, None), (4, 8, 88, 8.5, None, None, "other"),
                                 (5, 2, 0, 9.0, None, None, "sim")])
    stored = _stored(engine)
    assert {m: (r["phase"], r["state"], r["err"], r["done_at"], r["connector"], r["upstream_id"])
            for m, r in stored.items()} == {
        1: (M.FINAL, 2, 0, 7.0, "sim", "u1"),
        2: (M.FINAL, 8, 0, 7.5, None, None),
        3: (M.FINAL, 2, 0, 8.0, "sim", "u3"),
        4: (M.FINAL, 8, 88, 8.5, "other", None),
        5: (M.FINAL, 2, 0, 9.0, "sim", "u5"),
    }
