"""The MO tables, their group-commit handlers and their reads.

``mo`` is the log of every message from a handset: who owns it and why (the
owner decision, issue 14 item 4), dead letters included (``account_id`` NULL,
``cause`` set). A row is written in the same transaction as what delivers it:
the owner's deliver_sm in ``outbox`` (SMPP) and/or a ``webhooks`` row (HTTP),
and, for a keyword with an automatic reply, the paid reply message. Only then
is the carrier's deliver_sm answered.

``mo_parts`` holds the parts of multipart MO still being collected: each part
is committed before the carrier hears ESME_ROK, and the parts of a message
are deleted in the transaction that writes the whole message, so a restart
rebuilds the reassembly from this table and loses no part.

``webhooks`` holds the HTTP deliveries: pending ones (with their attempt
count and next due time) survive a restart; delivered and dead ones stay as
the record of what happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.engine import Connection

from staffetta.router.messages import _INSERT_OUTBOX as INSERT_OUTBOX
from staffetta.router.messages import _outbox_row, insert_paid_messages
from staffetta.store.db import metadata
from staffetta.store.sql import executemany, insert_sql

_ID = BigInteger().with_variant(Integer, "sqlite")

mo = Table(
    "mo",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=False),
    Column("received_at", Float, nullable=False),
    Column("connector", String(32), nullable=False),
    Column("source", String(21), nullable=False),  # the handset
    Column("source_ton", Integer, nullable=False),
    Column("source_npi", Integer, nullable=False),
    Column("destination", String(21), nullable=False),  # the number it wrote to
    Column("dest_ton", Integer, nullable=False),
    Column("dest_npi", Integer, nullable=False),
    Column("data_coding", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),  # user data without UDH; parts joined in order
    Column("ref", Integer, nullable=True),  # concatenation reference of a multipart MO
    Column("parts_total", Integer, nullable=False),
    Column("parts_present", String(800), nullable=True),  # incomplete: "1,3"; else NULL
    Column("part_sizes", String(1200), nullable=True),  # incomplete: octets of each present part
    Column("account_id", Integer, nullable=True),  # NULL: dead letter
    Column("how", String(16), nullable=False),  # reply_window | dedicated | code | alias | dead_letter
    Column("cause", String(24), nullable=False, default=""),
    Column("free", Boolean, nullable=False, default=False),
    Column("keyword", String(32), nullable=True),
    Column("action", String(8), nullable=True),  # the keyword's action: reply | stop | start | help
    Column("channel", String(8), nullable=False),  # smpp | http | both | none
    Column("reply_id", BigInteger, nullable=True),  # the automatic reply's message id
    Index("ix_mo_account_received", "account_id", "received_at"),
    Index("ix_mo_received", "received_at"),
)

mo_parts = Table(
    "mo_parts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(120), nullable=False, index=True),  # connector|source|destination|ref|total
    Column("connector", String(32), nullable=False),
    Column("source", String(21), nullable=False),
    Column("source_ton", Integer, nullable=False),
    Column("source_npi", Integer, nullable=False),
    Column("destination", String(21), nullable=False),
    Column("dest_ton", Integer, nullable=False),
    Column("dest_npi", Integer, nullable=False),
    Column("data_coding", Integer, nullable=False),
    Column("ref", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("ref16", Boolean, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("received_at", Float, nullable=False),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=False),
    Column("mo_id", BigInteger, nullable=False, index=True),
    Column("account_id", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),  # the JSON, fixed at creation; signed per attempt
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),
    Column("state", String(10), nullable=False),  # pending | delivered | dead
    Column("last_status", String(40), nullable=True),  # the last answer: HTTP code or the error
    Column("done_at", Float, nullable=True),
    Index("ix_webhooks_pending", "state", "next_at"),
)

#: Replays asked for by ``staffetta mo replay``: a running hub takes them at its next settings
#: poll (the command bumps the settings version), one that starts takes them at start.
mo_replays = Table(
    "mo_replays",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("mo_id", BigInteger, nullable=False),
    Column("requested_at", Float, nullable=False),
)

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"

MO_COLUMNS = tuple(c.name for c in mo.columns)
PART_COLUMNS = tuple(c.name for c in mo_parts.columns if c.name != "id")
WEBHOOK_COLUMNS = ("id", "mo_id", "account_id", "body", "created_at", "attempts", "next_at", "state")


@dataclass(slots=True)
class MoRow:
    """One MO as the ``mo`` table holds it (column order of :data:`MO_COLUMNS`)."""

    id: int
    received_at: float
    connector: str
    source: str
    source_ton: int
    source_npi: int
    destination: str
    dest_ton: int
    dest_npi: int
    data_coding: int
    data: bytes
    ref: int | None
    parts_total: int
    parts_present: str | None
    part_sizes: str | None
    account_id: int | None
    how: str
    cause: str
    free: bool
    keyword: str | None
    action: str | None
    channel: str
    reply_id: int | None = None

    def as_tuple(self) -> tuple:
        return (self.id, self.received_at, self.connector, self.source, self.source_ton, self.source_npi,
                self.destination, self.dest_ton, self.dest_npi, self.data_coding, self.data, self.ref,
                self.parts_total, self.parts_present, self.part_sizes, self.account_id, self.how,
                self.cause, self.free, self.keyword, self.action, self.channel, self.reply_id)

    @classmethod
    def from_mapping(cls, m) -> MoRow:
        return cls(*(m[c] for c in MO_COLUMNS))


@dataclass(slots=True)
class WebhookJob:
    """One HTTP delivery of one MO (a replay makes another)."""

    id: int
    mo_id: int
    account_id: int
    body: bytes
    created_at: float
    attempts: int
    next_at: float
    state: str = PENDING

    def as_tuple(self) -> tuple:
        return (self.id, self.mo_id, self.account_id, self.body, self.created_at, self.attempts,
                self.next_at, self.state)


@dataclass(slots=True)
class MoWrite:
    """What one MO commits at once (the ``mo_in`` kind)."""

    row: MoRow
    part_key: str | None  # the stored parts this message replaces
    deliveries: list  # router.messages.Delivery, SMPP
    webhook: WebhookJob | None
    reply: tuple | None  # (MessageRecord, price): the paid automatic reply


_INSERT_MO = insert_sql("mo", MO_COLUMNS)
_INSERT_PART = insert_sql("mo_parts", PART_COLUMNS)
_INSERT_WEBHOOK = insert_sql("webhooks", WEBHOOK_COLUMNS)
_DELETE_REPLAY = "DELETE FROM mo_replays WHERE id = ?"
_DELETE_PARTS = "DELETE FROM mo_parts WHERE key = ?"
_WEBHOOK_STATE = "UPDATE webhooks SET state = ?, attempts = ?, next_at = ?, last_status = ?, done_at = ? WHERE id = ?"


def record_mo(conn: Connection, items: list[MoWrite]) -> list[bool | None]:
    """Items: :class:`MoWrite`. One statement per table for the batch; returns, per item,
    whether its automatic reply was paid (None: it had none)."""
    executemany(conn, _INSERT_MO, [w.row.as_tuple() for w in items])
    keys = [(w.part_key,) for w in items if w.part_key is not None]
    executemany(conn, _DELETE_PARTS, keys)
    executemany(conn, INSERT_OUTBOX, [_outbox_row(d) for w in items for d in w.deliveries])
    executemany(conn, _INSERT_WEBHOOK, [w.webhook.as_tuple() for w in items if w.webhook is not None])
    out: list[bool | None] = [None] * len(items)
    replies = [(i, w.reply) for i, w in enumerate(items) if w.reply is not None]
    if replies:
        paid = insert_paid_messages(conn, [r for _, r in replies])
        for (i, _), (ok, _report) in zip(replies, paid, strict=True):
            out[i] = ok
    return out


def record_parts(conn: Connection, items: list[tuple]) -> None:
    """Items: tuples in :data:`PART_COLUMNS` order."""
    executemany(conn, _INSERT_PART, items)


def record_webhook_states(conn: Connection, items: list[tuple]) -> None:
    """Items: (id, state, attempts, next_at, last_status, done_at)."""
    executemany(conn, _WEBHOOK_STATE, [(s, a, n, ls, d, i) for i, s, a, n, ls, d in items])


def record_replays(conn: Connection, items: list[tuple[list[tuple[list, WebhookJob | None]], list[int]]]) -> None:
    """Items: ([(deliveries, webhook job or None) per MO], ``mo_replays`` ids answered)."""
    for mos, requests in items:
        executemany(conn, INSERT_OUTBOX, [_outbox_row(d) for ds, _ in mos for d in ds])
        executemany(conn, _INSERT_WEBHOOK, [w.as_tuple() for _, w in mos if w is not None])
        executemany(conn, _DELETE_REPLAY, [(i,) for i in requests])


def register_handlers(writer) -> None:
    writer.register("mo_in", record_mo)
    writer.register("mo_part", record_parts)
    writer.register("webhook_state", record_webhook_states)
    writer.register("mo_replay", record_replays)


# ---------------------------------------------------------------------- reads


def max_ids(conn: Connection) -> tuple[int, int]:
    """The highest MO id and webhook id in use, for the id allocators."""
    m = conn.execute(select(func.max(mo.c.id))).scalar() or 0
    w = conn.execute(select(func.max(webhooks.c.id))).scalar() or 0
    return int(m), int(w)


def stored_parts(conn: Connection) -> list[dict]:
    """Every part still being collected, in arrival order (a restart rebuilds from these)."""
    return [dict(r._mapping) for r in conn.execute(select(mo_parts).order_by(mo_parts.c.id))]


def pending_webhooks(conn: Connection, limit: int, exclude: frozenset[int] = frozenset()) -> list[WebhookJob]:
    """Pending HTTP deliveries, soonest due first (``exclude``: the ones already in memory)."""
    rows = conn.execute(
        select(*(webhooks.c[c] for c in WEBHOOK_COLUMNS))
        .where(webhooks.c.state == PENDING).order_by(webhooks.c.next_at).limit(limit + len(exclude))
    )
    out = [WebhookJob(*r) for r in rows if r[0] not in exclude]
    return out[:limit]


def list_mo(conn: Connection, *, mo_id: int | None = None, account_id: int | None = None,
            since: float | None = None, until: float | None = None, dead: bool = False,
            limit: int = 100) -> list[tuple[MoRow, dict | None]]:
    """MO rows, newest first, each with its latest webhook's state (or None)."""
    q = select(mo)
    if mo_id is not None:
        q = q.where(mo.c.id == mo_id)
    if account_id is not None:
        q = q.where(mo.c.account_id == account_id)
    if since is not None:
        q = q.where(mo.c.received_at >= since)
    if until is not None:
        q = q.where(mo.c.received_at < until)
    if dead:
        q = q.where(mo.c.account_id.is_(None))
    rows = [MoRow.from_mapping(r._mapping) for r in conn.execute(q.order_by(mo.c.id.desc()).limit(limit))]
    hooks: dict[int, dict] = {}
    if rows:
        for r in conn.execute(
            select(webhooks.c.mo_id, webhooks.c.id, webhooks.c.state, webhooks.c.attempts,
                   webhooks.c.last_status)
            .where(webhooks.c.mo_id.in_([r.id for r in rows])).order_by(webhooks.c.id)
        ):
            hooks[r.mo_id] = {"id": r.id, "state": r.state, "attempts": r.attempts, "last_status": r.last_status}
    return [(r, hooks.get(r.id)) for r in rows]


def replay_requests(conn: Connection, limit: int = 1000) -> list[tuple[int, MoRow]]:
    """(request id, MO row) of the replays asked for, oldest first."""
    rows = conn.execute(
        select(mo_replays.c.id.label("request_id"), mo).join(mo, mo.c.id == mo_replays.c.mo_id)
        .order_by(mo_replays.c.id).limit(limit)
    )
    return [(r.request_id, MoRow.from_mapping(r._mapping)) for r in rows]


def request_replays(conn: Connection, mo_ids: list[int], now: float) -> int:
    """Ask the hubs to deliver these MO again (``staffetta mo replay``)."""
    if mo_ids:
        conn.execute(mo_replays.insert(), [{"mo_id": i, "requested_at": now} for i in mo_ids])
    return len(mo_ids)
