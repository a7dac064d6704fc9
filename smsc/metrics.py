"""Prometheus metrics of the hub, and the HTTP endpoint that serves them.

Labels are per account, command, status, connector: never per destination
number (cardinality). ``.labels()`` costs ~1.7 µs a call against ~0.35 µs for a
cached child, so hot-path children are cached in plain dicts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web import resource

from pdu.constants import command_name, status_name

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class HubMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions = Gauge(
            "staffetta_sessions_bound", "SMPP sessions bound", ["account", "bind_type"], registry=r
        )
        self.pdus = Counter(
            "staffetta_pdus", "PDUs by direction, command and status",
            ["direction", "command", "status"], registry=r,
        )
        self.submit_latency = Histogram(
            "staffetta_submit_latency_seconds", "submit_sm received to submit_sm_resp sent",
            ["account"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.submits = Counter(
            "staffetta_submits", "submit_sm answers by account and status", ["account", "status"], registry=r
        )
        self.receipts = Counter(
            "staffetta_receipts", "client receipts by account and event (queued, delivered, expired)",
            ["account", "event"], registry=r,
        )
        self.receipts_unknown = Counter(
            "staffetta_receipts_unknown", "carrier receipts for ids we do not know", ["connector"], registry=r
        )
        self.upstream_up = Gauge(
            "staffetta_upstream_up", "1 when the upstream connector is bound", ["connector"], registry=r
        )
        self.upstream_window = Gauge(
            "staffetta_upstream_window_used", "submit_sm in flight to the carrier", ["connector"], registry=r
        )
        self.upstream_queue = Gauge(
            "staffetta_upstream_queue", "messages waiting for the carrier window", ["connector"], registry=r
        )
        self.writer_batch = Histogram(
            "staffetta_writer_batch_rows", "rows per group commit",
            buckets=(1, 5, 10, 25, 50, 100, 200, 500), registry=r,
        )
        self.bind_failures = Counter(
            "staffetta_bind_failures", "refused binds by reason", ["reason"], registry=r
        )
        self.credits_debited = Counter(
            "staffetta_credits_debited", "centi-credits debited for messages", ["account", "type"], registry=r
        )
        self.credits_refunded = Counter(
            "staffetta_credits_refunded", "centi-credits refunded", ["account"], registry=r
        )
        self.rejected_for_credit = Counter(
            "staffetta_rejected_for_credit", "submit_sm refused: not enough credit or no rate",
            ["account", "reason"], registry=r,
        )
        self.balance = Gauge(
            "staffetta_balance_centicredits", "balance after the last debit or refund", ["account"], registry=r
        )
        self.low_credit_alerts = Counter(
            "staffetta_low_credit_alerts", "low-credit alerts by event (emitted, retried, delivered, failed)",
            ["account", "event"], registry=r,
        )
        self._pdu_children: dict[tuple[bool, int, int], object] = {}
        self._children: dict[tuple, object] = {}
        self.account_names: dict[int, str] = {}

    def _child(self, metric, *labels):
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    # hot path ------------------------------------------------------------

    def on_pdu(self, incoming: bool, command_id: int, status: int) -> None:
        key = (incoming, command_id, status)
        c = self._pdu_children.get(key)
        if c is None:
            c = self._pdu_children[key] = self.pdus.labels(
                "in" if incoming else "out", command_name(command_id), status_name(status)
            )
        c.inc()

    def submitted(self, account: str, status: int, seconds: float) -> None:
        self._child(self.submit_latency, account).observe(seconds)
        self._child(self.submits, account, status_name(status)).inc()

    def receipt_event(self, event: str, account_id: int) -> None:
        name = self.account_names.get(account_id, str(account_id))
        self._child(self.receipts, name, event).inc()

    def debited(self, account: str, msg_type: str, amount: int) -> None:
        self._child(self.credits_debited, account, msg_type).inc(amount)

    def refunded(self, account_id: int, amount: int) -> None:
        self._child(self.credits_refunded, self.account_names.get(account_id, str(account_id))).inc(amount)

    def balances(self, balances: dict[int, int]) -> None:
        for account_id, value in balances.items():
            self._child(self.balance, self.account_names.get(account_id, str(account_id))).set(value)

    def receipt_unknown(self, connector: str) -> None:
        self._child(self.receipts_unknown, connector).inc()

    def session_bound(self, account: str, bind_type: str, delta: int) -> None:
        self._child(self.sessions, account, bind_type).inc(delta)

    def connector_up(self, name: str, up: bool) -> None:
        self._child(self.upstream_up, name).set(1 if up else 0)

    def batch(self, rows: int, seconds: float) -> None:
        self.writer_batch.observe(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(resource.Resource):
    isLeaf = True

    def __init__(self, metrics: HubMetrics, refresh=None) -> None:
        super().__init__()
        self.metrics = metrics
        self.refresh = refresh

    def render_GET(self, request):  # noqa: N802
        path = request.path
        if path == b"/health":
            request.setHeader(b"content-type", b"text/plain")
            return b"ok\n"
        if path != b"/metrics":
            request.setResponseCode(404)
            return b"not found: try /metrics or /health\n"
        if self.refresh is not None:
            self.refresh()
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.render()
