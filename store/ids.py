"""Unique ids without a database round trip per message.

Message ids are handed out on the reactor thread for every submit_sm, so they
must cost nothing. With one process (SQLite) a counter started past the
highest id in use is enough. Several hub processes on one PostgreSQL take
blocks from a sequence (``INCREMENT BY block``): each process owns its block,
the next one is fetched in a thread before the current one runs out.
"""

from __future__ import annotations

import threading

from sqlalchemy import text
from sqlalchemy.engine import Engine


class CounterIds:
    """One process: next id = highest in use + 1."""

    __slots__ = ("next",)

    def __init__(self, start: int) -> None:
        self.next = start

    def __call__(self) -> int:
        n = self.next
        self.next = n + 1
        return n


class SequenceIds:
    """Blocks of ids from a PostgreSQL sequence, shared by every hub process."""

    def __init__(self, engine: Engine, name: str, start: int, block: int = 10_000) -> None:
        self.engine = engine
        self.name = name
        self.block = block
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SEQUENCE IF NOT EXISTS {name} INCREMENT BY {block} START WITH {max(start, 1)}"))
        self._lock = threading.Lock()
        self._next, self._end = self._fetch()
        self._spare: tuple[int, int] | None = None
        self._fetching = False

    def _fetch(self) -> tuple[int, int]:
        with self.engine.begin() as conn:
            first = conn.execute(text(f"SELECT nextval('{self.name}')")).scalar_one()
        return first, first + self.block

    def _prefetch(self) -> None:
        try:
            spare = self._fetch()
        finally:
            self._fetching = False
        with self._lock:
            self._spare = spare

    def __call__(self) -> int:
        n = self._next
        if n >= self._end:
            with self._lock:
                spare, self._spare = self._spare, None
            if spare is None:  # the prefetch did not finish in time: fetch inline (rare)
                spare = self._fetch()
            self._next, self._end = spare
            n = self._next
        self._next = n + 1
        if not self._fetching and self._spare is None and self._end - n < self.block // 2:
            self._fetching = True
            threading.Thread(target=self._prefetch, daemon=True).start()
        return n


def allocator(engine: Engine, name: str, start: int):
    """The right allocator for the engine's database."""
    if engine.dialect.name == "postgresql":
        return SequenceIds(engine, name, start)
    return CounterIds(start)
