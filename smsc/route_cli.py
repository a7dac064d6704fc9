"""``staffetta route explain|check|reload|status`` and ``staffetta connectors``: the route table for operators.

``smsc/cli.py`` calls :func:`register` with its sub-parsers, the engine factory
(``--config`` / ``--data-dir`` to a store) and the settings factory of
``run`` (so a reload is validated exactly as the hub will read it).

Which config: ``--config``, else the file of the hub running on the data dir
(its ``addresses.json`` says which file it re-reads), else the built-in one
(every upstream, failover). Where the hub is: ``--metrics HOST:PORT``, else
the ``metrics`` address in that ``addresses.json``. ``explain`` decides with
the running hub's table and connector states (its ``/status/routes`` and
``/status/connectors``, smsc/status.py) when it answers, else with the
config's table and every connector's state "unknown"; ``check`` checks the
file (the hub's table in force when there is none); ``reload`` checks the
file, signals the hub and prints the hub's own report.

Exit status: 0 done (``check``: no problem), 1 ``check`` found problems or the
hub could not be reached or did not take the reload, 2 a bad option or config
(one line naming it, nothing sent).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from argparse import Namespace
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from staffetta.conf.settings import (
    ConfigError,
    Settings,
    describe_store,
    from_dict,
    parse_hostport,
    read_addresses,
    read_config,
)
from staffetta.pdu.constants import status_name
from staffetta.pdu.errors import SubmitRejected
from staffetta.router.routes import Routing, groups_from_config, route_table
from staffetta.router.table import MESSAGE_TYPES, Problem, check, explain, table_from_config
from staffetta.smsc.status import CONNECTORS_PATH, ROUTES_PATH, table_changes, table_from_doc

SettingsFactory = Callable[[Namespace], Settings]
EngineFactory = Callable[[Namespace], Any]

#: How long ``route reload`` waits for the hub to report the reload (seconds).
RELOAD_WAIT = 5.0
HTTP_TIMEOUT = 2.0


#: Straight to the hub: an http_proxy in the operator's shell must not carry 127.0.0.1 elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Unreachable(Exception):
    """The hub could not be asked (no address, nothing listening, an error answer): exit 1."""


# ------------------------------------------------------------- the running hub


def _addresses(settings: Settings) -> dict[str, Any]:
    return read_addresses(settings.data_dir)


def _with_config(args: Namespace, config: str | None) -> Namespace:
    return Namespace(**{**vars(args), "config": config})


def _hub_settings(args: Namespace, settings_for: SettingsFactory) -> tuple[Settings, dict[str, Any]]:
    """The settings of ``--config``, else of the hub running on the data dir, and its addresses.

    Raises ConfigError (one line) on a bad config or a ``--config`` that is
    not the file the running hub reads.
    """
    settings = settings_for(args)
    addresses = _addresses(settings)
    hub_config = addresses.get("config")
    if isinstance(hub_config, str) and hub_config:
        if args.config and Path(args.config).resolve() != Path(hub_config).resolve():
            raise ConfigError(f"--config: the hub on {settings.data_dir} (pid {addresses.get('pid')}) reads "
                              f"{hub_config}, not {args.config}; drop --config or give --data-dir")
        if not args.config:
            settings = settings_for(_with_config(args, hub_config))
    return settings, addresses


def _metrics_address(args: Namespace, addresses: Mapping[str, Any], *, where: str) -> str:
    given = getattr(args, "metrics", None)
    if given:
        try:
            host, port = parse_hostport(given, "--metrics")
        except ConfigError:
            raise ConfigError(f"--metrics: expected HOST:PORT, got {given!r}") from None
        return f"{host}:{port}"
    m = addresses.get("metrics")
    if isinstance(m, str) and m:
        return m
    if addresses:
        raise Unreachable(f"the hub on {where} (pid {addresses.get('pid')}) serves no metrics address; "
                          f"start it with --metrics HOST:PORT")
    raise Unreachable(f"no running hub found on {where} (no addresses.json); give --metrics HOST:PORT")


def fetch(address: str, path: bytes) -> Any:
    """GET ``http://address/path`` as JSON, or :class:`Unreachable` with one line saying why."""
    url = f"http://{address}{path.decode()}"
    try:
        with _OPENER.open(url, timeout=HTTP_TIMEOUT) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError):
            pass
        raise Unreachable(f"{url}: HTTP {exc.code}{': ' + detail if detail else ''}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"no hub answering at {address} ({reason})") from None
    except ValueError:
        raise Unreachable(f"{url}: not JSON (is that a Staffetta metrics address?)") from None


# ------------------------------------------------------------------- explain


@dataclass(frozen=True, slots=True)
class _View:
    """A connector as the strategies read it (router.table.ConnectorView), from /status/connectors."""

    up: bool
    delivery_ratio: float | None


def _when(text: str | None, zone: str) -> tuple[float, datetime]:
    """``--at`` (ISO 8601; without an offset, in the table's time zone) as (epoch, local time)."""
    tz = ZoneInfo(zone)
    if text is None:
        now = time.time()
        return now, datetime.fromtimestamp(now, tz)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--at: expected an ISO time like 2026-11-30T14:05 or 2026-11-30T14:05+01:00, "
                          f"got {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return t.timestamp(), t.astimezone(tz)


#: Stands in for a sender when neither --sender nor the account gives one.
_NO_SENDER = "Staffetta"
#: The submit option an assess_submit refusal names, by its field.
_OPTION_OF_FIELD = {"destination_addr": "--to", "dest_addr_ton": "--to", "dest_addr_npi": "--to",
                    "source_addr": "--sender", "source_addr_ton": "--sender", "source_addr_npi": "--sender",
                    "service_type": "--type"}


def assess(account: Any, to: str, msg_type: str | None, sender: str | None) -> Any:
    """The account's submit as the hub assesses it (pdu.message.assess_submit): type, sender, destination.

    ``--to`` with a '+' is international (TON 1), else as a client's TON 0 (the
    account's country code for a national number); a digit sender is TON 1,
    an alphanumeric one TON 5; no ``--sender`` is the account's default, and
    with none, a placeholder the caller leaves out of the query (rules on
    ``sender`` then see no sender).
    """
    from staffetta.pdu import gsm
    from staffetta.pdu.message import AccountPolicy, assess_submit

    policy = AccountPolicy(default_type=account.default_type, default_country_code=account.default_country_code,
                           default_sender=account.default_sender)  # as Hub._policy builds it
    dest = to.strip().replace(" ", "")
    src = (sender or "").strip() or ("" if account.default_sender else _NO_SENDER)
    numeric = src.lstrip("+").isdigit()
    text = gsm.encode("route explain")
    fields = {
        "service_type": (msg_type or "").encode(), "source_addr": src.lstrip("+").encode("latin-1", "replace"),
        "source_addr_ton": 1 if numeric else 5, "source_addr_npi": 1 if numeric else 0,
        "destination_addr": dest.lstrip("+").encode("latin-1", "replace"),
        "dest_addr_ton": 1 if dest.startswith("+") else 0, "dest_addr_npi": 1, "esm_class": 0, "protocol_id": 0,
        "priority_flag": 0, "schedule_delivery_time": b"", "validity_period": b"", "registered_delivery": 0,
        "replace_if_present_flag": 0, "data_coding": 0, "sm_default_msg_id": 0, "sm_length": len(text),
        "short_message": text,
    }
    try:
        return assess_submit(fields, {}, policy)
    except SubmitRejected as exc:
        option = _OPTION_OF_FIELD.get(exc.field, exc.field)
        raise ConfigError(f"{option}: {exc.reason}; the hub refuses it ({status_name(exc.status)}) "
                          f"before routing") from None


def _account(engine: Any, name: str) -> Any:
    from staffetta.billing.accounts import get_account

    with engine.connect() as conn:
        acct = get_account(conn, name)
    if acct is None:
        raise ConfigError(f"--account: no account named {name!r} in "
                          f"{describe_store(engine.url.render_as_string(hide_password=False))}")
    return acct


def cmd_explain(args: Namespace, engine_factory: EngineFactory, settings_for: SettingsFactory) -> int:
    settings, addresses = _hub_settings(args, settings_for)
    engine = engine_factory(args)
    try:
        acct = _account(engine, args.account)
    finally:
        engine.dispose()
    a = assess(acct, args.to, args.type, args.sender)
    live: dict[str, dict[str, Any]] = {}
    in_force = live_error = None
    try:  # the hub's own table and its connectors' state, when it answers
        address = _metrics_address(args, addresses, where=settings.data_dir)
        in_force = fetch(address, ROUTES_PATH)
        live = {s["name"]: s for s in fetch(address, CONNECTORS_PATH) if isinstance(s, dict) and "name" in s}
    except Unreachable as exc:
        live_error = str(exc)
    if in_force is not None:
        table, source = table_from_doc(in_force), "the running hub's table"
        groups, names = in_force.get("account_groups"), [c["name"] for c in in_force["connectors"]]
    else:
        table, source = route_table(settings), _config_name(args, addresses)
        groups, names = settings.account_groups, [u.name for u in settings.upstreams]
    epoch, local = _when(args.at, table.timezone)
    routing = Routing(table, groups_from_config(groups))
    q = routing.query(acct.name, a, epoch, args.mccmnc)  # the query the hub builds for this submit
    if not (args.sender or acct.default_sender):
        q = q._replace(sender="")
    if live:
        views = {n: _View(bool(live[n].get("up")), live[n].get("delivery_ratio")) for n in names if n in live}
    else:  # state unknown: show the choice as if every connector were up
        views = {n: _View(True, None) for n in names}
    result = explain(table, views, q)
    for c in result["candidates"]:
        s = live.get(c["connector"])
        c["state"] = "unknown" if s is None else ("up" if s.get("up") else "down")
        if s is None:
            c["up"] = None
    rule = table.rules[result["index"]] if result.get("rule") is not None else None
    doc = {
        "query": {"account": acct.name, "groups": sorted(q.groups), "to": q.destination, "country": q.country,
                  "type": q.msg_type, "sender": q.sender, "mccmnc": q.mccmnc,
                  "at": local.isoformat(timespec="seconds"), "timezone": table.timezone},
        "table": source,
        **result,
        "live": live_error is None and bool(live),
        "live_error": live_error,
        "needs_mccmnc": bool(rule is not None and rule.hlr and args.mccmnc is None),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(_explain_text(doc))
    return 0


def _explain_text(doc: dict[str, Any]) -> str:
    q = doc["query"]
    lines = [f"account {q['account']} (groups: {', '.join(q['groups']) or 'none'}) to +{q['to']} "
             f"({q['country'] or 'no country'}), type {q['type']}, sender {q['sender'] or '-'}, "
             f"mccmnc {q['mccmnc'] or '-'}, at {q['at']} {q['timezone']}"]
    lines.append(f"table: {doc['table']}")
    if not doc["live"]:
        lines.append(f"connector state: unknown ({doc['live_error'] or 'no state'}); "
                     f"the choice assumes every connector is up")
    if doc["rule"] is None:
        lines.append(f"no rule matches: refused at submit with {doc['refused']}")
        return "\n".join(lines)
    lines.append(f"rule #{doc['index']} {doc['rule']!r} ({doc['strategy']})")
    if doc["needs_mccmnc"]:
        lines.append("  this rule asks the HLR for the serving network; give --mccmnc to explain with one")
    if doc["candidates"]:
        lines.append(f"  {'connector':<16} {'state':<8} {'price':>10} {'ratio':>6} {'rank':>5}  note")
        for c in doc["candidates"]:
            ratio = "-" if c["delivery_ratio"] is None else f"{c['delivery_ratio']:.2f}"
            lines.append(f"  {c['connector']:<16} {c['state']:<8} {c['price'] or '-':>10} {ratio:>6} "
                         f"{c['rank'] or '-':>5}  {c['skipped'] or ''}".rstrip())
    if doc["choice"] is not None:
        lines.append(f"choice: {doc['choice']}")
    else:
        lines.append(f"refused: {doc['refused']} ({doc['reason']})")
    return "\n".join(lines)


# --------------------------------------------------------------------- check


def _lenient(settings_for: SettingsFactory) -> SettingsFactory:
    """``settings_for`` on the file without its ``routes:`` (check reports those instead of refusing)."""
    def build(args: Namespace) -> Settings:
        if not args.config:
            return settings_for(args)
        raw = read_config(args.config)
        if not isinstance(raw, dict):
            return from_dict(raw)  # one line: config: expected a mapping
        return from_dict({k: v for k, v in raw.items() if k != "routes"})
    return build


def _config_name(args: Namespace, addresses: Mapping[str, Any]) -> str:
    path = args.config or addresses.get("config")
    return str(path) if path else "the built-in table"


def cmd_check(args: Namespace, engine_factory: EngineFactory, settings_for: SettingsFactory) -> int:
    settings, addresses = _hub_settings(args, _lenient(settings_for))
    path = args.config or addresses.get("config") or None
    raw = read_config(path) if path else {}
    routes = raw.get("routes") if isinstance(raw, dict) else None
    unknown: list[Problem] = []
    names = [u.name for u in settings.upstreams]
    in_force = None
    if path is None and addresses.get("metrics"):  # no file: the running hub's table (the demo's own)
        try:
            in_force = fetch(addresses["metrics"], ROUTES_PATH)
        except Unreachable:
            pass
    if in_force is not None:
        table, names, source = table_from_doc(in_force), [c["name"] for c in in_force["connectors"]], "the running hub"
    else:
        table = table_from_config(routes, names, timezone=settings.route_timezone, unknown=unknown)
        source = path or "the built-in table"
    problems = [*unknown, *check(table, names)]
    doc = {"config": path, "table": source, "rules": len(table.rules), "connectors": names,
           "problems": [{"kind": p.kind, "rule": p.rule, "detail": p.detail} for p in problems]}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{source}: {len(table.rules)} rules over {len(names)} connectors")
        for p in problems:
            print(f"  {p.kind}{' rule ' + repr(p.rule) if p.rule else ''}: {p.detail}")
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}" if problems else "no problems")
    return 1 if problems else 0


# -------------------------------------------------------------------- reload


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_reload(args: Namespace, engine_factory: EngineFactory, settings_for: SettingsFactory) -> int:
    # Checked as the hub will read it: a bad file is one line, exit 2, and nothing is sent.
    settings, addresses = _hub_settings(args, settings_for)
    pid = addresses.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        raise Unreachable(f"no running hub found on {settings.data_dir} (no addresses.json with its pid)")
    if not _alive(pid):
        raise Unreachable(f"the hub on {settings.data_dir} (pid {pid}) is not running (stale addresses.json)")
    address = addresses.get("metrics") if isinstance(addresses.get("metrics"), str) else None
    before = _routes_or_none(address)
    last = addresses.get("reload")
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.wait
    while (outcome := read_addresses(settings.data_dir).get("reload")) in (None, last):
        if time.monotonic() >= deadline:
            raise Unreachable(f"the hub (pid {pid}) did not report the reload within {args.wait:g} s; "
                              f"its log says why")
        time.sleep(0.05)
    if not outcome.get("ok"):
        raise Unreachable(f"the hub (pid {pid}) refused the reload, the configuration in force stays: "
                          f"{outcome.get('error')}")
    after = _routes_or_none(address)
    rules = table_changes(before, after) if before is not None and after is not None else {}
    doc = {"pid": pid, "rules": outcome.get("rules"),
           "rules_added": rules.get("rules_added", []), "rules_removed": rules.get("rules_removed", []),
           "rules_changed": rules.get("rules_changed", []), "connectors_added": outcome.get("added", []),
           "connectors_removed": outcome.get("removed", []), "connectors_changed": outcome.get("changed", [])}
    if "timezone" in rules:
        doc["timezone"] = rules["timezone"]
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"reloaded: the hub (pid {pid}) routes with {doc['rules']} rules")
    said = False
    for key in ("rules_added", "rules_removed", "rules_changed", "connectors_added", "connectors_removed",
                "connectors_changed"):
        if doc[key]:
            print(f"  {key.replace('_', ' ')}: {', '.join(doc[key])}")
            said = True
    if "timezone" in doc:
        print(f"  time zone: {doc['timezone'][0]} -> {doc['timezone'][1]}")
        said = True
    if not said:
        print("  nothing changed" if address else "  connectors unchanged (no metrics address: rules not compared)")
    return 0


