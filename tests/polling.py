"""Waiting, in a test that blocks, for what another thread or process does.

Twisted tests wait with ``tests.e2e.harness.wait_until``; this is the blocking
counterpart, for tests that drive whole processes or a writer thread: it
looks at the condition until it holds, and fails naming it after ``timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:g} s")
        time.sleep(interval)
