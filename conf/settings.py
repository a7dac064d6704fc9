"""The schema of ``staffetta.yaml``: loading, defaults, one-line errors.

Every error names the field as a path (``upstreams[0].port: ...``) so that an
operator fixes a config without reading a traceback. Unknown keys are errors
too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad setting; the message is one line that names the field."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    session_init: float = 10.0
    enquire_link: float = 30.0
    response: float = 30.0
    inactivity: float = 300.0
    window: int = 10  # our deliver_sm in flight per client session
    inbound_window: int = 100  # client requests awaiting our answer before ESME_RTHROTTLED


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    name: str
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    window: int = 50
    #: Carrier requests (receipts, MO) awaiting our answer; when full we stop
    #: reading the carrier's socket (TCP back-pressure), never refuse them.
    inbound_window: int = 100
    id_format: str = "auto"
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    throttle_backoff: float = 1.0  # pause after ESME_RTHROTTLED / ESME_RMSGQFUL from the carrier
    #: transceiver (one TRX bind a session) or transmitter-receiver (a TX bind for
    #: submits and an RX bind for receipts and MO, a pair a session).
    bind_mode: str = "transceiver"
    #: Sessions to this carrier; each has its own window on the connector's queue.
    sessions: int = 1
    #: Submits per second at most over all sessions (0: no limit). Held back, never
    #: refused: the queue waits, so order is kept.
    throughput: float = 0.0
    #: Seconds of silence before we send enquire_link on this carrier's sessions
    #: (None: ``session.enquire_link``). Some carriers drop a link idle for 30 s.
    enquire_link: float | None = None


BIND_MODES = ("transceiver", "transmitter-receiver")


@dataclass(frozen=True, slots=True)
class BindLimit:
    failures: int = 5  # failed bind attempts allowed per source address...
    per_seconds: float = 60.0  # ...within this many seconds
    check_threads: int = 1  # password checks computed at once (each holds 4 MiB: docs/operations.md)
    check_queue: int = 32  # binds waiting for a check; beyond it ESME_RTHROTTLED at once
    cache_ttl: float = 300.0  # seconds a successful check spares the next bind's scrypt (0: off)

    def __post_init__(self) -> None:
        if self.check_threads < 1:
            raise ConfigError(f"bind_limit.check_threads: expected at least 1, got {self.check_threads}")


@dataclass(frozen=True, slots=True)
class HlrSettings:
    mode: str = "off"  # off | cached | always: the default for accounts without their own
    failure_policy: str = "fail-open"  # provider down: send anyway, or refuse (ESME_RSYSERR)
    max_age: str = "1m"  # freshness of a cached answer: 30d, 1m, 3m, 6m, 12h or seconds
    memory_size: int = 100_000  # answers kept in memory
    provider: dict | None = None  # validated by hlr.providers.provider_from_config (docs/hlr.md)


@dataclass(frozen=True, slots=True)
class MoSettings:
    """The ``mo:`` section: multipart reassembly and webhook retries (docs/two-way.md)."""

    reassembly_timeout: float = 600.0  # a long MO still incomplete this long after its first part: as it is, flagged
    max_reassembling: int = 10_000  # long MO collected at once; the oldest beyond it goes as it is
    webhook_first_retry: float = 10.0  # then doubling...
    webhook_max_delay: float = 3600.0  # ...at most this apart...
    webhook_retry_for: float = 86400.0  # ...for this long after the MO came; then a dead letter
    webhook_timeout: float = 10.0  # an answer not in within this is a failed attempt
    webhook_concurrency: int = 64  # POSTs in flight at once, per hub


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = "127.0.0.1:2775"
    data_dir: str = "./staffetta-data"
    database_url: str | None = None
    metrics_listen: str | None = "127.0.0.1:9775"
    system_id: str = "Staffetta"
    session: SessionSettings = field(default_factory=SessionSettings)
    upstreams: tuple[UpstreamSettings, ...] = ()
    bind_limit: BindLimit = field(default_factory=BindLimit)
    outbox_ttl: float = 3 * 86400.0
    writer_batch: int = 200
    writer_delay: float = 0.0005
    max_queue: int = 200_000
    #: Messages awaiting their receipt kept in memory (about 1 KB each); the
    #: oldest beyond it, and any past its validity plus ``track_grace``, are
    #: matched from the store when their receipt comes (docs/operations.md).
    max_tracked: int = 300_000
    track_grace: float = 3600.0
    #: Messages held for a future schedule_delivery_time at once; beyond it ESME_RMSGQFUL.
    max_scheduled: int = 200_000
    #: What query_sm says of a message held for its schedule: 3.4's ``enroute`` (1), or
    #: 5.0's ``scheduled`` (0) for clients that know it (docs/conformance.md).
    query_scheduled_state: str = "scheduled"
    #: Price plans; validated by billing.plans.billing_from_dict (docs/billing.md).
    billing: dict | None = None
    hlr: HlrSettings = field(default_factory=HlrSettings)
    #: The route table (docs/routing.md): ordered rules, first match wins;
    #: validated at start and at every reload by router.routes.route_table. None: one rule sending
    #: everything over every upstream in config order, with failover.
    routes: list | None = None
    #: The time zone of the rules' hours and days.
    route_timezone: str = "UTC"
    #: Account groups the rules may match on: group -> [account names].
    account_groups: dict | None = None
    mo: MoSettings = field(default_factory=MoSettings)
    redis_url: str | None = None
    #: Sender pools, the reply window, STOP/START/HELP words; validated by
    #: router.numbers.two_way_from_dict (docs/two-way.md).
    numbers: dict | None = None

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'staffetta.db'}"


def parse_hostport(value: str, where: str) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


#: Settings where zero (or less) has no useful meaning: a window of 0 accepts
#: and charges messages it can never send, a timer of 0 fires at once.
_POSITIVE = frozenset({
    "window", "inbound_window", "failures", "per_seconds", "writer_batch", "max_queue", "max_scheduled",
    "outbox_ttl", "reconnect_min", "reconnect_max", "session_init", "enquire_link", "response", "inactivity",
    "sessions", "reassembly_timeout", "max_reassembling", "webhook_first_retry", "webhook_max_delay",
    "webhook_retry_for", "webhook_timeout", "webhook_concurrency",
})
#: Lengths of SMPP C-Octet strings without their NUL (3.4 §5.2): longer ones cannot be sent.
_MAX_LEN = {"system_id": 15, "password": 8, "system_type": 12}
_NOT_EMPTY = frozenset({"name", "host", "system_id", "data_dir"})
#: Words that turn ``metrics_listen`` off (YAML 1.1 reads a bare ``off`` / ``no`` as false).
_OFF = (None, False, "off", "none", "no", "")


def _check_database_url(value: str, path: str) -> None:
    """Only the two stores Staffetta runs on, parsed before anything connects."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(value).get_backend_name()
    except ArgumentError:
        backend = None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"{path}: expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB, got {value!r}")


