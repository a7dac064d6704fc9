"""HLR providers: who we ask, over HTTP, with timeouts, bounded concurrency, retries and a breaker.

A provider is anything with a ``name`` and ``lookup(number) -> Deferred[HlrResult]``
that fails with a :class:`ProviderError` when it cannot answer (the service
turns that into an ``error`` result: never cached, never charged).

:class:`HttpJsonProvider` is the one implementation: a GET (or POST) to a URL
template, an optional auth header, and a :class:`FieldMapping` from the
vendor's JSON to our fields. The simulator's HLR is just a mapping preset
(:func:`simulator_provider`), so the code that talks to a real vendor is the
code the tests exercise.

Every lookup:

1. fails fast with :class:`CircuitOpen` while the provider's breaker is open;
2. waits for one of ``max_concurrency`` slots (a ``DeferredSemaphore``);
3. tries up to ``1 + retries`` times, each attempt bounded by ``timeout``
   (connect, request and body), waiting ``backoff * 2**n`` between attempts;
   timeouts, connection errors, 5xx and 429 are retried, other 4xx are not;
4. reports each attempt to the breaker (a 4xx proves the provider is up).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from twisted.internet import defer, task
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost, DNSLookupError
from twisted.internet.protocol import Protocol as _TwistedProtocol
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from staffetta.hlr.model import (
    ABSENT,
    INVALID,
    NULL_METRICS,
    STATUSES,
    UNKNOWN,
    VALID,
    HlrResult,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ interface


class Provider(Protocol):
    name: str

    def lookup(self, number: str) -> defer.Deferred:
        """Deferred[HlrResult]; fails with :class:`ProviderError` when there is no answer."""
        ...


class ProviderError(Exception):
    """No answer from the provider; ``str()`` is the one-line reason."""

    retriable = False
    counts_as_failure = True  # for the circuit breaker


class ProviderTimeout(ProviderError):
    retriable = True


class ProviderUnavailable(ProviderError):
    """Connection refused / reset / DNS: retried."""

    retriable = True


class ProviderHttpError(ProviderError):
    def __init__(self, code: int, body: bytes = b"", where: str = "") -> None:
        text = f"HTTP {code}: {body[:120].decode('utf-8', 'replace').strip()}"
        super().__init__(f"{where}: {text}" if where else text)
        self.code = code
        self.retriable = code >= 500 or code == 429
        self.counts_as_failure = self.retriable


class ProviderBadAnswer(ProviderError):
    """The provider answered but we cannot read it (not JSON, unmapped status)."""


class CircuitOpen(ProviderError):
    counts_as_failure = False


def _reason(exc: BaseException) -> str:
    """The operator's words for a failed HTTP exchange: ``Connection refused``, not a class name."""
    reasons = getattr(exc, "reasons", None)  # ResponseFailed / ResponseNeverReceived carry Failures
    if reasons:
        return "; ".join(_reason(r.value) for r in reasons)
    os_error = getattr(exc, "osError", None)
    if isinstance(os_error, int):
        return os.strerror(os_error)
    if os_error is not None:
        return str(getattr(os_error, "strerror", None) or os_error)
    text = str(exc).strip().rstrip(".")
    # ConnectionRefusedError: "Connection was refused by other side: 111: Connection refused."
    return text.rsplit(": ", 1)[-1] if text else type(exc).__name__


