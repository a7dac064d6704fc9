"""The message log and the client outbox: tables, batch writes, reads.

``messages`` is the store-and-forward queue as well as the log: a row with
``phase = QUEUED`` has been acknowledged to the client but not yet accepted by
an upstream, and is forwarded again after a restart. ``outbox`` holds the
deliver_sm PDUs (receipts now, MO later) owed to clients, already encoded with
sequence number 0; a row leaves the outbox only when the client answered it.

Write handlers take a list of items and run inside the group commit
(:mod:`store.writer`); they use executemany so that a batch costs one
statement per kind, not one per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex

from staffetta.billing.wallet import DEBIT, Report, debit_batch, expire_lots, mark_alert_sent, refund_batch
from staffetta.pdu.constants import MessageState, Npi, Ton

# The message row (its table, columns and phases) is defined once, with its record.
from staffetta.router.record import (  # noqa: F401 - the phases are read as messages.QUEUED ...
    FINAL,
    FORWARDED,
    MESSAGE_COLUMNS,
    QUEUED,
    SCHEDULED,
    MessageRecord,
    messages,
    row_tuple,
)
from staffetta.store.db import add_missing_columns, bind_as_int, metadata
from staffetta.store.sql import executemany, insert_sql

#: Indexes of earlier versions, replaced by the partial ones above.
_OLD_INDEXES = ("ix_messages_upstream", "ix_messages_phase")

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("account_id", Integer, nullable=False, index=True),
    Column("message_id", BigInteger, nullable=True),
    Column("kind", String(8), nullable=False),
    Column("pdu", LargeBinary, nullable=False),  # whole deliver_sm, sequence 0
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


def upgrade(engine) -> list[str]:
    """Columns and indexes changed since a store was made (``create_all`` never alters a table)."""
    with engine.begin() as conn:
        done = add_missing_columns(conn, "messages", [("mccmnc", "VARCHAR(6)"), ("route", "VARCHAR(32)"),
                                                      ("deliver_at", "FLOAT")])
        have = {i["name"] for i in inspect(conn).get_indexes("messages")}
        # IF [NOT] EXISTS: several hubs may start on one PostgreSQL at once.
        for index in messages.indexes:
            if index.name not in have:
                conn.execute(CreateIndex(index, if_not_exists=True))
                done.append(f"index {index.name}")
        for name in _OLD_INDEXES:
            if name in have:
                conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
                done.append(f"dropped index {name}")
        return done


@dataclass(slots=True)
class Delivery:
    """One deliver_sm owed to a client: an outbox row in memory."""

    id: int
    account_id: int
    message_id: int | None
    kind: str
    pdu: bytes
    created_at: float
    expires_at: float
    attempts: int = 0


# ------------------------------------------------------------------ write handlers
#
# Hot-path writes go to the driver with tuples (store.sql): the writer thread
# holds the GIL for every line of Python, and SQLAlchemy's statement handling
# per batch cost more than the SQLite work itself.

_INSERT_MESSAGES = insert_sql("messages", list(MESSAGE_COLUMNS))
#: Columns a fresh message has none of (no outcome, carrier, carrier id, serving
#: network or release time yet). The sqlite3 module binds ``None`` through its
#: adaptation lookup (~1,500 instructions a value, callgrind: 5 a message), so a
#: batch whose rows all lack them is written by an insert that leaves them out:
#: they default to NULL, the same row.
_UNSET_AT_INSERT = ("done_at", "connector", "upstream_id", "mccmnc", "deliver_at")
_FRESH_COLUMNS = tuple(c for c in MESSAGE_COLUMNS if c not in _UNSET_AT_INSERT)
_INSERT_FRESH_MESSAGES = insert_sql("messages", _FRESH_COLUMNS)
_unset_at_insert = attrgetter(*_UNSET_AT_INSERT)
_fresh_row = attrgetter(*_FRESH_COLUMNS)
_ALL_UNSET = (None,) * len(_UNSET_AT_INSERT)
_OUTBOX_COLUMNS = ("id", "account_id", "message_id", "kind", "pdu", "created_at", "expires_at")
_INSERT_OUTBOX = insert_sql("outbox", _OUTBOX_COLUMNS)
_SET_UPSTREAM = "UPDATE messages SET phase = 1, connector = ?, upstream_id = ?, state = ? WHERE id = ?"
_SET_FINAL_NAMING = ("UPDATE messages SET phase = 2, state = ?, err = ?, done_at = ?,"
                     " connector = COALESCE(?, connector) WHERE id = ?")
#: Without the connector: an update that sets it (even to the value it has)
#: moves the row's ix_messages_upstream_id entry, ~14k instructions a message
#: (callgrind). Used when no outcome of the batch names a connector.
_SET_FINAL = "UPDATE messages SET phase = 2, state = ?, err = ?, done_at = ? WHERE id = ?"
_DELETE_OUTBOX = "DELETE FROM outbox WHERE id = ?"
# Only a row still waiting and still SCHEDULED: an outcome written after it must win.
_SET_RELEASED = f"UPDATE messages SET state = {int(MessageState.ENROUTE)} WHERE id = ? AND phase = 0 AND state = {SCHEDULED}"

# States reach these writes as MessageState members (the carrier id update's
# ENROUTE on every message, EXPIRED, REJECTED...), and the message row's
# source_ton and source_npi as Ton and Npi members: bound as ints, not through
# sqlite3's adaptation protocol (store.db.bind_as_int; Ton and Npi went that
# way on every message: ~5k instructions, callgrind).
bind_as_int(MessageState, Ton, Npi)


def insert_messages(conn: Connection, records: list[MessageRecord]) -> None:
    """The rows of accepted messages; without the columns none of them has yet, when so."""
    for r in records:
        if _unset_at_insert(r) != _ALL_UNSET:
            executemany(conn, _INSERT_MESSAGES, [row_tuple(r) for r in records])
            return
    executemany(conn, _INSERT_FRESH_MESSAGES, [_fresh_row(r) for r in records])


def insert_paid_messages(conn: Connection, items: list[tuple[MessageRecord, int]]) -> list[tuple]:
    """Debit, then store only what was paid, in the group commit's transaction.

    Items: (message record, price in centi-credits). Each result is
    ``(paid, report)`` where ``report`` (crossings, balances after) rides on
    the first item of the batch only, so the caller acts on it once.
    """
    report = Report()
    paid = debit_batch(
        conn, [(r.account_id, price, r.id, DEBIT, None) for r, price in items],  # wallet.Debit's order
        now=items[0][0].submitted_at, report=report,
    )
    rows = [row for (row, _), ok in zip(items, paid, strict=True) if ok]
    if rows:
        insert_messages(conn, rows)
    return [(ok, report if i == 0 else None) for i, ok in enumerate(paid)]


def set_upstream(conn: Connection, items: list[tuple[int, str, str, int]]) -> None:
    """Items: (message id, connector, upstream id, state)."""
    # int(): the router's state is a MessageState member; its registered adapter
    # (store.db.bind_as_int) still costs sqlite3 ~1,200 instructions, int() ~100.
    executemany(conn, _SET_UPSTREAM, [(c, u, int(s), m) for m, c, u, s in items])


def record_outcomes(
    conn: Connection, items: list[tuple[int, int, int, float, Delivery | None, str | None, str | None]]
) -> list[int]:
    """Items: (message id, final state, err, done_at, delivery or None, refund reason or None, connector or None).

    The final state, the client's receipt and the refund (when policy says so)
    commit together; returns the refunded amount per item. ``connector``: the
    carrier that refused the message (its row names it like a carried one's);
    None leaves the row's as it is (a carried message's row names its carrier).
    """
    for item in items:
        if item[6] is not None:
            executemany(conn, _SET_FINAL_NAMING, [(s, e, t, c, m) for m, s, e, t, _, _, c in items])
            break
    else:
        executemany(conn, _SET_FINAL, [(s, e, t, m) for m, s, e, t, _, _, _ in items])
    executemany(conn, _INSERT_OUTBOX, [_outbox_row(d) for _, _, _, _, d, _, _ in items if d is not None])
    refunds = [(i, m, r) for i, (m, _, _, t, _, r, _) in enumerate(items) if r]
    out = [0] * len(items)
    if refunds:
        amounts = refund_batch(conn, [(m, r) for _, m, r in refunds], now=items[0][3])
        for (i, _, _), amount in zip(refunds, amounts, strict=True):
            out[i] = amount
    return out


def set_released(conn: Connection, items: list[int]) -> None:
    """Items: ids of scheduled messages handed to their route (SCHEDULED -> ENROUTE)."""
    executemany(conn, _SET_RELEASED, [(m,) for m in items])


def insert_deliveries(conn: Connection, items: list[Delivery]) -> None:
    executemany(conn, _INSERT_OUTBOX, [_outbox_row(d) for d in items])


def _outbox_row(d: Delivery) -> tuple:
    """In ``_OUTBOX_COLUMNS`` order."""
    return (d.id, d.account_id, d.message_id, d.kind, d.pdu, d.created_at, d.expires_at)


def delete_deliveries(conn: Connection, ids: list[int]) -> None:
    executemany(conn, _DELETE_OUTBOX, [(i,) for i in ids])


# ---------------------------------------------------------------------- reads


def max_ids(conn: Connection) -> tuple[int, int]:
    """The highest message id and outbox id in use, for the id allocators."""
    from sqlalchemy import func

    m = conn.execute(select(func.max(messages.c.id))).scalar() or 0
    o = conn.execute(select(func.max(outbox.c.id))).scalar() or 0
    return int(m), int(o)


def queued_messages(conn: Connection, limit: int = 10000) -> list[MessageRecord]:
    """Acknowledged to their client, never accepted upstream: what a restart resumes, in order."""
    rows = conn.execute(
        select(messages).where(messages.c.phase == QUEUED).order_by(messages.c.id).limit(limit)
    )
    return [MessageRecord.from_row(r._mapping) for r in rows]


def message_by_upstream(conn: Connection, connector: str, upstream_id: str) -> dict | None:
    row = conn.execute(
        select(messages).where(
            messages.c.connector == connector, messages.c.upstream_id == upstream_id
        )
    ).first()
    return dict(row._mapping) if row else None


def message_for_account(conn: Connection, message_id: int, account_id: int) -> MessageRecord | None:
    """query_sm's read: a client only ever sees its own messages."""
    row = conn.execute(
        select(messages).where(messages.c.id == message_id, messages.c.account_id == account_id)
    ).first()
    return MessageRecord.from_row(row._mapping) if row else None


