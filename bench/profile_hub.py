"""Run ``staffetta`` under yappi's CPU clock and write where the time went.

    python bench/profile_hub.py OUT.txt run --config FILE

Used by ``bench_spine.py --yappi OUT.txt``. SIGUSR1 clears the figures
(bench_spine sends it before each window's load, so they cover the last
window alone). The hub stops on SIGTERM as usual; at exit this writes first a table of the hub's stages per submit_sm
(:data:`STAGES`: the inclusive CPU time of each stage's entry points, the
table of docs/benchmarks.md), then the functions by own CPU time and by
inclusive CPU time, per thread, so that a change to the hot path can be judged
by where its microseconds went and not only by a throughput figure that moves
with the machine.
"""

from __future__ import annotations

import atexit
import signal
import sys
from typing import Any

#: (stage, [(file name, function)]): a stage's time is the inclusive CPU time of
#: its entry points on the reactor thread. Indented stages are part of the one
#: above. Nested functions are named as yappi names them (``committed``).
STAGES: list[tuple[str, list[tuple[str, str]]]] = [
    ("PDUs in: framing and decoding (Session.receive)", [("session.py", "Session.receive")]),
    ("PDUs out: encoding (Session._emit, send_encoded)",
     [("session.py", "Session._emit"), ("session.py", "Session.send_encoded")]),
    ("client submit_sm (HubProtocol._submit)", [("server.py", "HubProtocol._submit")]),
    ("  assessment (assess_submit)", [("message.py", "assess_submit")]),
    ("    destination check (normalize_destination)", [("addresses.py", "normalize_destination")]),
    ("    sender check (check_sender)", [("addresses.py", "check_sender")]),
    ("  pricing (quote)", [("plans.py", "quote")]),
    ("  message row and hand-off to the writer (_store)", [("server.py", "HubProtocol._store")]),
    ("submit committed: answer, forward upstream", [("server.py", "committed")]),
    ("  forward (Router.forward)", [("router.py", "Router.forward")]),
    ("carrier submit_sm_resp (UpstreamProtocol.on_response)", [("upstream.py", "UpstreamProtocol.on_response")]),
    ("carrier receipt in (Router.carrier_pdu)", [("router.py", "Router.carrier_pdu")]),
    ("receipt committed: to the outbox (router committed)", [("router.py", "committed")]),
    ("  receipt queued and sent to the client (Outbox.add: line, window, send_encoded)",
     [("outbox.py", "Outbox.add")]),
    ("client deliver_sm_resp (HubProtocol.on_response)", [("server.py", "HubProtocol.on_response")]),
    ("commit results back on the reactor (writer _fire: includes both 'committed' rows)",
     [("writer.py", "_fire")]),
]


def _matches(stat: Any, file: str, fn: str) -> bool:
    name = stat.name
    return stat.module.endswith("/" + file) and (name == fn or name.endswith("." + fn))


def stage_table(yappi: Any) -> str:
    """The stages per submit_sm, as a Markdown table (messages = calls of HubProtocol._submit)."""
    threads = list(yappi.get_thread_stats())
    main = next((t for t in threads if t.name == "_MainThread"), threads[0] if threads else None)
    if main is None:
        return "no thread stats\n"
    stats = list(yappi.get_func_stats(filter={"ctx_id": main.id}))
    messages = sum(s.ncall for s in stats if _matches(s, "server.py", "HubProtocol._submit")) or 1
    others = sum(t.ttot for t in threads if t is not main)
    total = main.ttot + others
    lines = [f"{messages} submit_sm; CPU per submit_sm under yappi (several times the real figure: "
             "the shares are what count; stages nest, so they do not add up)",
             "", "| stage | µs per submit_sm | share of the hub's CPU |", "|---|---|---|"]
    for label, entries in STAGES:
        t = sum(s.ttot for s in stats for f, fn in entries if _matches(s, f, fn))
        name = label.strip()
        indent = (len(label) - len(label.lstrip())) // 2
        lines.append(f"| {'&nbsp;&nbsp;' * 2 * indent}{name} | {t / messages * 1e6:.1f} | {t / total:.1%} |")
    lines.append(f"| reactor thread in all | {main.ttot / messages * 1e6:.1f} | {main.ttot / total:.1%} |")
    lines.append(f"| other threads (group-commit writer, password checks) | {others / messages * 1e6:.1f} | "
                 f"{others / total:.1%} |")
    # The writer (the busiest other thread): SQLite's statements, its commits, and the Python around them.
    writer = max((t for t in threads if t is not main), key=lambda t: t.ttot, default=None)
    if writer is not None:
        wstats = list(yappi.get_func_stats(filter={"ctx_id": writer.id}))

        def builtin(*names: str) -> float:
            return sum(st.ttot for st in wstats if st.module == "builtins" and any(
                st.name == f"<method '{n}' of 'sqlite3.{k}' objects>" for n in names for k in ("Connection", "Cursor")))

        sql = builtin("executemany", "execute", "fetchone", "fetchall")
        commit = builtin("commit")
        for label, t in (("&nbsp;&nbsp;writer: SQL statements in SQLite (executemany, execute, fetch)", sql),
                         ("&nbsp;&nbsp;writer: commits in SQLite (the WAL's page writes)", commit),
                         ("&nbsp;&nbsp;writer: Python (handlers, transaction, hand-back, waits)", writer.ttot - sql - commit)):
            lines.append(f"| {label} | {t / messages * 1e6:.1f} | {t / total:.1%} |")
    return "\n".join(lines) + "\n\n"


def main() -> int:
    import yappi

    out, argv = sys.argv[1], sys.argv[2:]
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)

    def dump() -> None:
        yappi.stop()
        with open(out, "w") as f:
            f.write(stage_table(yappi))
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
    # bench_spine.py sends SIGUSR1 just before each load: start-up (imports,
    # schema, binds) and the earlier windows leave the figures.
    signal.signal(signal.SIGUSR1, lambda *_: yappi.clear_stats())
    from staffetta.smsc.cli import main as staffetta

    return staffetta(argv)


if __name__ == "__main__":
    sys.exit(main())