def _routes_or_none(address: str | None) -> dict[str, Any] | None:
    if address is None:
        return None
    try:
        return fetch(address, ROUTES_PATH)
    except Unreachable:
        return None


# ---------------------------------------------------------------- connectors


def _ratio(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def cmd_connectors(args: Namespace, engine_factory: EngineFactory, settings_for: SettingsFactory) -> int:
    if args.metrics:
        addresses: dict[str, Any] = {}
        where = "--metrics"
    else:
        settings = settings_for(args)
        addresses, where = _addresses(settings), settings.data_dir
    states = fetch(_metrics_address(args, addresses, where=where), CONNECTORS_PATH)
    if args.json:
        print(json.dumps(states, indent=2))
        return 0
    print(f"{'connector':<16} {'state':<6} {'address':<22} {'bind':<12} {'sessions':>8} {'window':>9} "
          f"{'queue':>7} {'msg/s':>6} {'ratio':>6}  last error")
    for s in states:
        rate = s.get("throughput") or 0
        sessions = f"{s.get('sessions', 0)}/{s.get('sessions_configured', '?')}"
        window = f"{s.get('window', 0)}/{s.get('window_size', '?')}"
        print(f"{s.get('name', '?'):<16} {'up' if s.get('up') else 'down':<6} "
              f"{str(s.get('host')) + ':' + str(s.get('port')):<22} {s.get('bind_mode') or '-':<12} "
              f"{sessions:>8} {window:>9} {s.get('queue', 0):>7} {rate if rate else '-':>6} "
              f"{_ratio(s.get('delivery_ratio')):>6}  {s.get('last_error') or ''}".rstrip())
    return 0


# ------------------------------------------------------------------ register


def _wrap(fn: Callable[..., int], engine_factory: EngineFactory, settings_for: SettingsFactory) -> Callable:
    def run(args: Namespace) -> int:
        try:
            return fn(args, engine_factory, settings_for)
        except Unreachable as exc:
            print(f"staffetta: {exc}", file=sys.stderr)
            return 1
    return run


def _message_type(text: str) -> str:
    if text.upper() not in MESSAGE_TYPES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(MESSAGE_TYPES)}, got {text!r}")
    return text.upper()