def _check_redis_url(value: str, path: str) -> None:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{path}: expected redis://HOST:PORT/DB, got {value!r}")


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{where + '.' if where else ''}{key}: unknown setting")
    kwargs = {}
    for name, f in known.items():
        if name not in data:
            continue
        path = f"{where}.{name}" if where else name
        kwargs[name] = _value(f.type, data[name], path, name)
    try:
        built = cls(**kwargs)
    except TypeError as exc:
        missing = str(exc).split("'")[1] if "'" in str(exc) else "?"
        raise ConfigError(f"{where}.{missing}: required") from None
    if isinstance(built, UpstreamSettings) and built.reconnect_max < built.reconnect_min:
        raise ConfigError(f"{where}.reconnect_max: must be >= reconnect_min ({built.reconnect_min:g}), "
                          f"got {built.reconnect_max:g}")
    return built


def _value(typ: str, value: Any, path: str, name: str):
    t = typ.replace(" ", "")
    if t == "SessionSettings":
        return _build(SessionSettings, value, path)
    if t == "BindLimit":
        return _build(BindLimit, value, path)
    if t == "HlrSettings":
        return _build(HlrSettings, value, path)
    if t == "MoSettings":
        return _build(MoSettings, value, path)
    if t.startswith("tuple[UpstreamSettings"):
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{path}: expected a non-empty list")
        items = tuple(_build(UpstreamSettings, v, f"{path}[{i}]") for i, v in enumerate(value))
        names = [u.name for u in items]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: upstream names must be unique")
        return items
    if t == "list|None":
        if value is not None and not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list")
        return value
    if t == "dict|None":
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping")
        return value
    if t in ("int",):
        if name == "port":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise ConfigError(f"{path}: expected a port 1-65535, got {value!r}")
            return value
        least = 1 if name in _POSITIVE else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{path}: expected an integer >= {least}, got {value!r}")
        return value
    if t == "float|None" and value is None:
        return None
    if t in ("float", "float|None"):
        positive = name in _POSITIVE
        if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                or value < 0 or (positive and value == 0)):
            what = "messages per second" if name == "throughput" else "a number of seconds"
            raise ConfigError(f"{path}: expected {what} {'> 0' if positive else '>= 0'}, got {value!r}")
        return float(value)
    if name == "metrics_listen" and (value in _OFF or str(value).lower() in _OFF):
        return None
    if t in ("str", "str|None"):
        if value is None and t == "str|None":
            return None
        if value is False and name == "mode":
            value = "off"  # YAML 1.1 reads a bare `off` as false
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected text, got {value!r}")
        value = str(value)
        if name in ("listen", "metrics_listen"):
            parse_hostport(value, path)
        if name == "mode" and value not in ("off", "cached", "always"):
            raise ConfigError(f"{path}: expected off, cached or always, got {value!r}")
        if name == "failure_policy" and value not in ("fail-open", "fail-closed"):
            raise ConfigError(f"{path}: expected fail-open or fail-closed, got {value!r}")
        if name == "bind_mode" and value not in BIND_MODES:
            raise ConfigError(f"{path}: expected {' or '.join(BIND_MODES)}, got {value!r}")
        if name == "query_scheduled_state" and value not in ("enroute", "scheduled"):
            raise ConfigError(f"{path}: expected enroute or scheduled, got {value!r}")
        if name == "id_format" and value not in ("auto", "decimal", "hex"):
            raise ConfigError(f"{path}: expected auto, decimal or hex, got {value!r}")
        if name == "password" and len(value) > 8:
            raise ConfigError(f"{path}: SMPP passwords are at most 8 characters")
        if name in _MAX_LEN and len(value) > _MAX_LEN[name]:
            raise ConfigError(f"{path}: at most {_MAX_LEN[name]} characters in SMPP, got {len(value)}")
        if name in _NOT_EMPTY and not value.strip():
            raise ConfigError(f"{path}: must not be empty")
        if name == "database_url":
            _check_database_url(value, path)
        if name == "redis_url":
            _check_redis_url(value, path)
        return value
    raise AssertionError(f"unhandled type {typ} for {path}")  # pragma: no cover


