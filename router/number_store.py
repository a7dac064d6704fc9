"""The store side of :mod:`router.numbers`: its tables, the snapshot a hub loads, the operator's changes.

Tables (SQLite and PostgreSQL, created with the rest by ``store.db.create_schema``):

* ``numbers``: every number the hub knows, one row each, so one number is
  one thing: a ``SMART`` or ``REPLY`` pool number (``account_id`` NULL: the
  shared pool; else that account's own pool), a ``shared`` inbound number
  (routed by code or alias), or a ``dedicated`` one (one owner). The primary
  key is what makes "assigning a dedicated number twice fails" hold on every
  node at once.
* ``receiving_codes``: code or alias (upper-case, unique) -> account.
* ``keywords``: (account, word) -> action and auto-reply.
* ``opt_outs``: (account, handset) pairs that said STOP; a START deletes the row.
* ``number_policies``: per account, what a client-given sender does on SMART/REPLY.

Every change here bumps ``settings_version`` in its transaction
(:func:`billing.accounts.bump_settings_version`): each hub's one-second poll
then reloads the snapshot (:func:`load_configured`), so the change is in force
everywhere within seconds. The reply window has no table: :func:`recent_pool_mt`
reads it back from ``messages`` at start.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Column, Float, Integer, PrimaryKeyConstraint, String, Table, select
from sqlalchemy.engine import Connection

from staffetta.billing.accounts import accounts, bump_settings_version
from staffetta.router.numbers import (
    ACTIONS,
    OWN_SENDER_POLICIES,
    POOL_TYPES,
    REPLY,
    SMART,
    Configured,
    Keyword,
)
from staffetta.router.record import messages
from staffetta.store.db import metadata

SHARED, DEDICATED = "shared", "dedicated"
ROLES = (SMART, REPLY, SHARED, DEDICATED)
#: Numeric receiving codes are given out from here up, one per account.
FIRST_CODE = 10001
MIN_ALIAS = 5
MAX_WORD = 32

numbers_table = Table(
    "numbers",
    metadata,
    Column("number", String(21), primary_key=True),
    Column("role", String(10), nullable=False),  # SMART | REPLY | shared | dedicated
    Column("account_id", Integer, nullable=True),  # pool: NULL = shared pool; dedicated: the owner
    Column("added_at", Float, nullable=False),
    Column("countries", String(64), nullable=True),  # pool: ISO countries it may send to; NULL: any (C2)
)

receiving_codes = Table(
    "receiving_codes",
    metadata,
    Column("word", String(MAX_WORD), primary_key=True),  # upper-case: unique case-insensitively
    Column("account_id", Integer, nullable=False, index=True),
    Column("kind", String(5), nullable=False),  # code | alias
    Column("added_at", Float, nullable=False),
)

keywords_table = Table(
    "keywords",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("word", String(MAX_WORD), nullable=False),
    Column("action", String(5), nullable=False),  # reply | stop | start | help
    Column("reply_text", String(1600), nullable=False, default=""),
    Column("reply_type", String(5), nullable=False, default=SMART),
    Column("reply_sender", String(21), nullable=True),
    PrimaryKeyConstraint("account_id", "word"),
)

opt_outs = Table(
    "opt_outs",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("handset", String(21), nullable=False),
    Column("at", Float, nullable=False),
    Column("via", String(10), nullable=False, default="mo"),  # mo (a STOP) | cli
    PrimaryKeyConstraint("account_id", "handset"),
)

#: Several hubs on one PostgreSQL: the reply window's conversations, so that an MO
#: reaching one hub finds the MT another hub sent (router.numbers.Numbers.merge).
conversations = Table(
    "conversations",
    metadata,
    Column("handset", String(21), nullable=False),
    Column("number", String(21), nullable=False),
    Column("account_id", Integer, nullable=False),
    Column("msg_type", String(5), nullable=False),
    Column("last_mt", Float, nullable=False, index=True),
    PrimaryKeyConstraint("handset", "number"),
)

number_policies = Table(
    "number_policies",
    metadata,
    Column("account_id", Integer, primary_key=True, autoincrement=False),
    Column("own_sender", String(8), nullable=False),  # ignore | refuse
)


class NumberError(ValueError):
    """A bad number operation, one line naming the field (the CLI prints it, exit 2)."""


# ------------------------------------------------------------------ checks


def check_number(text: str, field: str = "number") -> str:
    """E.164 digits without '+' (3-15 digits, short codes included); a leading '+' is dropped."""
    s = text.strip()
    digits = s[1:] if s.startswith("+") else s
    if not digits.isdigit() or not 3 <= len(digits) <= 15 or not digits.isascii():
        raise NumberError(f"{field}: expected 3-15 digits (E.164 without '+'), got {text!r}; "
                          "an alphanumeric sender cannot take replies")
    return digits


def _word(text: str, field: str) -> str:
    w = text.strip().upper()
    if not w or not w.isalnum() or not w.isascii() or len(w) > MAX_WORD:
        raise NumberError(f"{field}: expected one word of letters and digits (at most {MAX_WORD}), got {text!r}")
    return w


def _row_of(conn: Connection, number: str):
    return conn.execute(select(numbers_table).where(numbers_table.c.number == number)).first()


def _name(conn: Connection, account_id: int) -> str:
    name = conn.execute(select(accounts.c.name).where(accounts.c.id == account_id)).scalar()
    return repr(name) if name is not None else f"#{account_id}"


def _describe(conn: Connection, row) -> str:
    if row.role == DEDICATED:
        return f"dedicated to account {_name(conn, row.account_id)}"
    if row.role == SHARED:
        return "a shared inbound number"
    whose = f"of account {_name(conn, row.account_id)}" if row.account_id is not None else "(shared pool)"
    return f"a {row.role} pool number {whose}"


# ------------------------------------------------------------------ changes


def check_countries(countries: Iterable[str]) -> tuple[str, ...]:
    """ISO 3166 alpha-2 codes, upper-case (``IT``, ``FR``)."""
    out = []
    for c in countries:
        c = c.strip().upper()
        if len(c) != 2 or not c.isalpha() or not c.isascii():
            raise NumberError(f"countries: expected ISO country codes like IT or FR, got {c!r}")
        out.append(c)
    return tuple(sorted(set(out)))


def add_pool_number(conn: Connection, number: str, kind: str, account_id: int | None, now: float,
                    countries: Iterable[str] = ()) -> None:
    """A pool number; ``countries``: the only destination countries it may send to (none: any)."""
    number = check_number(number)
    if kind not in POOL_TYPES:
        raise NumberError(f"pool: expected SMART or REPLY, got {kind!r}")
    allowed = check_countries(countries)
    row = _row_of(conn, number)
    if row is not None:
        raise NumberError(f"number: {number} is already {_describe(conn, row)}")
    conn.execute(numbers_table.insert().values(number=number, role=kind, account_id=account_id, added_at=now,
                                               countries=",".join(allowed) or None))
    bump_settings_version(conn)


def add_shared_number(conn: Connection, number: str, now: float) -> None:
    number = check_number(number)
    row = _row_of(conn, number)
    if row is not None:
        raise NumberError(f"number: {number} is already {_describe(conn, row)}")
    conn.execute(numbers_table.insert().values(number=number, role=SHARED, account_id=None, added_at=now))
    bump_settings_version(conn)


def assign_dedicated(conn: Connection, number: str, account_id: int, now: float) -> None:
    """Give ``number`` to one account; a number already known (dedicated or not) fails."""
    number = check_number(number)
    row = _row_of(conn, number)
    if row is not None:
        raise NumberError(f"number: {number} is already {_describe(conn, row)}")
    conn.execute(numbers_table.insert().values(number=number, role=DEDICATED, account_id=account_id,
                                               added_at=now))
    bump_settings_version(conn)


def remove_number(conn: Connection, number: str, roles: Iterable[str]) -> Any:
    """Remove a number of one of ``roles``; returns its row (NumberError when it is not one)."""
    number = check_number(number)
    row = _row_of(conn, number)
    roles = tuple(roles)
    if row is None or row.role not in roles:
        what = " or ".join(r if r in (SHARED, DEDICATED) else f"{r} pool" for r in roles)
        raise NumberError(f"number: {number} is not a {what} number" +
                          (f" (it is {_describe(conn, row)})" if row is not None else ""))
    conn.execute(numbers_table.delete().where(numbers_table.c.number == number))
    bump_settings_version(conn)
    return row


def list_numbers(conn: Connection, roles: Iterable[str]) -> list[Any]:
    return list(conn.execute(
        select(numbers_table).where(numbers_table.c.role.in_(tuple(roles)))
        .order_by(numbers_table.c.role, numbers_table.c.number)
    ))


def assign_code(conn: Connection, account_id: int, now: float) -> tuple[str, bool]:
    """The account's numeric receiving code, given out now if it has none: (code, new?)."""
    have = conn.execute(select(receiving_codes.c.word).where(
        receiving_codes.c.account_id == account_id, receiving_codes.c.kind == "code")).scalar()
    if have is not None:
        return have, False
    codes = [int(w) for w in conn.execute(
        select(receiving_codes.c.word).where(receiving_codes.c.kind == "code")).scalars() if w.isdigit()]
    code = str(max([FIRST_CODE - 1, *codes]) + 1)
    conn.execute(receiving_codes.insert().values(word=code, account_id=account_id, kind="code", added_at=now))
    bump_settings_version(conn)
    return code, True


