"""``staffetta account ...``: the operator's verbs for accounts and credit.

Wired by ``smsc/cli.py`` with :func:`register`. Amounts are credits with up to
two decimals (``1.6``); every verb prints one JSON document with ``--json``;
errors are one line naming the field, exit status 2; ``account check`` exits
1 when any account's balance differs from its ledger.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import select
from sqlalchemy.engine import Engine

from staffetta.billing import accounts as acc
from staffetta.billing import wallet
from staffetta.billing.money import format_credits, parse_credits
from staffetta.billing.plans import (
    BillingConfig,
    PlanError,
    billing_from_dict,
    expiry_after,
    parse_validity,
    trial_amount,
)
from staffetta.conf.settings import describe_store

EngineFactory = Callable[[argparse.Namespace], Engine]
BillingFactory = Callable[[argparse.Namespace], BillingConfig]


class CliError(ValueError):
    """One-line operator error (``field: what is wrong``)."""


# ------------------------------------------------------------------- helpers


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _yes_no(value: str) -> bool:
    v = value.strip().lower()
    if v in ("yes", "y", "true", "on", "1"):
        return True
    if v in ("no", "n", "false", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {value!r}")


_STATUS_NAMES = {
    "nocredit": 0x401, "staffetta_rnocredit": 0x401, "0x401": 0x401, "0x00000401": 0x401, "1025": 0x401,
    "submitfail": 0x45, "esme_rsubmitfail": 0x45, "0x45": 0x45, "0x00000045": 0x45, "69": 0x45,
}


def _nocredit_status(value: str) -> int:
    try:
        return _STATUS_NAMES[value.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"expected 0x401 (nocredit) or 0x45 (submitfail), got {value!r}") from None


def _default_billing(args) -> BillingConfig:
    """The ``billing:`` section of ``--config`` if there is one, else the built-in plan."""
    path = getattr(args, "config", None)
    if not path:
        return BillingConfig()
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except OSError as exc:
        raise CliError(f"--config: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"--config: {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise CliError(f"--config: {path} is not a mapping")
    return billing_from_dict(doc.get("billing"))


@contextmanager
def _tx(engine: Engine):
    """One transaction; on SQLite take the write lock up front so a running hub cannot interleave."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def _store(conn) -> str:
    """Which store this verb opened, for the messages that found nothing there."""
    return describe_store(conn.engine.url.render_as_string(hide_password=False))


def _account(conn, name: str) -> acc.Account:
    a = acc.get_account(conn, name)
    if a is None:
        raise CliError(f"name: no account named {name!r} in {_store(conn)}")
    return a


