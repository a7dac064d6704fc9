"""Shared test plumbing: real services or an honest skip (a failure in CI)."""

from __future__ import annotations

import os
import socket

import pytest


def require_service(available: bool, reason: str) -> None:
    """Skip when a server is absent; in CI (STAFFETTA_REQUIRE_SERVICES=1) fail instead."""
    if available:
        return
    if os.environ.get("STAFFETTA_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "data")


PG_URL = os.environ.get("STAFFETTA_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_schema_url():
    """A SQLAlchemy URL whose search_path is a fresh, empty PostgreSQL schema, dropped afterwards.

    The URL works in other processes too (the schema travels in its options).
    """
    from urllib.parse import urlsplit

    u = urlsplit(PG_URL)
    require_service(port_open(u.hostname or "127.0.0.1", u.port or 5432),
                    f"PostgreSQL not reachable at {u.hostname}:{u.port or 5432}")
    from staffetta.store.db import drop_pg_schema, scratch_pg_schema

    schema, url = scratch_pg_schema(PG_URL)
    yield url
    drop_pg_schema(PG_URL, schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_engine(request, tmp_path):
    """An engine on an empty store, once on SQLite and once on PostgreSQL (a scratch schema); no tables."""
    from staffetta.store.db import make_engine

    if request.param == "sqlite":
        e = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        e = make_engine(request.getfixturevalue("pg_schema_url"))
    yield e
    e.dispose()
