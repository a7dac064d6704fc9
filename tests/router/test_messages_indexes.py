"""The messages table's partial indexes: used by the reads that need them, and made on old stores."""

from __future__ import annotations

import pytest
from sqlalchemy import event, inspect, text

import staffetta.billing.accounts  # noqa: F401 - registers its tables
from staffetta.router import messages as M
from staffetta.store.db import create_schema

OLD_DDL = (
    "CREATE INDEX ix_messages_upstream ON messages (connector, upstream_id)",
    "CREATE INDEX ix_messages_phase ON messages (phase)",
)


def _row(mid: int, phase: int, upstream_id: str | None) -> M.MessageRecord:
    return M.MessageRecord.from_row({
        "id": mid, "account_id": 1, "source_addr": "S", "source_ton": 5, "source_npi": 0,
        "destination": "393331234567", "service_type": "", "msg_type": "PRO", "esm_class": 0,
        "protocol_id": 0, "priority": 0, "registered_delivery": 1, "data_coding": 0,
        "short_message": b"hi", "tlvs": b"", "segments": 1, "submitted_at": 1.0, "expires_at": 2.0,
        "phase": phase, "state": 1, "err": 0, "done_at": None,
        "connector": "sim" if upstream_id else None, "upstream_id": upstream_id, "mccmnc": None,
        "route": "default", "deliver_at": None,
    })


@pytest.fixture
def engine(bare_engine):
    return bare_engine


def _indexes(engine) -> set[str]:
    with engine.connect() as conn:
        return {i["name"] for i in inspect(conn).get_indexes("messages")}


def test_old_store_gets_the_partial_indexes_and_loses_the_full_ones(engine):
    create_schema(engine)
    with engine.begin() as conn:
        for name in ("ix_messages_upstream_id", "ix_messages_queued"):
            conn.execute(text(f"DROP INDEX {name}"))
        for ddl in OLD_DDL:
            conn.execute(text(ddl))
    assert _indexes(engine) >= {"ix_messages_upstream", "ix_messages_phase"}
    done = M.upgrade(engine)
    assert "index ix_messages_queued" in done and "dropped index ix_messages_phase" in done
    assert _indexes(engine) == {"ix_messages_upstream_id", "ix_messages_queued"}
    assert M.upgrade(engine) == []  # idempotent


def test_reads_find_their_rows_through_the_partial_indexes(engine):
    create_schema(engine)
    with engine.begin() as conn:
        M.insert_messages(conn, [_row(1, M.FINAL, "a1"), _row(2, M.QUEUED, None), _row(3, M.FORWARDED, "a3"),
                                 _row(4, M.QUEUED, None)])
    with engine.connect() as conn:
        assert [r.id for r in M.queued_messages(conn)] == [2, 4]
        assert M.message_by_upstream(conn, "sim", "a3")["id"] == 3
        assert M.message_by_upstream(conn, "sim", "zz") is None

    if engine.dialect.name == "sqlite":
        # The plans of the very statements those two functions send.
        assert "ix_messages_queued" in _plan(engine, M.queued_messages)
        assert "ix_messages_upstream_id" in _plan(engine, M.message_by_upstream, "sim", "a3")


def _plan(engine, read, *args) -> str:
    sent = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:
            read(conn, *args)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    (statement, parameters), = sent
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all())
