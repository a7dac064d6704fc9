"""``staffetta simulator`` and ``staffetta bench``: argument parsers and entry points.

The ``staffetta`` command itself lives in ``smsc/cli.py``; it adds these
sub-commands with :func:`add_simulator_arguments` / :func:`add_bench_arguments`
and calls :func:`simulator_main` / :func:`bench_main` with the parsed
arguments. Both return the process exit code: 0 fine, 1 runtime failure
(port in use, target down, bind refused), 2 bad arguments - always with one
line on stderr that names the option.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from staffetta.simulator.carrier import FINAL_STATS, ID_FORMATS, RECEIPT_FORMATS
from staffetta.simulator.traffic import MOBILE_RANGES, PROFILES, REALISTIC, SINGLE_DESTINATION, ranges_for


def parse_hostport(s: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'HOST:PORT', ':PORT', 'PORT' or '[v6addr]:PORT' -> (host, port); ValueError otherwise."""
    s = s.strip()
    host = default_host
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or not s[end + 1 :].startswith(":"):
            raise ValueError(f"{s!r} is not [ADDRESS]:PORT")
        host, port_s = s[1:end], s[end + 2 :]
    elif ":" in s:
        h, port_s = s.rsplit(":", 1)
        if ":" in h:
            raise ValueError(f"{s!r}: write IPv6 addresses as [ADDRESS]:PORT")
        host = h or default_host
    else:
        port_s = s
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"{s!r}: port must be a number 0-65535")
    return host, int(port_s)


def parse_outcomes(s: str) -> dict[str, float]:
    """'DELIVRD=0.9,UNDELIV=0.05,REJECTD=0.05' -> {stat: weight}; ValueError naming the bad part."""
    out: dict[str, float] = {}
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        stat, sep, weight_s = part.partition("=")
        stat = stat.strip().upper()
        if not sep:
            raise ValueError(f"{part!r} is not STAT=WEIGHT")
        if stat not in FINAL_STATS:
            raise ValueError(f"unknown stat {stat!r} (expected {', '.join(FINAL_STATS)})")
        if stat in out:
            raise ValueError(f"{stat} given twice")
        try:
            weight = float(weight_s)
        except ValueError:
            raise ValueError(f"weight of {stat} is not a number: {weight_s.strip()!r}") from None
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"weight of {stat} must be a finite number >= 0")
        out[stat] = weight
    if not out:
        raise ValueError("no outcome given")
    if sum(out.values()) <= 0:
        raise ValueError("weights sum to zero")
    return out


