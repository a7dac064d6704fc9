"""The route table: ordered rules, first match wins, and a strategy per rule.

Sans-IO: a :class:`RouteTable` is built once from the ``routes:`` list of
``staffetta.yaml`` (every mistake is one :class:`~staffetta.conf.settings.ConfigError`
line naming the field, e.g. ``routes[2].match.prefix``) and answers
:meth:`RouteTable.match` for a :class:`RouteQuery` with no I/O. Strategies
(:func:`candidates`) read the connectors' live state through a small
read-only view, so every decision is testable without a reactor and
``staffetta route explain`` shows exactly what the hub would do.

Speed: a table of a thousand rules must cost microseconds per message. Rules
are indexed by the prefixes they name; a query gathers the rules keyed by
each of its destination's leading digits plus the rules that name no prefix,
and tries only those, in table order (a merged walk over sorted index lists).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from staffetta.conf.settings import ConfigError
from staffetta.pdu.constants import Status

STRATEGIES = ("single", "round-robin", "weighted", "failover", "least-cost", "refuse")
MESSAGE_TYPES = ("SMART", "PRO", "REPLY")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: A message no rule matches is refused at submit with this (docs/routing.md).
NO_ROUTE = Status.STAFFETTA_RNOROUTE
#: Statuses a failover rule moves on when it names none: the carrier is busy,
#: broken or cannot route (not: the message itself is bad).
DEFAULT_FAILOVER_ON = frozenset({
    Status.ESME_RSYSERR, Status.ESME_RMSGQFUL, Status.ESME_RTHROTTLED, Status.ESME_RSUBMITFAIL,
    Status.ESME_RX_T_APPN,
})

#: Destination heads whose candidate rules are kept merged (a few MB at most).
HEADS_CACHED = 65_536

_MATCH_KEYS = ("account", "group", "prefix", "country", "mccmnc", "type", "sender", "hours", "days")
_RULE_KEYS = ("name", "match", "connectors", "strategy", "weights", "status", "failover_on",
              "timeout", "prices", "floor", "two_way", "hlr")
_REGION = re.compile(r"^[A-Z]{2}$")
_MCCMNC = re.compile(r"^[0-9]{5,6}$")
_HOURS = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")


class RouteQuery(NamedTuple):
    """What a rule may look at, for one message (all known before the durable write).

    A named tuple: one is built per submit, at a fifth of a frozen dataclass's cost.
    """

    account: str
    destination: str  # E.164 digits, no '+'
    msg_type: str  # SMART | PRO | REPLY
    sender: str = ""
    groups: frozenset[str] = frozenset()
    country: str | None = None  # ISO 3166 region of the destination (numbering plan)
    mccmnc: str | None = None  # serving network, from the HLR when looked up
    weekday: int = 0  # 0 = Monday, in the table's time zone
    minute: int = 0  # minutes since midnight, in the table's time zone


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of the table: its conditions (None: any) and its action."""

    index: int
    name: str
    accounts: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    prefixes: tuple[str, ...] | None = None  # longest first
    countries: frozenset[str] | None = None
    mccmnc: frozenset[str] | None = None
    types: frozenset[str] | None = None
    senders: frozenset[str] | None = None
    hours: tuple[tuple[int, int], ...] | None = None  # [start, end) minutes; end < start wraps midnight
    days: frozenset[int] | None = None
    strategy: str = "failover"
    connectors: tuple[str, ...] = ()
    weights: tuple[int, ...] = ()
    status: int = NO_ROUTE  # for strategy "refuse"
    failover_on: frozenset[int] = DEFAULT_FAILOVER_ON
    timeout: float = 30.0  # no submit_sm_resp within this: the next connector (failover)
    prices: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)  # connector -> key -> cost
    floor: float | None = None  # least-cost: skip connectors whose delivery ratio is below
    two_way: bool = False  # REPLY may take this rule
    hlr: bool = False  # the rule needs the serving MCC-MNC: look the number up first

    def matches(self, q: RouteQuery) -> bool:
        """Every condition this rule names holds for ``q`` (prefixes are checked by the index)."""
        if self.accounts is not None and q.account not in self.accounts:
            return False
        if self.groups is not None and not (self.groups & q.groups):
            return False
        if self.types is not None and q.msg_type not in self.types:
            return False
        if q.msg_type == "REPLY" and not self.two_way and self.strategy != "refuse":
            return False  # REPLY goes only over two-way routes
        if self.countries is not None and q.country not in self.countries:
            return False
        if self.mccmnc is not None and q.mccmnc not in self.mccmnc:
            return False
        if self.senders is not None and q.sender not in self.senders:
            return False
        if self.days is not None and q.weekday not in self.days:
            return False
        if self.hours is not None and not any(_in_span(q.minute, s, e) for s, e in self.hours):
            return False
        return True

    def matches_prefix(self, destination: str) -> bool:
        return self.prefixes is None or any(destination.startswith(p) for p in self.prefixes)


