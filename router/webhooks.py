"""HTTP delivery of MO to an account's URL: signed JSON, retried with back-off, then a dead letter.

The signature (docs/two-way.md "Webhooks"), in the manner of Stripe's::

    Staffetta-Signature: t=1764509400,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

``v1`` is the hex HMAC-SHA256, keyed with the account's secret, of the
timestamp, a ``.`` and the raw body: ``f"{t}.".encode() + body``. A receiver
recomputes it over the bytes it got, compares in constant time
(:func:`verify`) and refuses a timestamp more than 5 minutes away from its
clock (replays). ``Staffetta-Delivery`` carries the delivery id: a receiver
that saw it already answers 2xx and drops it (delivery is at least once).

Retries: any answer but a 2xx, or none within ``timeout``, is retried after
``first_retry`` seconds, doubling, at most ``max_delay`` apart, until
``retry_for`` (24 hours) after the MO arrived; then the delivery is dead
(stored as such, counted, logged). Each attempt's outcome is committed
(writer kind ``webhook_state``), so pending deliveries survive a restart and
resume where they were (:meth:`Webhooks.load`). Memory is bounded: at most
``max_in_memory`` deliveries are scheduled in memory, the rest wait in the
table and are read back as room frees.

The URL and secret are read from the account's live settings at each
attempt: a corrected URL applies to the retries already waiting.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer, protocol
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from staffetta.router.mo_store import DEAD, DELIVERED, PENDING, WebhookJob

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Staffetta-Signature"
DELIVERY_HEADER = "Staffetta-Delivery"
#: A receiver refuses a signature whose timestamp is further than this from its clock.
TOLERANCE = 300


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The header value: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str | bytes, header: str, body: bytes, now: float | None = None,
           tolerance: float = TOLERANCE) -> bool:
    """A receiver's check of :data:`SIGNATURE_HEADER` (the example of docs/two-way.md)."""
    try:
        items = dict(part.split("=", 1) for part in header.split(","))
        t = int(items["t"])
        got = items["v1"]
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - t) > tolerance:
        return False
    want = signature(secret, t, body).split("v1=", 1)[1]
    return hmac.compare_digest(want, got)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When to try again: ``first_retry`` seconds, doubling, capped at ``max_delay``, for ``retry_for``."""

    first_retry: float = 10.0
    max_delay: float = 3600.0
    retry_for: float = 86400.0

    def next_at(self, created_at: float, attempts: int, now: float) -> float | None:
        """After ``attempts`` failed attempts: the next one's time, or None (give up: dead letter)."""
        delay = min(self.first_retry * 2 ** (attempts - 1), self.max_delay)
        due = now + delay
        if due > created_at + self.retry_for:
            return None
        return due


@implementer(IBodyProducer)
class _Bytes:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer):  # noqa: N802 - Twisted's name
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


class _Drain(protocol.Protocol):
    """Reads a response body to its end, keeping nothing (only the status matters)."""

    def __init__(self, done: defer.Deferred) -> None:
        self.done = done

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        pass

    def connectionLost(self, reason=None) -> None:  # noqa: N802
        self.done.callback(None)


