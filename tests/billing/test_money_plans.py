"""Money parsing and price plans (A10, A11, A13, A14, B5, B6; D6 through the quote)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from staffetta.billing.money import format_credits, parse_credits
from staffetta.billing.plans import (
    NO_RATE_STATUS,
    BillingConfig,
    PlanError,
    PricePlan,
    Validity,
    billing_from_dict,
    expiry_after,
    parse_validity,
    plan_from_dict,
    price,
    quote,
    segments_left,
    trial_amount,
)
from staffetta.conf.settings import ConfigError
from staffetta.pdu import gsm
from staffetta.pdu.constants import Tag
from staffetta.pdu.message import AccountPolicy, assess_submit
from tests.builders import submit_fields

# ----------------------------------------------------------------------- money


@pytest.mark.parametrize(("text", "cents"), [
    ("1.6", 160), ("1.60", 160), ("10", 1000), ("0.05", 5), ("0", 0), (" 2.5 ", 250),
    ("007.10", 710), (3, 300), (1.6, 160), (0.1, 10), ("123456789.99", 12345678999),
])
def test_parse_credits(text, cents) -> None:
    assert parse_credits(text) == cents


@pytest.mark.parametrize("bad", [
    "1.605", "1,6", "", " ", ".5", "1.", "abc", "1e3", "nan", "inf", "--1", "1.6.0", "0x10",
    1.005, True, None, [1], "-1", "99999999999999",
])
def test_parse_credits_refuses(bad) -> None:
    with pytest.raises(ValueError) as exc:
        parse_credits(bad, field="--credits")
    msg = str(exc.value)
    assert msg.startswith("--credits: ") and "\n" not in msg


def test_negative_only_when_signed() -> None:
    assert parse_credits("-1.6", signed=True) == -160
    assert parse_credits("+1.6") == 160


def test_format_credits() -> None:
    assert format_credits(160) == "1.60"
    assert format_credits(5) == "0.05"
    assert format_credits(0) == "0.00"
    assert format_credits(-5) == "-0.05"
    assert format_credits(-160) == "-1.60"
    with pytest.raises(TypeError):
        format_credits(1.6)  # type: ignore[arg-type]


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_format_parse_round_trip(cents: int) -> None:
    assert parse_credits(format_credits(cents), signed=True) == cents


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=99))
def test_parse_is_decimal(whole: int, frac: int) -> None:
    text = f"{whole}.{frac:02d}"
    assert parse_credits(text) == whole * 100 + frac
    assert format_credits(parse_credits(text)) == text


@given(st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False))
def test_yaml_floats_are_read_exactly(value) -> None:
    """A YAML ``PRO: 1.6`` arrives as a float; its shortest spelling gives exact cents."""
    loaded = yaml.safe_load(f"x: {value}")["x"]
    assert parse_credits(loaded) == int(value * 100)


# ----------------------------------------------------------------------- plans


def test_default_prices_per_segment() -> None:
    plan = PricePlan()
    assert price(plan, "PRO", 4, "IT") == 640  # A13
    assert price(plan, "SMART", 1, "IT") == 100
    assert price(plan, "REPLY", 1, "IT") == 160
    assert plan.hlr_price == 50


def test_country_table_and_no_rate() -> None:
    plan = plan_from_dict({"countries": {"FR": {"PRO": 6.5}, "IT": {"PRO": "1.5"}}})
    assert price(plan, "PRO", 2, "FR") == 1300
    assert price(plan, "SMART", 1, "FR") is None  # listed country, type without a rate
    assert price(plan, "PRO", 1, "DE") is None  # neither home nor listed
    assert price(plan, "PRO", 1, "IT") == 150  # override of a home country
    assert price(plan, "SMART", 1, "IT") == 100  # ... falls back to the home price
    assert NO_RATE_STATUS == 0x402 and 0x400 <= NO_RATE_STATUS <= 0x4FF


def test_home_regions() -> None:
    plan = plan_from_dict({"home_regions": ["IT", "SM"], "prices": {"SMART": 2}})
    assert price(plan, "SMART", 1, "SM") == 200
    assert price(plan, "PRO", 1, "SM") == 160
    assert price(plan, "SMART", 1, "VA") is None


def _fields(text: str | None, **over) -> dict:
    return submit_fields(text, **{"service_type": b"PRO", **over})


def test_quote_uses_the_assessment() -> None:
    """A 4-segment PRO debits 640; 300 GSM characters in message_payload debit 2 segments (D6)."""
    now = datetime(2024, 6, 1, tzinfo=UTC)
    plan = plan_from_dict({"countries": {"FR": {"PRO": 6}}})
    four = assess_submit(_fields("x" * 600), {}, AccountPolicy(), now=now)
    assert four.segments == 4 and quote(plan, four) == 640
    pay = assess_submit(_fields(None), {Tag.message_payload: gsm.encode("y" * 300)}, AccountPolicy(), now=now)
    assert pay.segments == 2 and quote(plan, pay) == 320
    smart = assess_submit(_fields("hi", service_type=b"SMART"), {}, AccountPolicy(), now=now)
    assert quote(plan, smart) == 100
    fr = assess_submit(_fields("hi", destination_addr=b"33612345678"), {}, AccountPolicy(), now=now)
    assert fr.destination.region == "FR" and quote(plan, fr) == 600
    de = assess_submit(_fields("hi", destination_addr=b"4915123456789"), {}, AccountPolicy(), now=now)
    assert quote(plan, de) is None


def test_segments_left_and_trial() -> None:
    plan = PricePlan()
    assert segments_left(plan, 480) == {"SMART": 4, "PRO": 3, "REPLY": 3}  # A11
    assert segments_left(plan, -5) == {"SMART": 0, "PRO": 0, "REPLY": 0}
    assert trial_amount(plan, "PRO") == 8000  # 50 x 1.6 credits (G: trial size per type)
    assert trial_amount(plan, "SMART") == 5000


def test_plan_from_dict_full_shape() -> None:
    doc = yaml.safe_load("""
