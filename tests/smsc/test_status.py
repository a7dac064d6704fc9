"""/status/connectors and /status/routes (smsc/status.py) over real HTTP, beside /metrics and /health."""

from __future__ import annotations

import json

import pytest_twisted
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.web import server
from twisted.web.client import Agent, readBody

from staffetta.conf.settings import from_dict
from staffetta.router.routes import route_table
from staffetta.smsc.metrics import HubMetrics, MetricsResource
from staffetta.smsc.status import StatusResource, routes_doc, table_changes, table_from_doc

UPSTREAMS = [
    {"name": n, "host": "127.0.0.1", "port": 2776 + i, "system_id": "x", "password": "y"}
    for i, n in enumerate(("a", "b", "c"))
]
ROUTES = [
    {"name": "it", "match": {"country": "it", "hours": "08:00-20:00", "days": ["mon", "tue"]},
     "connectors": ["a", "b"]},
    {"name": "split", "match": {"prefix": ["44", "447"]}, "connectors": ["a", "b"], "strategy": "weighted",
     "weights": {"a": 3, "b": 1}},
    {"name": "cheap", "match": {"country": ["FR", "DE"]}, "connectors": ["a", "c"], "strategy": "least-cost",
     "prices": {"a": {"FR": 0.01}, "c": {"*": "0.02"}}, "floor": 0.8},
    {"name": "no-spam", "match": {"sender": "SPAM"}, "strategy": "refuse", "status": "ESME_RINVSRCADR"},
]
STATES = [{"name": "a", "host": "127.0.0.1", "port": 2776, "up": True, "sessions": 1, "window": 3,
           "window_size": 50, "queue": 0, "throughput": 0, "last_error": None, "delivery_ratio": 0.97}]


def settings(routes=ROUTES, **kw):
    return from_dict({"upstreams": UPSTREAMS, "routes": routes, **kw})


def _get(port, path: str):
    agent = Agent(reactor)
    url = f"http://127.0.0.1:{port.getHost().port}{path}".encode()
    d = agent.request(b"GET", url)

    def body(resp):
        return readBody(resp).addCallback(lambda b: (resp.code, resp.headers.getRawHeaders(b"content-type"), b))

    return d.addCallback(body)


@pytest_twisted.inlineCallbacks
def test_connectors_and_routes_as_json_beside_metrics_and_health():
    calls = []

    def connectors():
        calls.append(1)
        return STATES

    s = settings()
    port = reactor.listenTCP(0, server.Site(StatusResource(connectors, lambda: routes_doc(s),
                                                           MetricsResource(HubMetrics()))),
                             interface="127.0.0.1")
    try:
        code, ctype, body = yield _get(port, "/status/connectors")
        assert code == 200 and ctype == [b"application/json"]
        assert json.loads(body) == STATES and calls == [1]  # read live, per request
        code, _, body = yield _get(port, "/status/routes")
        assert code == 200 and json.loads(body) == json.loads(json.dumps(routes_doc(s)))
        code, _, body = yield _get(port, "/metrics")
        assert code == 200 and b"staffetta_" in body
        code, _, body = yield _get(port, "/health")
        assert (code, body) == (200, b"ok\n")
        code, ctype, body = yield _get(port, "/status/nope")
        assert code == 404 and ctype == [b"application/json"] and "try /status/connectors" in json.loads(body)["error"]
        code, _, body = yield _get(port, "/elsewhere")
        assert code == 404 and body.startswith(b"not found: try /metrics")
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_failing_state_callable_is_a_500_with_one_line_and_the_server_goes_on():
    def broken():
        raise RuntimeError("connectors not ready")

    port = reactor.listenTCP(0, server.Site(StatusResource(broken, lambda: {"rules": []},
                                                           MetricsResource(HubMetrics()))),
                             interface="127.0.0.1")
    try:
        code, _, body = yield _get(port, "/status/connectors")
        assert code == 500 and json.loads(body) == {"error": "RuntimeError: connectors not ready"}
        code, _, body = yield _get(port, "/status/routes")
        assert code == 200 and json.loads(body) == {"rules": []}
    finally:
        yield port.stopListening()


def test_the_routes_document_says_what_the_operator_wrote():
    doc = routes_doc(settings())
    assert doc["timezone"] == "UTC" and doc["default"] is False
    assert [c["name"] for c in doc["connectors"]] == ["a", "b", "c"]
    it, split, cheap, refuse = doc["rules"]
    assert it["match"] == {"country": ["IT"], "hours": ["08:00-20:00"], "days": ["mon", "tue"]}
    assert it["strategy"] == "failover" and it["connectors"] == ["a", "b"] and "0x00000058" in it["failover_on"]
    assert split["match"] == {"prefix": ["447", "44"]} and split["weights"] == {"a": 3, "b": 1}
    assert cheap["prices"] == {"a": {"FR": "0.01"}, "c": {"*": "0.02"}} and cheap["floor"] == 0.8
    assert refuse == {"index": 3, "name": "no-spam", "match": {"sender": ["SPAM"]}, "strategy": "refuse",
                      "connectors": [], "status": "0x0000000A", "two_way": False, "hlr": False}
    json.dumps(doc)  # served as is


