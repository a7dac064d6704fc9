"""The spine benchmark: simulator + hub + `staffetta bench`, windows 1, 10, 50.

Each part runs in its own process. With ``taskset`` available the hub gets core
0 to itself and the simulator and the load client share core 1, so the figure
is "hub on one core". Prints one line per window and, with --json, a document.

    python bench/bench_spine.py            # defaults: n = 2000 / 20000 / 30000, the realistic mix
    python bench/bench_spine.py --quick    # smaller n, for a smoke run
    python bench/bench_spine.py --profile single-destination   # one account, one number, as before
    python bench/bench_spine.py --database-url postgresql://postgres@127.0.0.1:5432/test

The realistic profile (the default) binds three accounts, one connection each
(``--window`` is per connection), with the price plan of
``simulator.traffic.price_plan_section`` so that every country of the mix is
priced; docs/benchmarks.md describes the mix.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(procs: list[subprocess.Popen]) -> None:
    """End a benchmark's processes: terminate all, then wait (kill what does not stop in 10 s)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_port(port: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """User + system CPU time of a process (or its system time alone) from Linux /proc, for CPU per message."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def calibrate() -> float:
    """µs for one decode+encode of a submit_sm with our codec (best of 5).

    This machine's speed moves by 2-4x with its neighbours; dividing the hub's
    CPU per message by this gives a figure comparable across runs.
    """
    import timeit

    from staffetta.pdu.codec import Pdu, decode, encode

    frame = encode(Pdu(4, 1, 0, {"source_addr": b"Staffetta", "destination_addr": b"393331234567",
                                 "registered_delivery": 1, "short_message": b"hello world"}))
    return min(timeit.repeat(lambda: encode(decode(frame)), number=20000, repeat=5)) / 20000 * 1e6


def writer_batches(metrics_port: int) -> tuple[float, float]:
    """(group commits, rows) so far, from the hub's ``staffetta_writer_batch_rows`` histogram."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("staffetta_writer_batch_rows_count"):
            count = float(line.split()[-1])
        elif line.startswith("staffetta_writer_batch_rows_sum"):
            total = float(line.split()[-1])
    return count, total


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    """A process's resident memory (or VmHWM, its peak) in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pinned(core: int, cmd: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


#: The accounts of the realistic profile: (system_id, password); one connection each.
REALISTIC_ACCOUNTS = (("acme", "acme1"), ("shop", "shop1"), ("bank", "bank1"))
SINGLE_ACCOUNTS = (("demo", "demo"),)


def accounts_for(profile: str) -> tuple[tuple[str, str], ...]:
    return SINGLE_ACCOUNTS if profile == "single-destination" else REALISTIC_ACCOUNTS


def hub_config(hub_port: int, sim_port: int, store: str, extra: str = "", routes: int = 0) -> str:
    """The hub's config for a benchmark: deliver window 50, upstream window 200, the bench price plan.

    ``routes``: with N > 0, four connectors (all to the simulator) and a route
    table of N rules (:func:`route_table`); 0 keeps one connector and no table.
    """
    from staffetta.simulator.traffic import price_plan_section

    names = [f"sim{i}" for i in range(1, 5)] if routes else ["sim"]
    table = f"routes: {json.dumps(route_table(routes, names))}\n" if routes else ""
    return (
        f"listen: 127.0.0.1:{hub_port}\n"
        + store
        + "metrics_listen: null\n"
        "session: {inbound_window: 200, window: 50}\n"
        f"billing: {json.dumps(price_plan_section())}\n"
        + extra
        + table
        + "upstreams:\n"
        # Each connector its own system_id: the carrier sends a message's receipt on a
        # session of the account that submitted it (docs/routing.md "Connectors").
        + "".join(f"  - {{name: {n}, host: 127.0.0.1, port: {sim_port}, system_id: {n.replace('sim', 'hub')}, "
                  f"password: hub, window: {200 // len(names)}}}\n" for n in names)
    )


