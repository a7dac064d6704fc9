"""The wallet: debit, refund, top-up, transfer, expiry - exact, on one node or many.

Every function takes a SQLAlchemy ``Connection`` inside a transaction the
caller owns (the group commit, or ``engine.begin()``) and never commits.

Locking rule (this is what makes it exact under concurrency): any change to
an account's lots or balance first takes that account's ``balances`` row -
with the debit's guarded ``UPDATE`` or ``SELECT ... FOR UPDATE`` on
PostgreSQL (SQLite serialises writers on the database lock) - and a
transaction that touches several accounts takes them in ascending id order.
Lots are then read and changed under that lock, so two hub processes
debiting one account never both spend the same centi-credit.

The invariant after every commit: ``balance == SUM(ledger) == SUM(lots.remaining)``
per account, nothing negative (CHECK constraints back it up).

Expired lots are written off by :func:`expire_lots` (run it periodically);
a debit or transfer that meets an expired lot before the sweep writes it off
itself, so credit is never spent after its expiry.

Low-credit crossings: every function that changes a balance compares it
with the account's threshold. Crossing below it while the alert is armed
disarms it and records one ``credit_alerts`` row (in the same transaction);
rising to the threshold or above re-arms it. Pass a :class:`Report` to
receive the :class:`Crossing` objects - hand them to
:class:`billing.alerts.LowCreditAlerter` only *after* the commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from staffetta.billing.accounts import accounts
from staffetta.billing.ledger import (
    DEBIT,
    EXPIRY,
    HLR,
    REFUND,
    TOPUP,
    TRANSFER_IN,
    TRANSFER_OUT,
    balances,
    credit_alerts,
    ledger,
    lots,
    transfers,
)
from staffetta.billing.plans import PricePlan, segments_left
from staffetta.store.sql import driver_sql, executemany, fetchall, fetchone, insert_sql

#: Refund reasons (D7). The first three are always refunded; a network
#: failure only when the account has ``refund_on_network_failure``.
REFUSED_UPSTREAM = "refused_upstream"
EXPIRED_IN_QUEUE = "expired_in_queue"
CANCELLED = "cancelled"
NETWORK_FAILURE = "network_failure"
_ALWAYS_REFUNDED = frozenset({REFUSED_UPSTREAM, EXPIRED_IN_QUEUE, CANCELLED})
_DEBIT_KINDS = frozenset({DEBIT, HLR})


class WalletError(ValueError):
    """A wallet operation that cannot be done; one line naming the field."""


class InsufficientCredit(WalletError):
    def __init__(self, message: str, available: int = 0, needed: int = 0) -> None:
        super().__init__(message)
        self.available = available
        self.needed = needed


class Debit(NamedTuple):
    """One charge in a :func:`debit_batch`: ``amount`` centi-credits (>= 0) for ``message_id``.

    A tuple, so that :func:`debit_batch` also takes plain tuples in this order:
    the group commit builds one per message, and a frozen dataclass cost twice
    a named tuple's construction (~0.9 µs) where a plain tuple costs nearly nothing.
    """

    account_id: int
    amount: int
    message_id: int | None
    kind: str = DEBIT  # or HLR
    reference: str | None = None  # kept on the ledger row (e.g. an HLR job id); max 128 characters


@dataclass(frozen=True, slots=True)
class Crossing:
    """A balance that went below its account's low-credit threshold (one alert)."""

    alert_id: int
    account_id: int
    account_name: str
    alert_url: str | None
    balance: int
    threshold: int
    at: int
    item: int | None = None  # debit_batch: index of the last item of that account accepted


@dataclass(slots=True)
class Report:
    """Out-parameter: what a wallet call changed beyond its return value."""

    crossed: list[Crossing] = field(default_factory=list)
    balances: dict[int, int] = field(default_factory=dict)  # account -> balance after


class Expiry(NamedTuple):
    account_id: int
    lot_id: int
    amount: int  # centi-credits written off (positive)


