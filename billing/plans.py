"""Price plans: what one message costs, in centi-credits.

A plan is configuration, not code (the ``billing:`` section of
``staffetta.yaml``, shape in docs/billing.md). The price of a message is

    per-segment rate for (destination country, message type)  x  segments

where the rate comes from the plan's country table when the destination's
ISO region is listed there, else from the plan's default prices when the
region is one of the plan's ``home_regions`` (Italy by default). A region that
is neither has no rate: :func:`price` returns ``None`` and the submit is
refused with :data:`NO_RATE_STATUS`. Segments and region come from
``pdu.message.assess_submit`` - the quote and the debit share one count.

Validity strings (``6m``, ``1m``, ``30d``, ``1y``, ``none``) live here too:
lots expire by calendar months in UTC, the way the seed's packages do.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from staffetta.billing.money import parse_credits
from staffetta.conf.settings import ConfigError

SMART, PRO, REPLY = "SMART", "PRO", "REPLY"
MESSAGE_TYPES = (SMART, PRO, REPLY)
DEFAULT_PRICES: Mapping[str, int] = MappingProxyType({SMART: 100, PRO: 160, REPLY: 160})
DEFAULT_HLR_PRICE = 50

#: Vendor status for "no rate for this destination" (SMPP 3.4 Table 5-2 vendor
#: range, next to STAFFETTA_RNOCREDIT 0x401). pdu.constants should carry it as
#: Status.STAFFETTA_RNORATE; billing does not edit pdu.
NO_RATE_STATUS = 0x00000402


class PlanError(ConfigError):
    """A bad price plan; one line naming the field (``billing.plans.x.prices.PRO: ...``)."""


# --------------------------------------------------------------------- validity


@dataclass(frozen=True, slots=True)
class Validity:
    """How long a lot stays spendable: calendar months plus days."""

    months: int = 0
    days: int = 0

    def __str__(self) -> str:
        if self.months and not self.days:
            return f"{self.months // 12}y" if self.months % 12 == 0 else f"{self.months}m"
        if self.days and not self.months:
            return f"{self.days}d"
        return f"{self.months}m{self.days}d"


_VALIDITY = re.compile(r"(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?\Z")


def parse_validity(text: object, *, field: str = "expires") -> Validity | None:
    """``"6m"`` -> 6 months, ``"30d"``, ``"1y"``, ``"1m15d"``; ``"none"`` -> ``None``."""
    if text is None:
        return None
    s = str(text).strip().lower()
    if s in ("none", "never", "no"):
        return None
    m = _VALIDITY.match(s)
    if not s or m is None:
        raise ValueError(f"{field}: {text!r} is not a validity like 6m, 1m, 30d, 1y or none")
    years, months, days = (int(g) if g else 0 for g in m.groups())
    v = Validity(years * 12 + months, days)
    if v.months == 0 and v.days == 0:
        raise ValueError(f"{field}: {text!r} is an empty validity (use none for no expiry)")
    if v.months > 1200 or v.days > 36500:
        raise ValueError(f"{field}: {text!r} is longer than a century")
    return v


def expiry_after(now: int, validity: Validity | None) -> int | None:
    """Epoch seconds ``validity`` after ``now`` (UTC calendar months, day clamped)."""
    if validity is None:
        return None
    t = datetime.fromtimestamp(now, UTC)
    month0 = t.month - 1 + validity.months
    year, month = t.year + month0 // 12, month0 % 12 + 1
    day = min(t.day, calendar.monthrange(year, month)[1])
    t = t.replace(year=year, month=month, day=day) + timedelta(days=validity.days)
    return int(t.timestamp())


# ------------------------------------------------------------------------ plans


def _freeze(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


@dataclass(frozen=True, slots=True, eq=True)
class PricePlan:
    """Per-segment prices in centi-credits. Immutable; build with :func:`plan_from_dict`."""

    name: str = "default"
    prices: Mapping[str, int] = field(default_factory=lambda: DEFAULT_PRICES)
    countries: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: MappingProxyType({}))
    home_regions: frozenset[str] = frozenset({"IT"})
    hlr_price: int = DEFAULT_HLR_PRICE
    #: Trial lot on account creation: this many segments of the account's default type.
    trial_segments: int = 50
    trial_validity: Validity | None = Validity(months=1)
    #: Expiry of a top-up that names none (``None``: credit never expires).
    topup_validity: Validity | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices", _freeze(self.prices))
        object.__setattr__(
            self, "countries", _freeze({k: _freeze(v) for k, v in self.countries.items()})
        )
        object.__setattr__(self, "home_regions", frozenset(self.home_regions))

    __hash__ = None  # mappings inside; compare with ==


def price(plan: PricePlan, msg_type: str, segments: int, region: str) -> int | None:
    """Centi-credits for ``segments`` segments of ``msg_type`` to ``region``; None = no rate."""
    table = plan.countries.get(region)
    if table is not None:
        unit = table.get(msg_type)
        if unit is None and region in plan.home_regions:
            unit = plan.prices.get(msg_type)
    elif region in plan.home_regions:
        unit = plan.prices.get(msg_type)
    else:
        return None
    if unit is None:
        return None
    return unit * segments


def quote(plan: PricePlan, assessment: Any) -> int | None:
    """Price of a :class:`pdu.message.Assessment` (its type, segments and destination region)."""
    return price(plan, assessment.msg_type, assessment.segments, assessment.destination.region)


def trial_amount(plan: PricePlan, msg_type: str) -> int:
    """The trial lot: ``trial_segments`` home-priced segments of ``msg_type``."""
    return plan.trial_segments * plan.prices.get(msg_type, 0)


def segments_left(plan: PricePlan, balance: int, region: str | None = None) -> dict[str, int]:
    """How many one-segment messages of each type ``balance`` pays for (home rates by default)."""
    region = region or (min(plan.home_regions) if plan.home_regions else "")
    out: dict[str, int] = {}
    for t in MESSAGE_TYPES:
        unit = price(plan, t, 1, region)
        if unit is not None and unit > 0:
            out[t] = max(balance, 0) // unit
    return out


# ----------------------------------------------------------------- from config

_PLAN_KEYS = ("prices", "countries", "home_regions", "hlr", "trial", "topup_validity")
_REGION = re.compile(r"[A-Z]{2}\Z")


def _mapping(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise PlanError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _amount(value: Any, where: str) -> int:
    try:
        return parse_credits(value, field=where)
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def _type_prices(value: Any, where: str, *, complete: bool) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in _mapping(value, where).items():
        key = str(k).upper()
        if key not in MESSAGE_TYPES:
            raise PlanError(f"{where}.{k}: unknown message type (one of {', '.join(MESSAGE_TYPES)})")
        out[key] = _amount(v, f"{where}.{k}")
    if complete:
        out = {**DEFAULT_PRICES, **out}
    return out


def plan_from_dict(d: Mapping | None, *, name: str = "default", where: str | None = None) -> PricePlan:
    """One plan from its YAML mapping (amounts in credits, e.g. ``PRO: 1.6``)."""
    where = where or f"billing.plans.{name}"
    if d is None:
        return PricePlan(name=name)
    d = _mapping(d, where)
    for k in d:
        if k not in _PLAN_KEYS:
            raise PlanError(f"{where}.{k}: unknown key (expected one of {', '.join(_PLAN_KEYS)})")
    prices = _type_prices(d.get("prices", {}), f"{where}.prices", complete=True)
    countries: dict[str, dict[str, int]] = {}
    for region, table in _mapping(d.get("countries", {}) or {}, f"{where}.countries").items():
        r = str(region)
        if not _REGION.match(r):
            raise PlanError(f"{where}.countries.{region}: not an ISO 3166 region code like FR")
        countries[r] = _type_prices(table, f"{where}.countries.{r}", complete=False)
    home = d.get("home_regions", ["IT"])
    if isinstance(home, str):
        home = [home]
    if not isinstance(home, list | tuple):
        raise PlanError(f"{where}.home_regions: expected a list of region codes like [IT]")
    for r in home:
        if not isinstance(r, str) or not _REGION.match(r):
            raise PlanError(f"{where}.home_regions: {r!r} is not an ISO 3166 region code like IT")
    hlr = _amount(d.get("hlr", "0.50"), f"{where}.hlr")
    trial = _mapping(d.get("trial", {}) or {}, f"{where}.trial")
    for k in trial:
        if k not in ("segments", "validity"):
            raise PlanError(f"{where}.trial.{k}: unknown key (expected segments, validity)")
    segs = trial.get("segments", 50)
    if isinstance(segs, bool) or not isinstance(segs, int) or segs < 0:
        raise PlanError(f"{where}.trial.segments: expected a whole number >= 0, got {segs!r}")
    try:
        trial_validity = parse_validity(trial.get("validity", "1m"), field=f"{where}.trial.validity")
        topup_validity = parse_validity(d.get("topup_validity"), field=f"{where}.topup_validity")
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    return PricePlan(
        name=name,
        prices=prices,
        countries=countries,
        home_regions=frozenset(home),
        hlr_price=hlr,
        trial_segments=segs,
        trial_validity=trial_validity,
        topup_validity=topup_validity,
    )


@dataclass(frozen=True, slots=True)
class BillingConfig:
    """All plans by name and the one accounts without ``price_plan`` use."""

    plans: Mapping[str, PricePlan] = field(
        default_factory=lambda: MappingProxyType({"default": PricePlan()})
    )
    default_plan: str = "default"

    def plan(self, name: str | None = None) -> PricePlan:
        """The named plan, or the default for ``None``; a missing name is a PlanError."""
        key = name or self.default_plan
        try:
            return self.plans[key]
        except KeyError:
            raise PlanError(f"price_plan: no plan named {key!r}") from None


def billing_from_dict(d: Mapping | None, *, where: str = "billing") -> BillingConfig:
    """The whole ``billing:`` section: ``{default_plan: NAME, plans: {NAME: plan, ...}}``."""
    if d is None:
        return BillingConfig()
    d = _mapping(d, where)
    for k in d:
        if k not in ("plans", "default_plan"):
            raise PlanError(f"{where}.{k}: unknown key (expected plans, default_plan)")
    raw = _mapping(d.get("plans") or {"default": None}, f"{where}.plans")
    plans = {str(n): plan_from_dict(p, name=str(n), where=f"{where}.plans.{n}") for n, p in raw.items()}
    default = d.get("default_plan")
    if default is None:
        default = "default" if "default" in plans or len(plans) != 1 else next(iter(plans))
    if default not in plans:
        raise PlanError(f"{where}.default_plan: no plan named {default!r} in {where}.plans")
    return BillingConfig(MappingProxyType(plans), str(default))
