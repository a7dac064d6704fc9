"""The wallet on the embedded store: debits, lots, refunds, transfers, expiry, alerts (A4, A11,
A15, A16, A58, A62, A63, B2, B5-B7, C1, D7)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from staffetta.billing import accounts, wallet
from staffetta.billing.ledger import balances, credit_alerts, ledger, lots
from staffetta.billing.plans import PricePlan
from staffetta.billing.wallet import Debit, Report
from tests.billing.conftest import new_account

T0 = 1_700_000_000


def lot_remaining(conn, account_id):
    return [r for (r,) in conn.execute(
        select(lots.c.remaining).where(lots.c.account_id == account_id).order_by(lots.c.id))]


def test_exact_n_segments_then_refused(engine) -> None:
    """Credit for exactly N PRO segments: N accepted, the next refused, nothing written for it."""
    with engine.begin() as c:
        a = new_account(c, "acme")
        wallet.topup(c, a, 5 * 160, now=T0)
    with engine.begin() as c:
        ok = wallet.debit_batch(c, [Debit(a, 160, i) for i in range(6)], now=T0)
    assert ok == [True] * 5 + [False]
    with engine.begin() as c:
        assert wallet.balance(c, a) == 0
        assert c.execute(select(ledger.c.message_id).where(ledger.c.kind == "debit")).scalars().all() \
            == [0, 1, 2, 3, 4]
        assert wallet.check(c) == []
        assert wallet.debit_batch(c, [Debit(a, 1, 9)], now=T0) == [False]
        assert wallet.debit_batch(c, [Debit(a, 0, 10)], now=T0) == [True]  # a free message fits


def test_batch_is_what_one_by_one_would_be(engine) -> None:
    """The aggregate does not fit: accept in order while each still fits (skip, not stop)."""
    with engine.begin() as c:
        a = new_account(c, "a")
        b = new_account(c, "b")
        wallet.topup(c, a, 500, now=T0)
        wallet.topup(c, b, 1000, now=T0)
        items = [Debit(a, 300, 1), Debit(b, 640, 2), Debit(a, 300, 3), Debit(a, 200, 4),
                 Debit(b, 640, 5), Debit(a, 1, 6), Debit(99, 1, 7)]
        r = Report()
        assert wallet.debit_batch(c, items, now=T0, report=r) == [True, True, False, True, False, False, False]
        assert r.balances == {a: 0, b: 360}
        assert wallet.check(c) == []


def test_negative_amount_is_an_error(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        with pytest.raises(wallet.WalletError, match="^amount: "):
            wallet.debit_batch(c, [Debit(a, -1, 1)])
    assert wallet.debit_batch(None, []) == []  # type: ignore[arg-type]


def test_earliest_expiring_lot_first_never_expiring_last(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        wallet.topup(c, a, 300, now=T0)  # lot 1: never expires
        wallet.topup(c, a, 300, expires_at=T0 + 200, now=T0)  # lot 2
        wallet.topup(c, a, 300, expires_at=T0 + 100, now=T0)  # lot 3: first to go
    with engine.begin() as c:
        assert wallet.debit_batch(c, [Debit(a, 160, 1), Debit(a, 160, 2)], now=T0 + 1) == [True, True]
        assert lot_remaining(c, a) == [300, 280, 0]
        rows = c.execute(select(ledger.c.message_id, ledger.c.lot_id, ledger.c.amount)
                         .where(ledger.c.kind == "debit").order_by(ledger.c.id)).all()
        assert [tuple(r) for r in rows] == [(1, 3, -160), (2, 3, -140), (2, 2, -20)]
        assert wallet.refund(c, 2, wallet.REFUSED_UPSTREAM, now=T0 + 2) == 160  # back to both lots
        assert lot_remaining(c, a) == [300, 300, 140]
        assert wallet.check(c) == []


def test_expired_credit_is_never_spent(engine) -> None:
    """Before the sweep runs, a debit meets the expired lot and writes it off itself (B6)."""
    with engine.begin() as c:
        a = new_account(c, "a")
        wallet.topup(c, a, 500, expires_at=T0 + 100, method="package", now=T0)
        wallet.topup(c, a, 100, now=T0)
    with engine.begin() as c:
        assert wallet.spendable(c, a, T0 + 100) == 100
        assert wallet.remaining_segments(c, a, PricePlan(), T0 + 100) == {"SMART": 1, "PRO": 0, "REPLY": 0}
        assert wallet.debit_batch(c, [Debit(a, 160, 1), Debit(a, 100, 2)], now=T0 + 100) == [False, True]
        assert wallet.balance(c, a) == 0
        kinds = c.execute(select(ledger.c.kind, ledger.c.amount).order_by(ledger.c.id)).all()
        assert [tuple(k) for k in kinds] == [("topup", 500), ("topup", 100), ("expiry", -500), ("debit", -100)]
        assert wallet.check(c) == []
        assert wallet.expire_lots(c, T0 + 10_000) == []  # nothing left to write off


def test_expire_lots_writes_off_the_remainder(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        b = new_account(c, "b")
        wallet.topup(c, a, 8000, expires_at=T0 + 30 * 86400, method="trial", now=T0)  # B5
        wallet.topup(c, a, 100, now=T0)
        wallet.topup(c, b, 50, expires_at=T0 + 10, now=T0)
        wallet.debit_batch(c, [Debit(a, 160, 1)], now=T0)
    with engine.begin() as c:
        assert wallet.expire_lots(c, T0 + 5) == []
        out = wallet.expire_lots(c, T0 + 30 * 86400)
        assert sorted(out) == [wallet.Expiry(a, 1, 7840), wallet.Expiry(b, 3, 50)]
        assert wallet.balance(c, a) == 100 and wallet.balance(c, b) == 0
        assert wallet.check(c) == []
        # A lot without expiry is still spendable after ten years (A4).
        assert wallet.debit_batch(c, [Debit(a, 100, 2)], now=T0 + 10 * 366 * 86400) == [True]


def test_duplicate_reference_credits_once(engine) -> None:
    """A15/A16: the same external reference twice credits once; one ledger row."""
    with engine.begin() as c:
        a = new_account(c, "a")
        b = new_account(c, "b")
        assert wallet.topup(c, a, 1000, method="bank", reference="CRO-1", now=T0) is True
        assert wallet.topup(c, a, 1000, method="bank", reference="CRO-1", now=T0) is False
        with pytest.raises(wallet.WalletError, match="^reference: "):
            wallet.topup(c, b, 1000, reference="CRO-1", now=T0)
        assert wallet.balance(c, a) == 1000
        assert c.execute(select(ledger.c.reference).where(ledger.c.kind == "topup")).scalars().all() \
            == ["CRO-1"]
        h = wallet.history(c, a)
        assert h[0]["method"] == "bank" and h[0]["amount"] == 1000 and h[0]["reference"] == "CRO-1"


def test_topup_rules(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        for bad, field in ((0, "amount"), (-5, "amount"), (1.5, "amount"), (True, "amount")):
            with pytest.raises(wallet.WalletError, match=f"^{field}: "):
                wallet.topup(c, a, bad, now=T0)
        with pytest.raises(wallet.WalletError, match="^expires: "):
            wallet.topup(c, a, 10, expires_at=T0, now=T0)
        with pytest.raises(wallet.WalletError, match="^account: no account"):
            wallet.topup(c, 999, 10, now=T0)
        accounts.update_account(c, a, enabled=False)  # B2/B7: no top-ups while disabled
        with pytest.raises(wallet.WalletError, match="^account: .*disabled"):
            wallet.topup(c, a, 10, now=T0)


def test_refund_never_twice_and_not_hlr(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        wallet.topup(c, a, 1000, now=T0)
        wallet.debit_batch(c, [Debit(a, 320, 7), Debit(a, 50, 7, kind=wallet.HLR)], now=T0)
        assert wallet.balance(c, a) == 630
        assert wallet.refund(c, 7, wallet.CANCELLED, now=T0) == 320
        assert wallet.refund(c, 7, wallet.CANCELLED, now=T0) == 0
        assert wallet.refund(c, 12345, wallet.CANCELLED, now=T0) == 0
        assert wallet.balance(c, a) == 950
        row = c.execute(select(ledger).where(ledger.c.kind == "refund")).one()
        debit_id = c.execute(select(ledger.c.id).where(ledger.c.kind == "debit")).scalar()
        assert row.debit_id == debit_id and row.message_id == 7 and row.reference == "cancelled"
        # The unique index is the last line of defence: a second refund row cannot exist.
        with pytest.raises(Exception, match="(?i)unique"):
            c.execute(ledger.insert().values(account_id=a, kind="refund", amount=320, debit_id=debit_id,
                                             created_at=T0))


def test_refund_policy() -> None:
    assert wallet.should_refund(wallet.REFUSED_UPSTREAM)
    assert wallet.should_refund(wallet.EXPIRED_IN_QUEUE)
    assert wallet.should_refund(wallet.CANCELLED)
    assert not wallet.should_refund(wallet.NETWORK_FAILURE)
    assert wallet.should_refund(wallet.NETWORK_FAILURE, refund_on_network_failure=True)
    assert not wallet.should_refund("anything else", True)


def test_transfer(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        b = new_account(c, "b")
        wallet.topup(c, a, 300, expires_at=T0 + 100, now=T0)
        wallet.topup(c, a, 300, now=T0)
        tid = wallet.transfer(c, a, b, 400, now=T0)
        assert wallet.balance(c, a) == 200 and wallet.balance(c, b) == 400
        rows = c.execute(select(ledger.c.account_id, ledger.c.kind, ledger.c.amount)
                         .where(ledger.c.transfer_id == tid).order_by(ledger.c.id)).all()
        assert [tuple(r) for r in rows] == [
            (a, "transfer_out", -300), (b, "transfer_in", 300), (a, "transfer_out", -100), (b, "transfer_in", 100)]
        # The destination's credit keeps the source's expiry: no laundering of expiring credit.
        exp = c.execute(select(lots.c.expires_at, lots.c.remaining).where(lots.c.account_id == b)
                        .order_by(lots.c.id)).all()
        assert [tuple(e) for e in exp] == [(T0 + 100, 300), (None, 100)]
        with pytest.raises(wallet.InsufficientCredit, match="^amount: "):
            wallet.transfer(c, a, b, 201, now=T0)
        with pytest.raises(wallet.WalletError, match="^to: "):
            wallet.transfer(c, a, a, 1, now=T0)
        with pytest.raises(wallet.WalletError, match="^amount: "):
            wallet.transfer(c, a, b, 0, now=T0)
        with pytest.raises(wallet.WalletError, match="^from: "):
            wallet.transfer(c, 999, b, 1, now=T0)
        assert wallet.check(c) == []
        # After the source's lot expired, only the live credit moves; the expired one is written off.
        with pytest.raises(wallet.InsufficientCredit):
            wallet.transfer(c, b, a, 101, now=T0 + 100)
        wallet.transfer(c, b, a, 100, now=T0 + 100)
        assert wallet.balance(c, b) == 0
        assert c.execute(select(ledger.c.amount).where(ledger.c.account_id == b, ledger.c.kind == "expiry")
                         ).scalars().all() == [-300]
        assert wallet.check(c) == []


def test_alert_exactly_once_and_rearm(engine) -> None:
    """A62: one alert per crossing below the threshold; re-armed at the threshold or above."""
    with engine.begin() as c:
        a = new_account(c, "a", alert_url="http://127.0.0.1:1/alert")
        wallet.topup(c, a, 1000, now=T0)
        wallet.set_threshold(c, a, 500)
    crossings: list = []

    def debit(mid, amount):
        r = Report()
        with engine.begin() as c:
            ok = wallet.debit_batch(c, [Debit(a, amount, mid)], now=T0, report=r)
        crossings.extend(r.crossed)
        return ok

    assert debit(1, 400) == [True] and crossings == []  # 600: still above
    assert debit(2, 160) == [True]  # 440: crossed
    assert len(crossings) == 1
    x = crossings[0]
    assert (x.account_id, x.account_name, x.balance, x.threshold, x.alert_url) == \
        (a, "a", 440, 500, "http://127.0.0.1:1/alert")
    assert x.item == 0
    debit(3, 160)  # 280: still below, no second alert
    assert debit(4, 1000) == [False]
    assert len(crossings) == 1
    r = Report()
    with engine.begin() as c:
        wallet.topup(c, a, 219, now=T0, report=r)  # 499: still below, not re-armed
        assert wallet.threshold_of(c, a) == (500, False)
        wallet.topup(c, a, 1, now=T0, report=r)  # 500: re-armed
        assert wallet.threshold_of(c, a) == (500, True)
    assert r.crossed == []
    debit(5, 1)  # 499: the second crossing
    assert len(crossings) == 2 and crossings[1].balance == 499
    with engine.begin() as c:
        stored = c.execute(select(credit_alerts.c.id, credit_alerts.c.balance).order_by(credit_alerts.c.id)).all()
        assert [s.balance for s in stored] == [440, 499]
        assert [p.alert_id for p in wallet.pending_alerts(c)] == [x.alert_id, crossings[1].alert_id]
        wallet.mark_alert_sent(c, x.alert_id, T0)
        assert [p.alert_id for p in wallet.pending_alerts(c)] == [crossings[1].alert_id]


def test_alert_from_transfer_refund_and_expiry(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        b = new_account(c, "b")
        wallet.topup(c, a, 1000, expires_at=T0 + 10, now=T0)
        wallet.set_threshold(c, a, 100)
        wallet.set_threshold(c, b, 100)  # b is at 0: not armed, no alert for being below already
        assert wallet.threshold_of(c, b) == (100, False)
        r = Report()
        wallet.transfer(c, a, b, 950, now=T0, report=r)
        assert [x.account_id for x in r.crossed] == [a]
        assert wallet.threshold_of(c, b) == (100, True)  # b rose above: armed
        r = Report()
        wallet.expire_lots(c, T0 + 10, report=r)
        assert [(x.account_id, x.balance) for x in r.crossed] == [(b, 0)]


def test_disabled_alert_emits_nothing(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        wallet.topup(c, a, 1000, now=T0)
        wallet.set_threshold(c, a, 500)
        wallet.set_threshold(c, a, None)
        r = Report()
        wallet.debit_batch(c, [Debit(a, 900, 1)], now=T0, report=r)
        assert r.crossed == []
        with pytest.raises(wallet.WalletError, match="^threshold: "):
            wallet.set_threshold(c, a, -1)


def test_check_finds_tampering(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        new_account(c, "b")
        wallet.topup(c, a, 1000, now=T0)
        assert wallet.check(c) == []
        c.execute(balances.update().where(balances.c.account_id == a).values(balance=1001))
        assert wallet.check(c) == [wallet.Mismatch(a, "a", 1001, 1000, 1000)]
        c.execute(balances.update().where(balances.c.account_id == a).values(balance=1000))
        c.execute(text("UPDATE lots SET remaining = 999"))
        assert wallet.check(c) == [wallet.Mismatch(a, "a", 1000, 1000, 999)]


def test_no_balance_row_means_no_credit(engine) -> None:
    """An account from before billing (no balances row) is refused, and a top-up creates the row."""
    with engine.begin() as c:
        a = new_account(c, "a")
        c.execute(balances.delete())
        assert wallet.debit_batch(c, [Debit(a, 1, 1)], now=T0) == [False]
        assert wallet.debit_batch(c, [Debit(a, 0, 2)], now=T0) == [False]
        assert wallet.balance(c, a) == 0
        wallet.topup(c, a, 10, now=T0)
        assert wallet.debit_batch(c, [Debit(a, 10, 3)], now=T0) == [True]
        assert wallet.check(c) == []


def test_balance_never_negative_in_the_schema(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        with pytest.raises(Exception, match="(?i)check|constraint"):
            c.execute(balances.update().where(balances.c.account_id == a).values(balance=-1))


def test_account_settings(engine) -> None:
    with engine.begin() as c:
        a = accounts.create_account(c, "acme", "pw", alert_url="https://example.com/x")
        assert a.nocredit_status == 0x401 and not a.refund_on_network_failure and a.price_plan is None
        accounts.update_account(c, a.id, nocredit_status=0x45, refund_on_network_failure=True,
                                price_plan="gold", alert_url=None)
        got = accounts.get_account(c, "acme")
        assert (got.nocredit_status, got.refund_on_network_failure, got.price_plan, got.alert_url) == \
            (0x45, True, "gold", None)
        cred = accounts.find_credential(c, "acme")
        assert cred.account == got and cred.max_rate is None
        with pytest.raises(accounts.AccountError, match="^nocredit_status: "):
            accounts.update_account(c, a.id, nocredit_status=0x08)
        with pytest.raises(accounts.AccountError, match="^alert_url: "):
            accounts.update_account(c, a.id, alert_url="ftp://x")
        accounts.add_credential(c, a.id, "acme2", "pw2", allowed_networks=("10.0.0.0/8",), max_rate=50)
        cred2 = accounts.find_credential(c, "acme2")
        assert cred2.account.id == a.id and cred2.max_rate == 50 and cred2.allows("10.1.2.3")
        assert not cred2.allows("192.168.0.1")
        assert accounts.revoke_credential(c, "acme2") and accounts.find_credential(c, "acme2").revoked
        with pytest.raises(accounts.AccountError, match="^system_id: "):
            accounts.add_credential(c, a.id, "acme", "pw")


def test_hlr_charge_carries_its_reference(engine) -> None:
    with engine.begin() as c:
        a = new_account(c, "a")
        wallet.topup(c, a, 100, now=T0)
        assert wallet.debit_batch(c, [Debit(a, 50, None, kind=wallet.HLR, reference="job-3")], now=T0) == [True]
        row = c.execute(select(ledger).where(ledger.c.kind == "hlr")).one()
        assert (row.amount, row.message_id, row.reference) == (-50, None, "job-3")
        with pytest.raises(wallet.WalletError, match="^kind: "):
            wallet.debit_batch(c, [Debit(a, 1, 1, kind="refund")], now=T0)


def test_upgrade_a_store_made_before_billing(tmp_path) -> None:
    """A data dir from before this issue gets the new columns and a balance row per account."""
    import sqlite3

    from staffetta.store.db import create_schema, make_engine

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE accounts (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL UNIQUE,
            enabled BOOLEAN NOT NULL, default_type VARCHAR(8) NOT NULL, default_country_code INTEGER NOT NULL,
            default_sender VARCHAR(16), created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL);
        CREATE TABLE credentials (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts (id),
            system_id VARCHAR(15) NOT NULL UNIQUE, password_hash VARCHAR(200) NOT NULL,
            allowed_networks VARCHAR(500), max_binds INTEGER NOT NULL, revoked BOOLEAN NOT NULL);
        INSERT INTO accounts (name, enabled, default_type, default_country_code) VALUES ('old', 1, 'PRO', 39);
        INSERT INTO credentials (account_id, system_id, password_hash, max_binds, revoked)
            VALUES (1, 'old', 'x', 10, 0);
    """)
    db.commit()
    db.close()
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    assert sorted(accounts.upgrade(engine)) == [
        "accounts.alert_url", "accounts.hlr_mode", "accounts.mo_channel", "accounts.mo_secret", "accounts.mo_url",
        "accounts.nocredit_status", "accounts.price_plan", "accounts.refund_on_network_failure", "balances: 1 rows",
        "credentials.max_rate"]
    assert accounts.upgrade(engine) == []
    with engine.begin() as c:
        cred = accounts.find_credential(c, "old")
        assert cred.account.nocredit_status == 0x401 and cred.account.refund_on_network_failure is False
        wallet.topup(c, cred.account.id, 160, now=T0)
        assert wallet.debit_batch(c, [Debit(cred.account.id, 160, 1)], now=T0) == [True]
        assert wallet.check(c) == []
    engine.dispose()