def add_alias(conn: Connection, account_id: int, alias: str, now: float) -> str:
    """A receiving alias: >= 5 characters, not all digits (the codes' space), unique case-insensitively."""
    w = _word(alias, "alias")
    if len(w) < MIN_ALIAS:
        raise NumberError(f"alias: at least {MIN_ALIAS} characters, got {alias!r}")
    if w.isdigit():
        raise NumberError(f"alias: {alias!r} is all digits (numeric codes are given out by 'number code assign')")
    row = conn.execute(select(receiving_codes).where(receiving_codes.c.word == w)).first()
    if row is not None:
        raise NumberError(f"alias: {w} is already the {row.kind} of account {_name(conn, row.account_id)}")
    conn.execute(receiving_codes.insert().values(word=w, account_id=account_id, kind="alias", added_at=now))
    bump_settings_version(conn)
    return w


def remove_code(conn: Connection, word: str, kind: str) -> Any:
    w = _word(word, kind)
    row = conn.execute(select(receiving_codes).where(receiving_codes.c.word == w,
                                                     receiving_codes.c.kind == kind)).first()
    if row is None:
        raise NumberError(f"{kind}: no {kind} {w}")
    conn.execute(receiving_codes.delete().where(receiving_codes.c.word == w))
    bump_settings_version(conn)
    return row


