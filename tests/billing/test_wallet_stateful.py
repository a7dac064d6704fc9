"""Hypothesis state machine of the wallet against a plain-Python model (issue 4, Tests).

Top-ups with and without expiry (and re-used references), debits through
``debit_batch``, refunds, transfers, the passing of time and the expiry sweep
run in random order. After every step: the balance equals the ledger sum and
the lots' remainder (``check()``), never negative, every lot holds exactly
what the model says (which proves earliest-expiring-first), and the number of
low-credit alerts is the number of crossings.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import func, select

from staffetta.billing import wallet
from staffetta.billing.accounts import accounts
from staffetta.billing.ledger import balances, credit_alerts, lots
from staffetta.billing.wallet import Debit
from staffetta.store.db import create_schema, make_engine

T0 = 1_700_000_000
N_ACCOUNTS = 3
THRESHOLD = 500


class Model:
    def __init__(self) -> None:
        self.lots: list[dict] = []  # index + 1 == the database lot id
        self.armed = {}
        self.alerts = {}

    def live(self, a: int, now: int) -> list[dict]:
        mine = [lot for lot in self.lots if lot["account"] == a and lot["remaining"] > 0
                and (lot["exp"] is None or lot["exp"] > now)]
        return sorted(mine, key=lambda lot: (lot["exp"] is None, lot["exp"] or 0, lot["id"]))

    def write_off(self, a: int, now: int) -> None:
        for lot in self.lots:
            if lot["account"] == a and lot["exp"] is not None and lot["exp"] <= now:
                lot["remaining"] = 0

    def balance(self, a: int) -> int:
        return sum(lot["remaining"] for lot in self.lots if lot["account"] == a)

    def new_lot(self, a: int, amount: int, exp: int | None) -> dict:
        lot = {"id": len(self.lots) + 1, "account": a, "remaining": amount, "exp": exp}
        self.lots.append(lot)
        return lot

    def take(self, a: int, amount: int, now: int) -> list[tuple[dict, int]]:
        portions = []
        for lot in self.live(a, now):
            if not amount:
                break
            t = min(lot["remaining"], amount)
            lot["remaining"] -= t
            amount -= t
            portions.append((lot, t))
        assert amount == 0
        return portions

    def settle(self, a: int) -> None:
        b = self.balance(a)
        if b < THRESHOLD:
            if self.armed[a]:
                self.armed[a] = False
                self.alerts[a] += 1
        else:
            self.armed[a] = True


amounts = st.integers(min_value=0, max_value=700)


class WalletMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.engine = make_engine("sqlite://")
        create_schema(self.engine)
        self.now = T0
        self.model = Model()
        self.refs: dict[str, int] = {}
        self.debits: dict[int, list[tuple[dict, int]]] = {}
        self.refunded: set[int] = set()
        self.next_mid = 1
        with self.engine.begin() as c:
            self.ids = []
            for i in range(N_ACCOUNTS):
                a = c.execute(accounts.insert().values(name=f"acct{i}", enabled=True, default_type="PRO",
                                                       default_country_code=39)).inserted_primary_key[0]
                c.execute(balances.insert().values(account_id=a, balance=0, alert_armed=True))
                wallet.set_threshold(c, a, THRESHOLD)  # at 0: below, so not armed
                self.model.armed[a] = False
                self.model.alerts[a] = 0
                self.ids.append(a)

    def teardown(self) -> None:
        self.engine.dispose()

    def acct(self, i: int) -> int:
        return self.ids[i % N_ACCOUNTS]

    @rule(i=st.integers(0, 2), amount=st.integers(1, 2000),
          ttl=st.sampled_from([None, 50, 100, 300]), ref=st.sampled_from([None, "r1", "r2", "r3", "r4"]))
    def topup(self, i, amount, ttl, ref) -> None:
        a = self.acct(i)
        exp = None if ttl is None else self.now + ttl
        if ref is not None and ref in self.refs and self.refs[ref] != a:
            try:
                with self.engine.begin() as c:
                    wallet.topup(c, a, amount, expires_at=exp, reference=ref, now=self.now)
            except wallet.WalletError as exc:
                assert str(exc).startswith("reference: ")
            else:
                raise AssertionError("a reference of another account was accepted")
            return
        with self.engine.begin() as c:
            credited = wallet.topup(c, a, amount, expires_at=exp, reference=ref, now=self.now)
        assert credited == (ref is None or ref not in self.refs)
        if credited:
            if ref is not None:
                self.refs[ref] = a
            self.model.new_lot(a, amount, exp)
            self.model.settle(a)

    @rule(batch=st.lists(st.tuples(st.integers(0, 2), amounts), min_size=1, max_size=8))
    def debit(self, batch) -> None:
        items = []
        for i, amount in batch:
            items.append(Debit(self.acct(i), amount, self.next_mid))
            self.next_mid += 1
        with self.engine.begin() as c:
            got = wallet.debit_batch(c, items, now=self.now)
        m = self.model
        expected = [False] * len(items)
        for a in sorted({it.account_id for it in items}):
            m.write_off(a, self.now)
            room = sum(lot["remaining"] for lot in m.live(a, self.now))
            for k, it in enumerate(items):
                if it.account_id == a and it.amount <= room:
                    expected[k] = True
                    room -= it.amount
                    self.debits[it.message_id] = m.take(a, it.amount, self.now)
            m.settle(a)
        assert got == expected

    @rule(pick=st.integers(0, 10**6), again=st.booleans())
    def refund(self, pick, again) -> None:
        if not self.debits:
            return
        mids = sorted(self.debits)
        mid = mids[pick % len(mids)]
        if again and self.refunded:
            mid = sorted(self.refunded)[pick % len(self.refunded)]
        with self.engine.begin() as c:
            got = wallet.refund(c, mid, wallet.REFUSED_UPSTREAM, now=self.now)
        if mid in self.refunded:
            assert got == 0
            return
        portions = self.debits[mid]
        assert got == sum(t for _, t in portions)
        self.refunded.add(mid)
        for lot, t in portions:
            lot["remaining"] += t
        if portions:
            self.model.settle(portions[0][0]["account"])

    @rule(i=st.integers(0, 2), j=st.integers(1, 2), amount=st.integers(1, 1500))
    def transfer(self, i, j, amount) -> None:
        src, dst = self.acct(i), self.acct(i + j)
        m = self.model
        live = sum(lot["remaining"] for lot in m.live(src, self.now))
        try:
            with self.engine.begin() as c:
                tid = wallet.transfer(c, src, dst, amount, now=self.now)
        except wallet.InsufficientCredit:
            assert amount > live
            return
        assert amount <= live and tid > 0
        m.write_off(src, self.now)
        for lot, t in m.take(src, amount, self.now):
            m.new_lot(dst, t, lot["exp"])
        m.settle(src)
        m.settle(dst)

    @rule(dt=st.integers(1, 150))
    def advance(self, dt) -> None:
        self.now += dt

    @rule()
    def sweep(self) -> None:
        with self.engine.begin() as c:
            out = wallet.expire_lots(c, self.now)
        m = self.model
        expected = sorted((lot["account"], lot["id"], lot["remaining"]) for lot in m.lots
                          if lot["exp"] is not None and lot["exp"] <= self.now and lot["remaining"] > 0)
        assert sorted(tuple(e) for e in out) == expected
        touched = {e[0] for e in expected}
        for a in touched:
            m.write_off(a, self.now)
            m.settle(a)

    @invariant()
    def books_balance(self) -> None:
        with self.engine.connect() as c:
            assert wallet.check(c) == []
            db_lots = c.execute(select(lots.c.id, lots.c.account_id, lots.c.remaining, lots.c.expires_at)
                                .order_by(lots.c.id)).all()
            assert [(r.id, r.account_id, r.remaining, r.expires_at) for r in db_lots] == \
                [(lot["id"], lot["account"], lot["remaining"], lot["exp"]) for lot in self.model.lots]
            for a in self.ids:
                b = wallet.balance(c, a)
                assert b >= 0
                assert b == self.model.balance(a)
                n = c.execute(select(func.count()).select_from(credit_alerts)
                              .where(credit_alerts.c.account_id == a)).scalar()
                assert n == self.model.alerts[a]
                assert wallet.threshold_of(c, a) == (THRESHOLD, self.model.armed[a])


WalletMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWallet = WalletMachine.TestCase
