"""Microseconds per never-seen number: the old phonenumbers path against the numbering plan.

Bulk traffic goes to a different number almost every time, so what counts is
the cost of a number the process has not seen. Every round draws fresh,
distinct numbers (mobiles of the countries below with random subscriber
digits; a few landlines and malformed numbers as real traffic has), and each
path sees each number once:

* ``phonenumbers``  - what ``pdu.addresses`` did before the plan: ``parse``,
  ``is_valid_number``, ``number_type``, ``format_number`` and
  ``region_code_for_number`` (without its per-number cache, which a new
  number always misses);
* ``plan.read``     - :meth:`pdu.numbering.NumberingPlan.read` alone;
* ``destination``   - the whole destination check the submit path runs,
  ``pdu.addresses.normalize_destination`` (TON 1, and TON 0 with a national
  number, which reads nationally first);
* ``sender``        - ``pdu.addresses.check_sender`` with a numeric sender;
* ``destination + LRU`` - the destination check behind the per-number LRU it
  had before (100,000 entries, filled first: the steady state of a busy hub),
  on new numbers (a miss) and on numbers it holds (a hit): what the cache
  would cost and save.

    python bench/bench_numbering.py              # 20,000 numbers a round, best of 5
    python bench/bench_numbering.py --n 5000 --rounds 3

Times are the process's CPU time (``time.process_time``: the machine is
shared, and wall time counts the other processes' turns), best round.
Building the plan is timed once, separately.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType

#: (calling code, a national mobile prefix, subscriber digits) of the countries a price plan serves.
MOBILES = (
    (39, "34", 8), (39, "33", 8), (39, "32", 8), (44, "74", 8), (44, "79", 8), (49, "151", 8),
    (49, "176", 8), (33, "6", 8), (33, "7", 8), (34, "6", 8), (1, "2015", 6), (1, "4155", 6),
    (1, "6135", 6), (55, "119", 8), (91, "98", 8), (7, "912", 7), (7, "701", 7), (41, "79", 7),
    (31, "61", 7), (48, "50", 7), (90, "53", 8), (62, "812", 8), (52, "1551", 7), (234, "803", 7),
)
#: Landlines and malformed numbers, about one in twenty.
OTHERS = ((39, "06", 8), (44, "20", 8), (49, "30", 8), (39, "34", 4), (44, "74", 12))
_MOBILE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


def numbers(n: int, rng: random.Random, seen: set[str]) -> list[str]:
    """``n`` distinct E.164 numbers (no '+') never returned before."""
    out: list[str] = []
    while len(out) < n:
        cc, prefix, k = rng.choice(OTHERS) if rng.random() < 0.05 else rng.choice(MOBILES)
        s = f"{cc}{prefix}{rng.randrange(10 ** k):0{k}d}"
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def old_destination(digits: str) -> tuple[str, str, int] | None:
    """The destination check before the plan (TON 1), without its cache."""
    try:
        num = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    if not (phonenumbers.is_valid_number(num) and phonenumbers.number_type(num) in _MOBILE):
        return None
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)[1:]
    return e164, phonenumbers.region_code_for_number(num) or "ZZ", num.country_code


def per_number(fn: Callable[[str], object], batch: list[str]) -> float:
    t = time.process_time()
    for d in batch:
        fn(d)
    return (time.process_time() - t) / len(batch) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="numbers per round (default 20,000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the best is reported (default 5)")
    ap.add_argument("--seed", type=int, default=15)
    args = ap.parse_args()
    if args.n < 1 or args.rounds < 1:
        ap.error("--n and --rounds must be at least 1")

    t = time.perf_counter()
    from staffetta.pdu.addresses import check_sender, normalize_destination
    from staffetta.pdu.errors import SubmitRejected
    from staffetta.pdu.numbering import plan

    p = plan()
    p.compile_all()  # no first-use compile inside the timed loops
    print(f"plan built in {time.perf_counter() - t:.2f} s ({len(p.codes)} calling codes, every length)")

    def dest_ton1(d: str) -> object:
        try:
            return normalize_destination(d.encode(), 1, 1, 39)
        except SubmitRejected:
            return None

    def dest_ton0_national(d: str) -> object:
        try:  # the Italian numbers arrive national, the rest international
            return normalize_destination((d[2:] if d.startswith("39") else d).encode(), 0, 1, 39)
        except SubmitRejected:
            return None

    def sender(d: str) -> object:
        try:
            return check_sender(d.encode(), 1, 1)
        except SubmitRejected:
            return None

    cached = lru_cache(maxsize=100_000)(dest_ton1)
    for d in numbers(100_000, random.Random(args.seed + 1), set()):
        cached(d)  # a full cache: misses now evict
    paths: list[tuple[str, Callable[[str], object]]] = [
        ("phonenumbers (before)", old_destination),
        ("plan.read", p.read),
        ("destination TON 1", dest_ton1),
        ("destination TON 0", dest_ton0_national),
        ("sender TON 1", sender),
        ("destination + LRU, miss", cached),
    ]
    rng, seen = random.Random(args.seed), set()
    best = {name: float("inf") for name, _ in paths}
    hit = float("inf")
    for _ in range(args.rounds):
        for name, fn in paths:
            batch = numbers(args.n, rng, seen)
            best[name] = min(best[name], per_number(fn, batch))
        hit = min(hit, per_number(cached, batch[-min(args.n, 50_000):]))
    check = numbers(min(args.n, 2000), rng, seen)
    agree = sum(old_destination(d) == ((r.e164, r.region, r.calling_code) if (r := dest_ton1(d)) else None)
                for d in check)
    print(f"{'path':<26}{'µs per never-seen number':>26}")
    for name, _ in paths:
        print(f"{name:<26}{best[name]:>26.2f}")
    print(f"{'destination + LRU, hit':<26}{hit:>26.2f}  (a number it holds)")
    print(f"old and new agree on {agree} of {len(check)} fresh numbers; "
          f"{args.rounds} rounds of {args.n:,}, best round, CPU time")


if __name__ == "__main__":
    main()