def pending_deliveries(
    conn: Connection, account_id: int, after_id: int = 0, limit: int = 1000
) -> list[Delivery]:
    rows = conn.execute(
        select(outbox)
        .where(outbox.c.account_id == account_id, outbox.c.id > after_id)
        .order_by(outbox.c.id)
        .limit(limit)
    )
    return [
        Delivery(r.id, r.account_id, r.message_id, r.kind, r.pdu, r.created_at, r.expires_at)
        for r in rows
    ]


def sweep_expired_lots(conn: Connection, items: list[float]) -> list[Report]:
    report = Report()
    expire_lots(conn, items[-1], report=report)
    return [report] + [None] * (len(items) - 1)


def alerts_sent(conn: Connection, items: list[tuple[int, float]]) -> None:
    for alert_id, now in items:
        mark_alert_sent(conn, alert_id, now)


def register_handlers(writer) -> None:
    writer.register("messages", insert_messages)
    writer.register("paid_messages", insert_paid_messages)
    writer.register("expire_lots", sweep_expired_lots)
    writer.register("alerts_sent", alerts_sent)
    writer.register("upstream", set_upstream)
    writer.register("released", set_released)
    writer.register("outcomes", record_outcomes)
    writer.register("deliveries", insert_deliveries)
    writer.register("delivered", delete_deliveries)
