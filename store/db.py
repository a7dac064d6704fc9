"""Engine factory and the one MetaData every package's tables hang on.

Embedded default: SQLite in WAL mode with ``synchronous=NORMAL``: a committed
transaction survives a process crash; after a power loss the last few
transactions may be lost (documented in docs/operations.md). PostgreSQL is
selected by a ``postgresql://`` URL for several hub processes.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import Engine

metadata = MetaData()


def sqlite_url(data_dir: str | os.PathLike) -> str:
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'staffetta.db'}"


def _bind_none_and_bytes_directly() -> None:
    """Spare the sqlite3 module its adaptation protocol for ``None`` and ``bytes``.

    It binds int, float, str and bytearray at once but sends every other value,
    ``None`` and ``bytes`` included, through the PEP 246 lookup: two attribute
    probes, one of which formats an AttributeError message before dropping it.
    With ~10 such values per message that was 9% of the writer's instructions
    (callgrind, docs/benchmarks.md). An adapter registered for the type is found
    first; these two return their argument unchanged, so what is stored is the
    same. Registering for these types leaves the fast path of the four others on.
    ``bytes.__bytes__`` rather than ``bytes``: the type's call parses its
    arguments and looks up and binds ``__bytes__`` before calling it (~2x the
    adapter's cost, timeit); the method itself returns an exact ``bytes`` as is.
    """
    sqlite3.register_adapter(type(None), {}.get)  # C-level: get(None) is None
    sqlite3.register_adapter(bytes, bytes.__bytes__)  # C-level: b.__bytes__() is b


def bind_as_int(*int_types: type[int]) -> None:
    """Have sqlite3 bind members of these ``int`` subclasses (IntEnums) as plain ints.

    The sqlite3 module binds only exact ``int`` at once; a subclass such as
    ``MessageState.ENROUTE`` goes the PEP 246 way described above: two failed
    attribute lookups, each formatting an AttributeError message that is then
    dropped, ~4 µs a value on this machine (an executemany row of four values
    cost 8.9 µs with one enum member against 4.8 µs with plain ints). A
    registered adapter is found first and ``int`` converts in C; the stored
    value is the same integer. Called by each module that writes such values.
    """
    for t in int_types:
        sqlite3.register_adapter(t, int)


#: sqlite3_config's option (sqlite3.h): collect memory allocation statistics or not.
_SQLITE_CONFIG_MEMSTATUS = 9


def stop_sqlite_memory_statistics() -> bool:
    """Turn SQLite's memory statistics off for this process; call it before any connection opens.

    SQLite counts every allocation under a global mutex unless told not to
    (``SQLITE_CONFIG_MEMSTATUS``); nothing in the hub reads those counts, and
    they were ~9% of the group-commit writer's instructions (~15k a message,
    callgrind on ``bench/bench_writer.py``). The option can only be set while
    the library is not initialized, and the ``sqlite3`` module initializes it
    when imported, hence shutdown, configure, initialize, which SQLite allows
    only while no connection is open: the hub's entry points call this first.
    Through ctypes on the very library the ``sqlite3`` module is linked to
    (same version string, else nothing is done). True when the option took.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return False
    try:
        lib = ctypes.CDLL(name)
        lib.sqlite3_libversion.restype = ctypes.c_char_p
        if lib.sqlite3_libversion().decode() != sqlite3.sqlite_version:
            return False  # another copy than the module's: leave both alone
        if lib.sqlite3_shutdown() != 0:
            return False
        ok = lib.sqlite3_config(_SQLITE_CONFIG_MEMSTATUS, ctypes.c_int(0)) == 0
        return lib.sqlite3_initialize() == 0 and ok
    except (OSError, AttributeError):
        return False


def make_engine(url: str) -> Engine:
    """Create the engine; :func:`create_schema` makes the tables."""
    if url.startswith("sqlite"):
        _bind_none_and_bytes_directly()
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    else:
        if url.startswith("postgresql://"):
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; we ship psycopg2.
            url = "postgresql+psycopg2://" + url[len("postgresql://"):]
        engine = create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
    return engine


def create_schema(engine: Engine) -> None:
    """Create every table registered on :data:`metadata` (idempotent).

    Table-owning modules register on import; the application imports them
    first (store sits below every other package and imports none of them).
    """
    metadata.create_all(engine)


def add_missing_columns(conn, table: str, columns: list[tuple[str, str]], **fmt: str) -> list[str]:
    """``ALTER TABLE … ADD COLUMN`` for each (name, DDL) the table lacks; returns what was added.

    ``create_all`` never alters an existing table, so a store made by an older
    version gains its new columns here. DDL may use ``{false}``/``{true}``,
    filled per dialect.
    """
    sqlite = conn.dialect.name == "sqlite"
    values = {"false": "0" if sqlite else "false", "true": "1" if sqlite else "true", **fmt}
    have = {c["name"] for c in inspect(conn).get_columns(table)}
    added = []
    for name, ddl in columns:
        if name not in have:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {ddl.format(**values)}"))
            added.append(f"{table}.{name}")
    return added


def scratch_pg_schema(url: str, prefix: str = "t_") -> tuple[str, str]:
    """Create an empty PostgreSQL schema: (its name, ``url`` with it as the search_path).

    For tests and benchmarks that need a store of their own in a shared
    database; the URL works in other processes too (the schema travels in its
    options). Drop it with :func:`drop_pg_schema`.
    """
    import uuid

    schema = prefix + uuid.uuid4().hex[:12]
    _pg_autocommit(url, f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    return schema, f"{url}{sep}options=-csearch_path%3D{schema}"


def drop_pg_schema(url: str, schema: str) -> None:
    _pg_autocommit(url, f"DROP SCHEMA {schema} CASCADE")


def _pg_autocommit(url: str, statement: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url.replace("+psycopg2", ""))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()
