"""Where HLR lookups meet the ledger: the one charge function both the hub and
`staffetta hlr` use. It lives in smsc/ because hlr/ and billing/ are siblings
that must not import each other."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from staffetta.billing.wallet import HLR, Debit, debit_batch


def billing_charge_tx(conn: Connection, items: list[tuple[int, int, str]]) -> list[bool]:
    """Charge lookups (account_id, amount, number) as ``hlr`` ledger rows, in the caller's transaction."""
    return debit_batch(conn, [Debit(account_id, amount, None, kind=HLR) for account_id, amount, _n in items])