def load(path: str | Path) -> Settings:
    return from_dict(read_config(path))


def read_config(path: str | Path) -> dict:
    """The file's settings as written, before any check (``staffetta route check`` reads ``routes:`` so)."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} not valid YAML") from None
    return raw or {}


def from_dict(data: dict) -> Settings:
    settings = _build(Settings, data, "")
    if not settings.upstreams:
        raise ConfigError("upstreams: at least one upstream carrier is required")
    if settings.max_tracked <= settings.max_queue:
        # A queued message needs its record for expiry, cancel and its refund.
        raise ConfigError(f"max_tracked: must be above max_queue ({settings.max_queue}), got {settings.max_tracked}")
    return settings


# ------------------------------------------------------------ which store

#: Environment variables that choose the store when neither ``--config`` nor
#: ``--data-dir`` is given (docs/configuration.md "Which store").
CONFIG_ENV, DATA_DIR_ENV = "STAFFETTA_CONFIG", "STAFFETTA_DATA_DIR"
DEFAULT_DATA_DIR = "./staffetta-data"


def store_choice(config: str | None, data_dir: str | None,
                 environ: dict[str, str] | None = None) -> tuple[str | None, str | None]:
    """The (config file, data dir) a verb uses: flags > environment > default.

    The two flags are one choice: when either is on the command line the
    environment is not read at all, so a shell that exports
    ``STAFFETTA_DATA_DIR`` for the demo never redirects ``--config prod.yaml``.
    Given together (flags, or variables), the data dir overrides the config's.
    """
    if config or data_dir:
        return config or None, data_dir or None
    env = os.environ if environ is None else environ
    return env.get(CONFIG_ENV) or None, env.get(DATA_DIR_ENV) or None


def describe_store(db_url: str) -> str:
    """The store as an operator names it: the data dir of a SQLite file, else the URL without password."""
    if db_url.startswith("sqlite:///"):
        return str(Path(db_url[len("sqlite:///"):]).parent)
    from sqlalchemy.engine import make_url

    return make_url(db_url).render_as_string(hide_password=True)


# ------------------------------------------------------ the demo's addresses

#: Written by ``staffetta demo`` into its data dir, removed when it stops:
#: ``{"pid": 123, "smpp": "127.0.0.1:2775", "metrics": "127.0.0.1:9775" | null,
#: "carrier": "127.0.0.1:PORT", "hlr": "http://127.0.0.1:PORT"}``
#: (docs/operations.md "The demo's addresses").
ADDRESSES_FILE = "addresses.json"


def write_addresses(data_dir: str | Path, addresses: dict[str, Any]) -> Path:
    """Replace the addresses file atomically: a reader never sees half of it."""
    path = Path(data_dir) / ADDRESSES_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(addresses, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_addresses(data_dir: str | Path) -> dict[str, Any]:
    """What a demo on this data dir started; {} when none runs (or the file is unreadable)."""
    try:
        data = json.loads((Path(data_dir) / ADDRESSES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
