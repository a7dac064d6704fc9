"""Requests in flight and the line waiting in front of them (cloudhopper's Window, smppex's session).

Every sender in the project has the same problem: a peer takes at most
*window* requests at a time, more wait, and what the peer did not process
(no answer in time, a "slow down" status, a dropped link) must be sent again
without jumping the line. Two objects, no I/O:

* :class:`Line`: the waiting queue, in order of acceptance. It may sit in
  front of several windows (a route above its connectors, an account above
  its bound receivers): whichever window has a free slot takes the head.
* :class:`Window`: one peer connection's slots. It sends through a callable
  (usually ``session.send_request``), holds what is outstanding by sequence
  number, and gives back to the head of its line, in original order, what
  timed out, was throttled, or was in flight when the link was lost.

The ordering promise (``tests/pdu/test_window.py`` checks it with
Hypothesis over any interleaving of sends, answers, timeouts, throttles and
losses): **every send takes the item accepted earliest among all those
waiting in the line**. So the first sends reach the peers in acceptance
order, and items handed back are sent again before anything accepted after
them, in their own acceptance order: a throttled 1 and 2 go out again as 1
then 2, never 2 then 1. (With a window above one, the peer may still see an
answered 3 before a re-sent 2: only a window of one orders what the peer
*accepts*; the line orders what it is *offered*.)

Each item travels with its place in line (an integer assigned by
:meth:`Line.put`), so items need no attribute of their own: a message record,
an outbox delivery or a simulator receipt all fit.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: What a window uses to send an item: returns the request's sequence number.
Send = Callable[[Any], int]


class Line(Generic[T]):
    """A waiting line kept in acceptance order, shared by the windows attached to it.

    ``expired(item)`` (optional, with ``clock``) is called instead of sending
    an item whose ``expires_at`` has passed when it reaches the head, so a
    validity that runs out while waiting is noticed when the item would go.
    ``limit`` is for :attr:`full` only: the line never refuses an item itself
    (the caller refuses before accepting, e.g. ESME_RMSGQFUL).
    """

    __slots__ = ("_q", "_places", "windows", "limit", "_expired", "_clock", "_rr", "_pumping")

    def __init__(
        self,
        *,
        limit: int = 0,
        expired: Callable[[T], None] | None = None,
        clock: Any = None,
        places: Iterator[int] | None = None,
    ) -> None:
        self._q: deque[tuple[int, T]] = deque()
        #: Places in line. Lines that hand items to each other (a route's
        #: connectors, on failover) share one counter, so a moved item keeps
        #: its place among the other line's items (:meth:`put_back`).
        self._places = places if places is not None else itertools.count()
        #: The windows that take from this line, in the order they attached.
        self.windows: list[Window[T]] = []
        self.limit = limit
        self._expired = expired
        self._clock = clock
        self._rr = 0
        self._pumping = False

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self):
        return (item for _, item in self._q)

    @property
    def full(self) -> bool:
        return 0 < self.limit <= len(self._q)

    # ------------------------------------------------------------------ input

    def put(self, item: T) -> None:
        """Accept an item at the back of the line (its place is fixed from now on)."""
        self._q.append((next(self._places), item))
        if self.windows:
            self.pump()

    def put_back(self, entries: Iterable[tuple[int, T]]) -> None:
        """Return items that were taken (with their places) to the head, in order.

        The line is always in order of place, so the returned items merge
        with the waiting items placed before the last of them: O(returned +
        those). Items taken from this line always fit at its head; items
        moved here from another line sharing the counter (failover) merge
        into their place among this line's.
        """
        back = sorted(entries, key=_place)
        if not back:
            return
        q = self._q
        last = back[-1][0]
        head = []
        while q and q[0][0] < last:
            head.append(q.popleft())
        merged = list(heapq.merge(head, back, key=_place)) if head else back
        q.extendleft(reversed(merged))
        if self.windows:
            self.pump()

    def drop(self) -> T | None:
        """Remove and return the oldest waiting item (a bounded queue that must shed load)."""
        return self._q.popleft()[1] if self._q else None

    def take(self, match: Callable[[T], bool]) -> list[T]:
        """Remove and return the waiting items for which ``match(item)`` holds (cancel, expiry)."""
        return [e[1] for e in self.take_entries(match)]

    def take_entries(self, match: Callable[[T], bool]) -> list[tuple[int, T]]:
        """Like :meth:`take`, with each item's place (to :meth:`put_back` it into another line)."""
        kept: deque[tuple[int, T]] = deque()
        taken = []
        for entry in self._q:
            if match(entry[1]):
                taken.append(entry)
            else:
                kept.append(entry)
        if taken:
            self._q = kept
        return taken

    # ----------------------------------------------------------------- output

    def attach(self, window: Window[T]) -> None:
        if window not in self.windows:
            self.windows.append(window)
        self.pump()

    def detach(self, window: Window[T]) -> None:
        if window in self.windows:
            self.windows.remove(window)

    def pump(self) -> None:
        """Hand the head to windows with a free slot until the line or the slots run out.

        With several windows the head goes round them in turn (one item each
        while all have room), so a route spreads over its connectors and an
        account over its receivers. With one window (the common case, and the
        hot path) its room is asked once per pump, not once per item.
        """
        if self._pumping:  # a send that answers at once must not recurse into us
            return
        q = self._q
        windows = self.windows
        if not q or not windows:
            return
        expired = self._expired
        self._pumping = True
        try:
            if len(windows) == 1:
                w = windows[0]
                room = w.room()
                if room <= 0:
                    return
                # The clock only once something may go (a full window is the common answer under load).
                now = self._clock.seconds() if expired is not None else 0.0
                out = w.outstanding
                send = w._send
                sent = False
                while q and room > 0:
                    entry = q.popleft()
                    item = entry[1]
                    if expired is not None and item.expires_at <= now:
                        expired(item)
                        continue
                    out[send(item)] = entry
                    room -= 1
                    sent = True
                if sent and w._flush is not None:
                    w._flush()
                return
            now = self._clock.seconds() if expired is not None else 0.0
            touched: list[Window[T]] = []
            n = len(windows)
            while q:
                for i in range(n):
                    w = windows[(self._rr + i) % n]
                    if w.room() > 0:
                        self._rr = (self._rr + i + 1) % n
                        break
                else:
                    break
                entry = q.popleft()
                if expired is not None and entry[1].expires_at <= now:
                    expired(entry[1])
                    continue
                w.outstanding[w._send(entry[1])] = entry
                if w not in touched:
                    touched.append(w)
            for w in touched:
                if w._flush is not None:
                    w._flush()
        finally:
            self._pumping = False


