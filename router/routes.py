"""Routing: the route table in force, and the decision for one message.

:mod:`router.table` is the table (rules, strategies, explain, check) with no
state of its own beyond what a rule needs; this module holds the table in
force with the rotation state of its round-robin and weighted rules, and turns
a matched rule into a :class:`Choice`: the rule and the connectors to try, in
order. The choice is made at submit, before the durable write (smsc/pipeline),
so a message no rule takes is refused, never accepted and stranded.

Each connector has its own waiting line; the lines share one place counter,
so a message that fails over (refused with a status the rule names, no
answer within the rule's time-out, or its connector down) joins the next
connector's line at its original place (pdu/window.py ``put_back``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from staffetta.router.table import (
    NO_ROUTE,
    ConnectorView,
    Rotation,
    RouteQuery,
    RouteTable,
    Rule,
    candidates,
    table_from_config,
)

NO_GROUPS: frozenset[str] = frozenset()


class Choice:
    """A matched rule and the connectors to try, in order (empty: refuse with ``status``)."""

    __slots__ = ("rule", "order")

    def __init__(self, rule: Rule, order: tuple[str, ...]) -> None:
        self.rule = rule
        self.order = order

    @property
    def route(self) -> str:
        """The route's name, as stored on the message row and used in metrics."""
        return self.rule.name

    @property
    def status(self) -> int:
        """The refusal status when there is no connector to try."""
        return self.rule.status if self.rule.strategy == "refuse" else NO_ROUTE

    def __repr__(self) -> str:
        return f"Choice({self.rule.name!r}, {self.order!r})"


class Routing:
    """The table in force and its rotation state (replaced whole by a reload)."""

    __slots__ = ("table", "rotation", "_fixed", "_cheapest", "needs_time", "groups", "floors")

    def __init__(self, table: RouteTable, groups: Mapping[str, frozenset[str]] | None = None) -> None:
        self.table = table
        #: Account name -> the groups it is in (``account_groups:`` in staffetta.yaml).
        self.groups = dict(groups or {})
        self.rotation = Rotation()
        #: Rules whose order never depends on live state or rotation: single, and
        #: failover while all its connectors are up. Cached per rule index.
        self._fixed: dict[int, tuple[Choice, object]] = {}
        self._cheapest: dict[tuple, tuple[Choice, int | None]] = {}
        self.needs_time = any(r.hours is not None or r.days is not None for r in table.rules)
        #: The least-cost floors of the table, sorted: a connector's delivery ratio crossing one
        #: changes the router's state version (Router.judged), so cached orders are made again.
        self.floors: tuple[float, ...] = tuple(sorted({r.floor for r in table.rules if r.floor is not None}))

    def query(self, account: str, a: Any, now: float, mccmnc: str | None = None) -> RouteQuery:
        """The route query of a submit's assessment (``pdu.message.Assessment``) from ``account``."""
        weekday = minute = 0
        if self.needs_time:
            weekday, minute = self.table.when(now)
        dest = a.destination
        return RouteQuery(account, dest.e164, a.msg_type, a.sender.addr, self.groups.get(account, NO_GROUPS),
                          dest.region, mccmnc, weekday, minute)

    def choose(self, q: RouteQuery, views: Mapping[str, ConnectorView], version: int | None = None) -> Choice | None:
        """The rule ``q`` matches and its candidates (None: no rule matches).

        The same order as :func:`router.table.candidates` (what ``route
        explain`` shows), computed without its per-connector records on the
        hot path. ``version`` changes whenever a connector goes up or down or
        its delivery ratio crosses one of the table's floors (the router's
        count of state changes): single, failover and least-cost choices are
        reused until it changes (least cost per rule and price key).
        """
        rule = self.table.match(q)
        if rule is None:
            return None
        s = rule.strategy
        if s == "failover" or s == "single":
            cached = self._fixed.get(rule.index)
            if version is None:
                key = tuple([views[c].up if c in views else False for c in rule.connectors])
            else:
                key = version
            if cached is not None and cached[1] == key:
                return cached[0]
            order, _ = candidates(rule, views, q, self.rotation)
            choice = Choice(rule, tuple(order))
            self._fixed[rule.index] = (choice, key)
            return choice
        if s == "round-robin" or s == "weighted":
            names = rule.connectors
            up = [c for c in names if c in views and views[c].up]
            if not up:
                up = list(names)
                down: list[str] = []
            else:
                down = [c for c in names if c not in up] if len(up) < len(names) else []
            rotation = self.rotation
            turn = rotation.round_robin(rule, up) if s == "round-robin" else rotation.weighted(rule, up)
            return Choice(rule, tuple(turn + down) if down else tuple(turn))
        if s == "least-cost":
            return self._least_cost(rule, q, views, version)
        order, _ = candidates(rule, views, q, self.rotation)  # refuse
        return Choice(rule, tuple(order))

    def _least_cost(self, rule: Rule, q: RouteQuery, views: Mapping[str, ConnectorView],
                    version: int | None) -> Choice:
        key = (rule.index, q.mccmnc, q.country)
        cached = self._cheapest.get(key)
        if cached is not None and version is not None and cached[1] == version:
            return cached[0]
        order, _ = candidates(rule, views, q, self.rotation)
        choice = Choice(rule, tuple(order))
        if len(self._cheapest) >= 65_536:
            self._cheapest.clear()
        self._cheapest[key] = (choice, version)
        return choice

    def needs_lookup(self, q: RouteQuery) -> bool:
        """Whether the decision for ``q`` depends on the serving network (an HLR lookup first).

        True when a rule asking for it (``hlr: true``, an ``mccmnc`` match, or
        prices per MCC-MNC) would match ``q`` but for its MCC-MNC, before or
        at the rule that matches without one.
        """
        table = self.table
        if not table.needs_hlr:
            return False
        for rule in table.rules:
            if not rule.matches_prefix(q.destination):
                continue
            if rule.hlr and _matches_but_network(rule, q):
                return True
            if rule.matches(q):
                return False
        return False