def _in_span(minute: int, start: int, end: int) -> bool:
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps midnight


class RouteTable:
    """Ordered rules with an index on destination prefixes."""

    def __init__(self, rules: Sequence[Rule], timezone: str = "UTC") -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._by_prefix: dict[str, list[int]] = {}
        self._anywhere: list[int] = []
        self._max_prefix = 0
        for r in self.rules:
            if r.prefixes is None:
                self._anywhere.append(r.index)
            else:
                for p in r.prefixes:
                    self._by_prefix.setdefault(p, []).append(r.index)
                    self._max_prefix = max(self._max_prefix, len(p))
        self.needs_hlr = any(r.hlr for r in self.rules)
        #: Leading digits -> the rules that may match a destination starting with them, in
        #: table order. Which prefix keys a destination hits depends only on its first
        #: ``_max_prefix`` digits, so the merge of the index lists is done once per head.
        self._heads: dict[str, tuple[Rule, ...]] = {}

    def when(self, epoch: float) -> tuple[int, int]:
        """(weekday, minute of the day) of an epoch second in the table's time zone."""
        t = datetime.fromtimestamp(epoch, self._zone)
        return t.weekday(), t.hour * 60 + t.minute

    def match(self, q: RouteQuery) -> Rule | None:
        """The first rule, in table order, whose every condition holds; None when none does."""
        dest = q.destination
        head = dest[:self._max_prefix]
        rules = self._heads.get(head)
        if rules is None:
            rules = self._rules_for(head)
        for rule in rules:
            if rule.matches(q):
                return rule
        return None

    def _rules_for(self, head: str) -> tuple[Rule, ...]:
        """The rules a destination starting with ``head`` may match, in table order (cached, bounded)."""
        lists = [self._anywhere] if self._anywhere else []
        by_prefix = self._by_prefix
        for n in range(1, len(head) + 1):
            hit = by_prefix.get(head[:n])
            if hit is not None:
                lists.append(hit)
        indexes = lists[0] if len(lists) == 1 else sorted({i for lst in lists for i in lst})
        rules = tuple(self.rules[i] for i in indexes)
        if len(self._heads) >= HEADS_CACHED:
            self._heads.clear()
        self._heads[head] = rules
        return rules

    @property
    def connectors(self) -> set[str]:
        return {c for r in self.rules for c in r.connectors}


# ------------------------------------------------------------------ strategies


class ConnectorView(Protocol):
    """What a strategy may read of a connector (router/upstream.Connector provides it)."""

    @property
    def up(self) -> bool: ...

    @property
    def delivery_ratio(self) -> float | None: ...


@dataclass(slots=True)
class Candidate:
    """One connector as a strategy saw it, for the choice and for ``route explain``."""

    connector: str
    up: bool
    price: Decimal | None = None
    ratio: float | None = None
    skipped: str = ""  # why it is not a candidate ("" when it is)