def list_codes(conn: Connection) -> list[Any]:
    return list(conn.execute(select(receiving_codes).order_by(receiving_codes.c.kind, receiving_codes.c.word)))


def add_keyword(conn: Connection, k: Keyword) -> Keyword:
    word = _word(k.word, "keyword")
    if k.action not in ACTIONS:
        raise NumberError(f"--action: expected one of {', '.join(ACTIONS)}, got {k.action!r}")
    if k.reply_type not in (SMART, "PRO", REPLY):
        raise NumberError(f"--type: expected SMART, PRO or REPLY, got {k.reply_type!r}")
    if k.action in ("reply", "help") and not k.reply_text:
        raise NumberError(f"--text: a {k.action} keyword needs the text it answers with")
    if k.reply_sender is not None and k.reply_type in (SMART, REPLY):
        raise NumberError(f"--sender: a {k.reply_type} reply takes its sender from the pool")
    if len(k.reply_text) > 1600:
        raise NumberError("--text: at most 1600 characters")
    if conn.execute(select(keywords_table.c.word).where(
            keywords_table.c.account_id == k.account_id, keywords_table.c.word == word)).first():
        raise NumberError(f"keyword: {word} exists for this account (remove it first)")
    conn.execute(keywords_table.insert().values(
        account_id=k.account_id, word=word, action=k.action, reply_text=k.reply_text,
        reply_type=k.reply_type, reply_sender=k.reply_sender))
    bump_settings_version(conn)
    return Keyword(k.account_id, word, k.action, k.reply_text, k.reply_type, k.reply_sender)