class Mismatch(NamedTuple):
    account_id: int
    account: str
    balance: int | None
    ledger_sum: int
    lots_sum: int


def should_refund(reason: str, refund_on_network_failure: bool = False) -> bool:
    """The refund rule (D7) for ``reason`` and the account's network-failure setting."""
    if reason in _ALWAYS_REFUNDED:
        return True
    if reason == NETWORK_FAILURE:
        return refund_on_network_failure
    return False


# ----------------------------------------------------------------- SQL plumbing



def _now(now: float | int | None) -> int:
    return int(time.time()) if now is None else int(now)


_GUARDED = (
    "UPDATE balances SET balance = balance - ? WHERE account_id = ? AND balance >= ? "
    "RETURNING balance, low_credit_threshold, alert_armed"
)
_LOCK = "SELECT balance, low_credit_threshold, alert_armed FROM balances WHERE account_id = :a{lock}"
_LIVE_LOTS = (
    "SELECT id, remaining, expires_at FROM lots WHERE account_id = ? AND remaining > 0 "
    "ORDER BY CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END, expires_at, id"
)
_SET_LOT = "UPDATE lots SET remaining = ? WHERE id = ?"
_ADD_LOT = "UPDATE lots SET remaining = remaining + ? WHERE id = ?"
_SETTLE = "UPDATE balances SET balance = balance + :d, alert_armed = :armed WHERE account_id = :a"
_LEDGER_COLUMNS = (
    "account_id", "kind", "amount", "lot_id", "message_id", "transfer_id", "debit_id", "reference",
    "created_at",
)
_INSERT_LEDGER = insert_sql("ledger", _LEDGER_COLUMNS)
_INSERT_LOT = (
    "INSERT INTO lots (account_id, amount, remaining, expires_at, method, reference, created_at) "
    "VALUES (:a, :amount, :amount, :exp, :method, :ref, :now) "
    "ON CONFLICT (reference) DO NOTHING RETURNING id"
)
_INSERT_LOT_NOREF = (
    "INSERT INTO lots (account_id, amount, remaining, expires_at, method, reference, created_at) "
    "VALUES (:a, :amount, :amount, :exp, :method, NULL, :now) RETURNING id"
)


#: A debit's ledger row names no transfer, refunded debit or reference: these
#: columns are NULL. The sqlite3 module binds ``None`` through its adaptation
#: lookup (~1,500 instructions a value, callgrind), so such rows are written
#: without them (a "plain" row: ``_PLAIN_LEDGER_COLUMNS``, 6 values).
_PLAIN_LEDGER_COLUMNS = ("account_id", "kind", "amount", "lot_id", "message_id", "created_at")
_INSERT_PLAIN_LEDGER = insert_sql("ledger", _PLAIN_LEDGER_COLUMNS)


def _row(account_id, kind, amount, now, lot_id=None, message_id=None, transfer_id=None,
         debit_id=None, reference=None) -> tuple:
    """A ledger row as a tuple in ``_LEDGER_COLUMNS`` order (tuples: ~30% cheaper to insert)."""
    return (account_id, kind, amount, lot_id, message_id, transfer_id, debit_id, reference, now)


def _insert_ledger(conn: Connection, rows: list[tuple]) -> None:
    """Ledger rows, full (``_LEDGER_COLUMNS``) or plain (``_PLAIN_LEDGER_COLUMNS``), in list order."""
    for r in rows:
        if len(r) != 6:
            executemany(conn, _INSERT_LEDGER, [
                r if len(r) != 6 else (r[0], r[1], r[2], r[3], r[4], None, None, None, r[5]) for r in rows])
            return
    executemany(conn, _INSERT_PLAIN_LEDGER, rows)


def _lock(conn: Connection, account_id: int):
    """Take the account's balances row; (balance, threshold, armed) or None if it has none."""
    return conn.exec_driver_sql(driver_sql(conn, _LOCK), {"a": account_id}).first()