def route_table(n: int, connectors: list[str], seed: int = 13) -> list[dict]:
    """A route table of ``n`` rules shaped like a carrier operator's, for the routing benchmark.

    Rules on the mix's mobile prefixes (one to three more digits: many match a
    destination's leading digits), some per account or type, with every
    strategy; the last rule takes the rest. Every rule sends to connectors that
    are up, so what is measured is the decision, not a refusal.
    """
    from staffetta.simulator.traffic import MOBILE_RANGES

    rng = random.Random(seed)
    accounts = [a for a, _ in accounts_for("realistic")]
    heads = [f"{r.calling_code}{p}" for r in MOBILE_RANGES for p in r.prefixes]
    rules: list[dict] = []
    for i in range(n - 1):
        prefix = rng.choice(heads) + "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 3)))
        match: dict = {"prefix": prefix}
        if i % 5 == 1:
            match["account"] = rng.choice(accounts)
        if i % 7 == 2:
            match["type"] = rng.choice(["SMART", "PRO"])
        pair = rng.sample(connectors, 2)
        strategy = ("failover", "round-robin", "weighted", "least-cost")[i % 4]
        rule: dict = {"name": f"r{i}", "match": match, "connectors": pair, "strategy": strategy}
        if strategy == "weighted":
            rule["weights"] = {pair[0]: 3, pair[1]: 1}
        elif strategy == "least-cost":
            rule["prices"] = {pair[0]: {"*": 0.004}, pair[1]: {"*": 0.005}}
        rules.append(rule)
    rules.append({"name": "rest", "connectors": connectors, "strategy": "failover"})
    return rules


def create_accounts(cli: list[str], store_args: list[str], profile: str) -> None:
    """The profile's accounts, each with credit enough for any run here."""
    for name, password in accounts_for(profile):
        subprocess.run([*cli, "account", "create", name, "--password", password, "--credits", "100000000",
                        *store_args], check=True, stdout=subprocess.DEVNULL)


def bench_args(profile: str) -> list[str]:
    """The credentials and profile options of ``staffetta bench`` for a profile."""
    args = ["--profile", profile]
    for name, password in accounts_for(profile):
        args += ["--account", f"{name}:{password}"]
    return args