def seconds(text: str) -> float:
    """argparse type of a delay: a finite number >= 0 (``-1``, ``nan`` or ``inf`` name the option).

    ``staffetta demo --dlr-delay`` uses it; ``simulator`` checks its own after parsing, since
    tests drive :func:`simulator_main` with parsers of their own.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {text!r}")
    return value


def _credential(s: str) -> tuple[bytes, bytes]:
    sid, sep, pw = s.partition(":")
    if not sep or not sid:
        raise argparse.ArgumentTypeError(f"{s!r} is not SYSTEM_ID:PASSWORD")
    return sid.encode("latin-1"), pw.encode("latin-1")


def _error(cmd: str, msg: str) -> None:
    print(f"staffetta {cmd}: error: {msg}", file=sys.stderr)


# -------------------------------------------------------------------- simulator


#: The single carrier's own options and their defaults: with --carrier/--fleet each
#: carrier says these itself, so giving one of them there is a mistake, not ignored.
SINGLE_CARRIER_DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1:2776",
    "dlr_delay": 1.0,
    "outcomes": "DELIVRD=1.0",
    "id_format": "decimal",
    "receipt_format": "strict",
    "system_id": "staffsim",
    "credential": None,
    "window": 100,
    # The handsets (simulator/handsets.py); a fleet carrier says mo_rate=... itself.
    "mo_rate": 0.0,
    "mo_count": 0,
    "mo_to": "4000",
    "mo_text": "Hello",
    "mo_long_share": 0.0,
    "reply_share": 0.0,
    "reply_delay": 2.0,
    "reply_text": "Re: {text}",
}


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--carrier", action="append", default=None, metavar="name=N,port=P,KEY=VALUE,...",
                        help="run a fleet: one carrier per flag (repeatable; docs/simulator.md lists the keys)")
    parser.add_argument("--fleet", default=None, metavar="FILE",
                        help="run the fleet a YAML file describes (with or without --carrier)")
    parser.add_argument("--listen", default=None, metavar="HOST:PORT",
                        help="SMPP address to accept ESMEs on (default 127.0.0.1:2776)")
    parser.add_argument("--dlr-delay", type=float, default=None, metavar="SECONDS",
                        help="delay between submit_sm_resp and the receipt (default 1.0)")
    parser.add_argument("--outcomes", default=None, metavar="STAT=WEIGHT,...",
                        help="receipt outcome mix, e.g. DELIVRD=0.9,UNDELIV=0.05,REJECTD=0.05")
    parser.add_argument("--id-format", choices=ID_FORMATS, default=None,
                        help="message ids we issue (default decimal)")
    parser.add_argument("--receipt-format", choices=RECEIPT_FORMATS, default=None,
                        help="receipt text: strict Appendix B, 12digit dates, Text: key, tlv_only")
    parser.add_argument("--control", default="127.0.0.1:2777", metavar="HOST:PORT",
                        help="HTTP control address, or 'off' (default 127.0.0.1:2777)")
    parser.add_argument("--seed", type=int, default=None, help="seed for outcomes and ids")
    parser.add_argument("--system-id", default=None, help="our system_id in bind responses (default staffsim)")
    parser.add_argument("--credential", type=_credential, action="append", default=None,
                        metavar="SYSTEM_ID:PASSWORD",
                        help="accept only these binds (repeatable; default: accept any)")
    parser.add_argument("--window", type=int, default=None,
                        help="deliver_sm window per session (default 100)")
    parser.add_argument("--hlr", default="127.0.0.1:2778", metavar="HOST:PORT",
                        help="HLR lookup HTTP address, or 'off' (default 127.0.0.1:2778)")
    parser.add_argument("--hlr-latency", type=float, default=0.0, metavar="SECONDS",
                        help="delay of every HLR answer (default 0)")
    parser.add_argument("--hlr-error-rate", type=float, default=0.0, metavar="P",
                        help="share of HLR lookups answered HTTP 500 (default 0)")
    parser.add_argument("--hlr-csv", metavar="FILE", help="fixed HLR answers: number,status,mcc,mnc,...")
    parser.add_argument("--mo-rate", type=float, default=None, metavar="MO_PER_S",
                        help="handsets send this many MO per second while a receiver is bound (default 0: none)")
    parser.add_argument("--mo-count", type=int, default=None, metavar="N",
                        help="stop the MO load after N (default 0: no end)")
    parser.add_argument("--mo-to", default=None, metavar="ADDR,...",
                        help="the numbers the handsets write to, in turn (default 4000)")
    parser.add_argument("--mo-text", default=None, help="the MO text (default Hello)")
    parser.add_argument("--mo-long-share", type=float, default=None, metavar="P",
                        help="share of MO sent as multipart, parts reversed (default 0)")
    parser.add_argument("--reply-share", type=float, default=None, metavar="P",
                        help="share of MT recipients that reply to the sender (default 0)")
    parser.add_argument("--reply-delay", type=float, default=None, metavar="SECONDS",
                        help="seconds from the MT to its reply (default 2)")
    parser.add_argument("--reply-text", default=None,
                        help="the reply; {text} is the MT's first 40 characters, {n} a counter (default 'Re: {text}')")


def simulator_main(args: argparse.Namespace, reactor: Any = None) -> int:
    """Run the simulator (one carrier, or a fleet) until interrupted; returns the exit code."""
    if getattr(args, "carrier", None) or getattr(args, "fleet", None):
        return fleet_main(args, reactor)
    for name, default in SINGLE_CARRIER_DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, default)
    try:
        host, port = parse_hostport(args.listen)
    except ValueError as exc:
        _error("simulator", f"--listen: {exc}")
        return 2
    control: tuple[str, int] | None = None
    if str(args.control).lower() not in ("off", "none", ""):
        try:
            control = parse_hostport(args.control)
        except ValueError as exc:
            _error("simulator", f"--control: {exc}")
            return 2
    try:
        outcomes = parse_outcomes(args.outcomes)
    except ValueError as exc:
        _error("simulator", f"--outcomes: {exc}")
        return 2
    if not 0 <= args.dlr_delay < math.inf:
        _error("simulator", "--dlr-delay: must be a number of seconds >= 0")
        return 2
    if args.window < 1:
        _error("simulator", "--window: must be >= 1")
        return 2
    from staffetta.simulator.fleet import HANDSET_FIELDS, CarrierSpec, SpecError, handsets_for

    try:
        handsets = CarrierSpec("sim", **{k: getattr(args, k) for k in HANDSET_FIELDS if k != "mo_to"},
                               mo_to=tuple(t.strip() for t in str(args.mo_to).split(",") if t.strip()))
    except (SpecError, TypeError) as exc:
        field, _, why = str(exc).partition(": ")
        _error("simulator", f"--{field.replace('_', '-')}: {why}")
        return 2

    from twisted.internet.error import CannotListenError

    from staffetta.simulator.carrier import Carrier
    from staffetta.simulator.control import listen_control

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    code, hlr_where = start_hlr(args, reactor)
    if code:
        return code
    carrier = Carrier(
        reactor,
        dlr_delay=args.dlr_delay,
        outcomes=outcomes,
        id_format=args.id_format,
        receipt_format=args.receipt_format,
        credentials=dict(args.credential) if args.credential else None,
        seed=args.seed,
        window=args.window,
        system_id=args.system_id.encode("latin-1"),
    )
    try:
        lp = carrier.listen(port, host)
    except CannotListenError as exc:
        _error("simulator", f"--listen: cannot listen on {host}:{port}: {exc.socketError}")
        return 1
    load, _conv = handsets_for(carrier, handsets, args.seed)
    if load is not None:
        load.start()
    where = f"listening on {host}:{lp.getHost().port}"
    if control is not None:
        try:
            cp = listen_control(carrier, control[1], control[0])
        except CannotListenError as exc:
            _error("simulator", f"--control: cannot listen on {control[0]}:{control[1]}: {exc.socketError}")
            return 1
        where += f", control http://{control[0]}:{cp.getHost().port}/stats"
    where += hlr_where
    mix = ", ".join(f"{k} {v:.0%}" for k, v in carrier.outcomes.items())
    if handsets.mo_rate:
        mix += f"; MO {handsets.mo_rate:g}/s to {','.join(handsets.mo_to)}"
    if handsets.reply_share:
        mix += f"; replies {handsets.reply_share:.0%} after {handsets.reply_delay}s"
    print(f"staffetta simulator: {where}; dlr delay {args.dlr_delay}s; outcomes {mix}", flush=True)
    reactor.run()
    return 0


def fleet_main(args: argparse.Namespace, reactor: Any = None) -> int:
    """``staffetta simulator --carrier ... / --fleet FILE``: run a fleet until interrupted."""
    from staffetta.simulator.fleet import SpecError, check_fleet, load_fleet_file, parse_carrier_flag

    for name in SINGLE_CARRIER_DEFAULTS:
        if getattr(args, name, None) is not None:
            _error("simulator", f"--{name.replace('_', '-')}: not with --carrier/--fleet "
                                "(each carrier sets its own, e.g. port=2776)")
            return 2
    specs = []
    seed = args.seed
    if args.fleet:
        try:
            ff = load_fleet_file(args.fleet)
        except SpecError as exc:
            _error("simulator", f"--fleet {exc}")
            return 2
        specs.extend(ff.carriers)
        if seed is None:
            seed = ff.seed
    for text in args.carrier or ():
        try:
            specs.append(parse_carrier_flag(text))
        except SpecError as exc:
            _error("simulator", f"--carrier {text!r}: {exc}")
            return 2
    try:
        check_fleet(specs, "--carrier/--fleet")
    except SpecError as exc:
        _error("simulator", str(exc))
        return 2
    control: tuple[str, int] | None = None
    if str(args.control).lower() not in ("off", "none", ""):
        try:
            control = parse_hostport(args.control)
        except ValueError as exc:
            _error("simulator", f"--control: {exc}")
            return 2
    hlr_spec = str(getattr(args, "hlr", "off") or "off")
    hlr_at: tuple[str, int] | None = None
    if hlr_spec.lower() not in ("off", "none"):
        try:
            hlr_at = parse_hostport(hlr_spec)
        except ValueError as exc:
            _error("simulator", f"--hlr: {exc}")
            return 2
    latency, rate = getattr(args, "hlr_latency", 0.0), getattr(args, "hlr_error_rate", 0.0)
    if not 0 <= latency < math.inf:
        _error("simulator", "--hlr-latency: must be a number of seconds >= 0")
        return 2
    if not 0 <= rate <= 1:
        _error("simulator", "--hlr-error-rate: must be between 0 and 1")
        return 2

    from twisted.internet.error import CannotListenError

    from staffetta.simulator.control import listen_fleet_control
    from staffetta.simulator.fleet import start_fleet

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        fleet = start_fleet(reactor, specs, seed=seed, hlr_port=None if hlr_at is None else hlr_at[1],
                            hlr_host=hlr_at[0] if hlr_at else "127.0.0.1", latency=latency, error_rate=rate,
                            csv_path=getattr(args, "hlr_csv", None))
    except CannotListenError as exc:
        owner = next((f"carrier {s.name}" for s in specs if s.port == exc.port and exc.port), "--hlr")
        _error("simulator", f"{owner}: cannot listen on {exc.interface}:{exc.port}: {exc.socketError}")
        return 1
    except (OSError, ValueError) as exc:
        _error("simulator", f"--hlr-csv: {exc}")
        return 2
    lines = []
    for name, spec in fleet.specs.items():
        host, port = fleet.address(name)
        mix = ", ".join(f"{k} {v:.0%}" for k, v in fleet.carriers[name].outcomes.items())
        extra = [f"latency {spec.latency}s"] if spec.latency else []
        if spec.throughput:
            extra.append(f"{spec.throughput:g} msg/s")
        if spec.mccmnc:
            extra.append(f"network {spec.mccmnc}")
        lines.append(f"  {name}: {host}:{port}; dlr delay {spec.dlr_delay}s; outcomes {mix}"
                     + ("".join(f"; {e}" for e in extra)))
    where = ""
    if control is not None:
        try:
            cp = listen_fleet_control(fleet, control[1], control[0])
        except CannotListenError as exc:
            _error("simulator", f"--control: cannot listen on {control[0]}:{control[1]}: {exc.socketError}")
            return 1
        where += f"; control http://{control[0]}:{cp.getHost().port}/stats"
    if fleet.hlr is not None:
        where += f"; hlr {fleet.hlr.url}/lookup"
    print(f"staffetta simulator: fleet of {len(specs)} listening{where}\n" + "\n".join(lines), flush=True)
    reactor.run()
    return 0


def start_hlr(args: argparse.Namespace, reactor: Any) -> tuple[int, str]:
    """Serve the HLR endpoint (simulator/hlr.py) unless ``--hlr off``: (exit code, text for the banner)."""
    spec = str(getattr(args, "hlr", "off") or "off")
    if spec.lower() in ("off", "none"):
        return 0, ""
    try:
        host, port = parse_hostport(spec)
    except ValueError as exc:
        _error("simulator", f"--hlr: {exc}")
        return 2, ""
    latency, rate = getattr(args, "hlr_latency", 0.0), getattr(args, "hlr_error_rate", 0.0)
    if not 0 <= latency < math.inf or not 0 <= rate <= 1:
        _error("simulator", "--hlr-latency: must be a number of seconds >= 0" if not 0 <= latency < math.inf
               else "--hlr-error-rate: must be between 0 and 1")
        return 2, ""
    from twisted.internet.error import CannotListenError

    from staffetta.simulator.hlr import HlrSimulator

    try:
        sim = HlrSimulator(reactor, seed=args.seed or 0, latency=latency, error_rate=rate,
                           csv_path=getattr(args, "hlr_csv", None))
        lp = sim.listen(port, host)
    except (OSError, ValueError) as exc:
        _error("simulator", f"--hlr-csv: {exc}")
        return 2, ""
    except CannotListenError as exc:
        _error("simulator", f"--hlr: cannot listen on {host}:{port}: {exc.socketError}")
        return 1, ""
    return 0, f", hlr http://{host}:{lp.getHost().port}/lookup"


# ------------------------------------------------------------------------ bench


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="SMPP address to load")
    parser.add_argument("--system-id", help="system_id to bind with (or --account)")
    parser.add_argument("--password", help="password to bind with")
    parser.add_argument("--account", type=_credential, action="append", default=None,
                        metavar="SYSTEM_ID:PASSWORD",
                        help="a credential to bind with, repeatable: connections take them in turn")
    parser.add_argument("-n", type=int, default=10000, help="submit_sm to send (default 10000)")
    parser.add_argument("--window", type=int, default=50,
                        help="outstanding submits per connection (default 50)")
    parser.add_argument("--connections", type=int, default=None,
                        help="TRX binds (default: one per credential)")
    parser.add_argument("--profile", choices=PROFILES, default=REALISTIC,
                        help="realistic (default: distinct destinations over 6 countries, a mix of shapes, "
                             "senders and receipt requests; docs/benchmarks.md) or single-destination "
                             "(one message, as --text/--destination/--source/--registered-delivery say)")
    parser.add_argument("--seed", type=int, default=1, help="the realistic mix's seed (default 1)")
    parser.add_argument("--countries", default=None, metavar="IT,FR,...",
                        help="the realistic mix only to these of its countries "
                             f"(default all: {','.join(r.region for r in MOBILE_RANGES)}); "
                             "a hub whose price plan serves fewer refuses the others")
    parser.add_argument("--text", default=None, help="short_message text (GSM; single-destination)")
    parser.add_argument("--destination", default=None,
                        help="destination_addr (single-destination; default 393331234567)")
    parser.add_argument("--source", default=None, help="source_addr (single-destination; default Staffetta)")
    parser.add_argument("--registered-delivery", type=int, default=None,
                        help="registered_delivery (single-destination; default 1: a receipt for every message)")
    parser.add_argument("--receipt-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for missing receipts (default 30)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


_SINGLE_ONLY = ("text", "destination", "source", "registered_delivery")
_REALISTIC_ONLY = ("countries",)


def format_result(r: Any) -> str:
    """The human-readable bench report."""
    rejected = ", ".join(f"{k} {v}" for k, v in r.as_dict()["rejected"].items()) or "0"
    others = []
    if r.receipts_foreign:
        others.append(f"{r.receipts_foreign} not of this run, not counted")
    if r.receipts_unrequested:
        others.append(f"{r.receipts_unrequested} not asked for")
    return "\n".join([
        f"sent      {r.sent} ({r.profile}) over {r.connections} connection(s), window {r.window}",
        f"accepted  {r.accepted} in {r.duration_s:.2f} s = {r.accepted_per_s:.0f} msg/s",
        f"rejected  {rejected}",
        f"latency   submit_sm -> resp p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms",
        f"receipts  {r.receipts} of {r.receipts_expected} expected = {r.receipts_per_s:.0f}/s"
        + (f" ({'; '.join(others)})" if others else ""),
        f"lost      {r.lost}",
        f"client    {r.client_cpu_us_per_msg:.0f} µs CPU per submit (this process)",
    ])


def bench_main(args: argparse.Namespace, reactor: Any = None) -> int:
    """Run one load against ``--target`` and print the figures; returns the exit code."""
    try:
        host, port = parse_hostport(args.target)
    except ValueError as exc:
        _error("bench", f"--target: {exc}")
        return 2
    credentials = list(args.account or [])
    if (args.system_id is None) != (args.password is None):
        _error("bench", "--system-id and --password go together")
        return 2
    if args.system_id is not None:
        credentials.insert(0, (args.system_id.encode("latin-1"), args.password.encode("latin-1")))
    if not credentials:
        _error("bench", "no credential: give --system-id and --password, or --account SYSTEM_ID:PASSWORD")
        return 2
    connections = len(credentials) if args.connections is None else args.connections
    for name, value in (("n", args.n), ("window", args.window), ("connections", connections)):
        if value < (0 if name == "n" else 1):
            _error("bench", f"{'-n' if name == 'n' else '--' + name}: must be >= {0 if name == 'n' else 1}")
            return 2
    for name in _REALISTIC_ONLY if args.profile == SINGLE_DESTINATION else _SINGLE_ONLY:
        if getattr(args, name) is not None:
            _error("bench", f"--{name.replace('_', '-')}: only with --profile "
                            f"{REALISTIC if args.profile == SINGLE_DESTINATION else SINGLE_DESTINATION}")
            return 2
    regions = None
    if args.countries is not None:
        regions = [c.strip().upper() for c in args.countries.split(",") if c.strip()]
        try:
            ranges_for(regions)
        except ValueError as exc:
            _error("bench", f"--countries: {exc}")
            return 2
    try:
        from staffetta.pdu.gsm import encode as gsm_encode

        text = gsm_encode(args.text if args.text is not None else "hello world")
    except ValueError as exc:
        _error("bench", f"--text: not GSM 03.38: {exc}")
        return 2

    from staffetta.simulator.loadclient import run_load

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    outcome: dict[str, Any] = {}

    def start() -> None:
        d = run_load(reactor, host, port, credentials=credentials, n=args.n, window=args.window,
                     connections=connections, profile=args.profile, seed=args.seed, regions=regions, text=text,
                     destination=args.destination or "393331234567", source=args.source or "Staffetta",
                     registered_delivery=1 if args.registered_delivery is None else args.registered_delivery,
                     receipt_timeout=args.receipt_timeout)
        d.addCallbacks(lambda r: outcome.__setitem__("result", r),
                       lambda f: outcome.__setitem__("error", f.getErrorMessage()))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if "error" in outcome:
        _error("bench", f"{args.target}: {outcome['error']}")
        return 1
    result = outcome["result"]
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(format_result(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m staffetta.simulator.cli simulator|bench ...``) until smsc/cli.py wires it."""
    parser = argparse.ArgumentParser(prog="staffetta")
    sub = parser.add_subparsers(dest="command", required=True)
    add_simulator_arguments(sub.add_parser("simulator", help="run the SMSC simulator"))
    add_bench_arguments(sub.add_parser("bench", help="load an SMPP server"))
    args = parser.parse_args(argv)
    return simulator_main(args) if args.command == "simulator" else bench_main(args)


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "add_bench_arguments",
    "add_simulator_arguments",
    "bench_main",
    "format_result",
    "parse_hostport",
    "parse_outcomes",
    "seconds",
    "simulator_main",
]
