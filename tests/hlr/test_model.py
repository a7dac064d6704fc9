"""Pure parts: the result model, ages, the submit-path policy, field mapping, the breaker, metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet import task

from staffetta.conf.settings import ConfigError
from staffetta.hlr.model import HlrMetrics, HlrResult, parse_age
from staffetta.hlr.providers import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    SIMULATOR_MAPPING,
    CircuitBreaker,
    FieldMapping,
    ProviderBadAnswer,
    dig,
    provider_from_config,
)
from staffetta.hlr.service import (
    FAIL_CLOSED,
    FAIL_OPEN,
    REFUSE_DEST,
    REFUSE_SYSERR,
    SEND,
    decide,
    decision_status,
)
from staffetta.pdu.constants import Status


def r(status: str, **kw) -> HlrResult:
    return HlrResult("393331234567", status, **kw)


def test_result_json_round_trip_keeps_leading_zeros() -> None:
    a = HlrResult("393331234567", "valid", "222", "01", "TIM", "222", "10", "Vodafone", True, "FR",
                  1_700_000_000.5, "simulator")
    b = HlrResult.from_json(a.to_json())
    assert b == a
    assert b.mccmnc == "22201" and b.original_mccmnc == "22210"
    assert HlrResult.from_dict({**a.to_dict(), "mnc": 1, "extra": "ignored"}).mnc == "1"
    c = a.cached()
    assert c.source == "cache" and c.cached() is c and c.number == a.number


def test_status_is_checked() -> None:
    with pytest.raises(ValueError, match="status"):
        r("maybe")


def test_freshness_and_billable() -> None:
    a = r("valid", looked_up_at=1000.0)
    assert a.is_fresh(1000.0 + 60, 60) and not a.is_fresh(1000.0 + 61, 60)
    assert not r("error", looked_up_at=1000.0).is_fresh(1000.0, 60)
    assert r("unknown").billable and r("invalid").billable and not r("error").billable


@pytest.mark.parametrize(("text", "seconds"), [
    ("1m", 30 * 86400), ("3m", 90 * 86400), ("6m", 180 * 86400), ("30d", 30 * 86400), ("12h", 43200),
    ("2w", 14 * 86400), ("1y", 365 * 86400), ("90", 90), ("1.5s", 1.5), (45, 45.0),
])
def test_parse_age(text, seconds) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("bad", ["", "m", "3 weeks", "-1", "1x"])
def test_parse_age_refuses(bad) -> None:
    with pytest.raises(ValueError):
        parse_age(bad)


def test_decide_policy() -> None:
    assert decide(r("valid")) == SEND
    assert decide(r("absent")) == SEND
    assert decide(r("unknown")) == REFUSE_DEST
    assert decide(r("invalid"), FAIL_CLOSED) == REFUSE_DEST
    assert decide(r("error"), FAIL_OPEN) == SEND
    assert decide(r("error"), FAIL_CLOSED) == REFUSE_SYSERR
    assert decide(None) == SEND
    assert decision_status(REFUSE_DEST) == Status.ESME_RINVDSTADR
    assert decision_status(REFUSE_SYSERR) == Status.ESME_RSYSERR
    assert decision_status(SEND) is None
    with pytest.raises(ValueError):
        decide(r("error"), "fail-sideways")


# ------------------------------------------------------------------ mapping


def test_dig() -> None:
    data = {"a": {"b": [{"c": 1}, {"c": 2}]}, "x": None}
    assert dig(data, "a.b.1.c") == 2
    assert dig(data, "a.b.-1.c") == 2
    assert dig(data, "a.b.5.c") is None
    assert dig(data, "x.y") is None
    assert dig(data, "a.nope") is None


VENDOR = FieldMapping.from_dict({
    "status": "data.subscriber_status",
    "status_values": {"ACTIVE": "valid", "ABSENT_SUBSCRIBER": "absent", "UNKNOWN_SUBSCRIBER": "unknown",
                      "INVALID_MSISDN": "invalid"},
    "mcc": "data.network.mcc",
    "mnc": "data.network.mnc",
    "network": "data.network.name",
    "original_mcc": "data.original.mcc",
    "original_mnc": "data.original.mnc",
    "original_network": "data.original.name",
    "roaming_country": "data.roaming_iso",
})


def test_vendor_mapping_reads_nested_fields_and_derives_ported() -> None:
    answer = {"data": {"subscriber_status": "active",
                       "network": {"mcc": 222, "mnc": 1, "name": "TIM"},
                       "original": {"mcc": "222", "mnc": "10", "name": "Vodafone"},
                       "roaming_iso": "fr"}}
    got = VENDOR.apply("393331234567", answer, "acme-hlr", 5.0)
    assert (got.status, got.mcc, got.mnc, got.network) == ("valid", "222", "01", "TIM")
    assert (got.original_mcc, got.original_mnc, got.original_network) == ("222", "10", "Vodafone")
    assert got.ported is True  # not mapped: serving != original
    assert got.roaming_country == "FR"
    assert (got.source, got.looked_up_at) == ("acme-hlr", 5.0)
    same = {"data": {"subscriber_status": "ACTIVE", "network": {"mcc": "222", "mnc": "01"},
                     "original": {"mcc": "222", "mnc": "01"}, "roaming_iso": ""}}
    got = VENDOR.apply("393331234567", same, "acme-hlr", 5.0)
    assert got.ported is False and got.roaming_country is None


def test_mapping_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ProviderBadAnswer, match="not mapped"):
        VENDOR.apply("39", {"data": {"subscriber_status": "WHATEVER"}}, "v", 0)
    with pytest.raises(ProviderBadAnswer, match="no status"):
        VENDOR.apply("39", {"data": {}}, "v", 0)
    with pytest.raises(ProviderBadAnswer, match="yes/no"):
        SIMULATOR_MAPPING.apply("39", {"result": "DELIVERED", "ported": "perhaps"}, "s", 0)


def test_simulator_mapping_splits_mccmnc() -> None:
    got = SIMULATOR_MAPPING.apply("393331234567", {
        "result": "DELIVERED", "serving": {"mccmnc": "310260", "name": "T-Mobile US"},
        "home": {"mccmnc": "22201", "name": "TIM"}, "ported": True, "roaming": None}, "simulator", 1.0)
    assert (got.mcc, got.mnc, got.original_mcc, got.original_mnc) == ("310", "260", "222", "01")
    assert got.ported and got.roaming_country is None


@pytest.mark.parametrize(("mapping", "needle"), [
    ({"mcc": "a.b"}, "fields.status: required"),
    ({"status": "s", "colour": "c"}, "fields.colour: unknown field"),
    ({"status": "s", "status_values": {"OK": "fine"}}, "fields.status_values.OK"),
    ({"status": ""}, "fields.status: expected a dotted JSON path"),
])
def test_mapping_config_errors_name_the_field(mapping, needle) -> None:
    with pytest.raises(ValueError) as exc:
        FieldMapping.from_dict(mapping)
    assert needle in str(exc.value)


@pytest.mark.parametrize(("cfg", "needle"), [
    ({"type": "http", "fields": {"status": "s"}}, "hlr.provider.url: required"),
    ({"url": "https://x/{number}"}, "hlr.provider.fields: required"),
    ({"url": "https://x/lookup", "fields": {"status": "s"}}, "hlr.provider.url: the template must contain"),
    ({"url": "https://x/{number}", "fields": {"status": "s"}, "timeout": "soon"}, "hlr.provider.timeout"),
    ({"url": "https://x/{number}", "fields": {"status": "s"}, "auth_header": "Bearer x"},
     "hlr.provider.auth_header"),
    ({"url": "https://x/{number}", "fields": {"status": "s"}, "circuit": {"after": 3}}, "hlr.provider.circuit"),
    ({"url": "https://x/{number}", "fields": {"stat": "s"}}, "hlr.provider.fields.stat"),
    ({"url": "https://x/{number}", "fields": {"status": "s"}, "typo": 1}, "hlr.provider.typo: unknown"),
    ({"type": "smoke-signals"}, "hlr.provider.type"),
    ({"url": "https://x/{number}", "fields": {"status": "s"}, "auth_header": "Authorization: ${NO_SUCH_VAR_X}"},
     "hlr.provider.auth_header: environment variable NO_SUCH_VAR_X is not set"),
])
def test_provider_config_errors_are_one_line(cfg, needle) -> None:
    clock = task.Clock()
    with pytest.raises(ConfigError) as exc:
        provider_from_config(clock, cfg)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_provider_from_config_builds_a_vendor(monkeypatch) -> None:
    clock = task.Clock()
    monkeypatch.setenv("ACME_HLR_TOKEN", "s3cret")
    p = provider_from_config(clock, {
        "name": "acme", "url": "https://hlr.example.com/v1/lookup?msisdn={number}",
        "auth_header": "Authorization: Bearer ${ACME_HLR_TOKEN}", "headers": {"X-Client": "staffetta"}, "timeout": 3, "max_concurrency": 7, "retries": 1,
        "backoff": 0.1, "circuit": {"failures": 4, "reset_after": 20},
        "fields": {"status": "status", "mccmnc": "network.mccmnc"},
    })
    assert p.name == "acme" and p.timeout == 3.0 and p.retries == 1
    assert p.breaker.threshold == 4 and p.breaker.reset_after == 20.0
    assert p.url_for("393331234567") == b"https://hlr.example.com/v1/lookup?msisdn=393331234567"
    assert p._headers.getRawHeaders(b"authorization") == [b"Bearer s3cret"]
    assert p._headers.getRawHeaders(b"x-client") == [b"staffetta"]
    sim = provider_from_config(clock, {"type": "simulator", "url": "http://127.0.0.1:9/"})
    assert sim.url_for("39") == b"http://127.0.0.1:9/lookup?msisdn=39"


# ------------------------------------------------------------------ breaker


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = task.Clock()
    changes = []
    b = CircuitBreaker(clock, failures=3, reset_after=10, on_change=changes.append)
    b.failure()
    b.failure()
    b.success()  # the run is broken: consecutive failures start again
    b.failure()
    b.failure()
    assert b.state == CLOSED and b.allow()
    b.failure()
    assert b.state == OPEN and changes == [OPEN]
    assert not b.allow() and not b.would_allow()


def test_breaker_half_open_lets_one_probe_through() -> None:
    clock = task.Clock()
    b = CircuitBreaker(clock, failures=1, reset_after=10)
    b.failure()
    clock.advance(9.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.would_allow()
    assert b.allow() and b.state == HALF_OPEN  # the probe
    assert not b.allow() and not b.would_allow()  # everyone else still fails fast
    b.failure()  # the probe failed: open for another full cool-down
    assert b.state == OPEN
    clock.advance(5)
    assert not b.allow()
    clock.advance(5)
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow() and b.allow()
    assert b.opened == 2


def test_breaker_released_probe_lets_another_in() -> None:
    clock = task.Clock()
    b = CircuitBreaker(clock, failures=1, reset_after=1)
    b.failure()
    clock.advance(1)
    assert b.allow() and not b.allow()
    b.release()
    assert b.allow()


# ------------------------------------------------------------------ metrics


def test_metrics_register_on_the_given_registry() -> None:
    reg = CollectorRegistry()
    m = HlrMetrics(reg)
    m.cache_hit("valid")
    m.cache_miss()
    m.answered("simulator", "unknown")
    m.observe_latency("simulator", 0.03)
    m.circuit_state("simulator", OPEN)
    m.job(7, {"pending": 25, "done": 75}, 100)
    text = generate_latest(reg).decode()
    assert 'staffetta_hlr_cache_total{result="hit"} 1.0' in text
    assert 'staffetta_hlr_cache_total{result="miss"} 1.0' in text
    assert 'staffetta_hlr_lookups_total{provider="simulator",status="unknown"} 1.0' in text
    assert 'staffetta_hlr_lookups_total{provider="cache",status="valid"} 1.0' in text
    assert 'staffetta_hlr_circuit_state{provider="simulator"} 2.0' in text
    assert 'staffetta_hlr_job_progress_ratio{job="7"} 0.75' in text
    assert 'staffetta_hlr_provider_latency_seconds_count{provider="simulator"} 1.0' in text