def _country(text: str) -> int:
    """argparse type of a country calling code: 1-999 (E.164)."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 999:
        raise argparse.ArgumentTypeError(f"expected a country calling code 1-999, got {text!r}")
    return int(text)


def _amount(text: str, field: str = "amount") -> int:
    try:
        cents = parse_credits(text, field=field)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if cents <= 0:
        raise CliError(f"{field}: must be more than 0")
    return cents


def _expiry(text: str | None, now: int, default) -> int | None:
    if text is None:
        return expiry_after(now, default)
    try:
        return expiry_after(now, parse_validity(text, field="--expires"))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _lot_doc(lot: dict) -> dict:
    return {
        "id": lot["id"],
        "amount": format_credits(lot["amount"]),
        "remaining": format_credits(lot["remaining"]),
        "expires_at": _iso(lot["expires_at"]),
        "method": lot["method"],
        "reference": lot["reference"],
        "created_at": _iso(lot["created_at"]),
    }


def _show_doc(conn, a: acc.Account, billing: BillingConfig, now: int) -> dict:
    plan = billing.plan(a.price_plan)
    threshold, armed = wallet.threshold_of(conn, a.id)
    creds = conn.execute(
        select(acc.credentials.c.system_id, acc.credentials.c.revoked,
               acc.credentials.c.allowed_networks, acc.credentials.c.max_rate)
        .where(acc.credentials.c.account_id == a.id).order_by(acc.credentials.c.id)
    ).all()
    bal = wallet.balance(conn, a.id)
    return {
        "id": a.id,
        "name": a.name,
        "enabled": bool(a.enabled),
        "type": a.default_type,
        "country": a.default_country_code,
        "price_plan": plan.name,
        "hlr_mode": a.hlr_mode or "default",
        "nocredit_status": f"0x{a.nocredit_status:08X}",
        "refund_on_network_failure": bool(a.refund_on_network_failure),
        "alert_url": a.alert_url,
        "mo_channel": a.mo_channel or "smpp",
        "mo_url": a.mo_url,
        "mo_secret_set": bool(a.mo_secret),
        "threshold": None if threshold is None else format_credits(threshold),
        "alert_armed": armed,
        "balance": format_credits(bal),
        "spendable": format_credits(wallet.spendable(conn, a.id, now)),
        "remaining_segments": wallet.remaining_segments(conn, a.id, plan, now),
        "lots": [_lot_doc(lot) for lot in wallet.lots_of(conn, a.id, live_only=True)],
        "credentials": [
            {"system_id": c.system_id, "revoked": bool(c.revoked),
             "allowed_networks": c.allowed_networks, "max_rate": c.max_rate}
            for c in creds
        ],
    }


def _print_show(doc: dict) -> None:
    print(f"account {doc['name']} (id {doc['id']}, {'enabled' if doc['enabled'] else 'DISABLED'}, "
          f"type {doc['type']}, country {doc['country']}, plan {doc['price_plan']})")
    print(f"  balance    {doc['balance']} credits (spendable now {doc['spendable']})")
    segs = ", ".join(f"{k} {v}" for k, v in doc["remaining_segments"].items())
    print(f"  can send   {segs} one-segment messages")
    alert = "off" if doc["threshold"] is None else (
        f"below {doc['threshold']} -> {doc['alert_url'] or '(log only)'}"
        f" ({'armed' if doc['alert_armed'] else 'fired, re-arms at the threshold'})")
    print(f"  alert      {alert}")
    print(f"  no credit  status {doc['nocredit_status']}; refund network failures: "
          f"{'yes' if doc['refund_on_network_failure'] else 'no'}")
    print(f"  MO         {doc['mo_channel']}" + (f" -> {doc['mo_url']} (secret {'set' if doc['mo_secret_set'] else 'NOT set'})"
                                               if doc["mo_url"] else ""))
    for lot in doc["lots"]:
        print(f"  lot {lot['id']:>6}  {lot['remaining']:>12} of {lot['amount']:>12}  "
              f"expires {lot['expires_at'] or 'never':20}  {lot['method']}"
              + (f" ref {lot['reference']}" if lot["reference"] else ""))
    for c in doc["credentials"]:
        print(f"  system_id  {c['system_id']}{' (revoked)' if c['revoked'] else ''}")


def _emit(args, doc, text: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(doc, sort_keys=False))
    else:
        text()


# --------------------------------------------------------------------- verbs


def cmd_create(args, engine: Engine, billing: BillingConfig) -> int:
    now = int(time.time())
    plan = billing.plan(args.plan)
    credits = _amount(args.credits, "--credits") if args.credits is not None else None
    with _tx(engine) as conn:
        a = acc.create_account(
            conn, args.name, args.password, system_id=args.system_id, default_type=args.type,
            default_country_code=args.country, alert_url=args.alert_url,
            nocredit_status=args.nocredit_status, price_plan=args.plan,
        )
        if credits is not None:
            wallet.topup(conn, a.id, credits, expires_at=_expiry(args.expires, now, plan.topup_validity),
                         method="initial", now=now)
        if args.trial:
            amount = trial_amount(plan, a.default_type)
            if amount > 0:
                wallet.topup(conn, a.id, amount, expires_at=expiry_after(now, plan.trial_validity),
                             method="trial", now=now)
        if args.threshold is not None:
            wallet.set_threshold(conn, a.id, _threshold(args.threshold))
        doc = _show_doc(conn, a, billing, now)
    _emit(args, doc, lambda: (print(f"account {a.name} created (system_id {args.system_id or a.name})"),
                              _print_show(doc)))
    return 0


def _threshold(text: str) -> int | None:
    if text.strip().lower() in ("none", "off", "no"):
        return None
    try:
        return parse_credits(text, field="--threshold")
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_show(args, engine: Engine, billing: BillingConfig) -> int:
    now = int(time.time())
    with engine.connect() as conn:
        doc = _show_doc(conn, _account(conn, args.name), billing, now)
    _emit(args, doc, lambda: _print_show(doc))
    return 0


def cmd_topup(args, engine: Engine, billing: BillingConfig) -> int:
    now = int(time.time())
    amount = _amount(args.amount)
    with _tx(engine) as conn:
        a = _account(conn, args.name)
        expires = _expiry(args.expires, now, billing.plan(a.price_plan).topup_validity)
        credited = wallet.topup(conn, a.id, amount, expires_at=expires, method=args.method,
                                reference=args.reference, now=now)
        bal = wallet.balance(conn, a.id)
    doc = {"account": a.name, "credited": credited, "amount": format_credits(amount),
           "expires_at": _iso(expires) if credited else None, "method": args.method,
           "reference": args.reference, "balance": format_credits(bal)}

    def text():
        if credited:
            print(f"{a.name}: +{doc['amount']} credits ({args.method}"
                  + (f", ref {args.reference}" if args.reference else "")
                  + f", expires {doc['expires_at'] or 'never'}); balance {doc['balance']}")
        else:
            print(f"{a.name}: reference {args.reference!r} was already credited; nothing done; "
                  f"balance {doc['balance']}")

    _emit(args, doc, text)
    return 0


def cmd_transfer(args, engine: Engine, billing: BillingConfig) -> int:
    now = int(time.time())
    amount = _amount(args.amount)
    with _tx(engine) as conn:
        src = _account(conn, args.source)
        dst = _account(conn, args.destination)
        try:
            tid = wallet.transfer(conn, src.id, dst.id, amount, now=now)
        except wallet.InsufficientCredit as exc:
            raise CliError(f"amount: {src.name} has {format_credits(exc.available)} spendable credits, "
                           f"the transfer needs {format_credits(exc.needed)}") from None
        b_src, b_dst = wallet.balance(conn, src.id), wallet.balance(conn, dst.id)
    doc = {"transfer_id": tid, "from": src.name, "to": dst.name, "amount": format_credits(amount),
           "from_balance": format_credits(b_src), "to_balance": format_credits(b_dst)}
    _emit(args, doc, lambda: print(
        f"transfer {tid}: {doc['amount']} credits {src.name} -> {dst.name}; "
        f"balances {src.name} {doc['from_balance']}, {dst.name} {doc['to_balance']}"))
    return 0


def cmd_history(args, engine: Engine, billing: BillingConfig) -> int:
    if args.limit <= 0:
        raise CliError("--limit: must be more than 0")
    with engine.connect() as conn:
        a = _account(conn, args.name)
        rows = wallet.history(conn, a.id, args.limit)
    entries = [
        {"id": r["id"], "at": _iso(r["created_at"]), "kind": r["kind"],
         "amount": format_credits(r["amount"]), "method": r["method"], "reference": r["reference"],
         "message_id": r["message_id"], "lot_id": r["lot_id"], "transfer_id": r["transfer_id"],
         "refund_of": r["debit_id"]}
        for r in rows
    ]
    doc = {"account": a.name, "entries": entries}

    def text():
        for e in entries:
            cause = " ".join(f"{k}={e[k]}" for k in ("method", "reference", "message_id", "lot_id",
                                                     "transfer_id", "refund_of") if e[k] is not None)
            print(f"{e['at']}  {e['kind']:<12} {e['amount']:>12}  {cause}")

    _emit(args, doc, text)
    return 0


def cmd_set(args, engine: Engine, billing: BillingConfig) -> int:
    now = int(time.time())
    if args.plan is not None and args.plan.lower() != "none":
        billing.plan(args.plan)  # PlanError names it
    with _tx(engine) as conn:
        a = _account(conn, args.name)
        kw: dict = {}
        if args.enabled is not None:
            kw["enabled"] = args.enabled
        if args.alert_url is not None:
            kw["alert_url"] = None if args.alert_url.lower() == "none" else args.alert_url
        if args.nocredit_status is not None:
            kw["nocredit_status"] = args.nocredit_status
        if args.refund_network_failure is not None:
            kw["refund_on_network_failure"] = args.refund_network_failure
        if args.plan is not None:
            kw["price_plan"] = None if args.plan.lower() == "none" else args.plan
        if args.hlr is not None:
            kw["hlr_mode"] = None if args.hlr == "default" else args.hlr
        if args.mo_url is not None:
            kw["mo_url"] = None if args.mo_url.lower() == "none" else args.mo_url
            if args.mo_channel is None and kw["mo_url"] is not None and (a.mo_channel or "smpp") == "smpp":
                kw["mo_channel"] = "http"  # a URL given alone means: deliver there
        if args.mo_secret is not None:
            kw["mo_secret"] = None if args.mo_secret.lower() == "none" else args.mo_secret
        if args.mo_channel is not None:
            kw["mo_channel"] = args.mo_channel
        acc.update_account(conn, a.id, **kw)
        if args.threshold is not None:
            wallet.set_threshold(conn, a.id, _threshold(args.threshold))
        a = acc.get_account_by_id(conn, a.id)
        doc = _show_doc(conn, a, billing, now)
    _emit(args, doc, lambda: _print_show(doc))
    return 0


def cmd_check(args, engine: Engine, billing: BillingConfig) -> int:
    with engine.connect() as conn:
        bad = wallet.check(conn)
        n = len(conn.execute(select(acc.accounts.c.id)).all())
    doc = {"ok": not bad, "accounts": n, "mismatches": [
        {"account": m.account, "balance": None if m.balance is None else format_credits(m.balance),
         "ledger_sum": format_credits(m.ledger_sum), "lots_remaining": format_credits(m.lots_sum)}
        for m in bad
    ]}

    def text():
        if not bad:
            print(f"ok: {n} accounts in {_store(conn)}, every balance equals its ledger")
        for m in doc["mismatches"]:
            print(f"MISMATCH {m['account']}: balance {m['balance']}, ledger sum {m['ledger_sum']}, "
                  f"lots remaining {m['lots_remaining']}")

    _emit(args, doc, text)
    return 1 if bad else 0


def cmd_expire(args, engine: Engine, billing: BillingConfig) -> int:
    now = int(time.time())
    with _tx(engine) as conn:
        rows = wallet.expire_lots(conn, now)
        names = dict(conn.execute(select(acc.accounts.c.id, acc.accounts.c.name)).all())
    doc = {"expired": [{"account": names.get(e.account_id), "lot_id": e.lot_id,
                        "amount": format_credits(e.amount)} for e in rows]}
    _emit(args, doc, lambda: print(
        f"{len(rows)} lots written off, {format_credits(sum(e.amount for e in rows))} credits"))
    return 0


# ---------------------------------------------------------------- the parser


def _run(fn, engine_factory: EngineFactory, billing_factory: BillingFactory | None, args) -> int:
    from staffetta.store.db import create_schema  # billing.accounts (imported above) registered our tables

    try:
        cfg = (billing_factory or _default_billing)(args)
        engine = engine_factory(args)
        try:
            create_schema(engine)
            acc.upgrade(engine)
            return fn(args, engine, cfg)
        finally:
            engine.dispose()
    except (CliError, acc.AccountError, wallet.WalletError, PlanError) as exc:
        print(f"staffetta: {exc}", file=sys.stderr)
        return 2


def register(subparsers, engine_factory: EngineFactory,
             billing_factory: BillingFactory | None = None) -> argparse.ArgumentParser:
    """Add ``account`` and its verbs to the top-level ``subparsers``; each sets ``func(args) -> int``.

    ``engine_factory(args)`` resolves ``--config`` / ``--data-dir`` to an Engine;
    ``billing_factory(args)`` gives the price plans (default: the ``billing:``
    section of ``--config``, else the built-in plan).
    """
    a = subparsers.add_parser("account", help="accounts, credit, ledger")
    verbs = a.add_subparsers(dest="account_verb", required=True, metavar="VERB")

    def verb(name: str, fn, help: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help, description=help)
        p.add_argument("--config", metavar="FILE", help="staffetta.yaml to use")
        p.add_argument("--data-dir", metavar="DIR", help="where the embedded store lives")
        p.add_argument("--json", action="store_true", help="one JSON document on stdout")
        p.set_defaults(func=partial(_run, fn, engine_factory, billing_factory))
        return p

    p = verb("create", cmd_create, "create an account with one SMPP credential")
    p.add_argument("name")
    p.add_argument("--password", required=True, help="SMPP password, 1-8 ASCII characters")
    p.add_argument("--system-id", help="SMPP system_id (default: the name)")
    p.add_argument("--credits", metavar="N", help="initial credit, e.g. 100 or 1.6")
    p.add_argument("--expires", metavar="VALIDITY", help="validity of --credits: 6m, 1m, 30d, 1y, none")
    p.add_argument("--trial", action="store_true", help="add the plan's trial lot (50 segments, 1 month)")
    p.add_argument("--type", default="PRO", choices=["SMART", "PRO", "REPLY"])
    p.add_argument("--country", type=_country, default=39, help="default country calling code (1-999)")
    p.add_argument("--threshold", metavar="CREDITS", help="low-credit alert threshold")
    p.add_argument("--alert-url", metavar="URL", help="where the low-credit alert is POSTed")
    p.add_argument("--plan", metavar="NAME", help="price plan (default: billing.default_plan)")
    p.add_argument("--nocredit-status", type=_nocredit_status, default=0x401,
                   metavar="0x401|0x45", help="status for insufficient credit")

    p = verb("show", cmd_show, "balance, lots, remaining segments per type")
    p.add_argument("name")

    p = verb("topup", cmd_topup, "add credit as a lot (idempotent per --reference)")
    p.add_argument("name")
    p.add_argument("amount", help="credits, up to two decimals")
    p.add_argument("--expires", metavar="VALIDITY", help="6m, 1m, 30d, 1y or none (default: the plan's)")
    p.add_argument("--method", default="manual", help="bank, postal, card, paypal, coupon, manual...")
    p.add_argument("--reference", help="external payment reference: credited once, ever")

    p = verb("transfer", cmd_transfer, "move credit between accounts")
    p.add_argument("source", metavar="FROM")
    p.add_argument("destination", metavar="TO")
    p.add_argument("amount", help="credits, up to two decimals")

    p = verb("history", cmd_history, "ledger rows, newest first")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=50)

    p = verb("set", cmd_set, "change an account's settings")
    p.add_argument("name")
    p.add_argument("--threshold", metavar="CREDITS|none", help="low-credit alert threshold")
    p.add_argument("--alert-url", metavar="URL|none")
    p.add_argument("--enabled", type=_yes_no, metavar="yes|no", help="disabled: no binds, no top-ups")
    p.add_argument("--nocredit-status", type=_nocredit_status, metavar="0x401|0x45")
    p.add_argument("--refund-network-failure", type=_yes_no, metavar="yes|no")
    p.add_argument("--plan", metavar="NAME|none")
    p.add_argument("--hlr", choices=["off", "cached", "always", "default"],
                   help="HLR lookup before sending (default: the config's hlr.mode)")
    p.add_argument("--mo-channel", choices=["smpp", "http", "both"],
                   help="how MO reach the account: deliver_sm on its binds, the webhook, or both")
    p.add_argument("--mo-url", metavar="URL|none", help="the MO webhook (signed JSON POST, docs/two-way.md)")
    p.add_argument("--mo-secret", metavar="SECRET|none", help="the webhook's HMAC-SHA256 key (16-200 characters)")

    verb("check", cmd_check, "verify balance == ledger sum == lots for every account (exit 1 if not)")
    verb("expire", cmd_expire, "write off every expired lot now")
    return a