def test_the_document_rebuilds_the_same_table():
    """``route explain`` decides with the running hub's table, rebuilt from /status/routes."""
    routes = [*ROUTES, {"name": "ported", "match": {"mccmnc": ["22210"]}, "connectors": ["c"], "strategy": "single",
                        "failover_on": ["ESME_RSYSERR"], "timeout": 5, "two_way": True},
              {"name": "rr", "match": {"type": "REPLY", "account": ["x", "y"]}, "connectors": ["c", "a"],
               "strategy": "round-robin", "hlr": True}]
    for s in (settings(routes, route_timezone="Europe/Rome"), settings(None)):
        doc = json.loads(json.dumps(routes_doc(s)))  # as it travels
        rebuilt = table_from_doc(doc)
        assert rebuilt.rules == route_table(s).rules and rebuilt.timezone == s.route_timezone


_names = st.lists(st.sampled_from(["acme", "bank", "shop"]), min_size=1, max_size=2, unique=True)
_conditions = st.fixed_dictionaries({}, optional={
    "account": _names, "group": st.just(["gold"]), "prefix": st.lists(st.sampled_from(["39", "393", "44", "1"]),
                                                                     min_size=1, max_size=2, unique=True),
    "country": st.lists(st.sampled_from(["IT", "FR", "GB"]), min_size=1, max_size=2, unique=True),
    "mccmnc": st.lists(st.sampled_from(["22201", "22210", "234015"]), min_size=1, max_size=2, unique=True),
    "type": st.lists(st.sampled_from(["SMART", "PRO", "REPLY"]), min_size=1, max_size=3, unique=True),
    "sender": st.just(["Acme", "393331112222"]), "hours": st.sampled_from(["08:00-20:00", "22:00-06:00"]),
    "days": st.lists(st.sampled_from(["mon", "sat", "sun"]), min_size=1, max_size=3, unique=True),
})


@st.composite
def _rule(draw, i: int) -> dict:
    strategy = draw(st.sampled_from(["single", "failover", "round-robin", "weighted", "least-cost", "refuse"]))
    rule: dict = {"name": f"r{i}", "match": draw(_conditions), "strategy": strategy}
    conns = ["a"] if strategy == "single" else draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1,
                                                              max_size=3, unique=True))
    if strategy == "refuse":
        rule["status"] = draw(st.sampled_from(["ESME_RINVSRCADR", 0x403, "0x45"]))
    else:
        rule["connectors"] = conns
        rule["timeout"] = draw(st.sampled_from([5, 30, 2.5]))
        if draw(st.booleans()):
            rule["failover_on"] = ["ESME_RSYSERR", 0x58]
    if strategy == "weighted":
        rule["weights"] = {c: draw(st.integers(1, 5)) for c in conns}
    if strategy == "least-cost":
        rule["prices"] = {c: {draw(st.sampled_from(["IT", "*", "22210"])): draw(st.sampled_from(["0.004", 0.01, 0]))}
                          for c in conns}
        rule["floor"] = draw(st.sampled_from([None, 0.8]))
    rule["two_way"] = draw(st.booleans())
    rule["hlr"] = draw(st.booleans())
    return rule


@hsettings(max_examples=60, deadline=None)
@given(st.integers(0, 6).flatmap(lambda n: st.tuples(*[_rule(i) for i in range(n)])),
       st.sampled_from(["UTC", "Europe/Rome"]))
def test_any_table_survives_the_trip_through_status_routes(rules, zone):
    s = settings(list(rules), route_timezone=zone, account_groups={"gold": ["acme"]})
    doc = json.loads(json.dumps(routes_doc(s)))
    assert table_from_doc(doc).rules == route_table(s).rules
    assert doc["account_groups"] == {"gold": ["acme"]}


def test_no_routes_is_the_built_in_rule_over_every_upstream():
    doc = routes_doc(settings(routes=None))
    assert doc["default"] is True
    assert [(r["name"], r["strategy"], r["connectors"]) for r in doc["rules"]] == [
        ("default", "failover", ["a", "b", "c"])]


def test_changes_between_two_tables():
    before = routes_doc(settings())
    routes = [dict(ROUTES[0], connectors=["b", "a"]), *ROUTES[2:], {"name": "es", "match": {"country": "ES"},
                                                                     "connectors": ["c"]}]
    after = routes_doc(settings(routes=routes, route_timezone="Europe/Rome"))
    assert table_changes(before, after) == {
        "rules_added": ["es"], "rules_removed": ["split"], "rules_changed": ["it", "cheap", "no-spam"],
        "connectors_added": [], "connectors_removed": [], "connectors_changed": [],
        "timezone": ["UTC", "Europe/Rome"],
    }
    moved = dict(after, connectors=[dict(c, port=9) for c in after["connectors"]])
    assert table_changes(after, moved)["connectors_changed"] == ["a", "b", "c"]
    assert not any(table_changes(after, after).values())