class Rotation:
    """Per-rule state of round-robin and smooth weighted round-robin (nginx's algorithm).

    Weighted shares are exact over every whole cycle of the weights' sum, so a
    split holds to the message, not just on average.
    """

    def __init__(self) -> None:
        self._next: dict[int, int] = {}
        self._current: dict[int, list[int]] = {}

    def round_robin(self, rule: Rule, names: Sequence[str]) -> list[str]:
        if not names:
            return []
        k = self._next.get(rule.index, 0) % len(names)
        self._next[rule.index] = k + 1
        return [*names[k:], *names[:k]]

    def weighted(self, rule: Rule, names: Sequence[str]) -> list[str]:
        if not names:
            return []
        cur = self._current.get(rule.index)
        if cur is None:
            cur = self._current[rule.index] = [0] * len(rule.connectors)
        weights = rule.weights
        if len(names) == len(rule.connectors):  # all up: positions are indexes (the hot path)
            total = 0
            best = 0
            for i, w in enumerate(weights):
                cur[i] += w
                total += w
                if cur[i] > cur[best]:
                    best = i
            cur[best] -= total
            first = rule.connectors[best]
            return [first, *(n for n in names if n != first)]
        pos = {c: i for i, c in enumerate(rule.connectors)}
        total = sum(weights[pos[n]] for n in names)
        best_name = None
        for n in names:
            i = pos[n]
            cur[i] += weights[i]
            if best_name is None or cur[i] > cur[pos[best_name]]:
                best_name = n
        cur[pos[best_name]] -= total
        return [best_name, *(n for n in names if n != best_name)]


def candidates(rule: Rule, views: Mapping[str, ConnectorView], q: RouteQuery,
               rotation: Rotation) -> tuple[list[str], list[Candidate]]:
    """(connectors in the order to try them, what was considered) for a matched rule.

    The first is the choice; the rest are where a failover moves the message.
    Connectors that are down stay at the end (a message waits on its route
    rather than be refused while every carrier reconnects). A "refuse" rule
    and a least-cost rule with no priced connector give no candidate.
    """
    seen = [Candidate(c, bool(views[c].up) if c in views else False,
                      ratio=views[c].delivery_ratio if c in views else None) for c in rule.connectors]
    if rule.strategy == "refuse":
        return [], seen
    up = [c.connector for c in seen if c.up]
    down = [c.connector for c in seen if not c.up]
    s = rule.strategy
    if s in ("single", "failover"):
        order = [*up, *down] if s == "failover" else list(rule.connectors)
    elif s == "round-robin":
        order = [*rotation.round_robin(rule, up), *down] if up else rotation.round_robin(rule, down)
    elif s == "weighted":
        order = [*rotation.weighted(rule, up), *down] if up else rotation.weighted(rule, down)
    else:  # least-cost
        keys = [k for k in (q.mccmnc, q.country) if k]
        priced = []
        for c in seen:
            table = rule.prices.get(c.connector, {})
            c.price = next((table[k] for k in keys if k in table), table.get("*"))
            if c.price is None:
                c.skipped = "no price for this destination"
            elif rule.floor is not None and c.ratio is not None and c.ratio < rule.floor:
                c.skipped = f"delivery ratio {c.ratio:.2f} under the floor {rule.floor:.2f}"
            else:
                priced.append(c)
        priced.sort(key=lambda c: (not c.up, c.price))  # stable: ties keep the listed order
        order = [c.connector for c in priced]
    return order, seen


# ---------------------------------------------------------------------- config


def table_from_config(routes: Any, connectors: Iterable[str], *, timezone: str = "UTC",
                      where: str = "routes", unknown: list[Problem] | None = None) -> RouteTable:
    """The table from the ``routes:`` list; one ConfigError line per mistake.

    With no ``routes:`` at all, one rule sends everything over every connector
    in config order with failover (what a single-carrier hub expects). With
    ``unknown`` given, rules naming connectors that are not configured are
    kept and reported there instead of refused (for ``staffetta route check``).
    """
    known = list(connectors)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"route_timezone: unknown time zone {timezone!r}") from None
    if routes is None:
        return RouteTable([Rule(0, "default", connectors=tuple(known), two_way=True)], timezone)
    if not isinstance(routes, list):
        raise ConfigError(f"{where}: expected a list of rules")
    rules = []
    names: set[str] = set()
    for i, raw in enumerate(routes):
        r = _rule(i, raw, set(known), f"{where}[{i}]", unknown)
        if r.name in names:
            raise ConfigError(f"{where}[{i}].name: {r.name!r} is used by an earlier rule")
        names.add(r.name)
        rules.append(r)
    return RouteTable(rules, timezone)


