"""The SQLite engine binds None and bytes without the adaptation protocol, and stores them unchanged."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from staffetta.store.db import make_engine

_BASE_TYPES = (int, float, str, bytearray)


def test_none_and_bytes_have_direct_adapters_and_base_types_keep_their_fast_path(tmp_path):
    make_engine(f"sqlite:///{tmp_path / 'a.db'}").dispose()
    registered = {t for t, _ in sqlite3.adapters}
    assert {type(None), bytes} <= registered
    # An adapter for one of these would send *every* value through adaptation.
    assert not registered & set(_BASE_TYPES)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=300)), min_size=1, max_size=8))
def test_values_round_trip_with_their_storage_class(tmp_path_factory, values):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'v.db'}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS v (n INTEGER PRIMARY KEY, x BLOB)")
            conn.exec_driver_sql("DELETE FROM v")
            conn.exec_driver_sql("INSERT INTO v (n, x) VALUES (?, ?)", [(i, v) for i, v in enumerate(values)])
            rows = conn.exec_driver_sql("SELECT x, typeof(x) FROM v ORDER BY n").all()
    finally:
        engine.dispose()
    assert [r[0] for r in rows] == values
    assert [r[1] for r in rows] == ["null" if v is None else "blob" for v in values]


def test_message_states_are_bound_as_plain_ints(tmp_path):
    """The carrier id update binds MessageState.ENROUTE for every message: an adapter, not PEP 246."""
    import staffetta.router.messages  # noqa: F401 - registers it
    from staffetta.pdu.constants import MessageState

    assert sqlite3.adapters.get((MessageState, sqlite3.PrepareProtocol)) is int
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE s (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO s (x) VALUES (?)", [(MessageState.ENROUTE,), (MessageState.REJECTED,)])
            rows = conn.exec_driver_sql("SELECT x, typeof(x) FROM s").all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "integer"), (8, "integer")]
    assert all(type(r[0]) is int for r in rows)


_MEMORY_USED = """
import ctypes, ctypes.util, sys
from staffetta.store.db import make_engine, stop_sqlite_memory_statistics
stopped = stop_sqlite_memory_statistics() if sys.argv[1] == "stop" else None
engine = make_engine("sqlite:///" + sys.argv[2])
with engine.begin() as conn:
    conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
    conn.exec_driver_sql("INSERT INTO t VALUES (randomblob(5000))")
lib = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
lib.sqlite3_memory_used.restype = ctypes.c_int64
print(stopped, lib.sqlite3_memory_used())
"""


def test_a_hub_process_runs_sqlite_without_its_memory_statistics(tmp_path):
    """``stop_sqlite_memory_statistics`` (what ``staffetta run`` calls first) takes, in a fresh process."""
    import subprocess
    import sys

    def run(mode: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", _MEMORY_USED, mode, str(tmp_path / f"{mode}.db")],
                             capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert run("stop") == ["True", "0"]  # nothing counted
    stopped, used = run("keep")
    assert stopped == "None" and int(used) > 0  # SQLite's default: every allocation counted
