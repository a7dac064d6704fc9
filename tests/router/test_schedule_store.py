"""A scheduled message's row on SQLite and PostgreSQL: the column an old store gains, the resume read, the release."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from staffetta.pdu.constants import MessageState
from staffetta.router import messages as M
from staffetta.router.record import SCHEDULED
from staffetta.store.db import create_schema
from tests.router.test_messages_indexes import _row


@pytest.fixture
def engine(bare_engine):
    return bare_engine


def test_an_old_store_gains_deliver_at(engine):
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE messages DROP COLUMN deliver_at"))
    assert "messages.deliver_at" in M.upgrade(engine)
    with engine.connect() as conn:
        assert [c["name"] for c in inspect(conn).get_columns("messages")][-1] == "deliver_at"
    assert M.upgrade(engine) == []


def test_a_scheduled_row_is_resumed_with_its_time_and_says_enroute_once_released(engine):
    create_schema(engine)
    held = _row(1, M.QUEUED, None)
    held.deliver_at, held.state = 1_800_000_000.5, SCHEDULED
    with engine.begin() as conn:
        M.insert_messages(conn, [held, _row(2, M.QUEUED, None)])
    with engine.connect() as conn:
        got = {r.id: (r.deliver_at, r.state) for r in M.queued_messages(conn)}
    assert got == {1: (1_800_000_000.5, SCHEDULED), 2: (None, MessageState.ENROUTE)}
    with engine.begin() as conn:
        M.set_released(conn, [1])
    with engine.connect() as conn:
        r = M.message_for_account(conn, 1, 1)
    assert (r.phase, r.state, r.deliver_at) == (M.QUEUED, MessageState.ENROUTE, 1_800_000_000.5)


def test_a_release_never_overwrites_an_outcome(engine):
    """The writer is ordered, but the guard makes a late release harmless anyway."""
    create_schema(engine)
    held = _row(1, M.QUEUED, None)
    held.deliver_at, held.state = 1_800_000_000.0, SCHEDULED
    with engine.begin() as conn:
        M.insert_messages(conn, [held])
        M.record_outcomes(conn, [(1, int(MessageState.DELETED), 0, 5.0, None, None, None)])
        M.set_released(conn, [1])
    with engine.connect() as conn:
        r = M.message_for_account(conn, 1, 1)
    assert (r.phase, r.state) == (M.FINAL, MessageState.DELETED)
