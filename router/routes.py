"""Routes: one waiting line above a set of connectors.

A message is queued on its route, not on a connector: whichever connector of
the route has a free window slot takes the head of the line, and what a
connector gives back (a time-out, a throttle, a lost link) returns to the head
of the same line in its original order, so another connector of the route can
send it without it losing its place. Failover (issue 13) moves messages
between connectors this way; strategies and rules build on :class:`Route`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from staffetta.pdu.window import Line
from staffetta.router.upstream import Connector, Forward

#: Messages a route holds waiting (accepted, not yet taken by a connector) by default.
DEFAULT_LIMIT = 200_000


class Route:
    """``name``, its connectors (in config order) and the line they share.

    ``expired(item)`` is called for a message whose validity runs out while it
    waits (when it reaches the head), ``clock`` gives the time for that check.
    """

    def __init__(
        self,
        name: str,
        connectors: Iterable[Connector] = (),
        *,
        limit: int = DEFAULT_LIMIT,
        expired: Callable[[Forward], None] | None = None,
        clock: Any = None,
    ) -> None:
        self.name = name
        self.line: Line[Forward] = Line(limit=limit, expired=expired, clock=clock)
        self.connectors: list[Connector] = []
        for c in connectors:
            self.add(c)

    def add(self, connector: Connector) -> None:
        """Put a connector under this route: it takes from the route's line from now on."""
        if connector.line is not self.line:
            waiting = connector.line.take(lambda _: True)  # what waited on it alone, in order
            connector.line = self.line
            for item in waiting:
                self.line.put(item)
        self.connectors.append(connector)

    def enqueue(self, item: Forward) -> None:
        """Queue an accepted message at the back of the line (sent when a connector has room)."""
        self.line.put(item)

    def take(self, match: Callable[[Forward], bool]) -> list[Forward]:
        """Remove and return the waiting (not yet sent) messages ``match`` selects."""
        return self.line.take(match)

    @property
    def full(self) -> bool:
        return self.line.full

    @property
    def up(self) -> bool:
        """Whether any of its connectors is bound."""
        return any(c.up for c in self.connectors)

    def __len__(self) -> int:
        return len(self.line)
