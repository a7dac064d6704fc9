"""``staffetta mo list`` and ``staffetta mo replay``: the MO log and delivering it again.

``list`` reads the ``mo`` table (newest first) with each MO's owner decision
and its webhook's state. ``replay`` asks the hubs to deliver stored MO again
to their owners, on each account's channel as set now: it writes one
``mo_replays`` row per MO and bumps the settings version, so a running hub
takes them within about a second (a stopped one at its next start). Dead
letters have no owner and are not replayed. Times are ISO 8601 (UTC unless
an offset is given) or Unix seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from staffetta.conf.settings import ConfigError
from staffetta.router.mo import iso, text_of


def _when(value: str, option: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option}: expected ISO 8601 (2026-11-30T13:00) or Unix seconds, got {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _account_id(conn, name: str | None) -> int | None:
    if name is None:
        return None
    from staffetta.billing.accounts import get_account

    a = get_account(conn, name)
    if a is None:
        raise ConfigError(f"--account: no account named {name!r}")
    return a.id


def _doc(row, hook, names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_at": iso(row.received_at),
        "connector": row.connector,
        "from": row.source,
        "to": row.destination,
        "text": text_of(row.data, row.data_coding),
        "account": names.get(row.account_id) if row.account_id is not None else None,
        "how": row.how,
        "cause": row.cause or None,
        "free": bool(row.free),
        "keyword": row.keyword,
        "action": row.action,
        "channel": row.channel,
        "parts": {"total": row.parts_total, "complete": row.parts_present is None,
                  "received": row.parts_present},
        "reply_id": row.reply_id,
        "webhook": hook,
    }


def _select(args, conn) -> dict[str, Any]:
    return dict(
        mo_id=args.id, account_id=_account_id(conn, args.account),
        since=_when(args.since, "--since") if args.since else None,
        until=_when(args.until, "--until") if args.until else None,
    )


def _names(conn) -> dict[int, str]:
    from sqlalchemy import select

    from staffetta.billing.accounts import accounts

    return dict(conn.execute(select(accounts.c.id, accounts.c.name)).all())


def cmd_list(args, engine_factory) -> int:
    from staffetta.router import mo_store

    engine = engine_factory(args)
    try:
        with engine.connect() as conn:
            rows = mo_store.list_mo(conn, **_select(args, conn), dead=args.dead, limit=args.limit)
            names = _names(conn)
    finally:
        engine.dispose()
    docs = [_doc(r, h, names) for r, h in rows]
    if args.json:
        print(json.dumps(docs, ensure_ascii=False, indent=1))
        return 0
    for d in docs:
        owner = d["account"] or f"DEAD ({d['cause']})"
        extra = " free" if d["free"] else ""
        if d["keyword"]:
            extra += f" keyword {d['keyword']} ({d['action']})"
        if not d["parts"]["complete"]:
            extra += f" INCOMPLETE parts {d['parts']['received']} of {d['parts']['total']}"
        hook = f" webhook {d['webhook']['state']}/{d['webhook']['attempts']}" if d["webhook"] else ""
        print(f"{d['id']:>8}  {d['received_at']}  {d['from']} -> {d['to']}  {owner} via {d['how']}{extra}"
              f"  [{d['channel']}{hook}]  {d['text']!r}")
    if not docs:
        print("no MO matches")
    return 0


def cmd_replay(args, engine_factory) -> int:
    from staffetta.billing.accounts import bump_settings_version
    from staffetta.router import mo_store

    if args.id is None and args.account is None and args.since is None:
        raise ConfigError("mo replay: give --id, --account or --since/--until")
    engine = engine_factory(args)
    try:
        with engine.begin() as conn:
            rows = mo_store.list_mo(conn, **_select(args, conn), limit=args.limit)
            ids = [r.id for r, _ in rows if r.account_id is not None]
            mo_store.request_replays(conn, ids, time.time())
            if ids:
                bump_settings_version(conn)  # the hubs look at once
    finally:
        engine.dispose()
    skipped = len(rows) - len(ids)
    if args.json:
        print(json.dumps({"replayed": ids, "dead_letters_skipped": skipped}))
    else:
        print(f"{len(ids)} MO queued for delivery again" + (f" ({skipped} dead letters skipped)" if skipped else ""))
    return 0


def register(subparsers: Any, engine_factory) -> argparse.ArgumentParser:
    """Add ``mo list|replay`` to the ``staffetta`` sub-parsers."""
    m = subparsers.add_parser("mo", help="messages from handsets: list them, deliver them again")
    ms = m.add_subparsers(dest="mo_verb", required=True)

    def common(p: argparse.ArgumentParser, limit: int) -> None:
        p.add_argument("--id", type=int, metavar="ID", help="one MO by its id")
        p.add_argument("--account", metavar="NAME", help="MO owned by this account")
        p.add_argument("--since", metavar="TIME", help="received at or after (ISO 8601 or Unix seconds)")
        p.add_argument("--until", metavar="TIME", help="received before")
        p.add_argument("--limit", type=int, default=limit, metavar="N")
        p.add_argument("--json", action="store_true")
        p.add_argument("--config", metavar="FILE", help="staffetta.yaml to use")
        p.add_argument("--data-dir", metavar="DIR", help="where the embedded store lives")

    lp = ms.add_parser("list", help="the MO log, newest first, with owner decision and webhook state")
    common(lp, 50)
    lp.add_argument("--dead", action="store_true", help="dead letters only")
    lp.set_defaults(func=lambda a: cmd_list(a, engine_factory))

    rp = ms.add_parser("replay", help="deliver stored MO again to their owners (by id, account or time)")
    common(rp, 10_000)
    rp.set_defaults(func=lambda a: cmd_replay(a, engine_factory))
    return m