# -------------------------------------------------------------- the breaker

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Open after ``failures`` consecutive failed attempts; probe again after ``reset_after`` s.

    Pure object: ``clock`` is anything with ``seconds()`` (the reactor, or
    ``task.Clock`` in tests). While open, :meth:`allow` says no without any
    I/O; once ``reset_after`` has passed, the first :meth:`allow` lets one
    probe through (half-open) and every other caller is still refused until
    the probe reports: :meth:`success` closes the circuit, :meth:`failure`
    opens it for another ``reset_after``.
    """

    def __init__(self, clock: Any, *, failures: int = 5, reset_after: float = 10.0,
                 on_change: Callable[[str], None] | None = None) -> None:
        if failures < 1:
            raise ValueError("failures: must be >= 1")
        if reset_after < 0:
            raise ValueError("reset_after: must be >= 0")
        self.clock = clock
        self.threshold = failures
        self.reset_after = reset_after
        self.on_change = on_change
        self._state = CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self._probing = False
        self.opened = 0  # times it opened (for tests and stats)

    @property
    def state(self) -> str:
        return self._state

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if state == OPEN:
                self.opened += 1
            if self.on_change is not None:
                self.on_change(state)

    def would_allow(self) -> bool:
        """Non-mutating :meth:`allow`: False only while open and cooling down (or probing)."""
        if self._state == CLOSED:
            return True
        if self._state == OPEN:
            return self.clock.seconds() - self.opened_at >= self.reset_after
        return not self._probing

    def allow(self) -> bool:
        if self._state == CLOSED:
            return True
        if self._state == OPEN:
            if self.clock.seconds() - self.opened_at < self.reset_after:
                return False
            self._set(HALF_OPEN)
            self._probing = True
            return True
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self.consecutive = 0
        self._probing = False
        self._set(CLOSED)

    def failure(self) -> None:
        self._probing = False
        if self._state == HALF_OPEN:
            self.opened_at = self.clock.seconds()
            self._set(OPEN)
            return
        self.consecutive += 1
        if self._state == CLOSED and self.consecutive >= self.threshold:
            self.opened_at = self.clock.seconds()
            self._set(OPEN)

    def release(self) -> None:
        """An allowed attempt ended without a verdict (cancelled): let another probe in."""
        self._probing = False


# ------------------------------------------------------------ field mapping

#: Our fields a mapping may fill. ``mccmnc`` / ``original_mccmnc`` is a
#: combined "22210"-style value split into MCC (3 digits) and MNC (the rest).
MAPPABLE = (
    "status", "mcc", "mnc", "mccmnc", "network", "original_mcc", "original_mnc", "original_mccmnc",
    "original_network", "ported", "roaming_country",
)
_TRUE = frozenset({"true", "yes", "y", "1", "ported"})
_FALSE = frozenset({"false", "no", "n", "0", "", "none", "null", "not_ported"})


def dig(data: Any, path: str) -> Any:
    """``dig({"a": {"b": [1, 2]}}, "a.b.1") == 2``; None when any step is missing."""
    cur = data
    for step in path.split("."):
        if isinstance(cur, Mapping):
            cur = cur.get(step)
        elif isinstance(cur, list) and step.lstrip("-").isdigit():
            i = int(step)
            cur = cur[i] if -len(cur) <= i < len(cur) else None
        else:
            return None
        if cur is None:
            return None
    return cur


def _code(value: Any, pad: int) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value).zfill(pad)
    s = str(value).strip()
    return s or None


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float):
        return bool(value)
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ProviderBadAnswer(f"{where}: {value!r} is not a yes/no value")


@dataclass(frozen=True)
class FieldMapping:
    """Where our fields are in a vendor's JSON answer, and what its statuses mean.

    ``paths`` maps our field (see :data:`MAPPABLE`) to a dotted path in their
    JSON (``"network.mcc"``, ``"results.0.status"``); ``status_values`` maps
    their status values (compared case-insensitively, as strings) to ours. With
    no ``status_values`` their values must already be ours. ``ported`` left
    unmapped is derived: serving MCC-MNC differs from the original one.
    """

    paths: Mapping[str, str]
    status_values: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "fields") -> FieldMapping:
        """The flat config shape: our field -> path, plus ``status_values: {theirs: ours}``."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected a mapping of our field -> JSON path")
        paths: dict[str, str] = {}
        values: dict[str, str] = {}
        for key, value in d.items():
            if key == "status_values":
                if not isinstance(value, Mapping):
                    raise ValueError(f"{where}.status_values: expected a mapping of their value -> ours")
                for theirs, ours in value.items():
                    if ours not in STATUSES:
                        raise ValueError(f"{where}.status_values.{theirs}: {ours!r} is not one of "
                                         f"{', '.join(STATUSES)}")
                    values[str(theirs).lower()] = ours
                continue
            if key not in MAPPABLE:
                raise ValueError(f"{where}.{key}: unknown field (expected one of {', '.join(MAPPABLE)}, "
                                 "status_values)")
            if not isinstance(value, str) or not value:
                raise ValueError(f"{where}.{key}: expected a dotted JSON path")
            paths[key] = value
        if "status" not in paths:
            raise ValueError(f"{where}.status: required (the path of the subscriber status)")
        return cls(paths, values)

    def apply(self, number: str, data: Any, source: str, now: float) -> HlrResult:
        p = self.paths
        raw = dig(data, p["status"])
        if raw is None:
            raise ProviderBadAnswer(f"no status at {p['status']!r}")
        key = str(raw).lower()
        status = self.status_values.get(key) if self.status_values else (key if key in STATUSES else None)
        if status is None:
            raise ProviderBadAnswer(f"status {raw!r} at {p['status']!r} is not mapped")

        def get(name: str) -> Any:
            path = p.get(name)
            return dig(data, path) if path else None

        mcc, mnc = _code(get("mcc"), 3), _code(get("mnc"), 2)
        omcc, omnc = _code(get("original_mcc"), 3), _code(get("original_mnc"), 2)
        both = _code(get("mccmnc"), 5)
        if both and len(both) >= 5 and both.isdigit():
            mcc, mnc = both[:3], both[3:]
        both = _code(get("original_mccmnc"), 5)
        if both and len(both) >= 5 and both.isdigit():
            omcc, omnc = both[:3], both[3:]
        network = get("network")
        onetwork = get("original_network")
        if "ported" in p:
            ported = _flag(get("ported"), p["ported"])
        else:
            ported = bool(mcc and omcc and (mcc, mnc) != (omcc, omnc))
        roaming = get("roaming_country")
        if roaming in (None, False):
            roaming = None
        else:
            roaming = str(roaming).strip().upper()[:8] or None
        return HlrResult(
            number, status, mcc, mnc, None if network is None else str(network)[:64],
            omcc, omnc, None if onetwork is None else str(onetwork)[:64], ported, roaming,
            now, source,
        )


