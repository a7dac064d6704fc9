"""HlrService: the one door to HLR answers for the submit path and the CLI.

``lookup(number, account_id, mode=...)`` answers from the cache when it may
and is fresh enough (free), else asks the provider (charged to the account
that asked, also when the answer is ``unknown`` or ``invalid``). A provider
failure is an ``error`` result: not cached, not charged. Nothing here blocks
the reactor: memory hits return an already-fired Deferred, SQL runs in a
thread or the group-commit writer, Redis and the provider are asynchronous.

Modes: ``cached`` (a fresh cached answer, else a lookup), ``always`` (a lookup
even when a fresh answer is cached). Either way, a lookup of the same number
already in flight is shared: only the account whose request started it pays.

``charge(account_id, amount, number) -> Deferred[bool]`` is injected. False
means the account cannot pay: the answer is neither cached nor returned,
:class:`ChargeRefused` is raised (the submit path answers with the account's
no-credit status). :func:`writer_charge` turns an in-transaction charge
function (e.g. one over ``billing.wallet.debit_batch``) into such a callable
on the group-commit writer.

:func:`decide` is the submit path's policy: ``unknown``/``invalid`` ->
``refuse_dest`` (ESME_RINVDSTADR); ``error`` -> ``send`` on ``fail-open`` (the
prefix's network), ``refuse_syserr`` (ESME_RSYSERR) on ``fail-closed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from staffetta.hlr.cache import Coalescer, HlrCache
from staffetta.hlr.model import (
    ABSENT,
    DAY,
    ERROR,
    INVALID,
    LOCAL,
    NULL_METRICS,
    UNKNOWN,
    VALID,
    HlrResult,
    error_result,
)
from staffetta.hlr.providers import ProviderError
from staffetta.pdu.constants import Status

log = logging.getLogger(__name__)

CACHED, ALWAYS, OFF = "cached", "always", "off"
MODES = (OFF, CACHED, ALWAYS)
SEND, REFUSE_DEST, REFUSE_SYSERR = "send", "refuse_dest", "refuse_syserr"
FAIL_OPEN, FAIL_CLOSED = "fail-open", "fail-closed"
FAILURE_POLICIES = (FAIL_OPEN, FAIL_CLOSED)
DEFAULT_PRICE = 50  # centi-credits (0.50 credits), billing's DEFAULT_HLR_PRICE
DEFAULT_MAX_AGE = 30 * DAY

#: ``charge(account_id, amount, number) -> Deferred[bool]``
Charge = Callable[[int, int, str], defer.Deferred]
#: ``charge_tx(conn, [(account_id, amount, number), ...]) -> [paid, ...]`` inside the caller's transaction
ChargeTx = Callable[[Any, list[tuple[int, int, str]]], list[bool]]


class ChargeRefused(Exception):
    """The account cannot pay for the lookup it asked for; ``result`` is withheld."""

    def __init__(self, account_id: int, number: str, amount: int) -> None:
        super().__init__(f"account {account_id}: not enough credit for an HLR lookup of {number} "
                         f"({amount} centi-credits)")
        self.account_id = account_id
        self.number = number
        self.amount = amount


def decide(result: HlrResult | None, failure_policy: str = FAIL_OPEN) -> str:
    """What the submit path does with an answer: ``send``, ``refuse_dest`` or ``refuse_syserr``."""
    if result is None:
        return SEND
    s = result.status
    if s == VALID or s == ABSENT:
        return SEND
    if s == UNKNOWN or s == INVALID:
        return REFUSE_DEST
    if failure_policy == FAIL_CLOSED:
        return REFUSE_SYSERR
    if failure_policy != FAIL_OPEN:
        raise ValueError(f"failure_policy: {failure_policy!r} is not fail-open or fail-closed")
    return SEND


_DECISION_STATUS = {SEND: None, REFUSE_DEST: int(Status.ESME_RINVDSTADR),
                    REFUSE_SYSERR: int(Status.ESME_RSYSERR)}


def decision_status(decision: str) -> int | None:
    """The submit_sm_resp command_status of a refusal (None for ``send``)."""
    return _DECISION_STATUS[decision]


def writer_charge(writer: Any, charge_tx: ChargeTx, kind: str = "hlr_charge") -> Charge:
    """A :data:`Charge` that runs ``charge_tx`` in the group commit (one transaction per batch).

    ``charge_tx`` gets ``[(account_id, amount, number), ...]`` and returns one
    bool per item, e.g. with billing::

        def charge_tx(conn, items):
            return debit_batch(conn, [Debit(a, amount, None, kind=HLR) for a, amount, _n in items])
    """
    writer.register(kind, charge_tx)

    def charge(account_id: int, amount: int, number: str) -> defer.Deferred:
        return writer.submit(kind, (account_id, amount, number))

    return charge


def _plausible(number: str) -> bool:
    return number.isdigit() and number.isascii() and 6 <= len(number) <= 15


class HlrService:
    """Cached, coalesced, charged HLR lookups.

    ``engine_or_read_fn`` is the SQLAlchemy engine the cache lives in (reads
    run in a thread), or ``read_fn(number) -> Deferred[HlrResult | None]``.
    ``writer`` (a :class:`store.writer.GroupCommitWriter`) batches the cache
    writes; without one each write runs in a thread. ``price`` is centi-credits
    per real lookup, or ``price(account_id) -> int`` (the account's plan).
    """

    def __init__(
        self,
        reactor: Any,
        engine_or_read_fn: Any,
        writer: Any = None,
        provider: Any = None,
        charge: Charge | None = None,
        *,
        price: int | Callable[[int], int] = DEFAULT_PRICE,
        max_age: float = DEFAULT_MAX_AGE,
        cache: HlrCache | None = None,
        redis_url: str | None = None,
        memory_size: int = 100_000,
        metrics: Any = None,
    ) -> None:
        if provider is None:
            raise ValueError("provider: an HLR provider is required")
        self.reactor = reactor
        self.provider = provider
        self.charge = charge
        self.price = price
        self.max_age = float(max_age)
        self.metrics = metrics if metrics is not None else NULL_METRICS
        if cache is None:
            if callable(engine_or_read_fn) and not hasattr(engine_or_read_fn, "connect"):
                cache = HlrCache(reactor, read_fn=engine_or_read_fn, writer=writer, redis_url=redis_url,
                                 memory_size=memory_size)
            else:
                cache = HlrCache(reactor, engine_or_read_fn, writer=writer, redis_url=redis_url,
                                 memory_size=memory_size)
        self.cache = cache
        self._reads = Coalescer()
        self._calls = Coalescer()
        self.hits = 0
        self.misses = 0
        self.provider_calls = 0
        self.charged = 0  # lookups charged
        self.refused = 0  # lookups the account could not pay

    # ---------------------------------------------------------------- lookup

    def lookup(self, number: str, account_id: int, *, mode: str = CACHED,
               max_age: float | None = None) -> defer.Deferred:
        """Deferred[HlrResult]; fails with :class:`ChargeRefused` when the account cannot pay."""
        if max_age is None:
            max_age = self.max_age
        if mode == CACHED:
            hit = self.cache.peek(number, max_age, self.reactor.seconds())
            if hit is not None:  # the hot path: no allocation, an already-fired Deferred
                self.hits += 1
                self.metrics.cache_hit(hit.status)
                return defer.succeed(hit)
        elif mode != ALWAYS:
            raise ValueError(f"mode: {mode!r} is not cached or always")
        return defer.Deferred.fromCoroutine(self._lookup(number, account_id, mode, max_age))

    async def _lookup(self, number: str, account_id: int, mode: str, max_age: float) -> HlrResult:
        if not _plausible(number):
            self.metrics.answered(LOCAL, INVALID)
            return HlrResult(number, INVALID, looked_up_at=self.reactor.seconds(), source=LOCAL,
                             detail="not 6-15 digits of E.164")
        if mode == CACHED:
            d, _ = self._reads.run((number, max_age), lambda: self.cache.get(number, max_age))
            hit = await d
            if hit is not None:
                self.hits += 1
                self.metrics.cache_hit(hit.status)
                return hit
            self.misses += 1
            self.metrics.cache_miss()
        d, leader = self._calls.run(number, lambda: defer.Deferred.fromCoroutine(
            self._ask_charge_store(number, account_id)))
        result, paid = await d
        if leader and not paid:
            raise ChargeRefused(account_id, number, self._price_for(account_id))
        return result

    def _price_for(self, account_id: int) -> int:
        p = self.price
        return p(account_id) if callable(p) else p

    async def _ask_charge_store(self, number: str, account_id: int) -> tuple[HlrResult, bool]:
        """The shared part: ask the provider, charge the account that started it, store the answer."""
        self.provider_calls += 1
        try:
            result = await self.provider.lookup(number)
        except ProviderError as exc:
            result = error_result(number, self.provider.name, str(exc), self.reactor.seconds())
        except defer.CancelledError:
            raise
        except Exception as exc:  # a provider bug must not take the submit path down
            log.exception("hlr provider %s failed on %s", self.provider.name, number)
            result = error_result(number, self.provider.name, f"{type(exc).__name__}: {exc}",
                                  self.reactor.seconds())
        self.metrics.answered(self.provider.name, result.status)
        if result.status == ERROR:
            return result, True  # nothing to pay for, nothing to keep
        if self.charge is not None:
            amount = self._price_for(account_id)
            if amount > 0:
                paid = await self.charge(account_id, amount, number)
                if not paid:
                    self.refused += 1
                    return result, False
                self.charged += 1
        await self.cache.put(result)
        return result, True

    # ------------------------------------------------------------- policy

    def check(self, number: str, account_id: int, *, mode: str = CACHED,
              failure_policy: str = FAIL_OPEN, max_age: float | None = None) -> defer.Deferred:
        """Deferred[(decision, HlrResult | None)] for the submit path (``mode='off'``: send, no lookup)."""
        if mode == OFF:
            return defer.succeed((SEND, None))
        if failure_policy not in FAILURE_POLICIES:
            raise ValueError(f"failure_policy: {failure_policy!r} is not fail-open or fail-closed")
        return self.lookup(number, account_id, mode=mode, max_age=max_age).addCallback(
            lambda r: (decide(r, failure_policy), r))

    def close(self) -> defer.Deferred:
        ds = [self.cache.close()]
        if hasattr(self.provider, "close"):
            ds.append(defer.maybeDeferred(self.provider.close))
        return defer.gatherResults(ds, consumeErrors=True)


__all__ = [
    "ALWAYS", "CACHED", "DEFAULT_MAX_AGE", "DEFAULT_PRICE", "FAILURE_POLICIES", "FAIL_CLOSED",
    "FAIL_OPEN", "MODES", "OFF", "REFUSE_DEST", "REFUSE_SYSERR", "SEND", "Charge", "ChargeRefused",
    "ChargeTx", "HlrService", "decide", "decision_status", "writer_charge",
]