def _rule(i: int, raw: Any, known: set[str], where: str, unknown: list[Problem] | None) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with match, connectors and strategy")
    for k in raw:
        if k not in _RULE_KEYS:
            raise ConfigError(f"{where}.{k}: unknown key (expected one of {', '.join(_RULE_KEYS)})")
    name = str(raw.get("name", f"rule{i}"))
    match = raw.get("match", {}) or {}
    if not isinstance(match, Mapping):
        raise ConfigError(f"{where}.match: expected a mapping")
    for k in match:
        if k not in _MATCH_KEYS:
            raise ConfigError(f"{where}.match.{k}: unknown condition (expected one of {', '.join(_MATCH_KEYS)})")
    m = f"{where}.match"
    prefixes = _strings(match.get("prefix"), f"{m}.prefix")
    if prefixes is not None:
        for p in prefixes:
            if not p.lstrip("+").isdigit():
                raise ConfigError(f"{m}.prefix: {p!r} is not a destination prefix in digits like 3933")
        prefixes = frozenset(p.lstrip("+") for p in prefixes)
    countries = _strings(match.get("country"), f"{m}.country")
    if countries is not None:
        countries = frozenset(c.upper() for c in countries)
        for c in countries:
            if not _REGION.match(c):
                raise ConfigError(f"{m}.country: {c!r} is not an ISO 3166 region code like IT")
    mccmnc = _strings(match.get("mccmnc"), f"{m}.mccmnc")
    for c in mccmnc or ():
        if not _MCCMNC.match(c):
            raise ConfigError(f"{m}.mccmnc: {c!r} is not an MCC-MNC of 5 or 6 digits like 22201")
    types = _strings(match.get("type"), f"{m}.type")
    if types is not None:
        types = frozenset(t.upper() for t in types)
        for t in types:
            if t not in MESSAGE_TYPES:
                raise ConfigError(f"{m}.type: {t!r} is not a message type ({', '.join(MESSAGE_TYPES)})")
    days = _strings(match.get("days"), f"{m}.days")
    if days is not None:
        for d in days:
            if d.lower()[:3] not in DAYS:
                raise ConfigError(f"{m}.days: {d!r} is not a weekday (mon ... sun)")
        days = frozenset(DAYS.index(d.lower()[:3]) for d in days)
    hours = _strings(match.get("hours"), f"{m}.hours")
    spans = None
    if hours is not None:
        spans = []
        for h in hours:
            hm = _HOURS.match(h.replace(" ", ""))
            if hm is None:
                raise ConfigError(f"{m}.hours: {h!r} is not a span like 08:00-20:00")
            a, b = int(hm[1]) * 60 + int(hm[2]), int(hm[3]) * 60 + int(hm[4])
            if a > 1440 or b > 1440 or a == b:
                raise ConfigError(f"{m}.hours: {h!r} is not a span of the day like 08:00-20:00")
            spans.append((a, b))
        spans = tuple(spans)
    strategy = str(raw.get("strategy", "failover")).lower()
    if strategy not in STRATEGIES:
        raise ConfigError(f"{where}.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    conns = _strings(raw.get("connectors"), f"{where}.connectors") or []
    if strategy == "refuse":
        if conns:
            raise ConfigError(f"{where}.connectors: a refuse rule sends nowhere; remove its connectors")
    elif not conns:
        raise ConfigError(f"{where}.connectors: required (the connectors this rule sends to)")
    for c in conns:
        if c not in known and unknown is not None:
            unknown.append(Problem("unknown_connector", name, f"{where}.connectors: {c!r} is not a configured upstream"))
        elif c not in known:
            raise ConfigError(f"{where}.connectors: {c!r} is not a configured upstream "
                              f"(known: {', '.join(sorted(known)) or 'none'})")
    if len(set(conns)) != len(conns):
        raise ConfigError(f"{where}.connectors: a connector is named twice")
    if strategy == "single" and len(conns) != 1:
        raise ConfigError(f"{where}.connectors: strategy single takes exactly one connector")
    weights: tuple[int, ...] = ()
    if strategy == "weighted":
        w = raw.get("weights")
        if not isinstance(w, Mapping) or set(map(str, w)) != set(conns):
            raise ConfigError(f"{where}.weights: give one whole-number weight per connector, e.g. {{a: 3, b: 1}}")
        for k, v in w.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{where}.weights.{k}: expected a whole number >= 1, got {v!r}")
        weights = tuple(int(w[c]) for c in conns)
    elif "weights" in raw:
        raise ConfigError(f"{where}.weights: only for strategy weighted")
    status = NO_ROUTE
    if "status" in raw:
        if strategy != "refuse":
            raise ConfigError(f"{where}.status: only for strategy refuse")
        status = _status(raw["status"], f"{where}.status")
    failover_on = DEFAULT_FAILOVER_ON
    if "failover_on" in raw:
        vals = raw["failover_on"]
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"{where}.failover_on: expected a list of SMPP statuses like [0x58, ESME_RSYSERR]")
        failover_on = frozenset(_status(v, f"{where}.failover_on") for v in vals)
    timeout = raw.get("timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise ConfigError(f"{where}.timeout: expected seconds between 0 and 3600, got {timeout!r}")
    prices: dict[str, dict[str, Decimal]] = {}
    if "prices" in raw:
        if strategy != "least-cost":
            raise ConfigError(f"{where}.prices: only for strategy least-cost")
        prices = _prices(raw["prices"], set(conns), f"{where}.prices")
    elif strategy == "least-cost":
        raise ConfigError(f"{where}.prices: required for least-cost (connector -> country or MCC-MNC -> cost)")
    floor = raw.get("floor")
    if floor is not None:
        if strategy != "least-cost":
            raise ConfigError(f"{where}.floor: only for strategy least-cost")
        if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor <= 1:
            raise ConfigError(f"{where}.floor: expected a delivery ratio between 0 and 1, got {floor!r}")
    two_way, hlr = raw.get("two_way", False), raw.get("hlr", False)
    for k, v in (("two_way", two_way), ("hlr", hlr)):
        if not isinstance(v, bool):
            raise ConfigError(f"{where}.{k}: expected true or false, got {v!r}")
    return Rule(
        index=i, name=str(name),
        accounts=_set(match.get("account"), f"{m}.account"),
        groups=_set(match.get("group"), f"{m}.group"),
        prefixes=tuple(sorted(prefixes, key=len, reverse=True)) if prefixes is not None else None,
        countries=countries, mccmnc=frozenset(mccmnc) if mccmnc is not None else None, types=types,
        senders=_set(match.get("sender"), f"{m}.sender"), hours=spans, days=days,
        strategy=strategy, connectors=tuple(conns), weights=weights, status=status,
        failover_on=failover_on, timeout=float(timeout), prices=prices,
        floor=float(floor) if floor is not None else None, two_way=two_way,
        hlr=hlr or mccmnc is not None or any(len(k) >= 5 and k.isdigit() for p in prices.values() for k in p),
    )


def _strings(v: Any, where: str) -> list[str] | None:
    """A condition's values: one scalar or a list of them; None when absent."""
    if v is None:
        return None
    if isinstance(v, str | int) and not isinstance(v, bool):
        return [str(v)]
    if isinstance(v, list) and v and all(isinstance(x, str | int) and not isinstance(x, bool) for x in v):
        return [str(x) for x in v]
    raise ConfigError(f"{where}: expected a value or a non-empty list of values, got {v!r}")


def _set(v: Any, where: str) -> frozenset[str] | None:
    s = _strings(v, where)
    return frozenset(s) if s is not None else None


def _status(v: Any, where: str) -> int:
    if isinstance(v, str):
        name = v.strip()
        if name in Status.__members__:
            return int(Status[name])
        try:
            n = int(name, 0)
        except ValueError:
            raise ConfigError(f"{where}: {v!r} is neither an SMPP status name nor a number like 0x58") from None
    elif isinstance(v, int) and not isinstance(v, bool):
        n = v
    else:
        raise ConfigError(f"{where}: {v!r} is neither an SMPP status name nor a number like 0x58")
    if not 0 < n <= 0xFFFFFFFF:
        raise ConfigError(f"{where}: {v!r} is not an error status (1 to 0xFFFFFFFF)")
    return n


def _prices(v: Any, conns: set[str], where: str) -> dict[str, dict[str, Decimal]]:
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where}: expected connector -> {{country or MCC-MNC or '*': cost}}")
    out: dict[str, dict[str, Decimal]] = {}
    for c, table in v.items():
        c = str(c)
        if c not in conns:
            raise ConfigError(f"{where}.{c}: not one of this rule's connectors")
        if not isinstance(table, Mapping) or not table:
            raise ConfigError(f"{where}.{c}: expected {{country or MCC-MNC or '*': cost}}")
        out[c] = {}
        for k, cost in table.items():
            key = str(k).upper()
            if not (_REGION.match(key) or _MCCMNC.match(key) or key == "*"):
                raise ConfigError(f"{where}.{c}.{k}: not a region like IT, an MCC-MNC like 22201, or '*'")
            try:
                d = Decimal(str(cost))
            except InvalidOperation:
                d = Decimal("NaN")
            if isinstance(cost, bool) or not d.is_finite() or d < 0:
                raise ConfigError(f"{where}.{c}.{k}: expected a cost >= 0 like 0.0045, got {cost!r}")
            out[c][key] = d
    return out