def _lock_or_create(conn: Connection, account_id: int):
    row = _lock(conn, account_id)
    if row is None:
        if conn.execute(select(accounts.c.id).where(accounts.c.id == account_id)).first() is None:
            raise WalletError(f"account: no account with id {account_id}")
        conn.execute(
            _insert_ignore(conn, balances).values(
                account_id=account_id, balance=0, low_credit_threshold=None, alert_armed=True
            )
        )
        row = _lock(conn, account_id)
    return row


def _insert_ignore(conn: Connection, table):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


def _split_lots(rows, now: int) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Live lots (in spending order, mutable [id, remaining, expires_at]) and expired ones."""
    live: list[list[int]] = []
    expired: list[tuple[int, int]] = []
    for lot_id, remaining, expires_at in rows:
        if expires_at is not None and expires_at <= now:
            expired.append((lot_id, remaining))
        else:
            live.append([lot_id, remaining, expires_at])
    return live, expired


def _write_off(account_id: int, expired, now: int, rows: list[tuple], lot_updates: list[tuple]) -> int:
    total = 0
    for lot_id, remaining in expired:
        rows.append(_row(account_id, EXPIRY, -remaining, now, lot_id=lot_id, reference="expired"))
        lot_updates.append((0, lot_id))
        total += remaining
    return total


def _settle(conn: Connection, account_id: int, delta: int, final: int, threshold, armed, now: int,
            report: Report | None, item: int | None = None) -> None:
    """Apply ``delta`` to the balance and the alert rule; record a crossing if there is one."""
    armed = bool(armed)
    new_armed = armed
    crossed = False
    if threshold is not None:
        if final < threshold:
            if armed:
                new_armed, crossed = False, True
        elif not armed:
            new_armed = True
    if delta or new_armed != armed:
        conn.exec_driver_sql(driver_sql(conn, _SETTLE), {"d": delta, "armed": new_armed, "a": account_id})
    if crossed:
        alert_id = conn.execute(
            credit_alerts.insert().values(
                account_id=account_id, balance=final, threshold=threshold, created_at=now, sent_at=None
            )
        ).inserted_primary_key[0]
        acct = conn.execute(
            select(accounts.c.name, accounts.c.alert_url).where(accounts.c.id == account_id)
        ).first()
        c = Crossing(alert_id, account_id, acct.name if acct else str(account_id),
                     acct.alert_url if acct else None, final, threshold, now, item)
        if report is not None:
            report.crossed.append(c)
    if report is not None:
        report.balances[account_id] = final


# ------------------------------------------------------------------ the debit


def debit_batch(conn: Connection, items: list[Debit] | list[tuple], *, now: float | int | None = None,
                report: Report | None = None) -> list[bool]:
    """Debit a whole group-commit batch; ``result[i]`` says whether ``items[i]`` was paid.

    Per account (ascending id): one guarded ``UPDATE balances ... WHERE balance >= total``
    for the batch's total, one read of its live lots, one executemany of lot
    updates; then one executemany of ledger rows for the whole batch. If the
    total does not fit, items are accepted in batch order while each still
    fits (exactly what debiting them one by one would do). A refused item
    writes nothing. Each paid item gets one ledger row per lot it drew from
    (normally one), carrying its ``message_id``. Items may be plain tuples in
    :class:`Debit`'s order (all five values), read here by position.
    """
    n = len(items)
    results = [False] * n
    if n == 0:
        return results
    now = _now(now)
    by_account: dict[int, list[int]] = {}
    for i, (account_id, amount, _, kind, _) in enumerate(items):
        if amount < 0:
            raise WalletError(f"amount: item {i} has a negative debit {amount}")
        if kind not in _DEBIT_KINDS:
            raise WalletError(f"kind: item {i} is {kind!r}, not debit or hlr")
        by_account.setdefault(account_id, []).append(i)
    ledger_rows: list[tuple] = []
    lot_updates: list[tuple] = []
    for a in sorted(by_account):
        idx = by_account[a]
        total = 0
        for i in idx:
            total += items[i][1]
        row = fetchone(conn, _GUARDED, (total, a, total))
        if row is not None:
            taken = total
            balance_before = row[0] + total
        else:
            row = _lock(conn, a)
            if row is None:  # no balances row: no credit
                continue
            taken = 0
            balance_before = row[0]
        threshold, armed = row[1], row[2]
        live, expired = _split_lots(fetchall(conn, _LIVE_LOTS, (a,)), now)
        expired_total = _write_off(a, expired, now, ledger_rows, lot_updates)
        available = min(sum(lot[1] for lot in live), balance_before - expired_total)
        if taken and total <= available:
            accepted = idx
            spent = total
        else:
            accepted = []
            spent = 0
            for i in idx:
                amt = items[i][1]
                if spent + amt <= available:
                    accepted.append(i)
                    spent += amt
        # Draw the accepted items from the lots, earliest expiry first.
        p = 0
        touched = -1
        for i in accepted:
            _, amt, message_id, kind, reference = items[i]
            results[i] = True
            if amt == 0:
                ledger_rows.append(_row(a, kind, 0, now, message_id=message_id, reference=reference))
                continue
            while amt:
                lot = live[p]
                take = lot[1] if lot[1] < amt else amt
                lot[1] -= take
                amt -= take
                touched = p
                ledger_rows.append((a, kind, -take, lot[0], message_id, now) if reference is None
                                   else _row(a, kind, -take, now, lot[0], message_id, None, None, reference))
                if lot[1] == 0:
                    p += 1
        for lot in live[: touched + 1]:
            lot_updates.append((lot[1], lot[0]))
        final = balance_before - spent - expired_total
        _settle(conn, a, taken - spent - expired_total, final, threshold, armed, now, report,
                accepted[-1] if accepted else None)
    if lot_updates:
        executemany(conn, _SET_LOT, lot_updates)
    _insert_ledger(conn, ledger_rows)
    return results


# -------------------------------------------------------------------- refunds


def refund(conn: Connection, message_id: int, reason: str, *, now: float | int | None = None,
           report: Report | None = None) -> int:
    """Give back what ``message_id``'s debit took (centi-credits refunded; 0 if nothing/already).

    One refund row per debit row, linked by ``debit_id`` (unique: never twice),
    credited back to the lot the debit drew from. HLR charges are not refunded.
    The caller decides *whether* to refund (see :func:`should_refund`).
    """
    now = _now(now)
    debits = conn.execute(
        select(ledger.c.id, ledger.c.account_id, ledger.c.amount, ledger.c.lot_id)
        .where(ledger.c.message_id == message_id, ledger.c.kind == DEBIT)
        .order_by(ledger.c.id)
    ).all()
    if not debits:
        return 0
    account_id = debits[0].account_id
    locked = _lock(conn, account_id)
    if locked is None:
        raise WalletError(f"account: {account_id} has ledger rows but no balance row")
    ids = [d.id for d in debits]
    done = set(conn.execute(select(ledger.c.debit_id).where(ledger.c.debit_id.in_(ids))).scalars())
    rows: list[tuple] = []
    lot_adds: list[tuple] = []
    total = 0
    for d in debits:
        if d.id in done or d.amount == 0:
            continue
        back = -d.amount
        rows.append(_row(account_id, REFUND, back, now, lot_id=d.lot_id, message_id=message_id,
                         debit_id=d.id, reference=reason[:128]))
        if d.lot_id is not None:
            lot_adds.append((back, d.lot_id))
        total += back
    if not total:
        return 0
    executemany(conn, _ADD_LOT, lot_adds)
    _insert_ledger(conn, rows)
    _settle(conn, account_id, total, locked[0] + total, locked[1], locked[2], now, report)
    return total


def refund_batch(conn: Connection, items: Iterable[tuple[int, str]], *,
                 now: float | int | None = None, report: Report | None = None) -> list[int]:
    """:func:`refund` for many ``(message_id, reason)`` (e.g. a group-commit handler)."""
    now = _now(now)
    return [refund(conn, mid, reason, now=now, report=report) for mid, reason in items]


# ---------------------------------------------------------- top-up and transfer


def _check_enabled(conn: Connection, account_id: int, field: str = "account") -> None:
    row = conn.execute(select(accounts.c.enabled).where(accounts.c.id == account_id)).first()
    if row is None:
        raise WalletError(f"{field}: no account with id {account_id}")
    if not row.enabled:
        raise WalletError(f"{field}: account {account_id} is disabled (no top-ups or transfers in)")


def topup(conn: Connection, account_id: int, amount: int, *, expires_at: int | None = None,
          method: str = "manual", reference: str | None = None, now: float | int | None = None,
          report: Report | None = None) -> bool:
    """Credit ``amount`` as a new lot; False (nothing credited) if ``reference`` was already used.

    A reference already used for *another* account is an error, not a no-op.
    A disabled account cannot be topped up (B2/B7).
    """
    now = _now(now)
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise WalletError(f"amount: a top-up must be a positive number of centi-credits, not {amount!r}")
    if expires_at is not None and int(expires_at) <= now:
        raise WalletError("expires: the expiry is already past")
    if not method or len(method) > 32:
        raise WalletError("method: 1-32 characters")
    if reference is not None and not 1 <= len(reference) <= 128:
        raise WalletError("reference: 1-128 characters")
    _check_enabled(conn, account_id)
    if reference is not None and _reference_used(conn, account_id, reference):
        return False
    locked = _lock_or_create(conn, account_id)
    params = {"a": account_id, "amount": amount, "exp": None if expires_at is None else int(expires_at),
              "method": method, "ref": reference, "now": now}
    lot_id = conn.exec_driver_sql(
        driver_sql(conn, _INSERT_LOT if reference is not None else _INSERT_LOT_NOREF), params
    ).scalar()
    if lot_id is None:  # a concurrent top-up took the reference first
        _reference_used(conn, account_id, reference)
        return False
    _insert_ledger(conn, [_row(account_id, TOPUP, amount, now, lot_id=lot_id, reference=reference)])
    _settle(conn, account_id, amount, locked[0] + amount, locked[1], locked[2], now, report)
    return True


def _reference_used(conn: Connection, account_id: int, reference: str) -> bool:
    row = conn.execute(select(lots.c.account_id).where(lots.c.reference == reference)).first()
    if row is None:
        return False
    if row.account_id != account_id:
        raise WalletError(f"reference: {reference!r} already credited another account")
    return True


def transfer(conn: Connection, from_id: int, to_id: int, amount: int, *,
             now: float | int | None = None, report: Report | None = None) -> int:
    """Move ``amount`` atomically; returns the transfer id. Raises InsufficientCredit.

    The source's lots are drawn earliest-expiry first and each portion becomes
    a lot of the destination with the same expiry (a transfer cannot make
    credit live longer). Ledger: a ``transfer_out`` and a ``transfer_in`` row
    per portion, both carrying the transfer id.
    """
    now = _now(now)
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise WalletError(f"amount: a transfer must be a positive number of centi-credits, not {amount!r}")
    if from_id == to_id:
        raise WalletError("to: the source and destination are the same account")
    if conn.execute(select(accounts.c.id).where(accounts.c.id == from_id)).first() is None:
        raise WalletError(f"from: no account with id {from_id}")
    _check_enabled(conn, to_id, "to")
    locked = {}
    for a in sorted((from_id, to_id)):
        locked[a] = _lock_or_create(conn, a)
    src = locked[from_id]
    live, expired = _split_lots(fetchall(conn, _LIVE_LOTS, (from_id,)), now)
    available = min(sum(lot[1] for lot in live), src[0] - sum(r for _, r in expired))
    if amount > available:
        raise InsufficientCredit(
            f"amount: source has {available} centi-credits, transfer needs {amount}", available, amount
        )
    rows: list[tuple] = []
    lot_updates: list[tuple] = []
    expired_total = _write_off(from_id, expired, now, rows, lot_updates)
    transfer_id = conn.execute(
        transfers.insert().values(from_account=from_id, to_account=to_id, amount=amount, created_at=now)
    ).inserted_primary_key[0]
    left = amount
    new_lot = driver_sql(conn, _INSERT_LOT_NOREF)
    for lot in live:
        if not left:
            break
        take = min(lot[1], left)
        lot[1] -= take
        left -= take
        lot_updates.append((lot[1], lot[0]))
        dest_lot = conn.exec_driver_sql(new_lot, {"a": to_id, "amount": take, "exp": lot[2],
                                                  "method": "transfer", "now": now}).scalar()
        rows.append(_row(from_id, TRANSFER_OUT, -take, now, lot_id=lot[0], transfer_id=transfer_id))
        rows.append(_row(to_id, TRANSFER_IN, take, now, lot_id=dest_lot, transfer_id=transfer_id))
    executemany(conn, _SET_LOT, lot_updates)
    _insert_ledger(conn, rows)
    for a in sorted((from_id, to_id)):
        b, thr, armed = locked[a]
        delta = amount if a == to_id else -amount - expired_total
        _settle(conn, a, delta, b + delta, thr, armed, now, report)
    return transfer_id


# -------------------------------------------------------------------- expiry


def expire_lots(conn: Connection, now: float | int | None = None, *,
                report: Report | None = None) -> list[Expiry]:
    """Write off what is left of every lot whose expiry has passed; one ledger row per lot."""
    now = _now(now)
    due = conn.execute(
        select(lots.c.account_id).distinct()
        .where(lots.c.remaining > 0, lots.c.expires_at.is_not(None), lots.c.expires_at <= now)
    ).scalars().all()
    out: list[Expiry] = []
    for a in sorted(due):
        locked = _lock(conn, a)
        if locked is None:
            continue
        _live, expired = _split_lots(fetchall(conn, _LIVE_LOTS, (a,)), now)
        if not expired:
            continue
        rows: list[tuple] = []
        lot_updates: list[tuple] = []
        total = _write_off(a, expired, now, rows, lot_updates)
        executemany(conn, _SET_LOT, lot_updates)
        _insert_ledger(conn, rows)
        _settle(conn, a, -total, locked[0] - total, locked[1], locked[2], now, report)
        out.extend(Expiry(a, lot_id, r) for lot_id, r in expired)
    return out


# ---------------------------------------------------------- threshold and alerts


def set_threshold(conn: Connection, account_id: int, threshold: int | None) -> None:
    """Set (or clear with None) the low-credit threshold; armed iff the balance is not below it."""
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int)
                                  or threshold < 0):
        raise WalletError(f"threshold: must be >= 0 centi-credits, not {threshold!r}")
    row = _lock_or_create(conn, account_id)
    armed = threshold is None or row[0] >= threshold
    conn.execute(
        balances.update().where(balances.c.account_id == account_id)
        .values(low_credit_threshold=threshold, alert_armed=armed)
    )


def pending_alerts(conn: Connection, *, older_than: int | None = None) -> list[Crossing]:
    """Alerts recorded but not marked sent (e.g. the process stopped before the POST succeeded)."""
    q = (
        select(credit_alerts, accounts.c.name, accounts.c.alert_url)
        .join(accounts, accounts.c.id == credit_alerts.c.account_id)
        .where(credit_alerts.c.sent_at.is_(None))
        .order_by(credit_alerts.c.id)
    )
    if older_than is not None:
        q = q.where(credit_alerts.c.created_at <= older_than)
    return [
        Crossing(r.id, r.account_id, r.name, r.alert_url, r.balance, r.threshold, r.created_at)
        for r in conn.execute(q)
    ]


def mark_alert_sent(conn: Connection, alert_id: int, now: float | int | None = None) -> None:
    conn.execute(
        credit_alerts.update().where(credit_alerts.c.id == alert_id).values(sent_at=_now(now))
    )


# --------------------------------------------------------------------- reads


def balance(conn: Connection, account_id: int) -> int:
    """The account's balance in centi-credits (0 without a balances row)."""
    return conn.execute(
        select(balances.c.balance).where(balances.c.account_id == account_id)
    ).scalar() or 0


