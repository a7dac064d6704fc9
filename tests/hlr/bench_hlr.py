"""Benchmarks (not tests) of the HLR: the cached lookup on the submit path, and a verification job.

    # µs per cached lookup through HlrService (memory hit, Prometheus metrics on)
    python -m tests.hlr.bench_hlr cached [-n 1000000] [--numbers 10000]

    # cached in SQL but not in this process's memory (a thread read per number)
    python -m tests.hlr.bench_hlr sql [-n 20000] [--concurrency 100]

    # an N-number job against the simulator's HLR: in this process, or a separate one
    python -m tests.hlr.bench_hlr job [-n 100000] [--concurrency 50] [--latency 0]
    python -m staffetta.simulator.cli simulator --control off --listen 127.0.0.1:0 --hlr 127.0.0.1:2778 &
    python -m tests.hlr.bench_hlr job -n 100000 --sim-url http://127.0.0.1:2778

The job bench times the two phases separately: creating the job (reading,
normalising with ``pdu.addresses``, de-duplicating, inserting the items) and
running it (lookups, charges, item updates, cache upserts). The embedded
store (SQLite, WAL) lives in a temporary directory unless ``--url`` is given.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from twisted.internet import defer


def _store(url: str | None, tmp: str):
    import staffetta.billing.accounts as accounts
    import staffetta.billing.wallet as wallet
    from staffetta import hlr  # noqa: F401
    from staffetta.store.db import create_schema, make_engine

    engine = make_engine(url or f"sqlite:///{tmp}/bench.db")
    create_schema(engine)
    with engine.begin() as c:
        acct = accounts.create_account(c, f"bench{int(time.time() * 1000) % 10**9}", "pw")
        wallet.topup(c, acct.id, 10**12)
    return engine, acct.id


async def bench_cached(reactor, args) -> dict:
    from prometheus_client import CollectorRegistry

    from staffetta.hlr.model import HlrMetrics, HlrResult
    from staffetta.hlr.service import HlrService

    class NoProvider:
        name = "none"

        def lookup(self, number):
            raise AssertionError("a cached bench must not reach the provider")

    with tempfile.TemporaryDirectory() as tmp:
        engine, acct = _store(args.url, tmp)
        svc = HlrService(reactor, engine, None, NoProvider(), None, metrics=HlrMetrics(CollectorRegistry()))
        now = time.time()
        numbers = [f"39333{i:07d}" for i in range(args.numbers)]
        for n in numbers:
            svc.cache.remember(HlrResult(n, "valid", "222", "01", "TIM", "222", "01", "TIM", False, None,
                                         now, "simulator"))
        got = []
        sink = got.append
        m = len(numbers)
        lookup = svc.lookup
        t = time.perf_counter()
        for i in range(args.n):
            lookup(numbers[i % m], acct).addCallback(sink)
            if len(got) > 10_000:
                got.clear()
        dt = time.perf_counter() - t
        engine.dispose()
    return {"bench": "cached", "lookups": args.n, "seconds": round(dt, 3),
            "per_second": round(args.n / dt), "us_per_lookup": round(dt / args.n * 1e6, 3),
            "provider_calls": svc.provider_calls, "hits": svc.hits}


async def bench_sql(reactor, args) -> dict:
    from staffetta.hlr.cache import upsert_results
    from staffetta.hlr.model import HlrResult
    from staffetta.hlr.service import HlrService

    class NoProvider:
        name = "none"

        def lookup(self, number):
            raise AssertionError("a cached bench must not reach the provider")

    with tempfile.TemporaryDirectory() as tmp:
        engine, acct = _store(args.url, tmp)
        numbers = [f"39333{i:07d}" for i in range(args.n)]
        now = time.time()
        with engine.begin() as c:
            upsert_results(c, [HlrResult(n, "valid", "222", "01", "TIM", "222", "01", "TIM", False, None,
                                         now, "simulator") for n in numbers])
        svc = HlrService(reactor, engine, None, NoProvider(), None)
        sem = defer.DeferredSemaphore(args.concurrency)
        t = time.perf_counter()
        await defer.gatherResults([sem.run(svc.lookup, n, acct) for n in numbers])
        dt = time.perf_counter() - t
        engine.dispose()
    return {"bench": "sql", "lookups": args.n, "seconds": round(dt, 3), "per_second": round(args.n / dt),
            "sql_hits": svc.cache.stats["sql"]}


async def bench_job(reactor, args) -> dict:
    from staffetta.hlr.jobs import JobRunner, create_job, prepare_items
    from staffetta.hlr.providers import simulator_provider
    from staffetta.smsc.hlr_billing import billing_charge_tx
    from staffetta.store.writer import GroupCommitWriter

    sim = None
    url = args.sim_url
    if url is None:
        from staffetta.simulator.hlr import HlrSimulator

        sim = HlrSimulator(reactor, seed=1, latency=args.latency)
        sim.listen(0)
        url = sim.url
    with tempfile.TemporaryDirectory() as tmp:
        engine, acct = _store(args.url, tmp)
        raw = [f"+39 3{40 + i % 10} {i:07d}" for i in range(args.n)]
        t0 = time.perf_counter()
        items = prepare_items(raw, 39)
        with engine.begin() as c:
            job = create_job(c, acct, "bench", items, stale_after=None, price=50)
        t_create = time.perf_counter() - t0
        provider = simulator_provider(reactor, url, max_concurrency=args.concurrency, retries=2)
        writer = GroupCommitWriter(engine, reactor, max_batch=1000, max_delay=0.02)
        writer.start()
        runner = JobRunner(reactor, engine, provider, billing_charge_tx, writer, concurrency=args.concurrency)
        t1 = time.perf_counter()
        info = await runner.run(job)
        t_run = time.perf_counter() - t1
        await writer.stop()
        await provider.close()
        if sim is not None:
            await sim.close()
        engine.dispose()
    return {"bench": "job", "numbers": args.n, "state": info.state, "done": info.counts["done"],
            "errors": info.counts["error"], "charged": info.counts["charged"],
            "create_seconds": round(t_create, 2), "run_seconds": round(t_run, 2),
            "lookups_per_second": round(info.counts["done"] / t_run),
            "simulator": "in-process" if sim is not None else url, "concurrency": args.concurrency,
            "writer_batches": writer.batches}


def main() -> None:
    p = argparse.ArgumentParser(prog="bench_hlr")
    p.add_argument("what", choices=("cached", "sql", "job"))
    p.add_argument("-n", type=int, default=None)
    p.add_argument("--numbers", type=int, default=10_000, help="distinct cached numbers (cached)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--latency", type=float, default=0.0, help="in-process simulator latency (job)")
    p.add_argument("--sim-url", default=None, help="a running simulator's HLR base URL (job)")
    p.add_argument("--url", default=None, help="database URL (default: SQLite in a temp dir)")
    args = p.parse_args()
    args.n = args.n or {"cached": 1_000_000, "sql": 20_000, "job": 100_000}[args.what]
    from twisted.internet import reactor

    fn = {"cached": bench_cached, "sql": bench_sql, "job": bench_job}[args.what]
    out: dict = {}

    def go() -> None:
        d = defer.ensureDeferred(fn(reactor, args))
        d.addCallbacks(out.update, lambda f: (f.printTraceback(), out.update(error=f.getErrorMessage())))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
