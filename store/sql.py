"""Hot-path SQL straight to the driver: one place for paramstyles and batches.

The group-commit writer holds the GIL for every line of Python it runs, and on
a one-core hub that time is taken from the reactor. Measured here (cProfile,
13 rows a statement: the hub's batch size at window 50), SQLAlchemy's own
handling of one ``exec_driver_sql`` took ~90 µs, more than SQLite's work for
a 13-row ``executemany`` (~60 µs), and a dict of named parameters per row cost
~25% more to bind than a tuple. So the hot writes are written once with ``?`` placeholders,
take tuples, and go to the DB-API connection under SQLAlchemy's transaction:
``sqlite3``'s ``executemany``, or psycopg2's ``execute_batch`` (its own
``executemany`` makes one round trip per row) of ``EXECUTE``s of a statement
prepared once per connection: unprepared, PostgreSQL parsed and planned every
row's statement again (~200 µs of its CPU per message in the spine benchmark).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence

from sqlalchemy.engine import Connection

_NAMED = re.compile(r":(\w+)")
_CACHE: dict[tuple[str, str, bool], str] = {}


def driver_sql(conn: Connection, text: str) -> str:
    """``:name`` placeholders in the driver's paramstyle; ``{lock}`` is FOR UPDATE on PostgreSQL."""
    style = conn.dialect.paramstyle
    pg = conn.dialect.name == "postgresql"
    key = (style, text, pg)
    sql = _CACHE.get(key)
    if sql is None:
        sql = text.replace("{lock}", " FOR UPDATE" if pg else "")
        if style == "pyformat":
            sql = _NAMED.sub(r"%(\1)s", sql)
        elif style not in ("named", "qmark"):  # pragma: no cover - we ship sqlite3 and psycopg2
            raise RuntimeError(f"unsupported paramstyle {style}")
        _CACHE[key] = sql
    return sql


def executemany(conn: Connection, text: str, rows: Sequence[tuple]) -> None:
    """Run ``text`` (``?`` placeholders) once per row, in ``conn``'s transaction."""
    if not rows:
        return
    raw = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        raw.executemany(text, rows)
        return
    from psycopg2.extras import execute_batch

    with raw.cursor() as cur:
        execute_batch(cur, _prepared(raw, cur, text), rows, page_size=200)


#: Per PostgreSQL connection: statement text -> its ``EXECUTE`` form.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _prepared(raw, cur, text: str) -> str:
    """``EXECUTE name (%s, ...)`` for ``text`` (``?`` placeholders), prepared once per connection.

    A batch of N rows is then N ``EXECUTE``s in one round trip that PostgreSQL
    neither parses nor plans again. A prepared statement outlives a rolled-back
    transaction, and a new connection starts with none.
    """
    names = _PREPARED.get(raw)
    if names is None:
        names = _PREPARED[raw] = {}
    execute = names.get(text)
    if execute is None:
        parts = text.split("?")
        numbered = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
        name = f"staffetta_{len(names)}"
        cur.execute(f"PREPARE {name} AS {numbered}")
        args = f" ({', '.join(['%s'] * (len(parts) - 1))})" if len(parts) > 1 else ""
        execute = names[text] = f"EXECUTE {name}{args}"
    return execute


def insert_sql(table: str, columns: Sequence[str]) -> str:
    """``INSERT INTO table (a, b) VALUES (?, ?)`` for :func:`executemany`."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


def fetchone(conn: Connection, text: str, params: tuple) -> tuple | None:
    """One statement (``?`` placeholders) straight to the driver; its first row or None."""
    cur = _run(conn, text, params)
    try:
        return cur.fetchone() if cur.description else None
    finally:
        cur.close()


def fetchall(conn: Connection, text: str, params: tuple) -> list[tuple]:
    """One query (``?`` placeholders) straight to the driver; all its rows."""
    cur = _run(conn, text, params)
    try:
        return cur.fetchall()
    finally:
        cur.close()


def _run(conn: Connection, text: str, params: tuple):
    raw = conn.connection.driver_connection
    cur = raw.cursor()
    try:
        if conn.dialect.name == "sqlite":
            cur.execute(text, params)
        else:
            cur.execute(_prepared(raw, cur, text), params)
    except BaseException:
        cur.close()
        raise
    return cur
