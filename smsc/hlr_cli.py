"""``staffetta hlr``: verify, resume, jobs, lookup.

``smsc/cli.py`` calls :func:`register` with its sub-parsers and an
``engine_factory(args) -> Engine`` (which reads ``--config`` / ``--data-dir``).
Every verb takes ``--json``; errors are one line naming the option, exit 2;
a run that could not finish (provider down, no credit, interrupted) exits 1.

This module is the CLI edge (in smsc/, which may import every package), so it is where the HLR meets billing: it reads
the account (``billing.accounts.get_account``), its plan's HLR price
(``billing.plans``) and charges through ``billing.wallet.debit_batch`` with
ledger rows of kind ``hlr``. The rest of ``hlr/`` takes the charge as an
injected callable and imports nothing from billing.

Providers: ``--provider-url`` (the simulator's base URL, e.g.
http://127.0.0.1:2778; a URL containing ``{number}`` is a generic provider
answering in Staffetta's own result JSON), else the ``hlr.provider`` section of
``--config``, else the HLR simulator of a ``staffetta demo`` running on the same
data dir (its ``addresses.json``), else the simulator on 127.0.0.1:2778.

``--json`` gives credits as decimal strings (``"1.50"``), as the account verbs do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from staffetta.billing.money import format_credits
from staffetta.conf.settings import DEFAULT_DATA_DIR, describe_store, read_addresses
from staffetta.hlr.model import parse_age
from staffetta.smsc.hlr_billing import billing_charge_tx

DEFAULT_PROVIDER_URL = "http://127.0.0.1:2778"


# ------------------------------------------------------------------ plumbing


class UsageError(Exception):
    """One line naming the option; exit status 2."""


def _err(msg: str) -> None:
    print(f"staffetta hlr: {msg}", file=sys.stderr)


def _raw_config(args: Any) -> dict:
    path = getattr(args, "config", None)
    if not path:
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise UsageError(f"--config: cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UsageError(f"--config: {path} is not valid YAML") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config: {path} is not a mapping of settings")
    return data


def _hlr_config(args: Any) -> dict:
    section = _raw_config(args).get("hlr") or {}
    return section if isinstance(section, dict) else {}


def _check_provider_url(args: Any) -> None:
    url = getattr(args, "provider_url", None)
    if url and not url.startswith(("http://", "https://")):
        raise UsageError(f"--provider-url: {url!r} is not an http(s) URL")


def _validate_provider(args: Any) -> None:
    """Build the provider once off the reactor: a bad ``hlr.provider`` fails before a job is created."""
    from twisted.internet import reactor

    build_provider(args, reactor).close()


def _data_dir(args: Any) -> str:
    return getattr(args, "data_dir", None) or _raw_config(args).get("data_dir") or DEFAULT_DATA_DIR


def default_provider_url(args: Any) -> str:
    """The HLR of the demo running on this data dir (its addresses file), else 127.0.0.1:2778."""
    url = read_addresses(_data_dir(args)).get("hlr")
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else DEFAULT_PROVIDER_URL


def build_provider(args: Any, reactor: Any, *, concurrency: int = 20) -> Any:
    from staffetta.hlr.providers import HttpJsonProvider, provider_from_config, simulator_provider

    _check_provider_url(args)
    url = getattr(args, "provider_url", None)
    if url:
        if "{number}" in url:
            from staffetta.hlr.providers import MAPPABLE

            identity = {k: k for k in MAPPABLE if k not in ("mccmnc", "original_mccmnc")}
            return HttpJsonProvider(reactor, "http", url, field_mapping=identity, max_concurrency=concurrency)
        return simulator_provider(reactor, url, max_concurrency=concurrency)
    section = _hlr_config(args).get("provider")
    if section:
        section = dict(section)
        section.setdefault("max_concurrency", concurrency)
        return provider_from_config(reactor, section)
    return simulator_provider(reactor, default_provider_url(args), max_concurrency=concurrency)


def _store(engine: Any) -> str:
    return describe_store(engine.url.render_as_string(hide_password=False))



def _account(engine: Any, name: str) -> Any:
    from staffetta.billing.accounts import get_account

    with engine.connect() as conn:
        acct = get_account(conn, name)
    if acct is None:
        raise UsageError(f"--account: no account named {name!r} in {_store(engine)}")
    return acct


def hlr_price(args: Any, account: Any) -> int:
    """The account's plan HLR price from the config's ``billing:`` section; 50 without one."""
    from staffetta.hlr.service import DEFAULT_PRICE

    section = _raw_config(args).get("billing")
    if not section:
        return DEFAULT_PRICE
    from staffetta.billing.plans import billing_from_dict

    return billing_from_dict(section).plan(account.price_plan).hlr_price


def _credits(centi: int) -> str:
    sign = "-" if centi < 0 else ""
    centi = abs(centi)
    return f"{sign}{centi // 100:,}.{centi % 100:02d}"


def _job_doc(info: Any) -> dict[str, Any]:
    """A job as JSON: credits as decimal strings, like every other ``--json``."""
    d = info.to_dict()
    d["price"] = format_credits(d["price"])
    d["charged"] = format_credits(d["charged"])
    return d


def _check_out(out: str | None) -> None:
    """Refuse an unwritable ``--out`` before the job spends anything."""
    if not out:
        return
    existed = os.path.exists(out)
    try:
        with open(out, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise UsageError(f"--out: cannot write {out}: {exc.strerror}") from None
    if not existed:
        os.unlink(out)


def _engine(args: Any, engine_factory: Callable[[Any], Any]) -> Any:
    from staffetta.hlr.jobs import create_tables

    engine = engine_factory(args)
    create_tables(engine)
    return engine


def _run_reactor(main: Callable[[Any], Any], on_interrupt: Callable[[], Any] | None = None) -> Any:
    """Run ``main(reactor) -> Deferred`` on the reactor; its result, or raise its failure."""
    from twisted.internet import defer
    from twisted.internet import reactor as r
    from twisted.internet.error import ReactorNotRunning

    box: dict[str, Any] = {}

    def start() -> None:
        d = defer.maybeDeferred(main, r)
        box["d"] = d

        def done(outcome: Any) -> None:
            box["outcome"] = outcome
            try:
                r.stop()
            except ReactorNotRunning:
                pass

        d.addBoth(done)

    def before_shutdown() -> Any:
        d = box.get("d")
        if d is None or "outcome" in box:
            return None
        if on_interrupt is not None:
            on_interrupt()
        waiter: defer.Deferred = defer.Deferred()
        d.addBoth(lambda o: (waiter.callback(None), o)[1])
        return waiter

    r.callWhenRunning(start)
    r.addSystemEventTrigger("before", "shutdown", before_shutdown)
    r.run()
    outcome = box.get("outcome")
    from twisted.python.failure import Failure

    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome


class _Bar:
    """The progress line on stderr: redrawn in place on a terminal, a line every 5 s otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.drawn = False

    def __call__(self, p: Any) -> None:
        if not self.enabled:
            return
        from staffetta.hlr.jobs import format_progress

        now = time.monotonic()
        if self.tty:
            if now - self.last < 0.2:
                return
            sys.stderr.write("\r" + format_progress(p) + "\x1b[K")
            self.drawn = True
        else:
            if now - self.last < 5.0:
                return
            sys.stderr.write(format_progress(p) + "\n")
        sys.stderr.flush()
        self.last = now

    def end(self, p: Any) -> None:
        if not self.enabled or p is None:
            return
        from staffetta.hlr.jobs import format_progress

        sys.stderr.write(("\r" if self.tty else "") + format_progress(p) + ("\x1b[K" if self.tty else "") + "\n")
        sys.stderr.flush()