#: How the bundled simulator (``simulator/hlr.py``) answers.
SIMULATOR_MAPPING = FieldMapping.from_dict({
    "status": "result",
    "status_values": {"DELIVERED": VALID, "ABSENT": ABSENT, "UNKNOWN_SUBSCRIBER": UNKNOWN,
                      "NOT_MOBILE": INVALID},
    "mccmnc": "serving.mccmnc",
    "network": "serving.name",
    "original_mccmnc": "home.mccmnc",
    "original_network": "home.name",
    "ported": "ported",
    "roaming_country": "roaming.country",
})


# --------------------------------------------------------------- the provider

MAX_BODY = 256 * 1024  # an HLR answer is a few hundred bytes; refuse to buffer more


class _Body(_TwistedProtocol):
    """Collects a response body (bounded); cancelling the Deferred drops the connection."""

    def __init__(self, d: defer.Deferred) -> None:
        self.d = d
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.size += len(data)
        if self.size > MAX_BODY:
            if not self.d.called:
                self.d.errback(ProviderBadAnswer(f"answer longer than {MAX_BODY} bytes"))
            self.transport.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self.d.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.d.callback(b"".join(self.parts))
        else:
            self.d.errback(reason)


class _EndpointCache:
    """One endpoint per (scheme, host, port) instead of one per request."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.endpoints: dict[tuple, Any] = {}

    def endpointForURI(self, uri: Any) -> Any:  # noqa: N802 - IAgentEndpointFactory
        key = (uri.scheme, uri.host, uri.port)
        ep = self.endpoints.get(key)
        if ep is None:
            if len(self.endpoints) > 64:
                self.endpoints.clear()
            ep = self.endpoints[key] = self.inner.endpointForURI(uri)
        return ep


def _read_body(response: Any) -> defer.Deferred:
    proto: _Body

    def cancel(_d: defer.Deferred) -> None:
        if proto.transport is not None:
            proto.transport.stopProducing()

    d: defer.Deferred = defer.Deferred(cancel)
    proto = _Body(d)
    response.deliverBody(proto)
    return d



def _parse_header(text: str, where: str = "auth_header") -> tuple[str, str]:
    name, sep, value = str(text).partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n") or "\n" in value:
        raise ValueError(f"{where}: expected 'Name: value', e.g. 'Authorization: Bearer TOKEN'")
    return name.strip(), value.strip()


class HttpJsonProvider:
    """A JSON-over-HTTP HLR vendor, configured by URL template, auth header and field mapping."""

    def __init__(
        self,
        reactor: Any,
        name: str,
        url_template: str,
        *,
        auth_header: str | None = None,
        headers: Mapping[str, str] | None = None,
        field_mapping: FieldMapping | Mapping[str, Any] | None = None,
        timeout: float = 5.0,
        max_concurrency: int = 20,
        retries: int = 2,
        backoff: float = 0.2,
        method: str = "GET",
        body_template: str | None = None,
        breaker: CircuitBreaker | None = None,
        failures_to_open: int = 5,
        reset_after: float = 10.0,
        metrics: Any = None,
        agent: Any = None,
    ) -> None:
        if "{number}" not in url_template and (body_template is None or "{number}" not in body_template):
            raise ValueError("url: the template must contain {number}")
        if timeout <= 0:
            raise ValueError("timeout: must be > 0 seconds")
        if max_concurrency < 1:
            raise ValueError("max_concurrency: must be >= 1")
        if retries < 0:
            raise ValueError("retries: must be >= 0")
        if backoff < 0:
            raise ValueError("backoff: must be >= 0")
        if method.upper() not in ("GET", "POST"):
            raise ValueError("method: GET or POST")
        self.reactor = reactor
        self.name = name
        self.url_template = url_template
        parts = urlsplit(url_template)
        #: How messages name this provider: ``simulator (http://127.0.0.1:2778)``.
        self.where = f"{name} ({parts.scheme}://{parts.netloc})"
        #: The reason of the last failed attempt, shown while the circuit is open.
        self.last_error: str | None = None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.method = method.upper().encode()
        self.body_template = body_template
        if field_mapping is None:
            field_mapping = FieldMapping({"status": "status"})
        elif not isinstance(field_mapping, FieldMapping):
            field_mapping = FieldMapping.from_dict(field_mapping)
        self.mapping = field_mapping
        hdrs: dict[bytes, list[bytes]] = {b"accept": [b"application/json"],
                                          b"user-agent": [b"staffetta-hlr"]}
        if body_template is not None:
            hdrs[b"content-type"] = [b"application/json"]
        for k, v in (headers or {}).items():
            hdrs[k.lower().encode()] = [str(v).encode()]
        if auth_header:
            k, v = _parse_header(auth_header)
            hdrs[k.lower().encode()] = [v.encode()]
        self._headers = Headers(hdrs)
        self.metrics = metrics if metrics is not None else NULL_METRICS
        self.breaker = breaker or CircuitBreaker(
            reactor, failures=failures_to_open, reset_after=reset_after,
            on_change=lambda s: self.metrics.circuit_state(self.name, s),
        )
        self.metrics.circuit_state(self.name, self.breaker.state)
        self.semaphore = defer.DeferredSemaphore(max_concurrency)
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = max_concurrency
            self._pool.retryAutomatically = True
            agent = Agent(reactor, connectTimeout=timeout, pool=self._pool)
            inner = getattr(agent, "_endpointFactory", None)
            if inner is not None and hasattr(inner, "endpointForURI"):
                # Agent builds an endpoint (IDNA-encoding the host) per request: ~1/3 of its cost.
                agent._endpointFactory = _EndpointCache(inner)
        else:
            self._pool = None
        self.agent = agent
        self.calls = 0  # HTTP attempts made
        self.fast_failures = 0  # lookups refused by the open circuit

    def __repr__(self) -> str:
        return f"HttpJsonProvider({self.name!r}, {self.url_template!r})"

    def url_for(self, number: str) -> bytes:
        return self.url_template.replace("{number}", quote(number, safe="")).encode("ascii")

    def _circuit_open(self) -> CircuitOpen:
        self.fast_failures += 1
        return CircuitOpen(f"{self.where}: circuit open after {self.last_error or 'repeated failures'}")

    def lookup(self, number: str) -> defer.Deferred:
        if not self.breaker.would_allow():
            return defer.fail(self._circuit_open())
        return self.semaphore.run(lambda: defer.Deferred.fromCoroutine(self._lookup(number)))

    async def _lookup(self, number: str) -> HlrResult:
        started = time.monotonic()
        attempt = 0
        try:
            while True:
                if not self.breaker.allow():
                    raise self._circuit_open()
                try:
                    code, body = await self._attempt(number)
                except ProviderError as exc:
                    if exc.counts_as_failure:
                        self.last_error = str(exc).removeprefix(f"{self.where}: ")
                        self.breaker.failure()
                    else:
                        self.breaker.success()
                    if not exc.retriable or attempt >= self.retries:
                        raise
                except defer.CancelledError:
                    self.breaker.release()
                    raise
                else:
                    try:
                        data = json.loads(body)
                        result = self.mapping.apply(number, data, self.name, self.reactor.seconds())
                    except (ValueError, ProviderBadAnswer) as exc:
                        self.breaker.failure()
                        if isinstance(exc, ProviderBadAnswer):
                            raise
                        raise ProviderBadAnswer(f"{self.where}: answer is not JSON: {exc}") from None
                    self.breaker.success()
                    return result
                delay = self.backoff * (2 ** attempt)
                attempt += 1
                if delay > 0:
                    await task.deferLater(self.reactor, delay)
        finally:
            self.metrics.observe_latency(self.name, time.monotonic() - started)

    async def _attempt(self, number: str) -> tuple[int, bytes]:
        self.calls += 1
        body = None
        if self.body_template is not None:
            body = FileBodyProducer(BytesIO(self.body_template.replace("{number}", number).encode()))
        d = self.agent.request(self.method, self.url_for(number), self._headers, body)
        d.addCallback(lambda response: _read_body(response).addCallback(lambda b: (response.code, b)))
        timed_out = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.reactor.callLater(self.timeout, expire)
        try:
            code, data = await d
        except Exception as exc:
            if timed_out:
                raise ProviderTimeout(f"{self.where}: no answer within {self.timeout:g}s") from None
            if isinstance(exc, ProviderError):
                raise
            if isinstance(exc, ConnectError | DNSLookupError | ConnectionLost | ResponseFailed
                          | ResponseNeverReceived | ConnectionDone):
                raise ProviderUnavailable(f"{self.where}: unreachable ({_reason(exc)})") from None
            raise
        finally:
            if timer.active():
                timer.cancel()
        if not 200 <= code < 300:
            raise ProviderHttpError(code, data, self.where)
        return code, data

    def close(self) -> defer.Deferred:
        """Drop the kept-alive connections (tests call this; the hub at shutdown)."""
        if self._pool is None:
            return defer.succeed(None)
        return self._pool.closeCachedConnections()


def simulator_provider(reactor: Any, base_url: str = "http://127.0.0.1:2778", **kw: Any) -> HttpJsonProvider:
    """The bundled simulator's HLR (``staffetta simulator --hlr``) through the generic provider."""
    kw.setdefault("name", "simulator")
    name = kw.pop("name")
    return HttpJsonProvider(reactor, name, base_url.rstrip("/") + "/lookup?msisdn={number}",
                            field_mapping=SIMULATOR_MAPPING, **kw)


