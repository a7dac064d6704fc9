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