# ------------------------------------------------------------------- verbs


def _run_job(args: Any, engine: Any, job_id: int) -> tuple[Any, int]:
    """Run or resume ``job_id``; (JobInfo, lookups made)."""
    from staffetta.hlr.jobs import JobRunner
    from staffetta.store.writer import GroupCommitWriter

    bar = _Bar(not getattr(args, "no_progress", False))
    holder: dict[str, Any] = {}

    async def main(reactor: Any) -> Any:
        provider = build_provider(args, reactor, concurrency=args.concurrency)
        writer = GroupCommitWriter(engine, reactor)
        writer.start()
        runner = JobRunner(reactor, engine, provider, billing_charge_tx, writer,
                           concurrency=args.concurrency, progress=bar)
        holder["runner"] = runner
        try:
            return await runner.run(job_id)
        finally:
            await writer.stop()
            await provider.close()

    def interrupted() -> None:
        if "runner" in holder:
            holder["runner"].stop()

    info = _run_reactor(main, interrupted)
    runner = holder.get("runner")
    bar.end(runner.progress if runner else None)
    return info, runner.lookups if runner else 0


def _status_breakdown(engine: Any, job_id: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from staffetta.hlr.jobs import hlr_job_items

    with engine.connect() as conn:
        return {str(r or "pending"): int(n) for r, n in conn.execute(
            select(hlr_job_items.c.result, func.count()).where(hlr_job_items.c.job_id == job_id)
            .group_by(hlr_job_items.c.result))}


def _finish_report(args: Any, engine: Any, info: Any, lookups: int, resumed: bool) -> int:
    from staffetta.hlr.jobs import FINISHED, write_results

    out = getattr(args, "out", None)
    written = write_results(engine, info.id, out) if out else None
    statuses = _status_breakdown(engine, info.id)
    if args.json:
        d = _job_doc(info)
        d.update({"resumed": resumed, "lookups_this_run": lookups, "statuses": statuses, "out": out})
        print(json.dumps(d))
    else:
        c = info.counts
        print(f"job {info.id} ({info.account}): {info.state}"
              + (f" - {info.detail}" if info.detail else ""))
        print(f"  numbers   {info.total:,} distinct ({c.get('invalid', 0):,} not mobile numbers)")
        print(f"  looked up {c.get('done', 0):,}, charged {_credits(c.get('charged', 0))} credits"
              f" ({lookups:,} provider lookups this run)")
        print(f"  fresh     {c.get('fresh', 0):,} answered from the cache, free")
        if c.get("error"):
            print(f"  errors    {c['error']:,} (not charged; resume to retry)")
        if c.get("pending"):
            print(f"  pending   {c['pending']:,}: resume with `staffetta hlr resume {info.id}`")
        answered = ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()) if k != "pending")
        print(f"  answers   {answered or '-'}")
        if out:
            print(f"  results   {written:,} rows in {out}")
    return 0 if info.state == FINISHED else 1