def _place(entry: tuple[int, Any]) -> int:
    return entry[0]


class Window(Generic[T]):
    """One connection's slots: at most ``size`` items outstanding, taken from a :class:`Line`.

    ``send(item) -> sequence`` puts the request on the wire (it is called
    only while the window is open and has room); ``flush()`` (optional) is
    called once after a burst of sends. ``ready()`` (optional) says how many
    more requests the connection takes now: 0 for a session that is
    unbinding (it takes nothing new), or the session's own free count when
    several windows share one session (the simulator's).

    The owner reports what happened to each sequence number: :meth:`done`
    (answered: the item is the owner's to finish), :meth:`retry` (not
    processed, e.g. a time-out: back to the head),
    :meth:`throttled` (the peer said slow down: back to the head, and this
    window takes nothing for ``backoff`` seconds while other windows of the
    line go on), :meth:`close` (the link is gone: everything outstanding back
    to the head).

    The response timer itself is the session's (``pdu.session``, 3.4 §7.2);
    the window decides what a time-out means for the item. ``clock`` needs
    ``seconds()`` and ``callLater()`` (a reactor, or ``task.Clock`` in tests).
    """

    __slots__ = ("line", "size", "outstanding", "_send", "_flush", "_ready", "clock", "is_open", "paused_until",
                 "_resume")

    def __init__(
        self,
        line: Line[T],
        size: int,
        send: Send,
        *,
        flush: Callable[[], None] | None = None,
        ready: Callable[[], int] | None = None,
        clock: Any = None,
    ) -> None:
        if size < 1:
            raise ValueError("a window needs at least one slot")
        self.line = line
        self.size = size
        #: sequence number -> (place in line, item), for what the peer has not answered.
        self.outstanding: dict[int, tuple[int, T]] = {}
        self._send = send
        self._flush = flush
        self._ready = ready
        self.clock = clock
        self.is_open = False
        self.paused_until = 0.0
        self._resume: Any = None

    def room(self) -> int:
        """Items this window can send now (0 while closed or paused)."""
        if not self.is_open or self.paused_until:
            return 0
        free = self.size - len(self.outstanding)
        ready = self._ready
        if ready is not None:
            allowed = ready()
            if allowed < free:
                return allowed
        return free

    free = property(room, doc="Slots this window can fill now (0 while closed or paused).")

    def __len__(self) -> int:
        return len(self.outstanding)

    # -------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """The link is up (bound): start taking from the line."""
        self.is_open = True
        self.line.attach(self)

    def close(self, *, give_back: bool = True) -> list[T]:
        """The link is gone: hand every outstanding item back to the head, in order.

        Returns the items that were outstanding (for logs and counters). With
        ``give_back=False`` they are only returned, for an owner that must not
        send them again (a load client counts them as lost).
        """
        self.is_open = False
        self.line.detach(self)
        entries = list(self.outstanding.values())
        self.outstanding.clear()
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        self.paused_until = 0.0
        if give_back:
            self.line.put_back(entries)
        return [e[1] for e in entries]

    # ---------------------------------------------------------------- answers

    def done(self, sequence: int) -> T | None:
        """The peer answered: free the slot, refill from the line, return the item."""
        entry = self.outstanding.pop(sequence, None)
        line = self.line
        if line._q and self.is_open:
            line.pump()
        return None if entry is None else entry[1]

    def finish(self, sequence: int) -> tuple[int, T] | None:
        """Like :meth:`done`, returning the item with its place (for an owner that may move it)."""
        entry = self.outstanding.pop(sequence, None)
        line = self.line
        if line._q and self.is_open:
            line.pump()
        return entry

    def release(self, sequence: int) -> tuple[int, T] | None:
        """Free the slot without refilling and return (place, item): the owner puts it somewhere else."""
        return self.outstanding.pop(sequence, None)

    def retry(self, sequence: int) -> T | None:
        """Not processed (no answer in time): back to the head of the line, in order."""
        entry = self.outstanding.pop(sequence, None)
        if entry is None:
            return None
        self.line.put_back((entry,))
        return entry[1]

    def throttled(self, sequence: int, backoff: float) -> T | None:
        """The peer said slow down: pause this window ``backoff`` s, the item goes back in order.

        A throttle during a pause extends it (never shortens it); the pause
        ends with one timer, which refills the window.
        """
        self.pause(backoff)
        return self.retry(sequence)

    def pause(self, backoff: float) -> None:
        clock = self.clock
        until = clock.seconds() + backoff
        if until <= self.paused_until:
            return
        self.paused_until = until
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = clock.callLater(backoff, self._unpause)

    def _unpause(self) -> None:
        self._resume = None
        self.paused_until = 0.0
        if self.is_open:
            self.line.pump()


__all__ = ["Line", "Window"]
