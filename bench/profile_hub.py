"""Run ``staffetta`` under yappi's CPU clock and write where the time went.

    python bench/profile_hub.py OUT.txt run --config FILE

Used by ``bench_spine.py --profile OUT.txt``. The hub stops on SIGTERM as
usual; at exit this writes the functions by own CPU time and by inclusive CPU
time, per thread, so that a change to the hot path can be judged by where its
microseconds went and not only by a throughput figure that moves with the
machine.
"""

from __future__ import annotations

import atexit
import sys


def main() -> int:
    import yappi

    out, argv = sys.argv[1], sys.argv[2:]
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)

    def dump() -> None:
        yappi.stop()
        with open(out, "w") as f:
            for t in yappi.get_thread_stats():
                stats = yappi.get_func_stats(filter={"ctx_id": t.id})
                f.write(f"== thread {t.name} ({t.id}): {t.ttot:.3f} s CPU\n")
                for key, title in (("tsub", "own"), ("ttot", "inclusive")):
                    f.write(f"-- by {title} time\n")
                    stats.sort(key, "desc")
                    for s in list(stats)[:60]:
                        where = f"{s.module.rsplit('/', 2)[-1]}:{s.lineno}"
                        f.write(f"{s.tsub:9.3f} {s.ttot:9.3f} {s.ncall:>9} {s.name} ({where})\n")
                stats.sort("ncall", "desc")
                f.write("-- most called, and who calls them\n")
                top = list(stats)[:8]
                callers: dict[int, list[tuple[int, str]]] = {s.full_name: [] for s in top}
                for s in stats:
                    for c in s.children:
                        if c.full_name in callers:
                            callers[c.full_name].append((c.ncall, f"{s.name} ({s.module.rsplit('/', 1)[-1]}:{s.lineno})"))
                for s in top:
                    f.write(f"{s.ncall:>9} {s.name}\n")
                    for n, who in sorted(callers[s.full_name], reverse=True)[:8]:
                        f.write(f"{n:>15} {who}\n")

    atexit.register(dump)
    from staffetta.smsc.cli import main as staffetta

    return staffetta(argv)


if __name__ == "__main__":
    sys.exit(main())