def threshold_of(conn: Connection, account_id: int) -> tuple[int | None, bool]:
    row = conn.execute(
        select(balances.c.low_credit_threshold, balances.c.alert_armed)
        .where(balances.c.account_id == account_id)
    ).first()
    return (row[0], bool(row[1])) if row else (None, True)


def spendable(conn: Connection, account_id: int, now: float | int | None = None) -> int:
    """What can still be spent: the unexpired remainder of the lots (== balance after a sweep)."""
    now = _now(now)
    return int(conn.execute(  # PostgreSQL's SUM(bigint) is NUMERIC: back to int
        select(func.coalesce(func.sum(lots.c.remaining), 0)).where(
            lots.c.account_id == account_id, lots.c.remaining > 0,
            (lots.c.expires_at.is_(None)) | (lots.c.expires_at > now),
        )
    ).scalar())


def remaining_segments(conn: Connection, account_id: int, plan: PricePlan,
                       now: float | int | None = None) -> dict[str, int]:
    """How many one-segment messages of each type to a home destination the credit still pays (A11)."""
    return segments_left(plan, spendable(conn, account_id, now))


def lots_of(conn: Connection, account_id: int, *, live_only: bool = False) -> list[dict]:
    q = select(lots).where(lots.c.account_id == account_id).order_by(lots.c.id)
    if live_only:
        q = q.where(lots.c.remaining > 0)
    return [dict(r._mapping) for r in conn.execute(q)]