def route_table(settings: Any) -> RouteTable:
    """The route table a :class:`conf.settings.Settings` describes; raises ConfigError (one line).

    conf/ leaves the ``routes:`` section to its owner (conf imports nothing of
    ours): the hub builds it at start (smsc/cli.py ``check_sections``, then
    :class:`smsc.app.Hub`) and at every reload, ``staffetta route`` the same way.
    """
    return table_from_config(settings.routes, [u.name for u in settings.upstreams],
                             timezone=settings.route_timezone)


def routing_for(settings: Any) -> Routing:
    """The table and account groups ``settings`` describe, in force (start and reload)."""
    return Routing(route_table(settings), groups_from_config(settings.account_groups))


def groups_from_config(raw: object, where: str = "account_groups") -> dict[str, frozenset[str]]:
    """``account_groups: {vip: [acme, bank]}`` as account -> groups; one ConfigError line per mistake."""
    from staffetta.conf.settings import ConfigError

    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected group -> [account names]")
    out: dict[str, set[str]] = {}
    for group, names in raw.items():
        if not isinstance(names, list) or not all(isinstance(n, str | int) and not isinstance(n, bool)
                                                   for n in names):
            raise ConfigError(f"{where}.{group}: expected a list of account names")
        for n in names:
            out.setdefault(str(n), set()).add(str(group))
    return {k: frozenset(v) for k, v in out.items()}


def _matches_but_network(rule: Rule, q: RouteQuery) -> bool:
    if rule.mccmnc is None:
        return rule.matches(q)
    return rule.matches(q._replace(mccmnc=next(iter(rule.mccmnc))))


__all__ = ["Choice", "Routing", "groups_from_config", "route_table", "routing_for"]