# ------------------------------------------------------------ explain and check


def explain(table: RouteTable, views: Mapping[str, ConnectorView], q: RouteQuery) -> dict[str, Any]:
    """What the hub would do with ``q``: the rule that matches, each candidate, the choice.

    A fresh rotation is used, so explaining never moves a live round-robin.
    """
    rule = table.match(q)
    if rule is None:
        return {"rule": None, "candidates": [], "choice": None,
                "refused": f"0x{NO_ROUTE:08X}", "reason": "no rule matches"}
    order, seen = candidates(rule, views, q, Rotation())
    out: dict[str, Any] = {
        "rule": rule.name, "index": rule.index, "strategy": rule.strategy,
        "candidates": [
            {"connector": c.connector, "up": c.up,
             "price": str(c.price) if c.price is not None else None,
             "delivery_ratio": c.ratio, "rank": order.index(c.connector) + 1 if c.connector in order else None,
             "skipped": c.skipped or None}
            for c in seen
        ],
        "choice": order[0] if order else None,
    }
    if not order:
        status = rule.status if rule.strategy == "refuse" else NO_ROUTE
        out["refused"] = f"0x{status:08X}"
        out["reason"] = "refuse rule" if rule.strategy == "refuse" else "no connector can take it"
    return out


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # shadowed | unused_connector | unknown_connector
    rule: str | None
    detail: str


