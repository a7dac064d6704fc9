"""How a simulated carrier misbehaves on submits: the sans-IO decision, one submit at a time.

A fleet carrier (simulator/fleet.py) is a :class:`simulator.carrier.Carrier`
with a :class:`Faults` profile: answer latency, a throughput limit answered
with ``ESME_RTHROTTLED``, a share of submits never answered, a share answered
slowly, a disconnect every N submits, and *magic destinations* that trigger
one fault for one message from a test without any control call.

:class:`FaultPlan` holds the state (token bucket, counters, its own seeded
generator) and returns one :class:`Answer` per submit; it never touches a
socket or a timer, so its rules are tested with plain numbers and the carrier
only carries them out. It draws from a generator of its own, seeded from the
carrier's seed, so turning a fault on does not change the carrier's ids or
receipt outcomes, and the same seed gives the same draws.

Magic destinations (docs/simulator.md has the table): the last seven digits
``999MAAA`` of a destination, M the mode digit and AAA a three-digit argument,
so that the number keeps its country and network prefix (routing still sees a
real Italian or French mobile number) and stays a valid mobile number for the
hub's checks. Modes 6-9 are reserved and mean nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from staffetta.pdu.constants import Status
from staffetta.pdu.receipt import STAT_TO_STATE

#: Magic modes (the digit M of ``...999MAAA``).
MAGIC_SILENT = 0  # never answered
MAGIC_REFUSE = 1  # refused with status AAA (decimal: 088 = 0x58 ESME_RTHROTTLED)
MAGIC_SLOW = 2  # answered after AAA tenths of a second (000: the carrier's slow_delay)
MAGIC_DISCONNECT = 3  # answered, then the connection is dropped (no unbind)
MAGIC_OUTCOME = 4  # accepted; the receipt's message_state is AAA (005 = UNDELIV)
MAGIC_MODES = (MAGIC_SILENT, MAGIC_REFUSE, MAGIC_SLOW, MAGIC_DISCONNECT, MAGIC_OUTCOME)

#: message_state -> stat word, for MAGIC_OUTCOME (final states only).
_STATE_TO_STAT = {state: stat for stat, state in STAT_TO_STATE.items() if stat != "ENROUTE"}

_THROTTLED = int(Status.ESME_RTHROTTLED)


def magic(destination: bytes) -> tuple[int, int] | None:
    """(mode, argument) when ``destination`` ends in a magic ``999MAAA``, else None."""
    if len(destination) < 7 or destination[-7:-4] != b"999":
        return None
    tail = destination[-4:]
    if not tail.isdigit():
        return None
    mode = tail[0] - 48
    if mode not in MAGIC_MODES:
        return None
    return mode, int(tail[1:])


def magic_destination(prefix: str, mode: int, argument: int = 0) -> str:
    """A magic destination under ``prefix`` (country and network digits), for tests and docs.

    ``magic_destination("39333", MAGIC_REFUSE, 0x45)`` is ``"393339991069"``.
    The prefix must leave exactly seven digits to the number's length; the
    caller knows its country's numbering.
    """
    if mode not in MAGIC_MODES:
        raise ValueError(f"mode must be one of {MAGIC_MODES}, not {mode!r}")
    if not 0 <= argument <= 999:
        raise ValueError("argument must be 0-999")
    return f"{prefix}999{mode}{argument:03d}"


@dataclass(frozen=True)
class Faults:
    """A carrier's misbehaviour on submits; the default misbehaves in no way.

    Shares are probabilities per submit, drawn from the plan's seeded
    generator; delays are seconds.
    """

    #: Delay of every submit_sm_resp.
    latency: float = 0.0
    #: Submits per second accepted; above it ESME_RTHROTTLED (None: no limit).
    #: A token bucket holding one second's worth, shared by the carrier's sessions.
    throughput: float | None = None
    #: Share of submits never answered (the carrier forgets them).
    unanswered: float = 0.0
    #: Share of submits answered after ``slow_delay`` instead of ``latency``.
    slow: float = 0.0
    slow_delay: float = 5.0
    #: Drop the connection after answering every N-th submit (0: never).
    disconnect_every: int = 0
    #: Honour magic destinations (``...999MAAA``).
    magic: bool = True

    def __post_init__(self) -> None:
        for name in ("latency", "slow_delay"):
            v = getattr(self, name)
            if not 0 <= v < float("inf"):
                raise ValueError(f"{name}: must be a number of seconds >= 0, not {v!r}")
        for name in ("unanswered", "slow"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name}: must be a share between 0 and 1, not {v!r}")
        if self.unanswered + self.slow > 1:
            raise ValueError("unanswered + slow: must not exceed 1")
        if self.throughput is not None and not 0 < self.throughput < float("inf"):
            raise ValueError(f"throughput: must be a number of messages per second > 0, not {self.throughput!r}")
        if isinstance(self.disconnect_every, bool) or not isinstance(self.disconnect_every, int) \
                or self.disconnect_every < 0:
            raise ValueError(f"disconnect_every: must be a whole number >= 0, not {self.disconnect_every!r}")


@dataclass(slots=True)
class Answer:
    """What to do with one submit. ``respond=False``: never answer (and forget it)."""

    respond: bool = True
    #: submit_sm_resp command_status; 0 accepts (an id, maybe a receipt).
    status: int = 0
    #: Seconds before the answer goes out.
    delay: float = 0.0
    #: Drop the connection once the answer is out.
    disconnect: bool = False
    #: Force the receipt's outcome (a stat word), else the carrier's mix.
    stat: str | None = None
    #: Why (the counter it goes to): "", "magic", "throttled", "unanswered", "slow".
    cause: str = ""


@dataclass
class FaultPlan:
    """The state behind :class:`Faults`: one :meth:`decide` per submit, in arrival order."""

    faults: Faults
    seed: int | str | None = None
    rng: random.Random = field(init=False)
    _tokens: float = field(init=False)
    _last: float | None = field(init=False, default=None)
    _answered: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(None if self.seed is None else f"faults:{self.seed}")
        self._tokens = self._capacity()

    def _capacity(self) -> float:
        rate = self.faults.throughput
        return 0.0 if rate is None else max(1.0, rate)

    def admit(self, now: float) -> bool:
        """Take one token from the bucket (refilled at ``throughput``/s); False when empty."""
        rate = self.faults.throughput
        if rate is None:
            return True
        last = self._last
        cap = self._capacity()
        if last is not None and now > last:
            self._tokens = min(cap, self._tokens + (now - last) * rate)
        self._last = now if last is None or now > last else last
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def decide(self, destination: bytes, now: float) -> Answer | None:
        """The answer to one submit, or None for "the carrier's normal answer" (scripts, then accept).

        Precedence: a magic destination; then the throughput limit; then the
        carrier's scripts and error prefixes (the caller's, on None or on an
        accepting answer); then the unanswered / slow draws; then latency.
        Every submit that reaches the draws consumes the same draws, so one
        message's fate does not depend on which faults are switched on later.
        """
        f = self.faults
        if f.magic:
            m = magic(destination)
            if m is not None:
                return self._magic(*m)
        if not self.admit(now):
            return Answer(status=_THROTTLED, cause="throttled")
        u = self.rng.random() if (f.unanswered or f.slow) else 1.0
        if u < f.unanswered:
            return Answer(respond=False, cause="unanswered")
        answer = Answer(delay=f.latency)
        if u < f.unanswered + f.slow:
            answer.delay = f.slow_delay
            answer.cause = "slow"
        if f.disconnect_every:
            self._answered += 1
            if self._answered % f.disconnect_every == 0:
                answer.disconnect = True
        return answer

    def _magic(self, mode: int, argument: int) -> Answer:
        f = self.faults
        if mode == MAGIC_SILENT:
            return Answer(respond=False, cause="magic")
        if mode == MAGIC_REFUSE:
            return Answer(status=argument, cause="throttled" if argument == _THROTTLED else "magic")
        if mode == MAGIC_SLOW:
            return Answer(delay=argument / 10 if argument else f.slow_delay, cause="magic")
        if mode == MAGIC_DISCONNECT:
            return Answer(delay=f.latency, disconnect=True, cause="magic")
        stat = _STATE_TO_STAT.get(argument)  # MAGIC_OUTCOME; an unknown state: the mix decides
        return Answer(delay=f.latency, stat=stat, cause="magic")


__all__ = [
    "MAGIC_DISCONNECT",
    "MAGIC_MODES",
    "MAGIC_OUTCOME",
    "MAGIC_REFUSE",
    "MAGIC_SILENT",
    "MAGIC_SLOW",
    "Answer",
    "FaultPlan",
    "Faults",
    "magic",
    "magic_destination",
]