def remove_keyword(conn: Connection, account_id: int, word: str) -> None:
    w = _word(word, "keyword")
    n = conn.execute(keywords_table.delete().where(
        keywords_table.c.account_id == account_id, keywords_table.c.word == w)).rowcount
    if n != 1:
        raise NumberError(f"keyword: no keyword {w} for this account")
    bump_settings_version(conn)


def list_keywords(conn: Connection, account_id: int | None = None) -> list[Keyword]:
    q = select(keywords_table).order_by(keywords_table.c.account_id, keywords_table.c.word)
    if account_id is not None:
        q = q.where(keywords_table.c.account_id == account_id)
    return [Keyword(r.account_id, r.word, r.action, r.reply_text, r.reply_type, r.reply_sender)
            for r in conn.execute(q)]


def set_opt_out(conn: Connection, account_id: int, handset: str, out: bool, now: float,
                via: str = "mo") -> bool:
    """Record (``out``) or clear a STOP; returns whether anything changed. Bumps the settings version."""
    handset = check_number(handset, "handset")
    key = (opt_outs.c.account_id == account_id, opt_outs.c.handset == handset)
    exists = conn.execute(select(opt_outs.c.at).where(*key)).first() is not None
    if out == exists:
        return False
    if out:
        conn.execute(opt_outs.insert().values(account_id=account_id, handset=handset, at=now, via=via))
    else:
        conn.execute(opt_outs.delete().where(*key))
    bump_settings_version(conn)
    return True


def list_opt_outs(conn: Connection, account_id: int | None = None) -> list[Any]:
    q = select(opt_outs).order_by(opt_outs.c.account_id, opt_outs.c.handset)
    if account_id is not None:
        q = q.where(opt_outs.c.account_id == account_id)
    return list(conn.execute(q))


def set_own_sender(conn: Connection, account_id: int, policy: str) -> None:
    if policy not in OWN_SENDER_POLICIES:
        raise NumberError(f"own-sender: expected ignore or refuse, got {policy!r}")
    if conn.execute(number_policies.update().where(number_policies.c.account_id == account_id)
                    .values(own_sender=policy)).rowcount == 0:
        conn.execute(number_policies.insert().values(account_id=account_id, own_sender=policy))
    bump_settings_version(conn)


# ------------------------------------------------------ the writer and the hub


def write_opt_outs(conn: Connection, items: list[tuple[int, str, bool, float]]) -> list[bool]:
    """Group-commit handler of kind ``opt_out``: ``(account_id, handset, out, now)`` each, in order."""
    return [set_opt_out(conn, a, h, out, now) for a, h, out, now in items]


