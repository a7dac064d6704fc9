"""store.sql on PostgreSQL: hot statements prepared once per connection, then run as EXECUTE batches."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from staffetta.store.db import make_engine
from staffetta.store.sql import executemany, fetchall, fetchone


@pytest.fixture
def pg(pg_schema_url):
    engine = make_engine(pg_schema_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT, f DOUBLE PRECISION)"))
    yield engine
    engine.dispose()


def _prepared_count(conn) -> int:
    n = conn.execute(text("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'staffetta_%'")).scalar()
    conn.rollback()
    return n


def test_a_statement_is_prepared_once_per_connection_and_outlives_a_rollback(pg):
    insert = "INSERT INTO t (k, v, f) VALUES (?, ?, ?)"
    with pg.connect() as conn:
        with conn.begin():
            executemany(conn, insert, [(1, "50% off?", None), (2, None, 1.5)])
        assert _prepared_count(conn) == 1
        tx = conn.begin()
        executemany(conn, insert, [(3, "c", 2.0)])
        tx.rollback()
        with conn.begin():  # the prepared statement survived the rollback
            executemany(conn, insert, [(3, "again", 2.5)])
            executemany(conn, "UPDATE t SET v = ?, f = f + ? WHERE k = ?", [("x", 1.0, 2), ("y", 0.5, 3)])
            executemany(conn, "DELETE FROM t WHERE k = ?", [(1,)])
        assert _prepared_count(conn) == 3
        rows = conn.execute(text("SELECT k, v, f FROM t ORDER BY k")).all()
    assert [tuple(r) for r in rows] == [(2, "x", 2.5), (3, "y", 3.0)]


def test_a_failed_batch_rolls_back_and_the_connection_goes_on(pg):
    insert = "INSERT INTO t (k, v, f) VALUES (?, ?, ?)"
    with pg.connect() as conn:
        with pytest.raises(Exception, match="duplicate key"):
            with conn.begin():
                executemany(conn, insert, [(1, "a", 0.0), (1, "dup", 0.0)])
        with conn.begin():
            executemany(conn, insert, [(1, "b", 0.0)])
        assert conn.execute(text("SELECT v FROM t")).scalars().all() == ["b"]


def test_single_statements_are_prepared_too(pg):
    with pg.connect() as conn:
        with conn.begin():
            executemany(conn, "INSERT INTO t (k, v, f) VALUES (?, ?, ?)", [(1, "a", 5.0), (2, "b", 1.0)])
        for _ in range(2):
            with conn.begin():
                assert fetchone(conn, "UPDATE t SET f = f - ? WHERE k = ? AND f >= ? RETURNING f", (1.0, 1, 1.0)) == (
                    4.0 if _ == 0 else 3.0,)
                assert fetchone(conn, "UPDATE t SET f = f - ? WHERE k = ? AND f >= ? RETURNING f", (9.0, 2, 9.0)) is None
                assert fetchall(conn, "SELECT k FROM t WHERE f > ? ORDER BY k", (0.5,)) == [(1,), (2,)]
                assert fetchall(conn, "SELECT count(*) FROM t", ()) == [(2,)]
        assert _prepared_count(conn) == 4