def cmd_verify(args: Any, engine_factory: Callable[[Any], Any]) -> int:
    _check_provider_url(args)
    from staffetta.hlr.jobs import create_job, find_resumable, fingerprint, prepare_items, read_numbers

    stale = None
    if args.stale_after:
        try:
            stale = parse_age(args.stale_after)
        except ValueError as exc:
            raise UsageError(f"--stale-after: {exc}") from None
    if args.concurrency < 1:
        raise UsageError("--concurrency: must be >= 1")
    _check_out(args.out)
    try:
        with open(args.file, encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"FILE: cannot read {args.file}: {exc.strerror}") from None
    try:
        raw = read_numbers(text, args.column)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not raw:
        raise UsageError(f"FILE: no numbers in {args.file}")
    engine = _engine(args, engine_factory)
    acct = _account(engine, args.account)
    items = prepare_items(raw, acct.default_country_code or 39)
    fp = fingerprint(acct.id, stale, items)
    _validate_provider(args)
    price = hlr_price(args, acct)
    with engine.begin() as conn:
        job_id = None if args.new else find_resumable(conn, fp)
        resumed = job_id is not None
        if job_id is None:
            job_id = create_job(conn, acct.id, acct.name, items, stale_after=stale, price=price,
                                source=os.path.abspath(args.file), fp=fp)
    if resumed and not args.json:
        print(f"resuming job {job_id} (same account, numbers and --stale-after; --new starts over)",
              file=sys.stderr)
    info, lookups = _run_job(args, engine, job_id)
    return _finish_report(args, engine, info, lookups, resumed)


def cmd_resume(args: Any, engine_factory: Callable[[Any], Any]) -> int:
    _check_provider_url(args)
    from staffetta.hlr.jobs import get_job

    if args.concurrency < 1:
        raise UsageError("--concurrency: must be >= 1")
    _check_out(args.out)
    engine = _engine(args, engine_factory)
    with engine.connect() as conn:
        if get_job(conn, args.job) is None:
            raise UsageError(f"JOB: no job {args.job} in {_store(engine)}")
    info, lookups = _run_job(args, engine, args.job)
    return _finish_report(args, engine, info, lookups, True)


