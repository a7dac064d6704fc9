"""The group-commit writer alone: CPU per message of the hub's four writes, on a real SQLite file.

The writer thread is about a quarter of the hub's CPU (docs/benchmarks.md).
This replays what the hub hands it for each message, through the real
handlers and :meth:`GroupCommitWriter._write` (one transaction per batch),
in the main thread with no reactor, so that one change to the store can be
judged in seconds, A against B in one process:

* the debit and the message row (``paid_messages``), batch t;
* the carrier id (``upstream``), batch t + 1;
* the final state with the client's receipt in the outbox, for 90% of
  messages (``outcomes``), batch t + ``--receipt-lag``;
* the outbox row's delete once the client answered (``delivered``), two
  batches later.

So a batch carries about 4 items per message in it, as in the spine
benchmark (yappi: ~8 items a batch at window 50 on this machine).

    python bench/bench_writer.py                     # 3 rounds of 20,000 messages, 2 messages a batch
    python bench/bench_writer.py --per-batch 8 --pragma wal_autocheckpoint=10000
    valgrind --tool=callgrind python bench/bench_writer.py --messages 3000 --rounds 1

Prints CPU µs per message (process time) per round, and the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import event

import staffetta.billing.accounts as accounts
import staffetta.router.messages as store
from staffetta.billing import wallet
from staffetta.pdu.constants import MessageState
from staffetta.router.messages import Delivery
from staffetta.router.record import MessageRecord
from staffetta.store.db import create_schema, make_engine
from staffetta.store.writer import GroupCommitWriter


class _Inline:
    """The reactor as the writer sees it: results are dropped (nobody waits here)."""

    @staticmethod
    def callFromThread(f, *args) -> None:  # noqa: N802 - Twisted's name
        f(*args)


def _record(mid: int, account_id: int, now: float) -> MessageRecord:
    a = SimpleNamespace(sender=SimpleNamespace(addr="Staffetta", ton=5, npi=0),
                        destination=SimpleNamespace(e164=f"39347{mid:07d}"[-12:]),
                        msg_type="PRO", segments=1, text="Hello, your code is 1234")
    fields = {"service_type": b"", "esm_class": 0, "protocol_id": 0, "priority_flag": 0,
              "registered_delivery": 1, "data_coding": 0,
              "short_message": b"Hello, your code is 1234 and some more words to be typical " * 2}
    return MessageRecord.from_submit(mid, account_id, fields, {}, a, now, now + 86400, "default", None)


def run(args, pragmas: list[str]) -> float:
    with tempfile.TemporaryDirectory() as d:
        engine = make_engine(f"sqlite:///{Path(d) / 'staffetta.db'}")
        if pragmas:
            @event.listens_for(engine, "connect")
            def _more(dbapi_conn, _record) -> None:
                for p in pragmas:
                    dbapi_conn.execute(f"PRAGMA {p}")

        create_schema(engine)
        store.upgrade(engine)
        with engine.begin() as conn:
            ids = []
            for i in range(3):
                a = accounts.create_account(conn, f"bench{i}", "pw")
                wallet.topup(conn, a.id, 10**12, now=1)
                ids.append(a.id)
        writer = GroupCommitWriter(engine, _Inline())
        store.register_handlers(writer)
        later: deque[list] = deque([] for _ in range(args.receipt_lag + 3))
        mid = oid = 0
        now = 1000.0
        per = args.per_batch
        n_batches = args.messages // per
        t0 = time.process_time()
        for _ in range(n_batches):
            batch = later.popleft()
            later.append([])
            for _ in range(per):
                mid += 1
                r = _record(mid, ids[mid % 3], now)
                batch.append(("paid_messages", (r, 160), None))
                # As the router sends it: the state is a MessageState member.
                later[0].append(("upstream", (mid, "sim", f"{mid:x}", MessageState.ENROUTE), None))
                if mid % 10:
                    oid += 1
                    d = Delivery(oid, r.account_id, mid, "dlr", b"\x00" * 180, now, now + 3 * 86400)
                    later[args.receipt_lag - 1].append(("outcomes", (mid, 2, 0, now, d, None, None), None))
                    later[args.receipt_lag + 1].append(("delivered", oid, None))
                else:
                    later[args.receipt_lag - 1].append(("outcomes", (mid, 2, 0, now, None, None, None), None))
            # Kinds in the order the hub's reactor tends to append them within a turn.
            order = {"delivered": 0, "outcomes": 1, "upstream": 2, "paid_messages": 3}
            batch.sort(key=lambda e: order[e[0]])
            writer._write(batch)
            now += 0.001
        cpu = time.process_time() - t0
        engine.dispose()
        return cpu / (n_batches * per) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-batch", type=int, default=2, help="new messages per group commit")
    ap.add_argument("--receipt-lag", type=int, default=50, help="batches between a message and its outcome")
    ap.add_argument("--pragma", action="append", default=[], help="an extra PRAGMA for the writer's connection")
    args = ap.parse_args()
    got = [run(args, args.pragma) for _ in range(args.rounds)]
    print(f"writer: {statistics.median(got):.1f} µs CPU per message (rounds: "
          f"{', '.join(f'{g:.1f}' for g in got)}), {args.per_batch} messages a batch, "
          f"pragmas {args.pragma or 'default'}  [python {sys.version.split()[0]}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