def history(conn: Connection, account_id: int, limit: int = 50) -> list[dict]:
    """The newest ``limit`` ledger rows of the account, newest first, with the lot's method."""
    q = (
        select(ledger, lots.c.method)
        .outerjoin(lots, lots.c.id == ledger.c.lot_id)
        .where(ledger.c.account_id == account_id)
        .order_by(ledger.c.id.desc())
        .limit(limit)
    )
    out = []
    for r in conn.execute(q):
        d = dict(r._mapping)
        if d["kind"] not in (TOPUP, TRANSFER_IN):
            d["method"] = None  # a debit's lot was bought by some method; the debit was not
        out.append(d)
    return out


def check(conn: Connection) -> list[Mismatch]:
    """Every account whose balance differs from its ledger sum or its lots' remainder."""
    ledger_sums = dict(conn.execute(
        select(ledger.c.account_id, func.sum(ledger.c.amount)).group_by(ledger.c.account_id)
    ).all())
    lot_sums = dict(conn.execute(
        select(lots.c.account_id, func.sum(lots.c.remaining)).group_by(lots.c.account_id)
    ).all())
    bal = dict(conn.execute(select(balances.c.account_id, balances.c.balance)).all())
    out: list[Mismatch] = []
    for account_id, name in conn.execute(select(accounts.c.id, accounts.c.name).order_by(accounts.c.id)):
        b = bal.get(account_id)
        ls = int(ledger_sums.get(account_id) or 0)
        lt = int(lot_sums.get(account_id) or 0)
        if (b or 0) != ls or ls != lt or (b or 0) < 0:
            out.append(Mismatch(account_id, name, b, ls, lt))
    return out


__all__ = [
    "CANCELLED", "DEBIT", "EXPIRED_IN_QUEUE", "HLR", "NETWORK_FAILURE", "REFUSED_UPSTREAM",
    "Crossing", "Debit", "Expiry", "InsufficientCredit", "Mismatch", "Report", "WalletError",
    "balance", "check", "debit_batch", "expire_lots", "history", "lots_of", "mark_alert_sent",
    "pending_alerts", "refund", "refund_batch", "remaining_segments", "set_threshold", "should_refund",
    "spendable", "threshold_of", "topup", "transfer",
]
