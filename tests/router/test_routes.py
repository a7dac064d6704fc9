"""Routing's decision (router/routes.py) is the route table's (router/table.py), only faster.

``route explain`` shows :func:`router.table.candidates`; the submit path runs
:meth:`Routing.choose`, which caches and skips the per-connector records. The
property below drives both with the same connectors going up and down and
checks every order is the same, for every strategy.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staffetta.conf.settings import ConfigError
from staffetta.router.routes import Routing, groups_from_config
from staffetta.router.table import Rotation, RouteQuery, candidates, table_from_config

NAMES = ["a", "b", "c", "d"]


class View:
    def __init__(self) -> None:
        self.up = True
        self.delivery_ratio: float | None = None


def rule_of(strategy: str, conns: list[str]) -> dict:
    r: dict = {"name": "r", "connectors": conns, "strategy": strategy}
    if strategy == "weighted":
        r["weights"] = {c: i + 1 for i, c in enumerate(conns)}
    if strategy == "least-cost":
        r["prices"] = {c: {"IT": 0.001 * (len(conns) - i)} for i, c in enumerate(conns)}
        r["floor"] = 0.5
    if strategy == "single":
        r["connectors"] = conns[:1]
    return r


@settings(max_examples=150, deadline=None)
@given(
    strategy=st.sampled_from(["single", "failover", "round-robin", "weighted", "least-cost"]),
    conns=st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True),
    steps=st.lists(st.one_of(st.tuples(st.just("toggle"), st.sampled_from(NAMES)),
                             st.tuples(st.just("ratio"), st.sampled_from(NAMES)),
                             st.tuples(st.just("send"), st.integers(1, 5))), max_size=30),
)
def test_the_fast_choice_is_the_tables_choice(strategy, conns, steps):
    if strategy == "weighted" and len(conns) < 2:
        conns = ["a", "b"]
    table = table_from_config([rule_of(strategy, conns)], NAMES)
    views = {n: View() for n in NAMES}
    routing, rotation = Routing(table), Rotation()
    q = RouteQuery("acme", "393331234567", "SMART", country="IT")
    version = 0
    for op, arg in steps:
        if op == "toggle":
            views[arg].up = not views[arg].up
            version += 1  # what the router does on every connector_state
        elif op == "ratio":
            views[arg].delivery_ratio = 0.2 if views[arg].delivery_ratio is None else None
            version += 1  # what Router.judged does when a ratio crosses a floor
        else:
            for _ in range(arg):
                fast = routing.choose(q, views, version)
                rule = table.match(q)
                order, _ = candidates(rule, views, q, rotation)
                assert fast.order == tuple(order)


def test_a_rule_on_the_serving_network_asks_for_a_lookup_only_where_it_could_match():
    table = table_from_config([
        {"name": "vip", "match": {"account": "bank"}, "connectors": ["a"]},
        {"name": "ported", "match": {"mccmnc": "22210", "prefix": "39"}, "connectors": ["b"]},
        {"name": "rest", "connectors": ["a"]},
    ], NAMES)
    r = Routing(table)
    assert r.needs_lookup(RouteQuery("acme", "393331234567", "SMART"))
    assert not r.needs_lookup(RouteQuery("bank", "393331234567", "SMART"))  # an earlier rule takes it
    assert not r.needs_lookup(RouteQuery("acme", "33612345678", "SMART"))  # the prefix rules it out
    assert not Routing(table_from_config(None, NAMES)).needs_lookup(RouteQuery("acme", "39333", "PRO"))


def test_account_groups_from_config():
    assert groups_from_config({"vip": ["acme", "bank"], "eu": ["acme"]}) == {
        "acme": frozenset({"vip", "eu"}), "bank": frozenset({"vip"})}
    assert groups_from_config(None) == {}
    with pytest.raises(ConfigError, match=r"^account_groups.vip: expected a list of account names$"):
        groups_from_config({"vip": "acme"})
    with pytest.raises(ConfigError, match=r"^account_groups: expected group -> \[account names\]$"):
        groups_from_config(["acme"])


def test_a_group_rule_matches_the_accounts_of_the_group():
    table = table_from_config([
        {"name": "vip", "match": {"group": "vip"}, "connectors": ["b"]},
        {"name": "rest", "connectors": ["a"]},
    ], NAMES)
    r = Routing(table, groups_from_config({"vip": ["bank"]}))

    class A:  # an assessment, as far as the query reads it
        msg_type = "PRO"

        class destination:  # noqa: N801
            e164, region = "393331234567", "IT"

        class sender:  # noqa: N801
            addr = "Bank"

    views = {n: View() for n in NAMES}
    assert r.choose(r.query("bank", A, 0.0), views, 0).route == "vip"
    assert r.choose(r.query("acme", A, 0.0), views, 0).route == "rest"


GOOD_UPSTREAM = {"name": "sim", "host": "127.0.0.1", "port": 2776, "system_id": "a", "password": "b"}


@pytest.mark.parametrize("data,message", [
    ({"routes": [{"connectors": ["nope"]}]}, "routes[0].connectors: 'nope' is not a configured upstream (known: sim)"),
    ({"routes": [{"connectors": ["sim"], "strategy": "cheapest"}]},
     "routes[0].strategy: 'cheapest' is not one of single, round-robin, weighted, failover, least-cost, refuse"),
    ({"route_timezone": "Mars/Olympus"}, "route_timezone: unknown time zone 'Mars/Olympus'"),
    ({"account_groups": {"vip": "acme"}}, "account_groups.vip: expected a list of account names"),
])
def test_the_route_sections_of_a_config_are_one_line_errors(data, message):
    from staffetta.conf.settings import from_dict
    from staffetta.router.routes import routing_for

    with pytest.raises(ConfigError) as exc:
        routing_for(from_dict({"upstreams": [GOOD_UPSTREAM], **data}))
    assert str(exc.value) == message