def check(table: RouteTable, connectors: Iterable[str]) -> list[Problem]:
    """Rules that can never match (an earlier rule takes all they would), connectors no rule uses."""
    out = []
    rules = table.rules
    for j, b in enumerate(rules):
        for a in rules[:j]:
            if _covers(a, b):
                out.append(Problem("shadowed", b.name, f"rule {a.name!r} (earlier) matches every message it would"))
                break
    used = table.connectors
    for c in connectors:
        if c not in used:
            out.append(Problem("unused_connector", None, f"connector {c!r} is used by no rule"))
    return out


def _covers(a: Rule, b: Rule) -> bool:
    """Every message ``b`` matches, ``a`` matches too (a conservative test: False when unsure)."""
    def subset(x: frozenset | None, y: frozenset | None) -> bool:
        return x is None or (y is not None and y <= x)

    # Groups match on any shared group, so a covers b when it holds each of b's.
    if not (subset(a.accounts, b.accounts) and subset(a.groups, b.groups)
            and subset(a.countries, b.countries) and subset(a.mccmnc, b.mccmnc)
            and subset(a.types, b.types) and subset(a.senders, b.senders) and subset(a.days, b.days)):
        return False
    if a.prefixes is not None and (b.prefixes is None
                                   or not all(any(p.startswith(q) for q in a.prefixes) for p in b.prefixes)):
        return False
    if a.hours is not None and (b.hours is None or not all(_span_within(s, a.hours) for s in b.hours)):
        return False
    a_reply = a.two_way or a.strategy == "refuse"
    b_reply = (b.two_way or b.strategy == "refuse") and (b.types is None or "REPLY" in b.types)
    return a_reply or not b_reply


def _split(span: tuple[int, int]) -> list[tuple[int, int]]:
    s, e = span
    return [(s, e)] if s <= e else [(s, 1440), (0, e)]


def _span_within(span: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    pieces = [p for s in spans for p in _split(s)]
    return all(any(ps <= s and e <= pe for ps, pe in pieces) for s, e in _split(span))
