"""Benchmark (not a test): microseconds per debited message in a group-commit batch.

    python -m tests.billing.bench_debit [--batch 100] [--batches 300] [--accounts 1]
    python -m tests.billing.bench_debit --url postgresql://postgres@127.0.0.1/test

Measures ``debit_batch`` alone and the whole transaction (BEGIN, debit_batch,
COMMIT) on a file database in WAL mode - what the hub's writer thread pays.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import staffetta.billing.accounts as accounts
from staffetta.billing import wallet
from staffetta.store.db import create_schema, drop_pg_schema, make_engine, scratch_pg_schema


def run(url: str, batch: int, batches: int, n_accounts: int) -> dict:
    schema = None
    base_url = url
    if url.startswith("postgresql"):
        schema, url = scratch_pg_schema(url, "bench_")
    engine = None
    try:
        engine = make_engine(url)
        create_schema(engine)
        with engine.begin() as conn:
            ids = []
            for i in range(n_accounts):
                a = accounts.create_account(conn, f"bench{i}", "pw")
                wallet.topup(conn, a.id, 10**12, now=1)
                ids.append(a.id)
        mid = 0
        in_fn = 0.0
        t0 = time.perf_counter()
        for _ in range(batches):
            items = []
            for j in range(batch):
                mid += 1
                items.append(wallet.Debit(ids[j % n_accounts], 160, mid))
            with engine.begin() as conn:
                s = time.perf_counter()
                ok = wallet.debit_batch(conn, items, now=2)
                in_fn += time.perf_counter() - s
            assert all(ok)
        total = time.perf_counter() - t0
        with engine.begin() as conn:
            assert wallet.check(conn) == []
    finally:
        if engine is not None:
            engine.dispose()
        if schema:
            drop_pg_schema(base_url, schema)
    n = batch * batches
    return {"us_per_debit": in_fn / n * 1e6, "us_per_debit_with_commit": total / n * 1e6,
            "debits_per_s_with_commit": n / total}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--accounts", type=int, default=1)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = a.url or f"sqlite:///{d}/bench.db"
        r = run(url, a.batch, a.batches, a.accounts)
    print(f"{url.split(':')[0]} batch={a.batch} accounts={a.accounts}: "
          f"{r['us_per_debit']:.1f} us/debit in debit_batch, "
          f"{r['us_per_debit_with_commit']:.1f} us/debit with BEGIN/COMMIT "
          f"({r['debits_per_s_with_commit']:.0f} debits/s)")


if __name__ == "__main__":
    main()
