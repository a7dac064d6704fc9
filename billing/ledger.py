"""The money tables: lots, the append-only ledger, balances, transfers, alerts.

* ``lots`` - every credit that entered an account (top-up, trial, transfer in)
  with what is left of it and when it expires. Debits take the
  earliest-expiring lot first (non-expiring last, then oldest first).
* ``ledger`` - one row per movement, never updated or deleted. ``amount`` is
  signed centi-credits; each row points at its cause: ``lot_id``,
  ``message_id``, ``transfer_id``, ``debit_id`` (a refund's debit row),
  ``reference`` (a top-up's external reference, a refund's reason).
* ``balances`` - the running balance per account (the row the debit's guarded
  UPDATE hits, and the per-account lock every wallet operation takes first),
  with the low-credit threshold and whether its alert is armed.

Invariants, checked by :func:`billing.wallet.check`:
``balances.balance == SUM(ledger.amount) == SUM(lots.remaining)`` per account,
and no balance or lot is ever negative.

Times are integer epoch seconds (UTC). This module imports nothing of billing
so that :mod:`billing.accounts` can import it to register the tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    text,
)

from staffetta.store.db import metadata

_ID = BigInteger().with_variant(Integer, "sqlite")  # INTEGER PRIMARY KEY autoincrements on SQLite

TOPUP, DEBIT, REFUND, TRANSFER_OUT, TRANSFER_IN, EXPIRY, HLR = (
    "topup", "debit", "refund", "transfer_out", "transfer_in", "expiry", "hlr",
)
KINDS = (TOPUP, DEBIT, REFUND, TRANSFER_OUT, TRANSFER_IN, EXPIRY, HLR)

lots = Table(
    "lots",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),  # epoch seconds; NULL = never
    Column("method", String(32), nullable=False),
    # An external payment reference credits once, whatever account it names.
    Column("reference", String(128), nullable=True, unique=True),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("remaining >= 0", name="ck_lots_remaining"),
    Index("ix_lots_account", "account_id"),
    # What the debit reads: the lots with something left (few per account, however old it is).
    Index(
        "ix_lots_live", "account_id", "expires_at",
        sqlite_where=text("remaining > 0"), postgresql_where=text("remaining > 0"),
    ),
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("from_account", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("to_account", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("lot_id", BigInteger, nullable=True),
    Column("message_id", BigInteger, nullable=True),
    Column("transfer_id", BigInteger, nullable=True),
    Column("debit_id", BigInteger, nullable=True),  # a refund's debit row
    Column("reference", String(128), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_ledger_account", "account_id", "id"),
    Index("ix_ledger_message", "message_id"),
    # One refund per debit row, whatever races; partial, so debit rows cost no entry.
    Index(
        "ux_ledger_refund_of", "debit_id", unique=True,
        sqlite_where=text("debit_id IS NOT NULL"), postgresql_where=text("debit_id IS NOT NULL"),
    ),
)

balances = Table(
    "balances",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True, autoincrement=False),
    Column("balance", BigInteger, nullable=False, default=0),
    Column("low_credit_threshold", BigInteger, nullable=True),  # NULL: no alert
    Column("alert_armed", Boolean, nullable=False, default=True),
    CheckConstraint("balance >= 0", name="ck_balances_nonnegative"),
)

credit_alerts = Table(
    "credit_alerts",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("threshold", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("sent_at", BigInteger, nullable=True),  # NULL: not yet delivered
    Index("ix_credit_alerts_unsent", "sent_at"),
)