class HttpPoster:
    """POST with Twisted's Agent over a persistent connection pool; fires with the status code."""

    def __init__(self, reactor, timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 8
        self.agent = Agent(reactor, pool=self.pool, connectTimeout=timeout)

    def post(self, url: str, headers: dict[str, str], body: bytes) -> defer.Deferred:
        h = Headers({k.encode(): [v.encode()] for k, v in headers.items()})
        d = self.agent.request(b"POST", url.encode(), h, _Bytes(body))

        def got(response):
            # Read (and drop) the body so that the connection goes back to the pool.
            done = defer.Deferred()
            response.deliverBody(_Drain(done))
            return done.addBoth(lambda _: response.code)

        d.addCallback(got)
        d.addTimeout(self.timeout, self.reactor)
        return d

    def close(self) -> defer.Deferred:
        return self.pool.closeCachedConnections()


class Webhooks:
    """The scheduler of HTTP deliveries: due ones are sent (at most ``concurrency`` at once).

    ``target_of(account_id)`` gives (url, secret) from the account's live
    settings, or None; ``post(url, headers, body)`` fires with the HTTP status.
    ``load_pending(limit, exclude)`` reads pending rows back from the table.
    ``metrics`` (optional) takes ``webhook(account_id, event)`` with event
    delivered | retried | dead.
    """

    def __init__(self, writer, reactor, target_of: Callable[[int], tuple[str, str] | None],
                 post: Callable[[str, dict[str, str], bytes], defer.Deferred], *,
                 schedule: Schedule = Schedule(), concurrency: int = 64, max_in_memory: int = 100_000,
                 load_pending: Callable[[int, frozenset[int]], defer.Deferred] | None = None,
                 metrics=None) -> None:
        self.writer = writer
        self.reactor = reactor
        self.target_of = target_of
        self.post = post
        self.schedule = schedule
        self.concurrency = concurrency
        self.max_in_memory = max_in_memory
        self._load_pending = load_pending
        self.metrics = metrics
        self._heap: list[tuple[float, int]] = []
        self._jobs: dict[int, WebhookJob] = {}
        self._in_flight = 0
        self._timer = None
        self._spilled = False  # the table may hold pending rows that are not in memory
        self._loading = False
        self._stopped = False

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ----------------------------------------------------------------- inputs

    def add(self, job: WebhookJob) -> None:
        """A committed delivery (new, or read back from the table)."""
        if job.id in self._jobs:
            return
        if len(self._jobs) >= self.max_in_memory:
            self._spilled = True  # it waits in the table
            return
        self._jobs[job.id] = job
        heapq.heappush(self._heap, (job.next_at, job.id))
        self._arm()

    def load(self, jobs: list[WebhookJob]) -> None:
        for job in jobs:
            self.add(job)

    def refill(self) -> None:
        """Read pending rows that are not in memory (at start, after a replay, when room frees)."""
        if self._load_pending is None or self._loading or self._stopped:
            return
        room = self.max_in_memory - len(self._jobs)
        if room <= 0:
            return
        self._loading = True
        self._spilled = False

        def loaded(jobs: list[WebhookJob]) -> None:
            self._loading = False
            if len(jobs) >= room:
                self._spilled = True
            self.load(jobs)

        def failed(f) -> None:
            self._loading = False
            self._spilled = True
            log.error("reading pending webhooks failed: %s", f.getErrorMessage())

        self._load_pending(room, frozenset(self._jobs)).addCallbacks(loaded, failed)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # ---------------------------------------------------------------- sending

    def _arm(self) -> None:
        if self._stopped or not self._heap or self._in_flight >= self.concurrency:
            return
        due = self._heap[0][0]
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= due:
                return
            self._timer.cancel()
        self._timer = self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.reactor.seconds()
        heap = self._heap
        while heap and heap[0][0] <= now and self._in_flight < self.concurrency:
            _, jid = heapq.heappop(heap)
            job = self._jobs.get(jid)
            if job is not None:
                self._send(job, now)
        self._arm()

    def _send(self, job: WebhookJob, now: float) -> None:
        target = self.target_of(job.account_id)
        if target is None:
            self._failed(job, "no webhook URL", now)
            return
        url, secret = target
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(secret or "", int(self.reactor.seconds()), job.body),
            DELIVERY_HEADER: str(job.id),
            "User-Agent": "Staffetta-Webhook/1",
        }
        self._in_flight += 1
        try:
            d = self.post(url, headers, job.body)
        except Exception as exc:  # a URL the agent refuses outright
            d = defer.fail(exc)

        def answered(code: int) -> None:
            self._in_flight -= 1
            if 200 <= code < 300:
                self._done(job, str(code))
            else:
                self._failed(job, f"HTTP {code}", self.reactor.seconds())
            self._arm()

        def error(f) -> None:
            self._in_flight -= 1
            self._failed(job, f.getErrorMessage()[:40] or f.type.__name__, self.reactor.seconds())
            self._arm()

        d.addCallbacks(answered, error)

    def _done(self, job: WebhookJob, status: str) -> None:
        self._jobs.pop(job.id, None)
        job.attempts += 1
        job.state = DELIVERED
        self.writer.enqueue("webhook_state",
                            (job.id, DELIVERED, job.attempts, job.next_at, status, self.reactor.seconds()))
        self._event(job, "delivered")
        if self._spilled:
            self.refill()

    def _failed(self, job: WebhookJob, status: str, now: float) -> None:
        job.attempts += 1
        due = self.schedule.next_at(job.created_at, job.attempts, now)
        if due is None:
            self._jobs.pop(job.id, None)
            job.state = DEAD
            log.warning("webhook %d of MO %d dead after %d attempts (last: %s)", job.id, job.mo_id,
                        job.attempts, status)
            self.writer.enqueue("webhook_state", (job.id, DEAD, job.attempts, job.next_at, status, now))
            self._event(job, "dead")
            if self._spilled:
                self.refill()
            return
        job.next_at = due
        self.writer.enqueue("webhook_state", (job.id, PENDING, job.attempts, due, status, None))
        self._event(job, "retried")
        heapq.heappush(self._heap, (due, job.id))

    def _event(self, job: WebhookJob, event: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook(job.account_id, event)
