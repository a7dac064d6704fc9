"""What an HLR lookup says about a number, how old an answer may be, and the metrics.

An :class:`HlrResult` is the hub's own shape of an answer, whatever the
provider's JSON looked like: the status, the network that serves the number
now (MCC, MNC, name), the network its prefix belongs to (``original_*``), the
ported flag, the roaming country, when it was looked up and where it came
from (``"cache"`` or the provider's name).

Statuses:

``valid``   a live subscriber; ``mcc``/``mnc``/``network`` is the serving network
``absent``  a known subscriber that is unreachable now (phone off, out of coverage)
``unknown`` no such subscriber on the network (never allocated, disconnected)
``invalid`` not a mobile number at all
``error``   the lookup failed (timeout, provider down, answer we cannot read):
            never cached, never charged

MCC and MNC are strings: an MNC's leading zero is significant ("01" != "1").
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

VALID, ABSENT, UNKNOWN, INVALID, ERROR = "valid", "absent", "unknown", "invalid", "error"
STATUSES = (VALID, ABSENT, UNKNOWN, INVALID, ERROR)
#: Statuses that are an answer from the network (cached and charged); ``error`` is not.
ANSWERS = frozenset({VALID, ABSENT, UNKNOWN, INVALID})
CACHE = "cache"
LOCAL = "local"  # refused by our own number check, no provider asked (free)

MONTH = 30 * 86400.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class HlrResult:
    number: str  # E.164 digits, no '+'
    status: str
    mcc: str | None = None
    mnc: str | None = None
    network: str | None = None
    original_mcc: str | None = None
    original_mnc: str | None = None
    original_network: str | None = None
    ported: bool = False
    roaming_country: str | None = None
    looked_up_at: float = 0.0
    source: str = ""
    detail: str | None = None  # why, for ``error`` (and ``invalid`` from our own check)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: {self.status!r} is not one of {', '.join(STATUSES)}")

    # ----------------------------------------------------------------- views

    @property
    def mccmnc(self) -> str | None:
        """The serving network as one MCC+MNC string (what routing and statistics key on)."""
        return self.mcc + self.mnc if self.mcc and self.mnc else None

    @property
    def original_mccmnc(self) -> str | None:
        return self.original_mcc + self.original_mnc if self.original_mcc and self.original_mnc else None

    @property
    def billable(self) -> bool:
        """A real answer (charged when it came from a provider); ``error`` never is."""
        return self.status in ANSWERS

    def is_fresh(self, now: float, max_age: float) -> bool:
        return self.status in ANSWERS and now - self.looked_up_at <= max_age

    def cached(self) -> HlrResult:
        """The same answer as served from the cache."""
        return self if self.source == CACHE else replace(self, source=CACHE)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HlrResult:
        known = _FIELD_NAMES
        kw = {k: v for k, v in d.items() if k in known}
        if "ported" in kw:
            kw["ported"] = bool(kw["ported"])
        if "looked_up_at" in kw:
            kw["looked_up_at"] = float(kw["looked_up_at"])
        for k in ("mcc", "mnc", "original_mcc", "original_mnc"):
            if kw.get(k) is not None:
                kw[k] = str(kw[k])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str | bytes) -> HlrResult:
        return cls.from_dict(json.loads(text))


_FIELD_NAMES = frozenset(f.name for f in fields(HlrResult))
#: Column order of CSV output (``charged`` and job columns are appended by the job writer).
CSV_FIELDS = tuple(f.name for f in fields(HlrResult))


def error_result(number: str, source: str, detail: str, now: float) -> HlrResult:
    return HlrResult(number, ERROR, looked_up_at=now, source=source, detail=detail[:200])


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|mo|month|months|d|day|days|h|w|y)?\s*$", re.I)
_UNIT = {"s": 1.0, "sec": 1.0, "h": 3600.0, "d": DAY, "day": DAY, "days": DAY, "w": 7 * DAY,
         "m": MONTH, "mo": MONTH, "month": MONTH, "months": MONTH, "y": 365 * DAY}


def parse_age(text: str | float | int) -> float:
    """'1m' / '3m' / '6m' (months of 30 days), '30d', '12h', '2w', '1y' or seconds -> seconds.

    'm' is a *month* here, as operators write "not checked in 1, 3 or 6 months"
    (use 's' or 'h' for short ages). ValueError names what was wrong.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"age must be >= 0, not {text}")
        return float(text)
    m = _AGE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not an age like 1m, 3m, 6m (months), 30d, 12h or seconds")
    return float(m.group(1)) * _UNIT[(m.group(2) or "s").lower()]