billing:
  default_plan: standard
  plans:
    standard:
      prices: {SMART: 1, PRO: 1.6, REPLY: 1.6}
      home_regions: [IT]
      countries:
        FR: {PRO: 6.5, REPLY: 6.5}
      hlr: 0.5
      trial: {segments: 50, validity: 1m}
      topup_validity: 6m
    wholesale:
      prices: {PRO: 1.2}
""")
    cfg = billing_from_dict(doc["billing"])
    std = cfg.plan()
    assert std.name == "standard" and std.prices["PRO"] == 160 and std.hlr_price == 50
    assert std.countries["FR"]["REPLY"] == 650
    assert std.topup_validity == Validity(months=6) and std.trial_validity == Validity(months=1)
    assert cfg.plan("wholesale").prices == {"SMART": 100, "PRO": 120, "REPLY": 160}
    with pytest.raises(PlanError, match="price_plan: no plan named 'gold'"):
        cfg.plan("gold")
    assert BillingConfig().plan().prices["PRO"] == 160
    assert billing_from_dict(None).default_plan == "default"
    assert billing_from_dict({"plans": {"only": {}}}).default_plan == "only"


@pytest.mark.parametrize(("doc", "field"), [
    ({"plans": {"p": {"prices": {"PRO": "1.605"}}}}, "billing.plans.p.prices.PRO"),
    ({"plans": {"p": {"prices": {"MMS": 1}}}}, "billing.plans.p.prices.MMS"),
    ({"plans": {"p": {"prices": {"PRO": -1}}}}, "billing.plans.p.prices.PRO"),
    ({"plans": {"p": {"countries": {"France": {"PRO": 1}}}}}, "billing.plans.p.countries.France"),
    ({"plans": {"p": {"countries": {"FR": 5}}}}, "billing.plans.p.countries.FR"),
    ({"plans": {"p": {"home_regions": ["it"]}}}, "billing.plans.p.home_regions"),
    ({"plans": {"p": {"hlr": "half"}}}, "billing.plans.p.hlr"),
    ({"plans": {"p": {"trial": {"segments": -1}}}}, "billing.plans.p.trial.segments"),
    ({"plans": {"p": {"trial": {"validity": "6 weeks"}}}}, "billing.plans.p.trial.validity"),
    ({"plans": {"p": {"trail": {}}}}, "billing.plans.p.trail"),
    ({"plans": {"p": {"topup_validity": "0d"}}}, "billing.plans.p.topup_validity"),
    ({"plans": {"p": {}}, "default_plan": "q"}, "billing.default_plan"),
    ({"plan": {}}, "billing.plan"),
    ({"plans": ["p"]}, "billing.plans"),
])
def test_plan_errors_name_the_field(doc, field) -> None:
    with pytest.raises(PlanError) as exc:
        billing_from_dict(doc)
    msg = str(exc.value)
    assert msg.startswith(field + ":") and "\n" not in msg
    assert isinstance(exc.value, ConfigError)


def test_validity() -> None:
    assert parse_validity("6m") == Validity(6, 0)
    assert parse_validity("1y") == Validity(12, 0)
    assert parse_validity("30d") == Validity(0, 30)
    assert parse_validity("1m15d") == Validity(1, 15)
    assert parse_validity("none") is None and parse_validity(None) is None
    for bad in ("", "6", "6w", "m", "0m", "-1m", "99999d"):
        with pytest.raises(ValueError, match="^expires: "):
            parse_validity(bad)
    t = int(datetime(2025, 8, 31, 12, tzinfo=UTC).timestamp())
    assert expiry_after(t, Validity(6)) == int(datetime(2026, 2, 28, 12, tzinfo=UTC).timestamp())
    assert expiry_after(t, Validity(1)) == int(datetime(2025, 9, 30, 12, tzinfo=UTC).timestamp())
    assert expiry_after(t, Validity(0, 1)) == t + 86400
    assert expiry_after(t, None) is None
    assert str(Validity(6)) == "6m" and str(Validity(24)) == "2y" and str(Validity(0, 3)) == "3d"
