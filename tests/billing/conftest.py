"""Fixtures for the billing tests: a fresh embedded store with the money tables."""

from __future__ import annotations

import pytest

import staffetta.billing.accounts as accounts
from staffetta.store.db import create_schema, make_engine


@pytest.fixture
def engine(tmp_path):
    e = make_engine(f"sqlite:///{tmp_path / 'billing.db'}")
    create_schema(e)
    yield e
    e.dispose()


def new_account(conn, name: str, **kw) -> int:
    return accounts.create_account(conn, name, "pw", **kw).id