# --------------------------------------------------------------------- metrics

CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class HlrMetrics:
    """Prometheus metrics of the HLR: pass the hub's registry (``HubMetrics.registry``).

    ``staffetta_hlr_lookups_total{provider,status}``   answers (``provider`` is ``cache`` for hits)
    ``staffetta_hlr_cache_total{result}``               ``hit`` / ``miss`` (hit ratio = hit / sum)
    ``staffetta_hlr_provider_latency_seconds{provider}`` one provider call, retries included
    ``staffetta_hlr_circuit_state{provider}``           0 closed, 1 half-open, 2 open
    ``staffetta_hlr_job_progress_ratio{job}``           done / total of a running verification job
    ``staffetta_hlr_job_items{job,state}``              items per state of that job

    Labels never carry a number (cardinality). Children are cached in dicts:
    ``.labels()`` costs more than the increment.
    """

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.lookups = Counter("staffetta_hlr_lookups", "HLR answers by provider and status",
                               ["provider", "status"], registry=r)
        self.cache = Counter("staffetta_hlr_cache", "HLR cache hits and misses", ["result"], registry=r)
        self.latency = Histogram("staffetta_hlr_provider_latency_seconds",
                                 "one HLR provider lookup (retries included)", ["provider"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.circuit = Gauge("staffetta_hlr_circuit_state",
                             "HLR provider circuit: 0 closed, 1 half-open, 2 open", ["provider"], registry=r)
        self.job_progress = Gauge("staffetta_hlr_job_progress_ratio",
                                  "verification job progress (done / total)", ["job"], registry=r)
        self.job_items = Gauge("staffetta_hlr_job_items", "verification job items by state",
                               ["job", "state"], registry=r)
        self._hit = self.cache.labels("hit")
        self._miss = self.cache.labels("miss")
        self._children: dict[tuple, Any] = {}

    def cache_hit(self, status: str) -> None:
        self._hit.inc()
        self.answered(CACHE, status)

    def cache_miss(self) -> None:
        self._miss.inc()

    def answered(self, provider: str, status: str) -> None:
        key = ("l", provider, status)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = self.lookups.labels(provider, status)
        c.inc()

    def observe_latency(self, provider: str, seconds: float) -> None:
        key = ("h", provider)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = self.latency.labels(provider)
        c.observe(seconds)

    def circuit_state(self, provider: str, state: str) -> None:
        self.circuit.labels(provider).set(CIRCUIT_STATES.get(state, -1))

    def job(self, job_id: int, counts: dict[str, int], total: int) -> None:
        job = str(job_id)
        finished = total - counts.get("pending", 0)
        self.job_progress.labels(job).set(finished / total if total else 1.0)
        for state, n in counts.items():
            self.job_items.labels(job, state).set(n)


class NullMetrics:
    """Metrics that go nowhere (no registry given)."""

    def cache_hit(self, status: str) -> None:
        pass

    def cache_miss(self) -> None:
        pass

    def answered(self, provider: str, status: str) -> None:
        pass

    def observe_latency(self, provider: str, seconds: float) -> None:
        pass

    def circuit_state(self, provider: str, state: str) -> None:
        pass

    def job(self, job_id: int, counts: dict[str, int], total: int) -> None:
        pass


NULL_METRICS = NullMetrics()
