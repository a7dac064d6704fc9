"""The ``staffetta`` command line.

Verbs: ``demo`` (hub + simulator in one process), ``run`` (hub from a config
file), ``simulator`` (the carrier alone), ``bench`` (the load client) and
``account create`` (more account verbs arrive with billing). Errors are one
line naming the option or setting, exit status 2.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from dataclasses import replace

from staffetta.conf.settings import ConfigError, Settings, UpstreamSettings, load, parse_hostport

DEMO_SIM_SYSTEM_ID = "staffetta"
DEMO_SIM_PASSWORD = "secret"


def _settings_from(args) -> Settings:
    if getattr(args, "config", None):
        settings = load(args.config)
    else:
        settings = Settings(
            data_dir=getattr(args, "data_dir", None) or "./staffetta-data",
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
            parse_hostport(metrics, "--metrics")
            settings = replace(settings, metrics_listen=metrics)
    return settings


def ensure_demo_account(engine) -> bool:
    """The demo account with 1,000,000 non-expiring credits; True if created."""
    from staffetta.billing.accounts import create_account, get_account
    from staffetta.billing.wallet import topup

    with engine.begin() as conn:
        if get_account(conn, "demo") is not None:
            return False
        acct = create_account(conn, "demo", "demo", default_type="PRO", default_country_code=39)
        topup(conn, acct.id, DEMO_CREDITS, method="demo", reference="demo-initial-credit")
        return True


def engine_for(args):
    """The store a verb's --config / --data-dir names, schema created and upgraded."""
    import staffetta.billing.accounts  # noqa: F401 - registers its tables
    import staffetta.hlr.cache  # noqa: F401
    import staffetta.hlr.jobs  # noqa: F401
    import staffetta.router.messages  # noqa: F401
    from staffetta.billing.accounts import upgrade
    from staffetta.router.messages import upgrade as upgrade_messages
    from staffetta.store.db import create_schema, make_engine

    engine = make_engine(_settings_from(args).db_url)
    create_schema(engine)
    upgrade(engine)
    upgrade_messages(engine)
    return engine


#: 1,000,000 credits in centi-credits: enough that benchmarks never run dry.
DEMO_CREDITS = 100_000_000


#: The writer thread and the reactor share the GIL. With CPython's default 5 ms
#: switch interval a submit waits up to 5 ms behind a group commit; 0.5 ms gave
#: +35% throughput and half the p99 at window 50 (docs/benchmarks.md).
GIL_SWITCH_INTERVAL = 0.0005

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


def cmd_demo(args) -> int:
    from twisted.internet import reactor

    from staffetta.conf.settings import HlrSettings
    from staffetta.simulator.carrier import Carrier
    from staffetta.simulator.hlr import listen_hlr
    from staffetta.smsc.app import Hub

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    settings = _settings_from(args)
    hlr_sim = listen_hlr(reactor, 0)  # the simulator's HLR; lookups are off until an account asks
    settings = replace(settings, hlr=HlrSettings(mode="off", provider={"type": "simulator", "url": hlr_sim.url}))
    sim_port = 0  # any free port: the simulator lives inside this process
    carrier = Carrier(reactor, dlr_delay=args.dlr_delay,
                      credentials={DEMO_SIM_SYSTEM_ID.encode(): DEMO_SIM_PASSWORD.encode()})
    listening = carrier.listen(sim_port)
    up = settings.upstreams[0]
    settings = replace(settings, upstreams=(replace(up, port=listening.getHost().port),))
    engine = engine_for(args)
    ensure_demo_account(engine)
    hub = Hub(settings, reactor, engine=engine)
    hub.start()
    settle_heap()
    host, port = parse_hostport(settings.listen, "listen")
    print(
        f"Staffetta demo is up.\n"
        f"  SMPP:    {host}:{hub.smpp_port}  (bind system_id=demo password=demo, any bind type)\n"
        f"  carrier: simulator on 127.0.0.1:{listening.getHost().port}, receipts after {args.dlr_delay}s\n"
        f"  HLR:     simulator at {hlr_sim.url} (turn on with: staffetta account set demo --hlr cached)\n"
        f"  metrics: {'off' if not settings.metrics_listen else f'http://{settings.metrics_listen}/metrics'}\n"
        f"  data:    {settings.db_url}\n"
        f"Try: staffetta bench --target {host}:{hub.smpp_port} --system-id demo --password demo -n 1000\n"
        f"Ctrl-C stops.",
        flush=True,
    )
    reactor.addSystemEventTrigger("before", "shutdown", hub.stop)
    reactor.run()
    return 0


def cmd_run(args) -> int:
    from twisted.internet import reactor

    from staffetta.smsc.app import Hub

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    settings = _settings_from(args)
    hub = Hub(settings, reactor)
    hub.start()
    settle_heap()
    print(f"Staffetta listening on {settings.listen}; upstreams: "
          + ", ".join(f"{u.name}={u.host}:{u.port}" for u in settings.upstreams), flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", hub.stop)
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

    p = argparse.ArgumentParser(prog="staffetta", description="SMPP 3.4 hub with its own SMSC simulator")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--version", action="version", version=f"%(prog)s {staffetta_version}")
    sub = p.add_subparsers(dest="verb", required=True)

    def store_opts(sp):
        sp.add_argument("--config", metavar="FILE", help="staffetta.yaml to use")
        sp.add_argument("--data-dir", metavar="DIR", help="where the embedded store lives")

    d = sub.add_parser("demo", help="hub + simulator in one process, account demo/demo")
    d.add_argument("--listen", metavar="HOST:PORT", default=None)
    d.add_argument("--dlr-delay", type=float, default=1.0, metavar="SECONDS")
    d.add_argument("--metrics", metavar="HOST:PORT|off", help="/metrics address (default 127.0.0.1:9775)")
    store_opts(d)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="the hub from a config file")
    r.add_argument("--config", metavar="FILE", required=True)
    r.add_argument("--listen", metavar="HOST:PORT", default=None)
    r.add_argument("--data-dir", metavar="DIR")
    r.add_argument("--metrics", metavar="HOST:PORT|off", help="/metrics address (overrides metrics_listen)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("simulator", help="the carrier simulator alone")
    add_simulator_arguments(s)
    s.set_defaults(func=simulator_main)

    b = sub.add_parser("bench", help="the load-generating SMPP client")
    add_bench_arguments(b)
    b.set_defaults(func=bench_main)

    from staffetta.billing.cli import register as register_account_verbs
    from staffetta.smsc.hlr_cli import register as register_hlr_verbs

    register_account_verbs(sub, engine_for)
    register_hlr_verbs(sub, engine_for)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from twisted.internet.error import CannotListenError

    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"staffetta: {exc}", file=sys.stderr)
        return 2
    except CannotListenError as exc:
        print(f"staffetta: --listen: cannot listen on {exc.interface}:{exc.port} ({exc.socketError})",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
