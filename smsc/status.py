"""The operator's live view over HTTP, beside ``/metrics``: ``/status/connectors`` and ``/status/routes``.

Why JSON on the metrics listener: the command line (``staffetta connectors``,
``route explain``, ``route reload``) runs in another process and needs what the
hub holds *now* (is a carrier bound, which table is in force); Prometheus
families are for graphs, not for "is sim up". The resource reads two callables
given by the hub, so it holds no state and is tested without one.

``/status/routes`` is the table in force as :func:`table_doc` gives it: each
rule as it would be written in ``routes:``, so ``route explain`` rebuilds the
hub's own table with the one parser (:func:`table_from_doc`) and ``route
reload`` says which rules changed (:func:`table_changes`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from twisted.web import resource

from staffetta.conf.settings import Settings, UpstreamSettings
from staffetta.router.routes import route_table
from staffetta.router.table import DAYS, RouteTable, Rule, table_from_config

log = logging.getLogger(__name__)

CONNECTORS_PATH = b"/status/connectors"
ROUTES_PATH = b"/status/routes"


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def rule_doc(rule: Rule) -> dict[str, Any]:
    """A rule as the operator wrote it: only the conditions it names, its action, its options."""
    match: dict[str, Any] = {}
    for key, value in (("account", rule.accounts), ("group", rule.groups), ("country", rule.countries),
                       ("mccmnc", rule.mccmnc), ("type", rule.types), ("sender", rule.senders)):
        if value is not None:
            match[key] = sorted(value)
    if rule.prefixes is not None:
        match["prefix"] = list(rule.prefixes)
    if rule.hours is not None:
        match["hours"] = [f"{_hhmm(s)}-{_hhmm(e)}" for s, e in rule.hours]
    if rule.days is not None:
        match["days"] = [DAYS[d] for d in sorted(rule.days)]
    doc: dict[str, Any] = {"index": rule.index, "name": rule.name, "match": match, "strategy": rule.strategy,
                           "connectors": list(rule.connectors)}
    if rule.strategy == "weighted":
        doc["weights"] = dict(zip(rule.connectors, rule.weights, strict=True))
    if rule.strategy == "refuse":
        doc["status"] = f"0x{rule.status:08X}"
    else:
        doc["timeout"] = rule.timeout
        doc["failover_on"] = [f"0x{s:08X}" for s in sorted(rule.failover_on)]
    if rule.strategy == "least-cost":
        doc["prices"] = {c: {k: str(v) for k, v in t.items()} for c, t in rule.prices.items()}
        doc["floor"] = rule.floor
    doc["two_way"] = rule.two_way
    doc["hlr"] = rule.hlr
    return doc


def table_doc(table: RouteTable, upstreams: Sequence[UpstreamSettings], *, default: bool = False,
              account_groups: dict | None = None) -> dict[str, Any]:
    """The table and the connectors it may use, as ``/status/routes`` serves it."""
    return {
        "timezone": table.timezone,
        "default": default,  # no routes: in the config, the one built-in rule
        "rules": [rule_doc(r) for r in table.rules],
        "connectors": [{"name": u.name, "host": u.host, "port": u.port} for u in upstreams],
        "account_groups": account_groups or {},
    }


def routes_doc(settings: Settings) -> dict[str, Any]:
    """The document of the table ``settings`` describe (raises ConfigError on a bad table)."""
    return table_doc(route_table(settings), settings.upstreams, default=settings.routes is None,
                     account_groups=settings.account_groups)


def table_from_doc(doc: dict[str, Any]) -> RouteTable:
    """The table a ``/status/routes`` document shows, rebuilt (``route explain`` decides with the hub's own).

    A rule's document is its config (plus its index), so the table is built
    by the one parser, router.table.table_from_config.
    """
    names = [c["name"] for c in doc["connectors"]]
    routes = None if doc.get("default") else [
        {k: v for k, v in r.items() if k != "index" and not (k == "connectors" and not v)}  # a refuse rule's []
        for r in doc["rules"]]
    return table_from_config(routes, names, timezone=doc["timezone"], where="/status/routes rules")


def table_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    """Rules and connectors added, removed or changed between two documents, by name."""
    out: dict[str, list[str]] = {}
    for kind in ("rules", "connectors"):
        old = {d["name"]: d for d in before.get(kind, [])}
        new = {d["name"]: d for d in after.get(kind, [])}
        out[f"{kind}_added"] = [n for n in new if n not in old]
        out[f"{kind}_removed"] = [n for n in old if n not in new]
        out[f"{kind}_changed"] = [n for n in new if n in old and old[n] != new[n]]
    if before.get("timezone") != after.get("timezone"):
        out["timezone"] = [str(before.get("timezone")), str(after.get("timezone"))]
    return out


class StatusResource(resource.Resource):
    """``/status/connectors`` and ``/status/routes`` as JSON; any other path goes to ``fallback``.

    ``connectors()`` returns one dict per connector (``Hub.connector_states``),
    ``routes()`` the table document (:func:`routes_doc` of the settings in
    force). A callable that fails answers 500 with one line, logged; the
    reactor carries on.
    """

    isLeaf = True

    def __init__(self, connectors: Callable[[], list[dict[str, Any]]], routes: Callable[[], dict[str, Any]],
                 fallback: resource.Resource) -> None:
        super().__init__()
        self.views = {CONNECTORS_PATH: connectors, ROUTES_PATH: routes}
        self.fallback = fallback

    def render_GET(self, request):  # noqa: N802 - twisted.web's name
        path = request.path.rstrip(b"/") or b"/"
        view = self.views.get(path)
        if view is None and not path.startswith(b"/status"):
            return self.fallback.render(request)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if view is None:
            request.setResponseCode(404)
            body: Any = {"error": "not found: try /status/connectors or /status/routes"}
        else:
            try:
                body = view()
            except Exception as exc:  # an operator page must never take the hub down
                log.error("%s failed: %s: %s", path.decode(), type(exc).__name__, exc)
                request.setResponseCode(500)
                body = {"error": f"{type(exc).__name__}: {exc}"}
        return json.dumps(body, indent=1, default=str).encode() + b"\n"


__all__ = ["StatusResource", "routes_doc", "table_changes", "table_doc", "table_from_doc"]