def _mccmnc(text: str) -> str:
    if not (text.isdigit() and 5 <= len(text) <= 6):
        raise argparse.ArgumentTypeError(f"expected an MCC-MNC of 5 or 6 digits like 22201, got {text!r}")
    return text


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v <= 600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 600, got {text!r}")
    return v


def register(subparsers: Any, engine_factory: EngineFactory, settings_for: SettingsFactory) -> None:
    """Add ``route explain|check|reload|status`` and ``connectors`` to the ``staffetta`` sub-parsers."""

    def common(p: argparse.ArgumentParser, *, metrics: bool = True) -> None:
        p.add_argument("--config", metavar="FILE",
                       help="staffetta.yaml (default: $STAFFETTA_CONFIG, else the running hub's)")
        p.add_argument("--data-dir", metavar="DIR", help="the data dir of the running hub and its store")
        if metrics:
            p.add_argument("--metrics", metavar="HOST:PORT",
                           help="the hub's metrics address (default: from the data dir's addresses.json)")
        p.add_argument("--json", action="store_true", help="one JSON document on stdout")

    r = subparsers.add_parser("route", help="the route table: explain, check, reload, status")
    rs = r.add_subparsers(dest="route_verb", required=True, metavar="VERB")

    e = rs.add_parser("explain", help="which rule and connector a message would take, and why")
    e.add_argument("--account", required=True, metavar="NAME")
    e.add_argument("--to", required=True, metavar="NUMBER", help="destination, +E.164 or as a client sends it")
    e.add_argument("--type", type=_message_type, metavar="|".join(MESSAGE_TYPES),
                   help="message type (default: the account's)")
    e.add_argument("--sender", metavar="S", help="sender (default: the account's)")
    e.add_argument("--at", metavar="ISO-TIME", help="when (default: now); without an offset, in route_timezone")
    e.add_argument("--mccmnc", type=_mccmnc, metavar="MCCMNC", help="the serving network an HLR would answer")
    common(e)
    e.set_defaults(func=_wrap(cmd_explain, engine_factory, settings_for))

    c = rs.add_parser("check", help="shadowed rules, unused connectors, unknown connectors (exit 1 if any)")
    common(c, metrics=False)
    c.set_defaults(func=_wrap(cmd_check, engine_factory, settings_for))

    rl = rs.add_parser("reload", help="validate the config, then make the running hub load it (SIGHUP)")
    rl.add_argument("--wait", type=_seconds, default=RELOAD_WAIT, metavar="SECONDS",
                    help=f"how long to wait for the hub to report the reload (default {RELOAD_WAIT:g})")
    common(rl, metrics=False)
    rl.set_defaults(func=_wrap(cmd_reload, engine_factory, settings_for))

    for parent, name in ((rs, "status"), (subparsers, "connectors")):
        s = parent.add_parser(name, help="each connector's live state in the running hub")
        common(s)
        s.set_defaults(func=_wrap(cmd_connectors, engine_factory, settings_for))


__all__ = ["assess", "fetch", "register"]

