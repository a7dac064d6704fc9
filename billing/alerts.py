"""Low-credit alerts: one HTTP POST per crossing, with retries, a log line and a metric.

The wallet detects the crossing (exactly once per crossing, in the same
transaction as the debit that caused it: :class:`billing.wallet.Crossing`,
also stored as a ``credit_alerts`` row). This module delivers it after the
commit: a small JSON document POSTed to the account's ``alert_url``::

    {"event": "low_credit", "alert_id": 12, "account": "acme",
     "balance": "0.90", "threshold": "1.00",
     "balance_centi": 90, "threshold_centi": 100, "at": "2026-05-09T07:35:25Z"}

2xx is delivered; anything else (status, refused connection, timeout) is
retried with exponential backoff up to ``retries`` times. Delivery is at
least once: the receiver may see an ``alert_id`` twice if the hub restarts
between the POST and recording it (``on_sent`` -> ``wallet.mark_alert_sent``),
so it should de-duplicate on ``alert_id``. Without an ``alert_url`` the alert
is only logged and counted.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO

from twisted.internet import defer, protocol, task
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from staffetta.billing.money import format_credits
from staffetta.billing.wallet import Crossing

log = logging.getLogger("staffetta.billing.alerts")

#: Metric events passed to ``on_metric(event, crossing)``.
EMITTED, DELIVERED, RETRIED, FAILED = "emitted", "delivered", "retried", "failed"


def alert_document(c: Crossing) -> dict:
    return {
        "event": "low_credit",
        "alert_id": c.alert_id,
        "account": c.account_name,
        "balance": format_credits(c.balance),
        "threshold": format_credits(c.threshold),
        "balance_centi": c.balance,
        "threshold_centi": c.threshold,
        "at": datetime.fromtimestamp(c.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class _Discard(protocol.Protocol):
    """Reads a response body to its end (so the connection can be reused) and keeps none of it."""

    def __init__(self, done: defer.Deferred) -> None:
        self.done = done

    def connectionLost(self, reason=None) -> None:  # noqa: N802
        self.done.callback(None)


def _drain(response) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    response.deliverBody(_Discard(d))
    return d


class LowCreditAlerter:
    """Deliver :class:`Crossing` alerts; call :meth:`notify` in the reactor after the commit."""

    def __init__(
        self,
        reactor,
        agent=None,
        *,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        timeout: float = 10.0,
        on_metric: Callable[[str, Crossing], None] | None = None,
        on_sent: Callable[[Crossing], None] | None = None,
        remember: int = 10_000,
    ) -> None:
        self.reactor = reactor
        self.agent = agent if agent is not None else Agent(reactor)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.on_metric = on_metric
        self.on_sent = on_sent
        self._seen: OrderedDict[int, None] = OrderedDict()  # bounded: recent alert ids
        self._remember = remember
        self.in_flight: dict[int, defer.Deferred] = {}

    def _metric(self, event: str, c: Crossing) -> None:
        if self.on_metric is not None:
            try:
                self.on_metric(event, c)
            except Exception:  # a metrics bug must not stop an alert
                log.exception("low-credit metric hook failed")

    def notify(self, crossing: Crossing) -> defer.Deferred:
        """Log, count and POST one alert; fires True (delivered or no URL) or False (gave up).

        The same ``alert_id`` twice (e.g. the startup re-send of pending alerts
        racing a live one) is sent once.
        """
        cid = crossing.alert_id
        if cid in self.in_flight:
            return self.in_flight[cid]
        if cid in self._seen:
            return defer.succeed(True)
        self._seen[cid] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        log.warning(
            "low credit: account %s balance %s is below its threshold %s (alert %d)",
            crossing.account_name, format_credits(crossing.balance),
            format_credits(crossing.threshold), cid,
        )
        self._metric(EMITTED, crossing)
        d = self._deliver(crossing)
        self.in_flight[cid] = d

        def done(ok):
            self.in_flight.pop(cid, None)
            if ok and self.on_sent is not None:
                try:
                    self.on_sent(crossing)
                except Exception:  # recording it failed: pending_alerts() re-sends it later
                    log.exception("recording low-credit alert %d as sent failed", cid)
            return ok

        d.addBoth(done)
        return d

    @defer.inlineCallbacks
    def _deliver(self, c: Crossing):
        if not c.alert_url:
            return True
        body = json.dumps(alert_document(c)).encode()
        headers = Headers({
            b"Content-Type": [b"application/json"],
            b"User-Agent": [b"Staffetta low-credit alert"],
            b"X-Staffetta-Alert-Id": [str(c.alert_id).encode()],
        })
        attempt = 0
        while True:
            try:
                d = self.agent.request(b"POST", c.alert_url.encode(), headers,
                                       FileBodyProducer(BytesIO(body)))
                d.addTimeout(self.timeout, self.reactor)
                response = yield d
                yield _drain(response).addTimeout(self.timeout, self.reactor)
                if 200 <= response.code < 300:
                    self._metric(DELIVERED, c)
                    log.info("low-credit alert %d for %s delivered to %s", c.alert_id,
                             c.account_name, c.alert_url)
                    return True
                why = f"HTTP {response.code}"
            except Exception as exc:  # refused, reset, timeout, bad URL: all retried
                why = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            if attempt >= self.retries:
                self._metric(FAILED, c)
                log.error("low-credit alert %d for %s not delivered to %s after %d attempts (%s)",
                          c.alert_id, c.account_name, c.alert_url, attempt + 1, why)
                return False
            delay = min(self.backoff * (2 ** attempt), self.max_backoff)
            attempt += 1
            self._metric(RETRIED, c)
            log.info("low-credit alert %d for %s: %s; retry %d in %.1fs", c.alert_id,
                     c.account_name, why, attempt, delay)
            yield task.deferLater(self.reactor, delay, lambda: None)