def cmd_jobs(args: Any, engine_factory: Callable[[Any], Any]) -> int:
    from staffetta.hlr.jobs import list_jobs

    if args.limit < 1:
        raise UsageError("--limit: must be >= 1")
    engine = _engine(args, engine_factory)
    with engine.connect() as conn:
        jobs = list_jobs(conn, args.limit)
    if args.json:
        print(json.dumps([_job_doc(j) for j in jobs]))
        return 0
    if not jobs:
        print(f"no HLR jobs in {_store(engine)}")
        return 0
    print(f"{'id':>5}  {'account':<16} {'state':<12} {'progress':>17} {'fresh':>8} {'errors':>7} "
          f"{'charged':>12}  created")
    for j in jobs:
        pct = j.finished_items / j.total if j.total else 1.0
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(j.created_at))
        print(f"{j.id:>5}  {j.account[:16]:<16} {j.state:<12} {j.finished_items:>8,}/{j.total:<8,}"
              f"{pct:>4.0%} {j.counts.get('fresh', 0):>8,} {j.counts.get('error', 0):>7,} "
              f"{_credits(j.charged):>12}  {created}")
    return 0


def cmd_lookup(args: Any, engine_factory: Callable[[Any], Any]) -> int:
    _check_provider_url(args)
    from staffetta.hlr.jobs import normalize_number
    from staffetta.hlr.service import ChargeRefused, HlrService, writer_charge
    from staffetta.store.writer import GroupCommitWriter

    max_age = None
    if args.max_age:
        try:
            max_age = parse_age(args.max_age)
        except ValueError as exc:
            raise UsageError(f"--max-age: {exc}") from None
    engine = _engine(args, engine_factory)
    acct = _account(engine, args.account)
    number, why = normalize_number(args.number, acct.default_country_code or 39)
    if number is None:
        raise UsageError(f"NUMBER: {why}")
    price = hlr_price(args, acct)
    config_age = _hlr_config(args).get("max_age")

    async def main(reactor: Any) -> Any:
        provider = build_provider(args, reactor)
        writer = GroupCommitWriter(engine, reactor)
        writer.start()
        service = HlrService(reactor, engine, writer, provider, writer_charge(writer, billing_charge_tx),
                             price=price, max_age=parse_age(config_age) if config_age else 30 * 86400)
        try:
            return await service.lookup(number, acct.id, mode=args.mode, max_age=max_age)
        except ChargeRefused as exc:
            return exc
        finally:
            await writer.stop()
            await service.close()

    result = _run_reactor(main)
    if isinstance(result, ChargeRefused):
        _err(str(result))
        return 1
    charged = 0 if result.source in ("cache", "local") or result.status == "error" else price
    if args.json:
        d = result.to_dict()
        d["charged"] = format_credits(charged)
        print(json.dumps(d))
    else:
        net = f"{result.network or '?'} ({result.mcc}-{result.mnc})" if result.mcc else "-"
        orig = (f"{result.original_network or '?'} ({result.original_mcc}-{result.original_mnc})"
                if result.original_mcc else "-")
        print(f"{result.number}: {result.status}" + (f" - {result.detail}" if result.detail else ""))
        print(f"  network   {net}" + ("  [ported]" if result.ported else ""))
        print(f"  original  {orig}")
        if result.roaming_country:
            print(f"  roaming   {result.roaming_country}")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.looked_up_at))
        print(f"  source    {result.source}, looked up {when}, charged {_credits(charged)} credits")
    return 1 if result.status == "error" else 0


# ------------------------------------------------------------------ parsers


def _store_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="staffetta.yaml to use")
    p.add_argument("--data-dir", metavar="DIR", help="where the embedded store lives")


def _provider_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider-url", metavar="URL",
                   help="HLR to ask: the simulator's base URL, or a URL template with {number} (default: the "
                        "config's hlr.provider, else the HLR of the demo on this data dir, else "
                        f"{DEFAULT_PROVIDER_URL})")


def _wrap(fn: Callable[[Any, Callable], int], engine_factory: Callable[[Any], Any]) -> Callable[[Any], int]:
    def run(args: Any) -> int:
        try:
            return fn(args, engine_factory)
        except UsageError as exc:
            _err(str(exc))
            return 2
    return run