def test_plain_tuples_and_debits_write_the_same_ledger_rows_in_order(engine) -> None:
    """debit_batch takes Debit or plain tuples; a debit's ledger row leaves out its NULL columns,
    and a batch that also has a full row (a reference) keeps the rows in batch order."""
    with engine.begin() as c:
        a = new_account(c, "acme")
        wallet.topup(c, a, 10_000, now=T0)
    with engine.begin() as c:
        assert wallet.debit_batch(c, [(a, 160, 1, wallet.DEBIT, None), Debit(a, 160, 2)], now=T0) == [True] * 2
        assert wallet.debit_batch(c, [Debit(a, 10, None, kind=wallet.HLR, reference="job-7"),
                                      (a, 160, 3, wallet.DEBIT, None), Debit(a, 0, 4)], now=T0) == [True] * 3
    cols = (ledger.c.kind, ledger.c.amount, ledger.c.message_id, ledger.c.transfer_id, ledger.c.debit_id,
            ledger.c.reference, ledger.c.created_at)
    with engine.begin() as c:
        rows = [tuple(r) for r in c.execute(select(*cols).where(ledger.c.kind != "topup").order_by(ledger.c.id))]
        assert wallet.check(c) == []
        assert wallet.balance(c, a) == 10_000 - 3 * 160 - 10
    assert rows == [
        ("debit", -160, 1, None, None, None, T0),
        ("debit", -160, 2, None, None, None, T0),
        ("hlr", -10, None, None, None, "job-7", T0),
        ("debit", -160, 3, None, None, None, T0),
        ("debit", 0, 4, None, None, None, T0),
    ]