def write_conversations(conn: Connection, items: list[list[tuple[str, str, int, str, float]]]) -> None:
    """Group-commit handler of kind ``conversations``: each item a ``Numbers.take_journal()`` batch.

    An upsert per (handset, number) that keeps the latest MT (rows whose
    window is over are deleted by kind ``conversations_sweep``).
    """
    rows = [r for batch in items for r in batch]
    if rows:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        # One row per key per statement (PostgreSQL refuses to update a row twice in one).
        latest: dict[tuple[str, str], tuple] = {}
        for r in rows:
            if (r[0], r[1]) not in latest or latest[(r[0], r[1])][4] < r[4]:
                latest[(r[0], r[1])] = r
        stmt = insert(conversations)
        stmt = stmt.on_conflict_do_update(
            index_elements=["handset", "number"],
            set_={"account_id": stmt.excluded.account_id, "msg_type": stmt.excluded.msg_type,
                  "last_mt": stmt.excluded.last_mt},
            where=conversations.c.last_mt < stmt.excluded.last_mt,
        )
        conn.execute(stmt, [{"handset": h, "number": n, "account_id": a, "msg_type": t, "last_mt": at}
                            for h, n, a, t, at in latest.values()])


def forget_conversations(conn: Connection, items: list[float]) -> None:
    """Group-commit handler of kind ``conversations_sweep``: delete rows whose last MT is before the cutoff."""
    conn.execute(conversations.delete().where(conversations.c.last_mt < min(items)))


def conversations_since(conn: Connection, since: float) -> list[tuple[str, str, int, str, float]]:
    """Conversations whose last MT is after ``since`` (any hub's), for ``Numbers.merge``."""
    c = conversations.c
    return [tuple(r) for r in conn.execute(
        select(c.handset, c.number, c.account_id, c.msg_type, c.last_mt).where(c.last_mt > since))]


def register_handlers(writer) -> None:
    writer.register("opt_out", write_opt_outs)
    writer.register("conversations", write_conversations)
    writer.register("conversations_sweep", forget_conversations)


def load_configured(conn: Connection) -> Configured:
    """Everything configured, as one snapshot for :meth:`router.numbers.Numbers.configure`."""
    pools: dict[str, dict[int, list[str]]] = {}
    shared: set[str] = set()
    dedicated: dict[str, int] = {}
    countries: dict[str, frozenset[str]] = {}
    t = numbers_table.c
    for r in conn.execute(select(t.number, t.role, t.account_id, t.countries).order_by(t.added_at, t.number)):
        if r.role in POOL_TYPES:
            pools.setdefault(r.role, {}).setdefault(r.account_id or 0, []).append(r.number)
            if r.countries:
                countries[r.number] = frozenset(r.countries.split(","))
            shared.add(r.number)  # an MO to a pool number outside any window routes by code
        elif r.role == SHARED:
            shared.add(r.number)
        elif r.role == DEDICATED:
            dedicated[r.number] = r.account_id
    codes = {r.word: (r.account_id, r.kind) for r in conn.execute(select(receiving_codes))}
    kws = {(k.account_id, k.word): k for k in list_keywords(conn)}
    opts = frozenset((r.account_id, r.handset) for r in conn.execute(
        select(opt_outs.c.account_id, opt_outs.c.handset)))
    own = {r.account_id: r.own_sender for r in conn.execute(select(number_policies))}
    return Configured(
        pools={k: {a: tuple(ns) for a, ns in by.items()} for k, by in pools.items()},
        shared=frozenset(shared), dedicated=dedicated, codes=codes, keywords=kws, opt_outs=opts,
        own_sender=own, countries=countries,
    )


def recent_pool_mt(conn: Connection, since: float, pool_numbers: Iterable[str]) -> list[tuple]:
    """The reply window as the messages table holds it: (account, handset, number, type, time), oldest first.

    SMART and REPLY messages accepted since ``since`` whose source is a pool
    number. Read once at start (a scan of the window's messages).
    """
    nums = set(pool_numbers)
    if not nums:
        return []
    m = messages.c
    rows = conn.execute(
        select(m.account_id, m.destination, m.source_addr, m.msg_type, m.submitted_at)
        .where(m.msg_type.in_((SMART, REPLY)), m.submitted_at >= since)
        .order_by(m.submitted_at)
    )
    return [tuple(r) for r in rows if r.source_addr in nums]
