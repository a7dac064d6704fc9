"""``staffetta number …``, ``staffetta keyword …``, ``staffetta optout …``: the two-way ledger's verbs.

Wired by ``smsc/cli.py`` with :func:`register`. Every verb takes
``--config`` / ``--data-dir`` (the store, as the account verbs resolve it) and
``--json``; a mistake is one line naming the field, exit status 2. Each change
is one transaction that bumps the settings version, so running hubs apply it
within about a second (docs/two-way.md "Command line").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial

from sqlalchemy import select
from sqlalchemy.engine import Engine

from staffetta.billing import accounts as acc
from staffetta.billing.cli import _tx
from staffetta.conf.settings import describe_store
from staffetta.router import number_store as ns
from staffetta.router.numbers import ACTIONS, Keyword

EngineFactory = Callable[[argparse.Namespace], Engine]


class CliError(ValueError):
    """One-line operator error."""


def _emit(args, doc, text: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(doc))
    else:
        text()


def _account(conn, name: str) -> acc.Account:
    a = acc.get_account(conn, name)
    if a is None:
        where = describe_store(conn.engine.url.render_as_string(hide_password=False))
        raise CliError(f"account: no account named {name!r} in {where}")
    return a


def _names(conn) -> dict[int, str]:
    return dict(conn.execute(select(acc.accounts.c.id, acc.accounts.c.name)).all())


def _number_doc(r, names: dict[int, str]) -> dict:
    return {"number": r.number, "role": r.role,
            "account": names.get(r.account_id) if r.account_id is not None else None,
            "countries": r.countries.split(",") if r.countries else None}


# ------------------------------------------------------------------ numbers


def cmd_pool_add(args, engine: Engine) -> int:
    now = time.time()
    with _tx(engine) as conn:
        account = _account(conn, args.account) if args.account else None
        added = []
        for n in args.numbers:
            ns.add_pool_number(conn, n, args.type, account.id if account else None, now,
                               args.countries.split(",") if args.countries else ())
            added.append(ns.check_number(n))
    doc = {"added": added, "type": args.type, "account": account.name if account else None,
           "countries": list(ns.check_countries(args.countries.split(","))) if args.countries else None}
    _emit(args, doc, lambda: print(f"{len(added)} {args.type} pool numbers added"
                                   + (f" for {account.name}" if account else " (shared pool)")))
    return 0


def _remove(args, engine: Engine, roles: tuple[str, ...], what: str) -> int:
    with _tx(engine) as conn:
        names = _names(conn)
        removed = [_number_doc(ns.remove_number(conn, n, roles), names) for n in args.numbers]
    _emit(args, {"removed": removed}, lambda: print(f"{len(removed)} {what} numbers removed"))
    return 0


def _list(args, engine: Engine, roles: tuple[str, ...]) -> int:
    with engine.connect() as conn:
        names = _names(conn)
        rows = [_number_doc(r, names) for r in ns.list_numbers(conn, roles)]
    if getattr(args, "type", None):
        rows = [r for r in rows if r["role"] == args.type]

    def text() -> None:
        for r in rows:
            print(f"{r['number']:<16} {r['role']:<10} {r['account'] or '-':<16} "
                  f"{','.join(r['countries']) if r['countries'] else 'any country'}")
    _emit(args, {"numbers": rows}, text)
    return 0


def cmd_dedicated_assign(args, engine: Engine) -> int:
    with _tx(engine) as conn:
        a = _account(conn, args.account)
        ns.assign_dedicated(conn, args.number, a.id, time.time())
    number = ns.check_number(args.number)
    _emit(args, {"number": number, "account": a.name}, lambda: print(f"{number} dedicated to {a.name}"))
    return 0


def cmd_shared_add(args, engine: Engine) -> int:
    now = time.time()
    with _tx(engine) as conn:
        for n in args.numbers:
            ns.add_shared_number(conn, n, now)
    added = [ns.check_number(n) for n in args.numbers]
    _emit(args, {"added": added}, lambda: print(f"{len(added)} shared numbers added"))
    return 0


def cmd_sender(args, engine: Engine) -> int:
    with _tx(engine) as conn:
        a = _account(conn, args.account)
        ns.set_own_sender(conn, a.id, args.policy)
    _emit(args, {"account": a.name, "own_sender": args.policy},
          lambda: print(f"{a.name}: a client's own SMART/REPLY sender is now {args.policy}d"))
    return 0


# ------------------------------------------------------------ codes, aliases


def cmd_code_assign(args, engine: Engine) -> int:
    with _tx(engine) as conn:
        a = _account(conn, args.account)
        code, new = ns.assign_code(conn, a.id, time.time())
    _emit(args, {"account": a.name, "code": code, "new": new},
          lambda: print(f"{a.name}: receiving code {code}" + ("" if new else " (already assigned)")))
    return 0


def cmd_alias_add(args, engine: Engine) -> int:
    with _tx(engine) as conn:
        a = _account(conn, args.account)
        word = ns.add_alias(conn, a.id, args.alias, time.time())
    _emit(args, {"account": a.name, "alias": word}, lambda: print(f"{a.name}: alias {word}"))
    return 0


def _code_remove(kind: str, args, engine: Engine) -> int:
    with _tx(engine) as conn:
        names = _names(conn)
        row = ns.remove_code(conn, getattr(args, kind), kind)
    _emit(args, {kind: row.word, "account": names.get(row.account_id)},
          lambda: print(f"{kind} {row.word} of {names.get(row.account_id)} removed"))
    return 0


def _code_list(kind: str, args, engine: Engine) -> int:
    with engine.connect() as conn:
        names = _names(conn)
        rows = [{kind: r.word, "account": names.get(r.account_id)} for r in ns.list_codes(conn) if r.kind == kind]

    def text() -> None:
        for r in rows:
            print(f"{r[kind]:<16} {r['account']}")
    _emit(args, {"codes" if kind == "code" else "aliases": rows}, text)
    return 0


# ------------------------------------------------------------------ keywords


def _keyword_doc(k: Keyword, names: dict[int, str]) -> dict:
    return {"account": names.get(k.account_id), "word": k.word, "action": k.action, "text": k.reply_text,
            "type": k.reply_type, "sender": k.reply_sender}


def cmd_keyword_add(args, engine: Engine) -> int:
    with _tx(engine) as conn:
        a = _account(conn, args.account)
        k = ns.add_keyword(conn, Keyword(a.id, args.word, args.action, args.text or "", args.type,
                                         args.sender))
    _emit(args, _keyword_doc(k, {a.id: a.name}), lambda: print(f"{a.name}: keyword {k.word} ({k.action})"))
    return 0


def cmd_keyword_remove(args, engine: Engine) -> int:
    with _tx(engine) as conn:
        a = _account(conn, args.account)
        ns.remove_keyword(conn, a.id, args.word)
    word = args.word.upper()
    _emit(args, {"account": a.name, "word": word}, lambda: print(f"{a.name}: keyword {word} removed"))
    return 0


def cmd_keyword_list(args, engine: Engine) -> int:
    with engine.connect() as conn:
        a = _account(conn, args.account) if args.account else None
        names = _names(conn)
        rows = [_keyword_doc(k, names) for k in ns.list_keywords(conn, a.id if a else None)]

    def text() -> None:
        for r in rows:
            print(f"{r['account']:<16} {r['word']:<12} {r['action']:<6} {r['type']:<6} {r['text']}")
    _emit(args, {"keywords": rows}, text)
    return 0


# ------------------------------------------------------------------ opt-outs


def _opt(out: bool, args, engine: Engine) -> int:
    with _tx(engine) as conn:
        a = _account(conn, args.account)
        changed = ns.set_opt_out(conn, a.id, args.handset, out, time.time(), via="cli")
    handset = ns.check_number(args.handset, "handset")
    doc = {"account": a.name, "handset": handset, "opted_out": out, "changed": changed}
    state = "opted out" if out else "opted in"
    _emit(args, doc, lambda: print(f"{handset} {state} of {a.name}" + ("" if changed else " (already)")))
    return 0


def cmd_optout_list(args, engine: Engine) -> int:
    with engine.connect() as conn:
        a = _account(conn, args.account) if args.account else None
        names = _names(conn)
        rows = [{"account": names.get(r.account_id), "handset": r.handset, "at": r.at, "via": r.via}
                for r in ns.list_opt_outs(conn, a.id if a else None)]

    def text() -> None:
        for r in rows:
            print(f"{r['account']:<16} {r['handset']:<16} {r['via']}")
    _emit(args, {"opt_outs": rows}, text)
    return 0


# ---------------------------------------------------------------- the parser


def _run(fn, engine_factory: EngineFactory, args) -> int:
    from staffetta.store.db import create_schema

    try:
        engine = engine_factory(args)
        try:
            create_schema(engine)
            return fn(args, engine)
        finally:
            engine.dispose()
    except (CliError, ns.NumberError, acc.AccountError) as exc:
        print(f"staffetta: {exc}", file=sys.stderr)
        return 2


def _upper(text: str) -> str:
    return text.strip().upper()


def register(subparsers, engine_factory: EngineFactory) -> None:
    """Add ``number``, ``keyword`` and ``optout`` to the top-level ``subparsers``."""

    def group(parent, name: str, help: str):
        p = parent.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest=f"{name}_verb", required=True, metavar="VERB")

    def verb(parent, name: str, fn, help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        p.add_argument("--config", metavar="FILE", help="staffetta.yaml to use")
        p.add_argument("--data-dir", metavar="DIR", help="where the embedded store lives")
        p.add_argument("--json", action="store_true", help="one JSON document on stdout")
        p.set_defaults(func=partial(_run, fn, engine_factory))
        return p

    number = group(subparsers, "number", "sender pools, dedicated and shared numbers, receiving codes and aliases")

    pool = group(number, "pool", "SMART / REPLY sender pools")
    p = verb(pool, "add", cmd_pool_add, "add numbers to a pool (shared, or one account's own with --account)")
    p.add_argument("numbers", nargs="+", metavar="NUMBER", help="E.164 digits, '+' optional")
    p.add_argument("--type", type=_upper, required=True, choices=["SMART", "REPLY"])
    p.add_argument("--account", metavar="NAME", help="the account whose own pool this is (default: shared)")
    p.add_argument("--countries", metavar="IT,FR",
                   help="the only destination countries these numbers may send to (default: any)")
    p = verb(pool, "remove", lambda a, e: _remove(a, e, ("SMART", "REPLY"), "pool"),
             "remove numbers from their pool")
    p.add_argument("numbers", nargs="+", metavar="NUMBER")
    p = verb(pool, "list", lambda a, e: _list(a, e, ("SMART", "REPLY")), "pool numbers")
    p.add_argument("--type", type=_upper, choices=["SMART", "REPLY"])

    ded = group(number, "dedicated", "dedicated inbound numbers (one owner each)")
    p = verb(ded, "assign", cmd_dedicated_assign, "give a number to one account (fails if the number is known)")
    p.add_argument("number")
    p.add_argument("--account", metavar="NAME", required=True)
    p = verb(ded, "release", lambda a, e: _remove(a, e, (ns.DEDICATED,), "dedicated"), "release numbers")
    p.add_argument("numbers", nargs="+", metavar="NUMBER")
    verb(ded, "list", lambda a, e: _list(a, e, (ns.DEDICATED,)), "dedicated numbers and their owners")

    shared = group(number, "shared", "shared inbound numbers (MO routed by receiving code or alias)")
    p = verb(shared, "add", cmd_shared_add, "add shared inbound numbers")
    p.add_argument("numbers", nargs="+", metavar="NUMBER")
    p = verb(shared, "remove", lambda a, e: _remove(a, e, (ns.SHARED,), "shared"), "remove shared numbers")
    p.add_argument("numbers", nargs="+", metavar="NUMBER")
    verb(shared, "list", lambda a, e: _list(a, e, (ns.SHARED,)), "shared inbound numbers")

    code = group(number, "code", "numeric receiving codes (assigned automatically, one per account)")
    p = verb(code, "assign", cmd_code_assign, "the account's receiving code (given out if it has none)")
    p.add_argument("account", metavar="ACCOUNT")
    p = verb(code, "release", partial(_code_remove, "code"), "release a receiving code")
    p.add_argument("code")
    verb(code, "list", partial(_code_list, "code"), "receiving codes")

    alias = group(number, "alias", "receiving aliases (>= 5 characters, unique, case-insensitive)")
    p = verb(alias, "add", cmd_alias_add, "give an account an alias")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("alias")
    p = verb(alias, "remove", partial(_code_remove, "alias"), "remove an alias")
    p.add_argument("alias")
    verb(alias, "list", partial(_code_list, "alias"), "receiving aliases")

    p = verb(number, "sender", cmd_sender,
             "what a client's own sender does on SMART/REPLY: ignore (the pool's is used) or refuse")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("policy", choices=["ignore", "refuse"])

    kw = group(subparsers, "keyword", "keywords and automatic replies per account")
    p = verb(kw, "add", cmd_keyword_add, "add a keyword (the first word of an MO, or the word after a code)")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("word")
    p.add_argument("--action", choices=ACTIONS, default="reply",
                   help="reply (auto-reply, default), stop, start, help")
    p.add_argument("--text", help="the automatic reply (reply, help; optional for stop/start)")
    p.add_argument("--type", type=_upper, choices=["SMART", "PRO", "REPLY"], default="SMART",
                   help="type of the automatic reply, charged like any MT (default SMART)")
    p.add_argument("--sender", help="sender of a PRO automatic reply (SMART/REPLY take the pool's)")
    p = verb(kw, "remove", cmd_keyword_remove, "remove a keyword")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("word")
    p = verb(kw, "list", cmd_keyword_list, "keywords (of one account, or all)")
    p.add_argument("account", metavar="ACCOUNT", nargs="?")

    opt = group(subparsers, "optout", "the opt-out ledger: handsets that said STOP to an account")
    p = verb(opt, "list", cmd_optout_list, "opted-out handsets (of one account, or all)")
    p.add_argument("account", metavar="ACCOUNT", nargs="?")
    p = verb(opt, "add", partial(_opt, True), "record an opt-out (its MT are then refused, 0x411)")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("handset")
    p = verb(opt, "remove", partial(_opt, False), "remove an opt-out")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("handset")