# ------------------------------------------------------------ from the config

_PROVIDER_KEYS = {
    "name", "type", "url", "method", "body", "auth_header", "headers", "fields", "timeout",
    "max_concurrency", "retries", "backoff", "circuit",
}


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: str, where: str) -> str:
    """``${NAME}`` -> the environment variable (secrets stay out of the YAML)."""
    from staffetta.conf.settings import ConfigError

    def sub(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise ConfigError(f"{where}: environment variable {m.group(1)} is not set")
        return os.environ[m.group(1)]

    return _ENV.sub(sub, value)


def provider_from_config(reactor: Any, d: Mapping[str, Any], *, where: str = "hlr.provider",
                         metrics: Any = None) -> HttpJsonProvider:
    """Build the provider from the ``hlr.provider`` mapping of ``staffetta.yaml`` (see docs/hlr.md).

    Raises ``conf.settings.ConfigError`` with one line naming the field.
    """
    from staffetta.conf.settings import ConfigError

    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    for key in d:
        if key not in _PROVIDER_KEYS:
            raise ConfigError(f"{where}.{key}: unknown setting")
    kind = d.get("type", "http")
    circuit = d.get("circuit") or {}
    if not isinstance(circuit, Mapping) or set(circuit) - {"failures", "reset_after"}:
        raise ConfigError(f"{where}.circuit: expected {{failures: N, reset_after: SECONDS}}")

    def num(key: str, default: float, cls: type = float, src: Mapping = d, at: str = where) -> Any:
        v = src.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{at}.{key}: expected a number, got {v!r}")
        return cls(v)

    common = dict(
        timeout=num("timeout", 5.0),
        max_concurrency=num("max_concurrency", 20, int),
        retries=num("retries", 2, int),
        backoff=num("backoff", 0.2),
        failures_to_open=num("failures", 5, int, circuit, f"{where}.circuit"),
        reset_after=num("reset_after", 10.0, float, circuit, f"{where}.circuit"),
        metrics=metrics,
    )
    try:
        if kind == "simulator":
            return simulator_provider(reactor, d.get("url", "http://127.0.0.1:2778"),
                                      name=d.get("name", "simulator"), **common)
        if kind != "http":
            raise ConfigError(f"{where}.type: 'http' or 'simulator', not {kind!r}")
        if "url" not in d:
            raise ConfigError(f"{where}.url: required (a URL template containing {{number}})")
        if "fields" not in d:
            raise ConfigError(f"{where}.fields: required (our field -> JSON path, status_values)")
        headers = d.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ConfigError(f"{where}.headers: expected a mapping of header -> value")
        headers = {str(k): _expand(str(v), f"{where}.headers.{k}") for k, v in headers.items()}
        auth = d.get("auth_header")
        auth = None if auth is None else _expand(str(auth), f"{where}.auth_header")
        try:
            mapping = FieldMapping.from_dict(d["fields"], f"{where}.fields")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return HttpJsonProvider(
            reactor, str(d.get("name", "http")), str(d["url"]), auth_header=auth,
            headers=headers, field_mapping=mapping,
            method=str(d.get("method", "GET")), body_template=d.get("body"), **common,
        )
    except ConfigError:
        raise
    except ValueError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(where) else f"{where}.{msg}") from None


__all__ = [
    "CLOSED", "HALF_OPEN", "MAPPABLE", "OPEN", "SIMULATOR_MAPPING", "CircuitBreaker", "CircuitOpen",
    "FieldMapping", "HttpJsonProvider", "Provider", "ProviderBadAnswer", "ProviderError",
    "ProviderHttpError", "ProviderTimeout", "ProviderUnavailable", "dig", "provider_from_config",
    "simulator_provider",
]
