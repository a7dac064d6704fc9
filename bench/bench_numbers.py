"""Microseconds per owner decision and per pool sender (router/numbers.py), issue 14 item 10.

The ledger is sized like a busy hub: 200 accounts, a REPLY pool of 1,000 and
a SMART pool of 200 numbers, 1,000 shared-number codes and aliases, 2,000
keywords, 100,000 opt-outs and ``--conversations`` open reply windows (default
1,000,000: a window's worth of REPLY traffic). Each path then runs on
``--n`` fresh MO or MT:

* ``owner: reply window`` - an MO answering an MT (the window hit, its keyword check);
* ``owner: dedicated``    - an MO to a dedicated number;
* ``owner: code + keyword`` - an MO to a shared number, "CODE WORD ...";
* ``owner: dead letter``  - an MO to a shared number whose first word is no code;
* ``sender: SMART``       - the rotating pool sender of an MT;
* ``sender: REPLY (new)`` - a REPLY to a handset the account never wrote to (a number held);
* ``sender: REPLY (sticky)`` - again to the same handset;
* ``opted_out``           - the opt-out check every MT pays.

    python bench/bench_numbers.py                  # 100,000 a path, best of 5
    python bench/bench_numbers.py --n 20000 --rounds 3 --conversations 100000

Times are CPU time (``time.process_time``: the machine is shared), best round.
"""

from __future__ import annotations

import argparse
import random
import time

from staffetta.router.numbers import Configured, Keyword, Numbers


def build(conversations: int, rng: random.Random) -> tuple[Numbers, list[tuple[int, str, str]]]:
    reply = tuple(f"3934{i:08d}" for i in range(1000))
    smart = tuple(f"3935{i:08d}" for i in range(200))
    shared = "393600000000"
    codes = {str(10001 + a): (a, "code") for a in range(1, 201)}
    codes |= {f"SHOP{a:04d}": (a, "alias") for a in range(1, 801)}
    kws = {(a, w): Keyword(a, w, "reply", "thanks") for a in range(1, 201) for w in
           ("PROMO", "INFO", "ORDER", "CIAO", "SALDI", "NEWS", "TRACK", "PIZZA", "SCONTO", "VIP")}
    dedicated = {f"3937{i:08d}": 1 + i % 200 for i in range(1000)}
    opt = frozenset((1 + i % 200, f"39348{i:07d}") for i in range(100_000))
    c = Configured(pools={"REPLY": {0: reply}, "SMART": {0: smart}},
                   shared=frozenset({shared, *reply, *smart}), dedicated=dedicated, codes=codes,
                   keywords=kws, opt_outs=opt)
    n = Numbers(configured=c)
    now = 1_800_000_000.0
    open_ = []
    for i in range(conversations):
        account, handset = 1 + i % 200, f"39333{i:07d}"
        num = n.sender_for(account, handset, "REPLY", now)
        n.remember_mt(account, handset, num, now)
        open_.append((account, handset, num))
    return n, open_


def timed(fn, items) -> float:
    t = time.process_time()
    for item in items:
        fn(*item)
    return (time.process_time() - t) / len(items) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--conversations", type=int, default=1_000_000)
    args = ap.parse_args()
    rng = random.Random(14)
    t = time.process_time()
    n, open_ = build(args.conversations, rng)
    print(f"ledger built: {args.conversations:,} conversations in {time.process_time() - t:.1f} s CPU")
    now = 1_800_000_000.0 + 3600
    best: dict[str, float] = {}
    for r in range(args.rounds):
        sample = [open_[rng.randrange(len(open_))] for _ in range(args.n)]
        ded = [f"3937{rng.randrange(1000):08d}" for _ in range(args.n)]
        paths = {
            "owner: reply window": (n.owner_of, [(h, num, "si grazie", now) for _, h, num in sample]),
            "owner: dedicated": (n.owner_of, [(f"39338{i:07d}", d, "ciao", now) for i, d in enumerate(ded)]),
            "owner: code + keyword": (n.owner_of, [(f"39338{i:07d}", "393600000000",
                                                    f"{10001 + rng.randrange(200)} promo oggi", now)
                                                   for i in range(args.n)]),
            "owner: dead letter": (n.owner_of, [(f"39338{i:07d}", "393600000000", "hello there", now)
                                                for i in range(args.n)]),
            "sender: SMART": (n.sender_for, [(1 + i % 200, f"39339{r}{i:06d}", "SMART", now)
                                             for i in range(args.n)]),
            "sender: REPLY (new)": (n.sender_for, [(1 + i % 200, f"39337{r}{i:06d}", "REPLY", now)
                                                   for i in range(args.n)]),
            "sender: REPLY (sticky)": (n.sender_for, [(a, h, "REPLY", now) for a, h, _ in sample]),
            "opted_out": (n.opted_out, [(1 + i % 200, f"39348{i:07d}") for i in range(args.n)]),
        }
        for name, (fn, items) in paths.items():
            us = timed(fn, items)
            best[name] = min(best.get(name, us), us)
    for name, us in best.items():
        print(f"{name:<24} {us:6.2f} µs")


if __name__ == "__main__":
    main()
