"""The soak benchmark: sustained load with receipts normal, delayed or absent.

A carrier that never sends receipts (or sends them hours later) leaves every
message waiting for its outcome. The hub must keep its speed and a flat
memory: the correlation table is bounded (``max_tracked``), evictions are
O(1), and a receipt for an evicted message is found in the store. This runs
simulator + hub + load client for a while and samples, every ``--sample``
seconds, the hub's accepted messages (from its /metrics) and its resident
memory (from /proc), then prints per-minute throughput and memory.

    python bench/soak.py --receipts absent --minutes 10
    python bench/soak.py --receipts delayed --minutes 10   # receipts 5 minutes late
    python bench/soak.py --receipts normal --minutes 3 --json

Pinning as in bench_spine.py: the hub alone on core 0, simulator and load
client on core 1. The load client is stopped when the time is up.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_spine import (  # noqa: E402
    bench_args,
    cpu_seconds,
    create_accounts,
    free_port,
    hub_config,
    pinned,
    rss_mib,
    stop,
    wait_port,
)

#: Receipt delay per mode: "absent" is a delay no run outlives.
DLR_DELAY = {"normal": 0.1, "delayed": 300.0, "absent": 1e9}
_ACCEPTED = re.compile(r'^staffetta_submits_total\{[^}]*status="ESME_ROK"[^}]*\} ([0-9.e+]+)$', re.M)


def accepted(metrics_port: int) -> int:
    """Messages the hub acknowledged with ESME_ROK so far, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return int(sum(float(v) for v in _ACCEPTED.findall(text)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--receipts", choices=sorted(DLR_DELAY), default="absent")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sample", type=float, default=10.0, metavar="SECONDS")
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--profile", choices=["realistic", "single-destination"], default="realistic")
    ap.add_argument("--max-tracked", type=int, default=None,
                    help="the hub's correlation table size (default: the hub's own default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.minutes <= 0 or args.sample <= 0 or args.window < 1:
        ap.error("--minutes and --sample must be > 0, --window >= 1")
    py = sys.executable
    cli = [py, "-m", "staffetta.smsc.cli"]
    tmp = Path(tempfile.mkdtemp(prefix="staffetta-soak-"))
    procs: list[subprocess.Popen] = []
    samples: list[dict] = []
    stopped_early = ""
    try:
        sim_port, hub_port, metrics_port = free_port(), free_port(), free_port()
        cfg = tmp / "soak.yaml"
        cfg.write_text(hub_config(hub_port, sim_port, f"data_dir: {tmp / 'data'}\n")
                       .replace("metrics_listen: null", f"metrics_listen: 127.0.0.1:{metrics_port}")
                       + (f"max_tracked: {args.max_tracked}\n" if args.max_tracked else ""))
        create_accounts(cli, ["--config", str(cfg)], args.profile)
        procs.append(subprocess.Popen(
            pinned(1, [*cli, "simulator", "--listen", f"127.0.0.1:{sim_port}", "--control", "off",
                       "--hlr", "off", "--dlr-delay", str(DLR_DELAY[args.receipts])]),
            stdout=subprocess.DEVNULL))
        wait_port(sim_port)
        hub = subprocess.Popen(pinned(0, [*cli, "run", "--config", str(cfg)]), stdout=subprocess.DEVNULL)
        procs.append(hub)
        wait_port(hub_port)
        wait_port(metrics_port)
        time.sleep(0.5)  # the connector binds upstream
        load = subprocess.Popen(
            pinned(1, [*cli, "bench", "--target", f"127.0.0.1:{hub_port}", *bench_args(args.profile),
                       "-n", "1000000000", "--window", str(args.window)]),
            stdout=(tmp / "load.out").open("w"), stderr=subprocess.STDOUT)
        procs.append(load)
        start = time.monotonic()
        end = start + args.minutes * 60
        cpu0 = cpu_seconds(hub.pid)
        while True:
            now = time.monotonic()
            samples.append({"t": round(now - start, 1), "accepted": accepted(metrics_port),
                            "rss_mib": round(rss_mib(hub.pid), 1),
                            "hub_cpu_s": round(cpu_seconds(hub.pid) - cpu0, 2)})
            if load.poll() is not None:  # report what was measured, and why it stopped
                stopped_early = f"the load client stopped after {now - start:.0f} s (exit {load.returncode})"
                break
            if now >= end:
                break
            time.sleep(min(args.sample, max(end - now, 0.0)))
    finally:
        stop(list(reversed(procs)))
        out = tmp / "load.out"
        load_said = out.read_text()[-2000:] if out.exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)
    minutes = per_minute(samples)
    report = {"receipts": args.receipts, "window": args.window, "samples": samples, "minutes": minutes}
    if stopped_early:
        report["stopped_early"] = stopped_early
        report["load_client_said"] = load_said
    if len(minutes) >= 2:
        first, last = minutes[0], minutes[-1]
        report["last_vs_first_throughput"] = round(last["msg_per_s"] / max(first["msg_per_s"], 1e-9), 3)
    tail = [s for s in samples if s["t"] >= samples[-1]["t"] - 300]
    if len(tail) >= 2 and samples[-1]["t"] >= 360:
        report["rss_growth_last_5_min"] = round(tail[-1]["rss_mib"] / tail[0]["rss_mib"] - 1, 4)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for m in minutes:
            print(f"minute {m['minute']:>3}: {m['msg_per_s']:8.0f} msg/s, RSS {m['rss_mib']:7.1f} MiB, "
                  f"hub CPU {m['hub_cpu_us_per_msg']:.0f} µs/msg")
        for key in ("last_vs_first_throughput", "rss_growth_last_5_min", "stopped_early", "load_client_said"):
            if key in report:
                print(f"{key}: {report[key]}")
    return 0


def per_minute(samples: list[dict]) -> list[dict]:
    """Throughput, hub CPU per message and RSS over each whole minute of the samples."""
    out = []
    minute = 1
    prev = samples[0] if samples else None
    for s in samples[1:]:
        if s["t"] >= minute * 60 - 1e-6:
            span = s["t"] - prev["t"]
            n = s["accepted"] - prev["accepted"]
            out.append({"minute": minute, "msg_per_s": n / span if span else 0.0, "rss_mib": s["rss_mib"],
                        "hub_cpu_us_per_msg": (s["hub_cpu_s"] - prev["hub_cpu_s"]) / max(n, 1) * 1e6})
            prev = s
            minute += 1
    return out


if __name__ == "__main__":
    sys.exit(main())
