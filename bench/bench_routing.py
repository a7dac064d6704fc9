"""Microseconds per route decision: the route table in force choosing a message's connectors.

What the submit path pays for routing, per message: the route query (account,
destination, type, sender, groups, country) built from the assessment, the
table's match (prefix index, then the rules' conditions in order), the
rule's strategy (candidates; rotation for round-robin and weighted) and the
room check. Destinations come from the realistic mix (simulator/traffic.py),
each used once; the table is ``bench_spine.route_table`` (the one
``bench/instructions.py --routes N`` runs the hub with), over four connectors
that are up.

    python bench/bench_routing.py                 # 1 rule and 1,000 rules, 50,000 decisions, best of 5
    python bench/bench_routing.py --rules 1 100 1000 10000

Times are the process's CPU time (``time.process_time``), best round.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_spine import route_table  # noqa: E402

from staffetta.pdu.message import AccountPolicy, assess_submit  # noqa: E402
from staffetta.router.routes import Routing  # noqa: E402
from staffetta.router.table import table_from_config  # noqa: E402
from staffetta.simulator.traffic import Destinations  # noqa: E402

CONNECTORS = ["sim1", "sim2", "sim3", "sim4"]


class _Up:
    up = True
    delivery_ratio = None


def assessments(n: int) -> list:
    """``n`` assessed submits to distinct numbers of the realistic mix, SMART and PRO in turn."""
    dests = Destinations(seed=7)
    policy = AccountPolicy()
    out = []
    for i in range(n):
        fields = {
            "service_type": (b"SMART", b"PRO")[i % 2], "source_addr_ton": 5, "source_addr_npi": 0,
            "source_addr": b"Staffetta", "dest_addr_ton": 1, "dest_addr_npi": 1,
            "destination_addr": dests.next(), "esm_class": 0, "protocol_id": 0, "priority_flag": 0,
            "schedule_delivery_time": b"", "validity_period": b"", "registered_delivery": 1,
            "replace_if_present_flag": 0, "data_coding": 0, "sm_default_msg_id": 0, "sm_length": 5,
            "short_message": b"Hello",
        }
        out.append(assess_submit(fields, {}, policy))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=int, nargs="+", default=[1, 1000])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    msgs = assessments(args.n)
    views = {c: _Up() for c in CONNECTORS}
    accounts = ("acme", "shop", "bank")
    for n in args.rules:
        raw = route_table(n, CONNECTORS) if n > 1 else None
        routing = Routing(table_from_config(raw, CONNECTORS))
        best = float("inf")
        for _ in range(args.rounds):
            t0 = time.process_time()
            for i, a in enumerate(msgs):
                choice = routing.choose(routing.query(accounts[i % 3], a, 0.0), views, 0)
                assert choice is not None and choice.order
            best = min(best, time.process_time() - t0)
        print(f"{n:>6} rules: {best / len(msgs) * 1e6:6.2f} µs per decision (query + match + strategy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