def main() -> int:
    from staffetta.store.db import drop_pg_schema, scratch_pg_schema

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--windows", default="1,10,50")
    ap.add_argument("--dlr-delay", type=float, default=0.1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--hlr", choices=["off", "cached", "always"], default="off",
                    help="HLR lookups on the submit path, against the simulator's HLR")
    ap.add_argument("--database-url", metavar="postgresql://...",
                    help="the hub on this PostgreSQL (a fresh schema, dropped afterwards) instead of SQLite")
    ap.add_argument("--profile", choices=("realistic", "single-destination"), default="realistic",
                    help="the traffic (default realistic: docs/benchmarks.md)")
    ap.add_argument("--yappi", metavar="OUT.txt",
                    help="run the hub under yappi (CPU clock) and write its profile here; slows it ~2x")
    args = ap.parse_args()
    py = sys.executable
    cli = [py, "-m", "staffetta.smsc.cli"]
    sizes = {1: 500, 10: 3000, 50: 5000} if args.quick else {1: 2000, 10: 20000, 50: 30000}
    calib = calibrate()
    if not args.json:
        print(f"machine: {os.cpu_count()} cores; codec decode+encode {calib:.2f} µs (speed reference)")
    tmp = Path(tempfile.mkdtemp(prefix="staffetta-bench-"))
    procs: list[subprocess.Popen] = []
    results = []
    schema = None
    try:
        sim_port, hub_port, hlr_port, metrics_port = free_port(), free_port(), free_port(), free_port()
        store = f"data_dir: {tmp / 'data'}\n"
        if args.database_url:
            schema, url = scratch_pg_schema(args.database_url, "bench_")
            store += f"database_url: '{url}'\n"
        cfg = tmp / "bench.yaml"
        cfg.write_text(hub_config(
            hub_port, sim_port, store,
            os.environ.get("BENCH_EXTRA_CONFIG", "")
            + f"hlr: {{mode: {args.hlr}, provider: {{type: simulator, url: 'http://127.0.0.1:{hlr_port}'}}}}\n")
            .replace("metrics_listen: null", f"metrics_listen: 127.0.0.1:{metrics_port}"))
        create_accounts(cli, ["--config", str(cfg)], args.profile)
        procs.append(subprocess.Popen(pinned(1, [*cli, "simulator", "--listen", f"127.0.0.1:{sim_port}",
                                                  "--dlr-delay", str(args.dlr_delay), "--control", "off",
                                                  "--hlr", f"127.0.0.1:{hlr_port}"])))
        wait_port(sim_port)
        hub_cmd = [*cli, "run", "--config", str(cfg)]
        if args.yappi:
            hub_cmd = [py, str(Path(__file__).with_name("profile_hub.py")), args.yappi, *hub_cmd[3:]]
        hub = subprocess.Popen(pinned(0, hub_cmd))
        procs.append(hub)
        wait_port(hub_port, timeout=120)  # slow under yappi on a loaded machine
        wait_port(metrics_port)
        time.sleep(0.5)  # let the connector bind upstream
        for w in (int(x) for x in args.windows.split(",")):
            if args.yappi:
                hub.send_signal(signal.SIGUSR1)  # profile_hub.py: the profile covers this load alone
                time.sleep(0.2)
            commits_before, rows_before = writer_batches(metrics_port)  # before the CPU: a scrape costs some
            cpu_before = cpu_seconds(hub.pid)
            sys_before = cpu_seconds(hub.pid, system_only=True)
            out = subprocess.run(
                pinned(1, [*cli, "bench", "--target", f"127.0.0.1:{hub_port}", *bench_args(args.profile),
                           "-n", str(sizes.get(w, 10000)), "--window", str(w), "--json"]),
                check=True, capture_output=True, text=True,
            ).stdout
            r = json.loads(out)
            r["window"] = w
            # Hub CPU per message (submit, forward, receipt, delivery): robust to a noisy machine.
            r["hub_cpu_us_per_msg"] = (cpu_seconds(hub.pid) - cpu_before) / max(r["accepted"], 1) * 1e6
            # Of which in the kernel (system calls: reads, writes, epoll, the WAL, waking the writer).
            r["hub_sys_us_per_msg"] = (cpu_seconds(hub.pid, system_only=True) - sys_before) / max(r["accepted"], 1) * 1e6
            commits, rows = writer_batches(metrics_port)
            # Group commits per message: each costs ~14 pages written to the WAL, whatever its size.
            r["writer_rows_per_commit"] = (rows - rows_before) / max(commits - commits_before, 1)
            r["writer_commits_per_msg"] = (commits - commits_before) / max(r["accepted"], 1)
            r["hub_cpu_per_msg_in_codec_round_trips"] = r["hub_cpu_us_per_msg"] / calib
            results.append(r)
            if not args.json:
                print(
                    f"{args.profile}, window {w:>3} x {r['connections']}: {r['accepted']}/{r['sent']} accepted, "
                    f"{r['accepted_per_s']:.0f} msg/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                    f"receipts {r['receipts']}/{r['receipts_expected']} ({r['receipts_per_s']:.0f}/s), "
                    f"hub CPU {r['hub_cpu_us_per_msg']:.0f} µs/msg ({r['hub_sys_us_per_msg']:.0f} in the kernel) "
                    f"(= {r['hub_cpu_per_msg_in_codec_round_trips']:.0f} codec round trips), "
                    f"client CPU {r['client_cpu_us_per_msg']:.0f} µs/msg, "
                    f"{r['writer_rows_per_commit']:.1f} rows a group commit",
                    flush=True,
                )
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)
        if schema:
            drop_pg_schema(args.database_url, schema)
    if args.json:
        print(json.dumps({"machine": f"{os.cpu_count()} cores", "codec_round_trip_us": calib,
                          "profile": args.profile, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
