"""The ``staffetta`` command line.

Verbs: ``demo`` (hub + simulator in one process), ``run`` (hub from a config
file), ``simulator`` (the carrier alone), ``bench`` (the load client),
``account …`` (billing/cli.py), ``hlr …`` (smsc/hlr_cli.py), ``route …`` and
``connectors`` (smsc/route_cli.py). Errors are one
line naming the option or setting, exit status 2, never a traceback: usage
mistakes too (:class:`OneLineParser`), and ``run``/``demo`` check every
setting and the data dir before anything listens (:func:`start_settings`).
The store is chosen by flags, else ``STAFFETTA_CONFIG`` / ``STAFFETTA_DATA_DIR``
(:func:`resolve_store`); ``demo`` and ``run`` write the addresses of their
parts (and their pid and config) into the data dir for the other verbs
(docs/operations.md), and reload their config on SIGHUP (:func:`reload_on_sighup`).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from staffetta.conf.settings import (
    CONFIG_ENV,
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    ConfigError,
    Settings,
    UpstreamSettings,
    describe_store,
    load,
    parse_hostport,
    store_choice,
    write_addresses,
)
from staffetta.simulator.cli import seconds
from staffetta.smsc.logs import FORMATS, fields, setup_logging

log = logging.getLogger("staffetta.smsc.cli")  # not __main__ under `python -m`

DEMO_SIM_SYSTEM_ID = "staffetta"
DEMO_SIM_PASSWORD = "secret"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the option (exit 2), as every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def resolve_store(args: argparse.Namespace) -> None:
    """Fill ``args.config`` / ``args.data_dir`` from the environment when neither flag was given.

    ``args.store_origin`` remembers where the data dir came from, so that an
    error names what the operator actually wrote (conf.settings.store_choice).
    """
    if not hasattr(args, "data_dir"):
        return
    flags = (getattr(args, "config", None), args.data_dir)
    config, data_dir = store_choice(*flags)
    if hasattr(args, "config"):
        args.config = config
    args.data_dir = data_dir
    if flags[1]:
        args.store_origin = "--data-dir"
    elif data_dir:
        args.store_origin = DATA_DIR_ENV
    else:
        args.store_origin = f"data_dir in {config}" if config else "--data-dir"


def _settings_from(args) -> Settings:
    if getattr(args, "config", None):
        settings = load(args.config)
    else:
        settings = Settings(
            data_dir=getattr(args, "data_dir", None) or DEFAULT_DATA_DIR,
            upstreams=(
                UpstreamSettings("sim", "127.0.0.1", 2776, DEMO_SIM_SYSTEM_ID, DEMO_SIM_PASSWORD),
            ),
        )
    if getattr(args, "listen", None):
        parse_hostport(args.listen, "--listen")
        settings = replace(settings, listen=args.listen)
    if getattr(args, "data_dir", None) and getattr(args, "config", None):
        settings = replace(settings, data_dir=args.data_dir)
    metrics = getattr(args, "metrics", None)
    if metrics:
        if metrics == "off":
            settings = replace(settings, metrics_listen=None)
        else:
            try:
                parse_hostport(metrics, "--metrics")
            except ConfigError:
                raise ConfigError(f"--metrics: expected HOST:PORT or off, got {metrics!r}") from None
            settings = replace(settings, metrics_listen=metrics)
    return settings


def prepare_data_dir(settings: Settings, where: str, *, always: bool = False) -> None:
    """Create the data dir and prove it writable now, or one line naming ``where`` (the flag or setting).

    Without this, SQLite fails at the first statement with a 100-line traceback
    that never says which setting to change. With ``database_url`` the data dir
    holds no database and is checked only when ``always`` (the demo writes its
    addresses there).
    """
    if settings.database_url and not always:
        return
    path = Path(settings.data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        raise ConfigError(f"{where}: {settings.data_dir} is a file, not a directory") from None
    except NotADirectoryError:
        raise ConfigError(f"{where}: {settings.data_dir}: a part of the path is a file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create or write {settings.data_dir} ({exc.strerror})") from None


def check_sections(settings: Settings) -> None:
    """The sections conf/ leaves to their owners (billing plans, two-way numbers, routes, HLR ages and provider),
    checked at start."""
    from staffetta.billing.plans import billing_from_dict
    from staffetta.hlr.model import parse_age
    from staffetta.router.numbers import two_way_from_dict
    from staffetta.router.routes import routing_for

    billing_from_dict(settings.billing)
    two_way_from_dict(settings.numbers)
    routing_for(settings)  # the route table and account groups
    try:
        parse_age(settings.hlr.max_age)
    except ValueError as exc:
        raise ConfigError(f"hlr.max_age: {exc}") from None
    if settings.hlr.provider is not None:
        from twisted.internet import reactor

        from staffetta.hlr.providers import provider_from_config

        provider_from_config(reactor, settings.hlr.provider).close()


def start_settings(args, *, data_dir_needed: bool = False) -> Settings:
    """The settings of ``run`` / ``demo``, every setting and the data dir checked before anything starts."""
    settings = config_settings(args)
    prepare_data_dir(settings, getattr(args, "store_origin", "--data-dir"), always=data_dir_needed)
    return settings


def config_settings(args) -> Settings:
    """Every setting of ``--config`` checked as ``run`` checks them (routes too: conf.settings); nothing created."""
    settings = _settings_from(args)
    check_sections(settings)
    return settings


def reload_settings(hub: Any, settings_for: Callable[[], Settings]) -> dict[str, Any]:
    """Re-read the config and hand it to the hub; a bad one is one log line and the one in force stays.

    Returns the outcome ``route reload`` shows: ``{"ok": True, "rules", "added",
    "removed", "changed"}`` (Hub.reload_config's summary) or ``{"ok": False, "error"}``.
    """
    try:
        new = settings_for()
        changes = hub.reload_config(new)
    except ConfigError as exc:
        log.error("reload refused, the configuration in force stays: %s", exc)
        return {"ok": False, "error": str(exc)}
    log.info("configuration reloaded", extra=fields(**changes))
    return {"ok": True, **changes}


class ReloadLog:
    """Each SIGHUP's outcome, numbered, under ``reload`` in addresses.json (``path``, once written).

    ``staffetta route reload`` waits for the number to move and prints what
    the hub said, with or without a metrics listener.
    """

    def __init__(self) -> None:
        self.path: Path | None = None
        self.seq = 0

    def record(self, outcome: dict[str, Any]) -> None:
        self.seq += 1
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text())
            data["reload"] = {"seq": self.seq, **outcome}
            write_addresses(self.path.parent, data)
        except (OSError, ValueError) as exc:
            log.warning("cannot record the reload in %s: %s", self.path, exc)


def reload_on_sighup(reactor: Any, hub: Any, settings_for: Callable[[], Settings]) -> ReloadLog:
    """SIGHUP (``kill -HUP``, ``staffetta route reload``) reloads the config on the reactor thread.

    Installed before addresses.json names the pid (a SIGHUP before it would
    end the process); set the returned log's ``path`` once the file is written.
    """
    reloads = ReloadLog()

    def on_hup(signum: int, frame: Any) -> None:
        reactor.callFromThread(lambda: reloads.record(reload_settings(hub, settings_for)))

    signal.signal(signal.SIGHUP, on_hup)
    return reloads


def _run_addresses(settings: Settings, started: dict[str, Any]) -> Path | None:
    """``run``'s addresses.json, in its data dir: always on SQLite; on PostgreSQL only if that dir exists.

    A hub on PostgreSQL may have no data dir at all (``./staffetta-data`` is
    then not created for it); without the file, ``route reload`` and
    ``connectors`` need ``--metrics`` and cannot find the pid.
    """
    if settings.database_url and not Path(settings.data_dir).is_dir():
        return None
    try:
        return write_addresses(settings.data_dir, started)
    except OSError as exc:
        log.warning("cannot write %s/addresses.json (%s): route reload will not find this hub",
                    settings.data_dir, exc.strerror)
        return None


def _config_path(args) -> str | None:
    """The config file as an absolute path, for addresses.json (a reload names it from anywhere)."""
    return str(Path(args.config).resolve()) if getattr(args, "config", None) else None


def ensure_demo_account(engine) -> bool:
    """The demo account with 1,000,000 non-expiring credits; True if created."""
    from staffetta.billing.accounts import create_account, get_account
    from staffetta.billing.wallet import topup

    with engine.begin() as conn:
        if get_account(conn, "demo") is not None:
            return False
        acct = create_account(conn, "demo", "demo", default_type="PRO", default_country_code=39)
        topup(conn, acct.id, DEMO_CREDITS, method="demo", reference="demo-initial-credit")
        add_demo_pools(conn)
        return True


#: The demo's shared sender pools (docs/two-way.md): SMART and REPLY leave from these.
DEMO_POOLS = {"SMART": [f"3935000000{i:02d}" for i in range(1, 11)],
              "REPLY": [f"3934000000{i:02d}" for i in range(1, 11)]}


def add_demo_pools(conn) -> None:
    """Ten SMART and ten REPLY numbers, so that SMART/REPLY and their replies work in the demo."""
    import time

    from staffetta.router.number_store import add_pool_number

    for kind, numbers in DEMO_POOLS.items():
        for n in numbers:
            add_pool_number(conn, n, kind, None, time.time())


def engine_for(args):
    """The store a verb's --config / --data-dir names, schema created and upgraded."""
    from sqlalchemy.exc import DBAPIError

    import staffetta.billing.accounts  # noqa: F401 - registers its tables
    import staffetta.hlr.cache  # noqa: F401
    import staffetta.hlr.jobs  # noqa: F401
    import staffetta.router.messages  # noqa: F401
    import staffetta.router.mo_store  # noqa: F401
    import staffetta.router.number_store  # noqa: F401
    from staffetta.billing.accounts import upgrade
    from staffetta.router.messages import upgrade as upgrade_messages
    from staffetta.store.db import create_schema, make_engine

    settings = _settings_from(args)
    where = "database_url" if settings.database_url else getattr(args, "store_origin", "--data-dir")
    prepare_data_dir(settings, where)
    engine = make_engine(settings.db_url)
    try:
        create_schema(engine)
        upgrade(engine)
        upgrade_messages(engine)
    except DBAPIError as exc:  # PostgreSQL down, wrong password, a file that is not a database...
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise ConfigError(f"{where}: cannot open the store {describe_store(settings.db_url)} ({reason})") from None
    return engine


#: 1,000,000 credits in centi-credits: enough that benchmarks never run dry.
DEMO_CREDITS = 100_000_000


#: The writer thread and the reactor share the GIL. With CPython's default 5 ms
#: switch interval a submit waits up to 5 ms behind a group commit; 0.5 ms gave
#: +35% throughput and half the p99 at window 50 (docs/benchmarks.md).
GIL_SWITCH_INTERVAL = 0.0005


def _tune_hub_process() -> None:
    """What a hub process sets before anything else: the GIL switch interval, and
    SQLite without memory statistics (which only works before the first connection)."""
    from staffetta.store.db import stop_sqlite_memory_statistics

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    stop_sqlite_memory_statistics()

#: CPython collects its young generation every 700 allocations; each collection
#: walks every object still alive, which at window 50 means the objects of
#: hundreds of messages in flight: 4% of the reactor thread's instructions
#: (callgrind, docs/benchmarks.md). The hot path makes no reference cycles, so
#: collecting 70x less often holds back no memory worth counting.
GC_THRESHOLDS = (50_000, 50, 100)


def settle_heap() -> None:
    """Once the hub is up: freeze what start-up built (modules, config, accounts)
    out of the collector's sight, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _listen_error(exc: Any, hub: Any, args: argparse.Namespace) -> ConfigError:
    """A port that is taken, named by the flag or setting that chose it (SMPP first, then metrics)."""
    if hub.port is None:
        where = "--listen" if getattr(args, "listen", None) else "listen"
    else:
        where = "--metrics" if getattr(args, "metrics", None) else "metrics_listen"
    return ConfigError(f"{where}: cannot listen on {exc.interface or '0.0.0.0'}:{exc.port} ({exc.socketError})")


def _start(hub: Any, args: argparse.Namespace) -> None:
    from twisted.internet.error import CannotListenError

    try:
        hub.start()
    except CannotListenError as exc:
        raise _listen_error(exc, hub, args) from None


def _bound(settings: Settings, hub: Any) -> tuple[str, str | None]:
    """(SMPP, metrics or None) as HOST:PORT with the ports actually bound (a configured 0 is any port)."""
    host, _ = parse_hostport(settings.listen, "listen")
    metrics = None
    if hub.metrics_port is not None:
        mhost, _ = parse_hostport(settings.metrics_listen, "metrics_listen")
        metrics = f"{mhost}:{hub.metrics_port.getHost().port}"
    return f"{host}:{hub.smpp_port}", metrics


def _log_to_stdlib() -> None:
    """Twisted's own log events through the same handler and format as ours.

    Only its warnings and errors (unhandled errors in Deferreds, ...): at INFO
    it narrates every factory start and stop, which ``-v`` does not promise.
    """
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    logging.getLogger("twisted").setLevel(logging.WARNING)
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], discardBuffer=True, redirectStandardIO=False)


def cmd_demo(args) -> int:
    from twisted.internet import reactor

    from staffetta.conf.settings import HlrSettings
    from staffetta.smsc.app import Hub

    _tune_hub_process()
    base = start_settings(args, data_dir_needed=True)  # its addresses.json goes there
    engine = engine_for(args)
    _log_to_stdlib()
    fleet = start_demo_fleet(reactor, args.dlr_delay)  # two carriers and the HLR (lookups off until asked)
    hlr_url = fleet.hlr.url
    ports = {name: fleet.port(name) for name in DEMO_CARRIERS}

    def aimed(settings: Settings) -> Settings:
        """The config (or the built-in one) aimed at this process's simulators: at start and on SIGHUP."""
        settings = replace(settings, hlr=HlrSettings(mode="off", provider={"type": "simulator", "url": hlr_url}))
        return demo_settings(settings, ports)

    settings = aimed(base)
    ensure_demo_account(engine)
    hub = Hub(settings, reactor, engine=engine)
    _start(hub, args)
    settle_heap()
    smpp, metrics = _bound(settings, hub)
    started = {
        "pid": os.getpid(),
        "smpp": smpp,
        "metrics": metrics,
        "carrier": f"127.0.0.1:{ports[DEMO_CARRIERS[0]]}",
        "carriers": {name: f"127.0.0.1:{port}" for name, port in ports.items()},
        "hlr": hlr_url,
        "config": _config_path(args),
    }
    reloads = reload_on_sighup(reactor, hub, lambda: aimed(start_settings(args, data_dir_needed=True)))
    addresses = reloads.path = write_addresses(settings.data_dir, started)  # the pid, once SIGHUP is handled
    log.info("demo started", extra=fields(**started, data_dir=str(Path(settings.data_dir).resolve())))
    print(
        f"Staffetta demo is up.\n"
        f"  SMPP:    {smpp}  (bind system_id=demo password=demo, any bind type)\n"
        f"  carriers: alpha on 127.0.0.1:{ports['alpha']} (cheap; refuses {DEMO_REFUSED}... with ESME_RSYSERR), "
        f"beta on 127.0.0.1:{ports['beta']}; receipts after {args.dlr_delay}s\n"
        f"  routes:  +39 failover alpha -> beta; the rest least-cost (docs/routing.md)\n"
        f"  HLR:     simulator at {hlr_url} (turn on with: staffetta account set demo --hlr cached)\n"
        f"  metrics: {'off' if metrics is None else f'http://{metrics}/metrics'}\n"
        f"  data:    {settings.db_url}\n"
        f"  addresses for the other verbs: {addresses}\n"
        f"Try: staffetta bench --target {smpp} --system-id demo --password demo -n 1000 --countries IT\n"
        f"     then watch the failovers: curl -s http://{metrics or '127.0.0.1:9775'}/metrics | grep failovers\n"
        f"Ctrl-C stops.",
        flush=True,
    )
    reactor.addSystemEventTrigger("before", "shutdown", hub.stop)
    reactor.addSystemEventTrigger("after", "shutdown", addresses.unlink, missing_ok=True)
    reactor.run()
    return 0


#: The demo's carriers (simulators in the hub's process) and its route table: Italy
#: fails over from alpha to beta (alpha refuses part of it), the rest goes to the
#: cheaper carrier while its delivery ratio holds (docs/routing.md).
DEMO_CARRIERS = ("alpha", "beta")
DEMO_REFUSED = "39333"
DEMO_ROUTES = [
    {"name": "italy", "match": {"prefix": "39"}, "connectors": ["alpha", "beta"], "strategy": "failover",
     "timeout": 5, "two_way": True},
    {"name": "world", "connectors": ["alpha", "beta"], "strategy": "least-cost", "floor": 0.8,
     "prices": {"alpha": {"*": 0.0040}, "beta": {"*": 0.0055}}, "two_way": True},
]


def start_demo_fleet(reactor: Any, dlr_delay: float) -> Any:
    """The demo's two simulated carriers (simulator/fleet.py) on free ports, with the fleet's HLR.

    alpha is the cheap one and refuses ``DEMO_REFUSED``... with ESME_RSYSERR,
    which the Italy rule fails over on: the failover to watch in /metrics.
    A tenth of the handsets answer a message after three seconds, so
    conversations run end to end (docs/two-way.md).
    """
    from staffetta.pdu.constants import Status
    from staffetta.simulator.fleet import CarrierSpec, start_fleet

    login = {DEMO_SIM_SYSTEM_ID: DEMO_SIM_PASSWORD}
    return start_fleet(reactor, [
        CarrierSpec("alpha", dlr_delay=dlr_delay, credentials=login, mccmnc="22288",
                    errors={DEMO_REFUSED: int(Status.ESME_RSYSERR)}, reply_share=0.1, reply_delay=3.0),
        CarrierSpec("beta", dlr_delay=dlr_delay, credentials=login, mccmnc="22210", latency=0.005,
                    reply_share=0.1, reply_delay=3.0),
    ], seed=1)


def demo_settings(settings: Settings, ports: dict[str, int]) -> Settings:
    """The demo's upstreams (one per simulated carrier) and route table over ``settings``.

    A ``--config``'s first upstream lends its options (window, sessions, ...)
    to every demo connector; its own routes are not used (they name its own
    carriers): the demo always shows its failover and least-cost table.
    """
    up = settings.upstreams[0]
    upstreams = tuple(replace(up, name=name, host="127.0.0.1", port=port, system_id=DEMO_SIM_SYSTEM_ID,
                              password=DEMO_SIM_PASSWORD) for name, port in ports.items())
    return replace(settings, upstreams=upstreams, routes=DEMO_ROUTES)


def cmd_run(args) -> int:
    from twisted.internet import reactor

    from staffetta.smsc.app import Hub

    if not args.config:
        raise ConfigError(f"--config: required (or set {CONFIG_ENV})")
    _tune_hub_process()
    settings = start_settings(args)
    engine = engine_for(args)
    _log_to_stdlib()
    hub = Hub(settings, reactor, engine=engine)
    _start(hub, args)
    settle_heap()
    smpp, metrics = _bound(settings, hub)
    reloads = reload_on_sighup(reactor, hub, lambda: start_settings(args))
    addresses = reloads.path = _run_addresses(settings, {"pid": os.getpid(), "smpp": smpp, "metrics": metrics,
                                                         "config": _config_path(args)})
    log.info("hub started", extra=fields(smpp=smpp, metrics=metrics, upstreams=[u.name for u in settings.upstreams]))
    print(f"Staffetta listening on {smpp}; upstreams: "
          + ", ".join(f"{u.name}={u.host}:{u.port}" for u in settings.upstreams), flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", hub.stop)
    if addresses is not None:
        reactor.addSystemEventTrigger("after", "shutdown", addresses.unlink, missing_ok=True)
    reactor.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from staffetta import __version__ as staffetta_version
    from staffetta.simulator.cli import (
        add_bench_arguments,
        add_simulator_arguments,
        bench_main,
        simulator_main,
    )

    p = OneLineParser(prog="staffetta", description="SMPP 3.4 hub with its own SMSC simulator")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log at INFO level: binds, refusals, connector state (docs/operations.md)")
    p.add_argument("--log-format", choices=FORMATS, default="text",
                   help="text (default) or json: one JSON object a line, for log shippers")
    p.add_argument("--version", action="version", version=f"%(prog)s {staffetta_version}")
    sub = p.add_subparsers(dest="verb", required=True)

    def store_opts(sp):
        sp.add_argument("--config", metavar="FILE", help=f"staffetta.yaml to use (default: ${CONFIG_ENV})")
        sp.add_argument("--data-dir", metavar="DIR",
                        help=f"where the embedded store lives (default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR})")

    d = sub.add_parser("demo", help="hub + simulator in one process, account demo/demo")
    d.add_argument("--listen", metavar="HOST:PORT", default=None)
    d.add_argument("--dlr-delay", type=seconds, default=1.0, metavar="SECONDS",
                   help="delay between submit_sm_resp and the receipt (default 1.0)")
    d.add_argument("--metrics", metavar="HOST:PORT|off", help="/metrics address (default 127.0.0.1:9775)")
    store_opts(d)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="the hub from a config file")
    r.add_argument("--listen", metavar="HOST:PORT", default=None)
    r.add_argument("--metrics", metavar="HOST:PORT|off", help="/metrics address (overrides metrics_listen)")
    store_opts(r)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("simulator", help="the carrier simulator alone")
    add_simulator_arguments(s)
    s.set_defaults(func=simulator_main)

    b = sub.add_parser("bench", help="the load-generating SMPP client")
    add_bench_arguments(b)
    b.set_defaults(func=bench_main)

    from staffetta.billing.cli import register as register_account_verbs
    from staffetta.smsc.hlr_cli import register as register_hlr_verbs
    from staffetta.smsc.mo_cli import register as register_mo_verbs
    from staffetta.smsc.number_cli import register as register_number_verbs
    from staffetta.smsc.route_cli import register as register_route_verbs

    register_account_verbs(sub, engine_for)
    register_hlr_verbs(sub, engine_for)
    register_number_verbs(sub, engine_for)
    register_mo_verbs(sub, engine_for)
    register_route_verbs(sub, engine_for, config_settings)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.log_format)
    resolve_store(args)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"staffetta: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
