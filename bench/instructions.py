"""Instructions the hub executes per message, counted by valgrind: a figure that does not move with the machine.

This machine's speed moves by 2-4x with its neighbours, so a change of a few
percent cannot be seen in msg/s or CPU seconds. ``valgrind --tool=callgrind``
counts the instructions the hub process runs, the same from run to run
(within ~1%) whatever else the machine does. The hub runs under callgrind
twice, for a small and a large number of messages at window 50 (simulator and
client run natively); the difference divided by the difference in messages is
the per-message cost without start-up. Reported per thread: the reactor
(main) thread and the others (the group-commit writer, and the thread pool
that checks the bind password).

    python bench/instructions.py               # the realistic mix, 500 and 3000 messages, ~2 min
    python bench/instructions.py --profile single-destination   # one number, as before
    python bench/instructions.py --small 300 --large 1500
    python bench/instructions.py --routes 1000      # a 1,000-rule route table over four connectors
    python bench/instructions.py --keep /tmp/cg   # then: callgrind_annotate /tmp/cg/cg-3000.*-01 (and cg-500.*)

"Messages" are submit_sm PDUs (a long message sent as 3 UDH parts counts 3).

Kernel work (system calls) is not counted: compare user-space work with it,
and check a change's effect on throughput with bench_spine.py.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_spine import accounts_for, bench_args, create_accounts, free_port, hub_config, wait_port  # noqa: E402


def thread_totals(prefix: str) -> list[int]:
    """Instructions per thread, main thread first, from callgrind's per-thread files."""
    totals = []
    for path in sorted(glob.glob(prefix + ".*-*"), key=lambda p: int(p.rsplit("-", 1)[1])):
        with open(path) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    totals.append(int(line.split()[1]))
                    break
    return totals


def warm_binds(port: int, profile: str, timeout: float = 600.0) -> None:
    """Bind and unbind each account once, waiting as long as valgrind needs.

    A password check is scrypt (~50 ms natively, many seconds under callgrind,
    one at a time): the load client's 30 s bind time-out can expire. After one
    good bind the hub checks the same password from its cache of recent
    successes, so the load client's binds are quick. Both runs do the same
    binds, so the per-message difference does not include them.
    """
    import socket

    from staffetta.pdu.codec import Pdu, decode, encode
    from staffetta.pdu.constants import Command

    def read_pdu(sock: socket.socket) -> Pdu:
        data = b""
        while len(data) < 4 or len(data) < int.from_bytes(data[:4], "big"):
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit("the hub closed the warm-up bind")
            data += chunk
        return decode(data)

    for name, password in accounts_for(profile):
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(encode(Pdu(Command.BIND_TRANSCEIVER, 1, 0, {
                "system_id": name.encode(), "password": password.encode(), "interface_version": 0x34})))
            resp = read_pdu(sock)
            if resp.status:
                raise SystemExit(f"warm-up bind of {name} refused: 0x{resp.status:08x}")
            sock.sendall(encode(Pdu(Command.UNBIND, 2, 0)))
            read_pdu(sock)


def one_run(n: int, work: Path, profile: str, routes: int = 0) -> tuple[list[int], dict]:
    py = sys.executable
    cli = [py, "-m", "staffetta.smsc.cli"]
    data = work / f"data-{n}"
    sim_port, hub_port = free_port(), free_port()
    create_accounts(cli, ["--data-dir", str(data)], profile)
    cfg = work / f"hub-{n}.yaml"
    cfg.write_text(hub_config(hub_port, sim_port, f"data_dir: {data}\n", routes=routes))
    sim = subprocess.Popen([*cli, "simulator", "--listen", f"127.0.0.1:{sim_port}", "--dlr-delay", "0.1", "--hlr", "off",
                            "--control", "off"], stdout=subprocess.DEVNULL)
    prefix = str(work / f"cg-{n}")
    hub = None
    try:
        wait_port(sim_port)
        hub = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={prefix}.%p",
             *cli, "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(hub_port, timeout=1200)  # minutes under valgrind on a loaded machine
        time.sleep(3)  # the connector binds upstream, slowly under valgrind
        warm_binds(hub_port, profile)
        run = subprocess.run(
            [*cli, "bench", "--target", f"127.0.0.1:{hub_port}", *bench_args(profile),
             "-n", str(n), "--window", "50", "--json"],
            capture_output=True, text=True,
        )
        if run.returncode:
            raise SystemExit(f"staffetta bench failed ({run.returncode}): {run.stderr.strip()[-2000:]}")
        out = run.stdout
        import json

        result = json.loads(out)
        time.sleep(1)  # the last deliver_sm_resp and its delete
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=120)
    finally:
        if hub is not None and hub.poll() is None:
            hub.kill()
        sim.terminate()
        sim.wait(timeout=10)
    return thread_totals(prefix), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--large", type=int, default=3000)
    ap.add_argument("--profile", choices=("realistic", "single-destination"), default="realistic",
                    help="the traffic (default realistic: docs/benchmarks.md)")
    ap.add_argument("--routes", type=int, default=0, metavar="N",
                    help="a route table of N rules over four connectors (default 0: one connector, no table)")
    ap.add_argument("--keep", metavar="DIR",
                    help="copy both runs' callgrind files here (per function: callgrind_annotate DIR/cg-N.PID-01; "
                         "the per-message cost of a function is its large-run count minus its small-run count, "
                         "divided by the difference in messages)")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="staffetta-instr-"))
    try:
        small, r_small = one_run(args.small, work, args.profile, args.routes)
        large, r_large = one_run(args.large, work, args.profile, args.routes)
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            for f in glob.glob(str(work / "cg-*")):
                shutil.copy(f, args.keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in (r_small, r_large):
        if r["accepted"] != r["sent"] or r["receipts"] != r["receipts_expected"] or r["lost"]:
            print(f"run incomplete: {r}", file=sys.stderr)
            return 1
    n = args.large - args.small
    main_per = (large[0] - small[0]) / n
    other_per = (sum(large[1:]) - sum(small[1:])) / n
    table = f", {args.routes} rules over 4 connectors" if args.routes else ""
    print(f"instructions per message ({args.profile}{table}, window 50, {args.small} vs {args.large} messages): "
          f"reactor thread {main_per:,.0f}, other threads {other_per:,.0f}, "
          f"total {main_per + other_per:,.0f}  [python {sys.version.split()[0]}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
