"""The route table (router/table.py): matching, strategies, explain and check, config errors."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staffetta.conf.settings import ConfigError
from staffetta.pdu.constants import Status
from staffetta.router.table import (
    NO_ROUTE,
    Rotation,
    RouteQuery,
    RouteTable,
    Rule,
    candidates,
    check,
    explain,
    table_from_config,
)

CONNECTORS = ["a", "b", "c", "d"]


@dataclass
class View:
    up: bool = True
    delivery_ratio: float | None = None


def q(dest="393331234567", account="acme", msg_type="PRO", **kw) -> RouteQuery:
    return RouteQuery(account=account, destination=dest, msg_type=msg_type, **kw)


def table(routes, **kw) -> RouteTable:
    return table_from_config(routes, CONNECTORS, **kw)


# ------------------------------------------------------------------ matching


def test_first_match_wins_in_table_order():
    t = table([
        {"name": "it", "match": {"prefix": "39"}, "connectors": ["a"]},
        {"name": "it-mobile", "match": {"prefix": "393"}, "connectors": ["b"]},
        {"name": "rest", "connectors": ["c"]},
    ])
    assert t.match(q("393331234567")).name == "it"
    assert t.match(q("441234567890")).name == "rest"


def test_each_condition():
    t = table([
        {"name": "acct", "match": {"account": "vip"}, "connectors": ["a"]},
        {"name": "grp", "match": {"group": ["gold"]}, "connectors": ["a"]},
        {"name": "ctry", "match": {"country": "fr"}, "connectors": ["a"]},
        {"name": "net", "match": {"mccmnc": "22201"}, "connectors": ["a"]},
        {"name": "type", "match": {"type": "smart"}, "connectors": ["a"]},
        {"name": "sender", "match": {"sender": "ACME"}, "connectors": ["a"]},
        {"name": "night", "match": {"hours": "22:00-06:00"}, "connectors": ["a"]},
        {"name": "weekend", "match": {"days": ["sat", "sun"]}, "connectors": ["a"]},
        {"name": "rest", "connectors": ["b"]},
    ])
    base = {"minute": 12 * 60, "weekday": 2}
    assert t.match(q(account="vip", **base)).name == "acct"
    assert t.match(q(groups=frozenset({"x", "gold"}), **base)).name == "grp"
    assert t.match(q(country="FR", **base)).name == "ctry"
    assert t.match(q(mccmnc="22201", **base)).name == "net"
    assert t.match(q(msg_type="SMART", **base)).name == "type"
    assert t.match(q(sender="ACME", **base)).name == "sender"
    assert t.match(q(minute=23 * 60, weekday=2)).name == "night"
    assert t.match(q(minute=5 * 60 + 59, weekday=2)).name == "night"
    assert t.match(q(minute=6 * 60, weekday=2)).name == "rest"
    assert t.match(q(minute=12 * 60, weekday=6)).name == "weekend"
    assert t.match(q(**base)).name == "rest"
    assert t.needs_hlr  # a rule on mccmnc needs the serving network


def test_reply_only_over_two_way_rules():
    t = table([
        {"name": "cheap", "connectors": ["a"]},
        {"name": "direct", "connectors": ["b"], "two_way": True},
    ])
    assert t.match(q(msg_type="PRO")).name == "cheap"
    assert t.match(q(msg_type="REPLY")).name == "direct"
    only_one_way = table([{"name": "cheap", "connectors": ["a"]}])
    assert only_one_way.match(q(msg_type="REPLY")) is None


def test_no_rule_matches_is_refused_with_the_documented_status():
    t = table([{"name": "it", "match": {"prefix": "39"}, "connectors": ["a"]}])
    assert t.match(q("441234567890")) is None
    e = explain(t, {c: View() for c in CONNECTORS}, q("441234567890"))
    assert e["refused"] == f"0x{Status.STAFFETTA_RNOROUTE:08X}" and e["choice"] is None
    assert NO_ROUTE == Status.STAFFETTA_RNOROUTE


def test_no_routes_means_every_connector_with_failover():
    t = table(None)
    r = t.match(q(msg_type="REPLY"))
    assert r.connectors == tuple(CONNECTORS) and r.strategy == "failover"


def _linear(rules: list[Rule], query: RouteQuery) -> Rule | None:
    for r in rules:
        if r.matches_prefix(query.destination) and r.matches(query):
            return r
    return None


@settings(max_examples=200, deadline=None)
@given(
    prefixes=st.lists(st.one_of(st.none(), st.lists(st.text("3941", min_size=1, max_size=4), min_size=1,
                                                        max_size=3)), min_size=1, max_size=30),
    types=st.lists(st.sampled_from([None, "SMART", "PRO"]), min_size=30, max_size=30),
    dests=st.lists(st.text("3941", min_size=6, max_size=12), min_size=1, max_size=20),
    msg_type=st.sampled_from(["SMART", "PRO"]),
)
def test_the_prefix_index_decides_as_a_linear_scan(prefixes, types, dests, msg_type):
    routes = []
    for i, p in enumerate(prefixes):
        m = {}
        if p is not None:
            m["prefix"] = p
        if types[i] is not None:
            m["type"] = types[i]
        routes.append({"name": f"r{i}", "match": m, "connectors": ["a"]})
    t = table(routes)
    for d in dests:
        query = q(d, msg_type=msg_type)
        assert t.match(query) == _linear(list(t.rules), query)


def test_a_thousand_rules_cost_microseconds():
    import timeit

    routes = [{"name": f"r{i}", "match": {"prefix": str(10_000 + i)}, "connectors": ["a"]} for i in range(1000)]
    routes.append({"name": "rest", "connectors": ["b"]})
    t = table(routes)
    query = q("393331234567")
    assert t.match(query).name == "rest"
    per_call = min(timeit.repeat(lambda: t.match(query), number=2000, repeat=3)) / 2000
    assert per_call < 50e-6  # generous for a noisy machine; the figure is in docs/benchmarks.md


# ----------------------------------------------------------------- strategies


def order(rule: Rule, views=None, query=None, rotation=None):
    views = views or {c: View() for c in CONNECTORS}
    return candidates(rule, views, query or q(), rotation or Rotation())[0]


def test_failover_puts_down_connectors_last():
    (r,) = table([{"connectors": ["a", "b", "c"], "strategy": "failover"}]).rules
    assert order(r) == ["a", "b", "c"]
    assert order(r, {"a": View(False), "b": View(), "c": View()}) == ["b", "c", "a"]


def test_round_robin_rotates_over_live_connectors():
    (r,) = table([{"connectors": ["a", "b", "c"], "strategy": "round-robin"}]).rules
    rot = Rotation()
    views = {"a": View(), "b": View(False), "c": View()}
    firsts = [order(r, views, rotation=rot)[0] for _ in range(6)]
    assert firsts == ["a", "c", "a", "c", "a", "c"]


def test_weighted_split_is_exact_over_ten_thousand():
    (r,) = table([{"connectors": ["a", "b", "c"], "strategy": "weighted", "weights": {"a": 5, "b": 3, "c": 2}}]).rules
    rot = Rotation()
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(10_000):
        counts[order(r, rotation=rot)[0]] += 1
    assert counts == {"a": 5000, "b": 3000, "c": 2000}


def test_least_cost_takes_the_cheapest_above_the_floor():
    (r,) = table([{
        "connectors": ["a", "b", "c"], "strategy": "least-cost", "floor": 0.8,
        "prices": {"a": {"IT": 0.010}, "b": {"IT": 0.008, "22201": 0.012}, "c": {"*": 0.009}},
    }]).rules
    good = {"a": View(True, 0.95), "b": View(True, 0.9), "c": View(True, 0.9)}
    assert order(r, good, q(country="IT")) == ["b", "c", "a"]
    # The serving network's price wins over the country's.
    assert order(r, good, q(country="IT", mccmnc="22201")) == ["c", "a", "b"]
    # b falls under the floor: left out.
    bad_b = {**good, "b": View(True, 0.5)}
    order_, seen = candidates(r, bad_b, q(country="IT"), Rotation())
    assert order_ == ["c", "a"]
    assert "floor" in next(c for c in seen if c.connector == "b").skipped
    # No price for the country: only the wildcard connector.
    assert order(r, good, q(country="FR")) == ["c"]
    assert r.hlr  # an MCC-MNC price needs the serving network


def test_refuse_rule_gives_its_status():
    t = table([{"name": "block", "match": {"prefix": "88"}, "strategy": "refuse", "status": "ESME_RINVDSTADR"}])
    e = explain(t, {}, q("882000000000"))
    assert e["choice"] is None and e["refused"] == f"0x{Status.ESME_RINVDSTADR:08X}"


def test_explain_shows_each_candidate():
    t = table([{"name": "lc", "strategy": "least-cost", "connectors": ["a", "b"],
                "prices": {"a": {"IT": "0.01"}, "b": {"IT": "0.02"}}}])
    e = explain(t, {"a": View(False, None), "b": View(True, 0.99)}, q(country="IT"))
    assert e["rule"] == "lc" and e["choice"] == "b"
    assert e["candidates"] == [
        {"connector": "a", "up": False, "price": "0.01", "delivery_ratio": None, "rank": 2, "skipped": None},
        {"connector": "b", "up": True, "price": "0.02", "delivery_ratio": 0.99, "rank": 1, "skipped": None},
    ]
    assert Decimal(e["candidates"][0]["price"]) == Decimal("0.01")


# ---------------------------------------------------------------------- check


def test_check_reports_shadowed_rules_and_unused_connectors():
    t = table([
        {"name": "it", "match": {"prefix": "39"}, "connectors": ["a"]},
        {"name": "it-mobile", "match": {"prefix": ["393", "3934"], "type": "PRO"}, "connectors": ["b"]},
        {"name": "uk", "match": {"prefix": "44", "hours": "08:00-20:00"}, "connectors": ["b"]},
        {"name": "uk-day", "match": {"prefix": "447", "hours": "09:00-17:00"}, "connectors": ["a"]},
        {"name": "uk-night", "match": {"prefix": "447", "hours": "19:00-07:00"}, "connectors": ["a"]},
        {"name": "one-way", "connectors": ["a"]},
        {"name": "replies", "connectors": ["b"], "two_way": True},
        {"name": "never", "match": {"account": "x"}, "connectors": ["a"]},
    ])
    problems = check(t, CONNECTORS)
    shadowed = {p.rule for p in problems if p.kind == "shadowed"}
    # it-mobile and uk-day are covered; uk-night is not (its hours leave uk's);
    # "replies" still takes REPLY, which "one-way" lets through; "never" is covered by one-way.
    assert shadowed == {"it-mobile", "uk-day", "never"}
    unused = {p.detail for p in problems if p.kind == "unused_connector"}
    assert unused == {"connector 'c' is used by no rule", "connector 'd' is used by no rule"}


def test_check_reports_unknown_connectors_instead_of_failing():
    found = []
    table_from_config([{"name": "x", "connectors": ["a", "zz"]}], CONNECTORS, unknown=found)
    assert [(p.kind, p.rule) for p in found] == [("unknown_connector", "x")]
    with pytest.raises(ConfigError, match=r"routes\[0\].connectors: 'zz' is not a configured upstream"):
        table_from_config([{"name": "x", "connectors": ["a", "zz"]}], CONNECTORS)


# --------------------------------------------------------------------- config


@pytest.mark.parametrize(("routes", "needle"), [
    ({"a": 1}, "routes: expected a list"),
    ([1], r"routes\[0\]: expected a mapping"),
    ([{"connectors": ["a"], "colour": 1}], r"routes\[0\].colour: unknown key"),
    ([{"connectors": ["a"], "match": {"prefx": "39"}}], r"routes\[0\].match.prefx: unknown condition"),
    ([{"connectors": ["a"], "match": {"prefix": "39x"}}], r"routes\[0\].match.prefix: '39x'"),
    ([{"connectors": ["a"], "match": {"country": "Italy"}}], r"routes\[0\].match.country"),
    ([{"connectors": ["a"], "match": {"mccmnc": "222"}}], r"routes\[0\].match.mccmnc"),
    ([{"connectors": ["a"], "match": {"type": "MMS"}}], r"routes\[0\].match.type"),
    ([{"connectors": ["a"], "match": {"hours": "8-20"}}], r"routes\[0\].match.hours"),
    ([{"connectors": ["a"], "match": {"hours": "08:00-08:00"}}], r"routes\[0\].match.hours"),
    ([{"connectors": ["a"], "match": {"days": ["funday"]}}], r"routes\[0\].match.days"),
    ([{"connectors": ["a"], "match": {"account": []}}], r"routes\[0\].match.account"),
    ([{"connectors": ["a"], "strategy": "random"}], r"routes\[0\].strategy"),
    ([{"strategy": "failover"}], r"routes\[0\].connectors: required"),
    ([{"connectors": ["a", "a"]}], r"routes\[0\].connectors: a connector is named twice"),
    ([{"connectors": ["a", "b"], "strategy": "single"}], r"routes\[0\].connectors: strategy single"),
    ([{"connectors": ["a", "b"], "strategy": "weighted", "weights": {"a": 1}}], r"routes\[0\].weights"),
    ([{"connectors": ["a"], "strategy": "weighted", "weights": {"a": 0}}], r"routes\[0\].weights.a"),
    ([{"connectors": ["a"], "weights": {"a": 1}}], r"routes\[0\].weights: only for strategy weighted"),
    ([{"strategy": "refuse", "status": "ESME_NOPE"}], r"routes\[0\].status"),
    ([{"strategy": "refuse", "connectors": ["a"]}], r"routes\[0\].connectors: a refuse rule"),
    ([{"connectors": ["a"], "status": 11}], r"routes\[0\].status: only for strategy refuse"),
    ([{"connectors": ["a"], "failover_on": []}], r"routes\[0\].failover_on"),
    ([{"connectors": ["a"], "failover_on": [0]}], r"routes\[0\].failover_on"),
    ([{"connectors": ["a"], "timeout": 0}], r"routes\[0\].timeout"),
    ([{"connectors": ["a"], "strategy": "least-cost"}], r"routes\[0\].prices: required"),
    ([{"connectors": ["a"], "strategy": "least-cost", "prices": {"b": {"IT": 1}}}], r"routes\[0\].prices.b"),
    ([{"connectors": ["a"], "strategy": "least-cost", "prices": {"a": {"Italy": 1}}}], r"routes\[0\].prices.a.Italy"),
    ([{"connectors": ["a"], "strategy": "least-cost", "prices": {"a": {"IT": -1}}}], r"routes\[0\].prices.a.IT"),
    ([{"connectors": ["a"], "strategy": "least-cost", "prices": {"a": {"IT": 1}}, "floor": 2}], r"routes\[0\].floor"),
    ([{"connectors": ["a"], "floor": 0.5}], r"routes\[0\].floor: only for strategy least-cost"),
    ([{"connectors": ["a"], "two_way": "yes"}], r"routes\[0\].two_way"),
    ([{"name": "x", "connectors": ["a"]}, {"name": "x", "connectors": ["b"]}], r"routes\[1\].name: 'x'"),
])
def test_config_errors_name_the_field(routes, needle):
    with pytest.raises(ConfigError, match=needle):
        table(routes)


def test_status_by_name_or_number_and_time_zone():
    (r,) = table([{"connectors": ["a"], "failover_on": ["ESME_RSYSERR", 0x58, "0x14"]}]).rules
    assert r.failover_on == {Status.ESME_RSYSERR, 0x58, 0x14}
    with pytest.raises(ConfigError, match="route_timezone"):
        table([], timezone="Mars/Olympus")
    t = table([], timezone="Europe/Rome")
    assert t.when(0) == (3, 60)  # 1970-01-01 was a Thursday; 01:00 in Rome
