"""Low-credit alert delivery against a real twisted.web server on 127.0.0.1 (A62)."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web import resource, server

from staffetta.billing import wallet
from staffetta.billing.alerts import DELIVERED, EMITTED, FAILED, RETRIED, LowCreditAlerter, alert_document
from staffetta.billing.wallet import Crossing, Debit, Report
from tests.billing.conftest import new_account

inline = pytest_twisted.inlineCallbacks


class Receiver(resource.Resource):
    isLeaf = True

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.status = status
        self.posts: list[tuple[dict, dict]] = []
        self.arrived: defer.DeferredQueue = defer.DeferredQueue()

    def render_POST(self, request):  # noqa: N802
        body = json.loads(request.content.read())
        headers = {k.decode(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.posts.append((body, headers))
        self.arrived.put(body)
        if len(self.posts) <= self.fail_first:
            request.setResponseCode(self.status)
            return b"busy"
        return b"ok"


def serve(receiver: Receiver):
    site = server.Site(receiver)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return port, f"http://127.0.0.1:{port.getHost().port}/alerts"


def crossing(url: str | None, alert_id: int = 1) -> Crossing:
    return Crossing(alert_id, 7, "acme", url, 90, 100, 1_700_000_000)


def make(**kw):
    events: list[str] = []
    sent: list[int] = []
    alerter = LowCreditAlerter(reactor, backoff=0.01, timeout=5,
                               on_metric=lambda e, c: events.append(e),
                               on_sent=lambda c: sent.append(c.alert_id), **kw)
    return alerter, events, sent


def test_document_has_no_floats() -> None:
    doc = alert_document(crossing("http://x"))
    assert doc == {"event": "low_credit", "alert_id": 1, "account": "acme", "balance": "0.90",
                   "threshold": "1.00", "balance_centi": 90, "threshold_centi": 100,
                   "at": "2023-11-14T22:13:20Z"}


@inline
def test_delivered_once():
    rx = Receiver()
    port, url = serve(rx)
    try:
        alerter, events, sent = make()
        ok = yield alerter.notify(crossing(url))
        assert ok is True
        again = yield alerter.notify(crossing(url))  # the same alert id is not sent twice
        assert again is True
        assert len(rx.posts) == 1
        body, headers = rx.posts[0]
        assert body["account"] == "acme" and body["balance"] == "0.90" and body["alert_id"] == 1
        assert headers["Content-Type"] == "application/json" and headers["X-Staffetta-Alert-Id"] == "1"
        assert events == [EMITTED, DELIVERED]
        assert sent == [1]
    finally:
        yield port.stopListening()


@inline
def test_retries_with_backoff_then_delivered():
    rx = Receiver(fail_first=2)
    port, url = serve(rx)
    try:
        alerter, events, sent = make(retries=5)
        ok = yield alerter.notify(crossing(url))
        assert ok is True
        assert len(rx.posts) == 3
        assert events == [EMITTED, RETRIED, RETRIED, DELIVERED]
        assert sent == [1]
    finally:
        yield port.stopListening()


@inline
def test_gives_up_and_leaves_it_pending():
    rx = Receiver(fail_first=100, status=500)
    port, url = serve(rx)
    try:
        alerter, events, sent = make(retries=2)
        ok = yield alerter.notify(crossing(url))
        assert ok is False
        assert len(rx.posts) == 3
        assert events == [EMITTED, RETRIED, RETRIED, FAILED]
        assert sent == []  # not marked sent: wallet.pending_alerts() still lists it
    finally:
        yield port.stopListening()


@inline
def test_connection_refused_is_retried():
    rx = Receiver()
    port, url = serve(rx)
    yield port.stopListening()  # nobody listens there any more
    alerter, events, sent = make(retries=1)
    ok = yield alerter.notify(crossing(url))
    assert ok is False and events == [EMITTED, RETRIED, FAILED] and sent == []


@inline
def test_concurrent_notify_of_one_alert_posts_once():
    rx = Receiver()
    port, url = serve(rx)
    try:
        alerter, events, sent = make()
        d1 = alerter.notify(crossing(url, 5))
        d2 = alerter.notify(crossing(url, 5))
        d3 = alerter.notify(crossing(url, 6))
        got = yield defer.gatherResults([d1, d2, d3])
        assert got == [True, True, True]
        assert sorted(b["alert_id"] for b, _ in rx.posts) == [5, 6]
        assert sorted(sent) == [5, 6]
    finally:
        yield port.stopListening()


@inline
def test_without_url_log_and_metric_only(caplog):
    alerter, events, sent = make()
    with caplog.at_level("WARNING", logger="staffetta.billing.alerts"):
        ok = yield alerter.notify(crossing(None))
    assert ok is True and events == [EMITTED] and sent == [1]
    assert any("low credit: account acme balance 0.90 is below its threshold 1.00" in r.getMessage()
               for r in caplog.records)


@inline
def test_wallet_crossing_to_post_exactly_once(engine):
    """From the debit that crosses to one POST; further debits below the threshold post nothing."""
    rx = Receiver()
    port, url = serve(rx)
    try:
        with engine.begin() as c:
            a = new_account(c, "acme", alert_url=url)
            wallet.topup(c, a, 1000, now=1)
            wallet.set_threshold(c, a, 500)
        alerter, events, sent = make()
        for mid in range(1, 6):
            r = Report()
            with engine.begin() as c:
                wallet.debit_batch(c, [Debit(a, 160, mid)], now=2, report=r)
            for x in r.crossed:  # after the commit, as the hub does
                yield alerter.notify(x)
        with engine.begin() as c:
            for alert_id in sent:
                wallet.mark_alert_sent(c, alert_id, 3)
            assert wallet.pending_alerts(c) == []
        assert len(rx.posts) == 1 and rx.posts[0][0]["balance"] == "3.60"
    finally:
        yield port.stopListening()