def register(subparsers: Any, engine_factory: Callable[[Any], Any]) -> argparse.ArgumentParser:
    """Add ``hlr verify|resume|jobs|lookup`` to the ``staffetta`` sub-parsers."""
    h = subparsers.add_parser("hlr", help="HLR lookups and number verification jobs")
    hs = h.add_subparsers(dest="hlr_verb", required=True)

    v = hs.add_parser("verify", help="look up a file of numbers (resumable, charged per real lookup)")
    v.add_argument("file", metavar="FILE", help="one number per line, or a CSV (see --column)")
    v.add_argument("--account", required=True, metavar="NAME", help="the account that pays")
    v.add_argument("--stale-after", metavar="AGE",
                   help="skip numbers looked up more recently than this: 1m, 3m, 6m (months), 30d, 12h; "
                        "default: look up every number")
    v.add_argument("--out", metavar="RESULTS", help="write results to RESULTS.csv or RESULTS.json")
    v.add_argument("--column", metavar="NAME|N", help="CSV column with the numbers (default: guessed)")
    v.add_argument("--concurrency", type=int, default=50, metavar="N", help="lookups in flight (default 50)")
    v.add_argument("--new", action="store_true", help="start a new job even if an unfinished one matches")
    v.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    _provider_opts(v)
    _store_opts(v)
    v.set_defaults(func=_wrap(cmd_verify, engine_factory))

    r = hs.add_parser("resume", help="resume an interrupted job (or re-export a finished one)")
    r.add_argument("job", metavar="JOB", type=int)
    r.add_argument("--out", metavar="RESULTS", help="write results to RESULTS.csv or RESULTS.json")
    r.add_argument("--concurrency", type=int, default=50, metavar="N")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--json", action="store_true")
    _provider_opts(r)
    _store_opts(r)
    r.set_defaults(func=_wrap(cmd_resume, engine_factory))

    j = hs.add_parser("jobs", help="verification jobs and their progress")
    j.add_argument("--limit", type=int, default=50)
    j.add_argument("--json", action="store_true")
    _store_opts(j)
    j.set_defaults(func=_wrap(cmd_jobs, engine_factory))

    lk = hs.add_parser("lookup", help="look one number up (charged unless a fresh answer is cached)")
    lk.add_argument("number", metavar="NUMBER")
    lk.add_argument("--account", required=True, metavar="NAME")
    lk.add_argument("--mode", choices=("cached", "always"), default="cached",
                    help="cached: a fresh cached answer is free (default); always: ask the provider")
    lk.add_argument("--max-age", metavar="AGE", help="freshness limit for --mode cached (default 1m)")
    lk.add_argument("--json", action="store_true")
    _provider_opts(lk)
    _store_opts(lk)
    lk.set_defaults(func=_wrap(cmd_lookup, engine_factory))
    return h


def default_engine_factory(args: Any) -> Any:
    """``--config`` (its database_url / data_dir) or ``--data-dir`` (default ./staffetta-data)."""
    import staffetta.billing.accounts  # noqa: F401 - registers the billing tables
    from staffetta.store.db import create_schema, make_engine

    url = None
    if getattr(args, "config", None):
        from staffetta.conf.settings import load

        url = load(args.config).db_url
    if url is None:
        from pathlib import Path

        url = f"sqlite:///{Path(getattr(args, 'data_dir', None) or DEFAULT_DATA_DIR).resolve() / 'staffetta.db'}"
    engine = make_engine(url)
    create_schema(engine)
    return engine


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m hlr.cli hlr ...``), the same verbs as ``staffetta hlr``."""
    parser = argparse.ArgumentParser(prog="staffetta")
    sub = parser.add_subparsers(dest="verb", required=True)
    register(sub, default_engine_factory)
    args = parser.parse_args(argv)
    from staffetta.conf.settings import ConfigError, store_choice

    args.config, args.data_dir = store_choice(getattr(args, "config", None), args.data_dir)

    try:
        return args.func(args)
    except ConfigError as exc:
        _err(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["billing_charge_tx", "build_provider", "default_engine_factory", "hlr_price", "main", "register"]
