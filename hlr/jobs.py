"""Verification jobs: many numbers, looked up with bounded concurrency, resumable, charged once.

A job is a row in ``hlr_jobs`` and one row per distinct number in
``hlr_job_items`` (``seq`` keeps the input order). Item states:

``pending``  still to look up
``fresh``    the cache had an answer fresher than the job's ``stale_after``: free
``done``     looked up by this job and charged (``charged`` centi-credits)
``error``    the provider could not answer: not charged; retried when the job resumes
``invalid``  not a mobile number by our own rules (``pdu.addresses``): never sent, free

The rule that makes resuming safe: a provider answer becomes ``done`` in the
**same transaction** that charges it and stores it in the cache, and that
transaction first re-reads the item and skips it unless it is still open.
A crash before the commit leaves the item ``pending`` (looked up again on
resume, charged then); a crash after it leaves it ``done``. Either way the
account pays once per number. Two runners on one job waste provider calls,
never money.

A job whose account runs out of credit stops (state ``no_credit``) with the
unpaid items still ``pending`` and their answers *not* cached, so a resume
after a top-up charges them instead of finding them "fresh".
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from twisted.internet import defer, task, threads

from staffetta.hlr.cache import hlr_cache, read_results, upsert_results
from staffetta.hlr.model import ANSWERS, CACHE, ERROR, INVALID, LOCAL, NULL_METRICS, HlrResult, error_result
from staffetta.hlr.providers import CLOSED, CircuitOpen, ProviderError
from staffetta.pdu.addresses import normalize_destination
from staffetta.pdu.errors import SubmitRejected
from staffetta.store.db import metadata

log = logging.getLogger(__name__)

PENDING, FRESH, DONE, ERRORED, INVALID_ITEM = "pending", "fresh", "done", "error", "invalid"
ITEM_STATES = (PENDING, FRESH, DONE, ERRORED, INVALID_ITEM)
# job states
CREATED, RUNNING, INTERRUPTED, NO_CREDIT, INCOMPLETE, FINISHED = (
    "created", "running", "interrupted", "no_credit", "incomplete", "done")
RESUMABLE = (CREATED, RUNNING, INTERRUPTED, NO_CREDIT, INCOMPLETE)

hlr_jobs = Table(
    "hlr_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, nullable=False, index=True),
    Column("account", String(64), nullable=False),
    Column("source", String(500), nullable=True),
    Column("fingerprint", String(64), nullable=False, index=True),
    Column("stale_after", Float, nullable=True),  # seconds; NULL: check every number
    Column("price", Integer, nullable=False),
    Column("provider", String(32), nullable=True),
    Column("state", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("detail", String(200), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
)

hlr_job_items = Table(
    "hlr_job_items",
    metadata,
    Column("job_id", Integer, ForeignKey("hlr_jobs.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("number", String(40), nullable=False),  # E.164 digits; the raw input for ``invalid``
    Column("state", String(8), nullable=False),
    Column("result", String(8), nullable=True),  # the status answered
    Column("charged", Integer, nullable=False, default=0),
    Column("detail", String(200), nullable=True),
    Index("ix_hlr_job_items_open", "job_id", "state", "seq"),
)


_SQLITE_SET_ITEM = ("UPDATE hlr_job_items SET state = ?, result = ?, charged = ?, detail = ? "
                    "WHERE job_id = ? AND seq = ?")


def create_tables(engine: Engine) -> None:
    metadata.create_all(engine, tables=[hlr_cache, hlr_jobs, hlr_job_items])


# --------------------------------------------------------------------- input

_NUMBER_HEADERS = ("number", "msisdn", "phone", "mobile", "numero", "cellulare", "telefono", "destination",
                   "e164", "tel")
_PUNCT = re.compile(r"[\s\-./()]")


def read_numbers(text: str, column: str | int | None = None) -> list[str]:
    """Raw numbers from a file's text: one per line, or one column of a CSV (``,`` ``;`` or tab).

    ``column`` is a header name or a 1-based index; by default the first column
    whose header looks like a number column (number, msisdn, phone, ...), else
    the first. A first line without digits is a header. Blank lines and
    ``#`` comments are skipped.
    """
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    sample = "\n".join(lines[:20])
    delim = next((d for d in (",", ";", "\t") if d in sample), None)
    if delim is None and column in (None, 1, "1"):
        out = [ln.strip() for ln in lines]
        return out[1:] if not any(c.isdigit() for c in out[0]) else out
    if delim is None:
        raise ValueError(f"--column: {column!r} given but the file has a single column")
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delim))
    header = rows[0]
    has_header = not any(any(c.isdigit() for c in cell) for cell in header)
    idx = 0
    if column is not None:
        if isinstance(column, int) or str(column).isdigit():
            idx = int(column) - 1
            if not 0 <= idx < len(header):
                raise ValueError(f"--column: {column} is outside 1-{len(header)}")
        else:
            names = [h.strip().lower() for h in header]
            if not has_header or str(column).strip().lower() not in names:
                raise ValueError(f"--column: no column named {column!r} (header: {', '.join(header)})")
            idx = names.index(str(column).strip().lower())
    elif has_header:
        names = [h.strip().lower() for h in header]
        idx = next((i for i, n in enumerate(names) if n in _NUMBER_HEADERS), 0)
    body = rows[1:] if has_header else rows
    return [r[idx].strip() for r in body if len(r) > idx and r[idx].strip()]


def normalize_number(raw: str, default_cc: int = 39) -> tuple[str | None, str]:
    """(E.164 digits, "") for a mobile number as people write it, or (None, why)."""
    s = _PUNCT.sub("", raw.strip())
    if s.startswith("+"):
        digits, ton = s[1:], 1
    else:
        digits, ton = s, 0
    if not digits.isdigit() or not digits.isascii():
        return None, f"{raw!r} is not a phone number"
    try:
        return normalize_destination(digits.encode("ascii"), ton, 1, default_cc).e164, ""
    except SubmitRejected as exc:
        return None, exc.reason


# -------------------------------------------------------------------- create


@dataclass(frozen=True)
class JobInfo:
    id: int
    account_id: int
    account: str
    source: str | None
    stale_after: float | None
    price: int
    provider: str | None
    state: str
    total: int
    detail: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def finished_items(self) -> int:
        return self.total - self.counts.get(PENDING, 0)

    @property
    def charged(self) -> int:
        return self.counts.get("charged", 0)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "id", "account_id", "account", "source", "stale_after", "price", "provider", "state", "total",
            "detail", "created_at", "updated_at", "finished_at")}
        d["items"] = {s: self.counts.get(s, 0) for s in ITEM_STATES}
        d["charged"] = self.charged
        d["progress"] = round(self.finished_items / self.total, 4) if self.total else 1.0
        return d


def prepare_items(raw_numbers: Iterable[str], default_cc: int) -> list[tuple[str, str, str | None]]:
    """Normalise and de-duplicate: [(number, state, detail)] in first-seen order."""
    seen: set[str] = set()
    out: list[tuple[str, str, str | None]] = []
    for raw in raw_numbers:
        e164, why = normalize_number(raw, default_cc)
        key = e164 if e164 is not None else "raw:" + raw.strip()
        if key in seen:
            continue
        seen.add(key)
        if e164 is None:
            out.append((raw.strip()[:40], INVALID_ITEM, why[:200]))
        else:
            out.append((e164, PENDING, None))
    return out


def fingerprint(account_id: int, stale_after: float | None, items: list[tuple[str, str, str | None]]) -> str:
    h = hashlib.sha256(f"{account_id}|{stale_after}|".encode())
    for number, _state, _d in items:
        h.update(number.encode() + b"\n")
    return h.hexdigest()


def find_resumable(conn: Connection, fp: str) -> int | None:
    """The newest unfinished job with this fingerprint (same account, numbers and stale_after)."""
    return conn.execute(
        select(hlr_jobs.c.id).where(hlr_jobs.c.fingerprint == fp, hlr_jobs.c.state.in_(RESUMABLE))
        .order_by(hlr_jobs.c.id.desc()).limit(1)
    ).scalar()


def create_job(conn: Connection, account_id: int, account: str, items: list[tuple[str, str, str | None]],
               *, stale_after: float | None, price: int, source: str | None = None,
               provider: str | None = None, fp: str | None = None, now: float | None = None) -> int:
    """Insert a job and its items (from :func:`prepare_items`); returns the job id."""
    now = time.time() if now is None else now
    job_id = conn.execute(hlr_jobs.insert().values(
        account_id=account_id, account=account, source=(source or "")[:500] or None,
        fingerprint=fp or fingerprint(account_id, stale_after, items), stale_after=stale_after,
        price=price, provider=provider, state=CREATED, total=len(items), created_at=now, updated_at=now,
    )).inserted_primary_key[0]
    rows = [{"job_id": job_id, "seq": i, "number": n, "state": s, "result": INVALID if s == INVALID_ITEM else None,
             "charged": 0, "detail": d} for i, (n, s, d) in enumerate(items)]
    for i in range(0, len(rows), 5000):
        conn.execute(hlr_job_items.insert(), rows[i:i + 5000])
    return job_id


def item_counts(conn: Connection, job_id: int) -> dict[str, int]:
    counts = {s: 0 for s in ITEM_STATES}
    for state, n, charged in conn.execute(
        select(hlr_job_items.c.state, func.count(), func.coalesce(func.sum(hlr_job_items.c.charged), 0))
        .where(hlr_job_items.c.job_id == job_id).group_by(hlr_job_items.c.state)
    ):
        counts[state] = int(n)
        counts["charged"] = counts.get("charged", 0) + int(charged)
    counts.setdefault("charged", 0)
    return counts


def _info(row: Any, counts: dict[str, int]) -> JobInfo:
    m = row._mapping
    return JobInfo(m["id"], m["account_id"], m["account"], m["source"], m["stale_after"], m["price"],
                   m["provider"], m["state"], m["total"], m["detail"], m["created_at"], m["updated_at"],
                   m["finished_at"], counts)


def get_job(conn: Connection, job_id: int) -> JobInfo | None:
    row = conn.execute(select(hlr_jobs).where(hlr_jobs.c.id == job_id)).first()
    return _info(row, item_counts(conn, job_id)) if row else None


def list_jobs(conn: Connection, limit: int = 50) -> list[JobInfo]:
    rows = conn.execute(select(hlr_jobs).order_by(hlr_jobs.c.id.desc()).limit(limit)).all()
    return [_info(r, item_counts(conn, r.id)) for r in rows]


def set_state(conn: Connection, job_id: int, state: str, detail: str | None = None,
              now: float | None = None) -> None:
    now = time.time() if now is None else now
    values: dict[str, Any] = {"state": state, "updated_at": now, "detail": detail}
    if state == FINISHED:
        values["finished_at"] = now
    conn.execute(update(hlr_jobs).where(hlr_jobs.c.id == job_id).values(**values))


# ------------------------------------------------------------------- results


def iter_results(conn: Connection, job_id: int) -> Iterator[dict[str, Any]]:
    """One dict per item in input order: the answer's fields plus ``state`` and ``charged``."""
    q = (
        select(hlr_job_items, hlr_cache)
        .outerjoin(hlr_cache, hlr_cache.c.number == hlr_job_items.c.number)
        .where(hlr_job_items.c.job_id == job_id)
        .order_by(hlr_job_items.c.seq)
    )
    for row in conn.execution_options(yield_per=2000).execute(q):
        m = row._mapping
        state = m[hlr_job_items.c.state]
        number = m[hlr_job_items.c.number]
        out: dict[str, Any] = {"number": number}
        answered = state in (DONE, FRESH) and m[hlr_cache.c.status] is not None
        if answered:
            r = HlrResult(number, m[hlr_cache.c.status], m[hlr_cache.c.mcc], m[hlr_cache.c.mnc],
                          m[hlr_cache.c.network], m[hlr_cache.c.original_mcc], m[hlr_cache.c.original_mnc],
                          m[hlr_cache.c.original_network], bool(m[hlr_cache.c.ported]),
                          m[hlr_cache.c.roaming_country], float(m[hlr_cache.c.looked_up_at]),
                          CACHE if state == FRESH else m[hlr_cache.c.provider])
            out.update(r.to_dict())
        else:
            status = {INVALID_ITEM: INVALID, ERRORED: ERROR}.get(state, state)
            out.update({"status": status, "source": LOCAL if state == INVALID_ITEM else None,
                        "detail": m[hlr_job_items.c.detail]})
        out["state"] = state
        out["charged"] = m[hlr_job_items.c.charged]
        yield out


RESULT_COLUMNS = ("number", "status", "mcc", "mnc", "network", "original_mcc", "original_mnc",
                  "original_network", "ported", "roaming_country", "looked_up_at", "source", "state",
                  "charged", "detail")


def write_results(engine: Engine, job_id: int, path: str) -> int:
    """Write the job's results to ``path`` (.json: one JSON document; anything else: CSV)."""
    n = 0
    with engine.connect() as conn, open(path, "w", newline="", encoding="utf-8") as fh:
        rows = iter_results(conn, job_id)
        if path.lower().endswith(".json"):
            info = get_job(conn, job_id)
            fh.write('{"job": ' + json.dumps(info.to_dict() if info else None) + ', "results": [\n')
            for row in rows:
                fh.write((",\n" if n else "") + json.dumps({k: row.get(k) for k in RESULT_COLUMNS}))
                n += 1
            fh.write("\n]}\n")
        else:
            w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for row in rows:
                w.writerow(row)
                n += 1
    return n


# ------------------------------------------------------------------- running


@dataclass
class Progress:
    job_id: int
    total: int
    counts: dict[str, int]
    started: float  # monotonic, this run
    done_this_run: int = 0
    to_do: int = 0  # items pending when the lookups started
    waiting: str | None = None  # e.g. "provider circuit open"

    @property
    def finished(self) -> int:
        return self.total - self.counts.get(PENDING, 0)

    def rate(self, now: float | None = None) -> float:
        elapsed = (time.monotonic() if now is None else now) - self.started
        return self.done_this_run / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        r = self.rate(now)
        left = self.counts.get(PENDING, 0)
        return left / r if r > 0 else None


class JobRunner:
    """Run (or resume) one job: freshness pass, then lookups with ``concurrency`` in flight.

    ``charge_tx(conn, [(account_id, amount, number)]) -> [paid]`` runs inside
    the commit transaction (see :func:`hlr.service.writer_charge` for its
    shape). ``writer`` is a started :class:`store.writer.GroupCommitWriter` on
    ``engine``; the runner registers its ``hlr_job_result`` handler on it.
    ``stop()`` finishes what is in flight and leaves the job ``interrupted``;
    ``stop(graceful=False)`` drops in-flight answers (what a crash does).
    """

    def __init__(
        self,
        reactor: Any,
        engine: Engine,
        provider: Any,
        charge_tx: Callable[[Connection, list[tuple[int, int, str]]], list[bool]],
        writer: Any,
        *,
        concurrency: int = 50,
        page: int = 5000,
        metrics: Any = None,
        cache: Any = None,
        progress: Callable[[Progress], None] | None = None,
        give_up_after: float = 300.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency: must be >= 1")
        self.reactor = reactor
        self.engine = engine
        self.provider = provider
        self.charge_tx = charge_tx
        self.writer = writer
        self.concurrency = concurrency
        self.page = page
        self.metrics = metrics if metrics is not None else NULL_METRICS
        self.cache = cache  # an HlrCache to mirror committed answers into (memory/Redis), optional
        self.on_progress = progress
        self.give_up_after = give_up_after
        writer.register("hlr_job_result", self._commit)
        self._stopping = False
        self._aborted = False
        self._no_credit = False
        self._gave_up: str | None = None
        self.lookups = 0  # provider lookups made by this runner
        self.progress: Progress | None = None

    # ------------------------------------------------------------ control

    def stop(self, *, graceful: bool = True) -> None:
        self._stopping = True
        if not graceful:
            self._aborted = True

    def _thread(self, fn: Callable, *args: Any) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    def run(self, job_id: int) -> defer.Deferred:
        """Deferred[JobInfo] once the job is finished, stopped, out of credit or given up."""
        return defer.Deferred.fromCoroutine(self._run(job_id))

    async def _run(self, job_id: int) -> JobInfo:
        info = await self._thread(self._start, job_id)
        self.job = info
        if info.state == FINISHED:  # nothing to do (``hlr resume`` of a finished job re-exports it)
            return info
        self.progress = Progress(job_id, info.total, dict(info.counts), time.monotonic())
        self._report()
        if info.stale_after is not None and not self._stopping:
            await self._freshness_pass(info)
        self.progress.to_do = self.progress.counts.get(PENDING, 0)
        self.progress.started = time.monotonic()
        self._commits: set[defer.Deferred] = set()
        self._queue: collections.deque[tuple[int, str]] = collections.deque()
        self._cursor = -1
        self._exhausted = False
        self._fetching: defer.Deferred | None = None
        self._fetch_waiters: list[defer.Deferred] = []
        workers = [defer.Deferred.fromCoroutine(self._worker(info)) for _ in range(self.concurrency)]
        await defer.gatherResults(workers, consumeErrors=True)
        if self._commits:
            await defer.DeferredList(list(self._commits), consumeErrors=True)
        return await self._thread(self._finish, job_id)

    def _start(self, job_id: int) -> JobInfo:
        with self.engine.begin() as conn:
            info = get_job(conn, job_id)
            if info is None:
                raise ValueError(f"job: no job {job_id}")
            if info.state == FINISHED:
                return info
            conn.execute(update(hlr_job_items).where(
                hlr_job_items.c.job_id == job_id, hlr_job_items.c.state == ERRORED,
            ).values(state=PENDING, detail=None))
            set_state(conn, job_id, RUNNING)
            return get_job(conn, job_id)  # type: ignore[return-value]

    def _finish(self, job_id: int) -> JobInfo:
        with self.engine.begin() as conn:
            counts = item_counts(conn, job_id)
            if self._no_credit:
                state, detail = NO_CREDIT, "the account ran out of credit; top up and resume"
            elif self._gave_up:
                state, detail = INTERRUPTED, self._gave_up
            elif counts[PENDING]:
                state, detail = INTERRUPTED, "stopped"
            elif counts[ERRORED]:
                state, detail = INCOMPLETE, f"{counts[ERRORED]} lookups failed; resume to retry them"
            else:
                state, detail = FINISHED, None
            set_state(conn, job_id, state, detail)
            info = get_job(conn, job_id)
        if self.progress is not None and info is not None:
            self.progress.counts = dict(info.counts)
            self._report(force=True)
        return info  # type: ignore[return-value]

    # ---------------------------------------------------------- freshness

    async def _freshness_pass(self, info: JobInfo) -> None:
        cutoff = self.reactor.seconds() - float(info.stale_after or 0)
        cursor = -1
        while not self._stopping:
            cursor, n = await self._thread(self._mark_fresh, info.id, cursor, cutoff)
            if n:
                self.progress.counts[PENDING] -= n  # type: ignore[union-attr]
                self.progress.counts[FRESH] += n  # type: ignore[union-attr]
                self._report()
            if cursor is None:
                return

    def _mark_fresh(self, job_id: int, cursor: int, cutoff: float) -> tuple[int | None, int]:
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(hlr_job_items.c.seq, hlr_job_items.c.number)
                .where(hlr_job_items.c.job_id == job_id, hlr_job_items.c.state == PENDING,
                       hlr_job_items.c.seq > cursor)
                .order_by(hlr_job_items.c.seq).limit(self.page)
            ).all()
            if not rows:
                return None, 0
            cached = read_results(conn, [r.number for r in rows])
            fresh = [{"j": job_id, "q": r.seq, "r": cached[r.number].status}
                     for r in rows
                     if r.number in cached and cached[r.number].status in ANSWERS
                     and cached[r.number].looked_up_at >= cutoff]
            if fresh:
                conn.execute(
                    update(hlr_job_items)
                    .where(hlr_job_items.c.job_id == bindparam("j"), hlr_job_items.c.seq == bindparam("q"),
                           hlr_job_items.c.state == PENDING)
                    .values(state=FRESH, result=bindparam("r")),
                    fresh,
                )
            return rows[-1].seq, len(fresh)

    # ------------------------------------------------------------ lookups

    async def _next(self, job_id: int) -> tuple[int, str] | None:
        while True:
            if self._stopping or self._no_credit:
                return None
            if self._queue:
                return self._queue.popleft()
            if self._exhausted:
                return None
            if self._fetching is None:
                self._fetching = self._thread(self._fetch, job_id, self._cursor)
                self._fetching.addBoth(self._fetched)
            d: defer.Deferred = defer.Deferred()
            self._fetch_waiters.append(d)
            await d

    def _fetched(self, outcome: Any) -> None:
        self._fetching = None
        waiters, self._fetch_waiters = self._fetch_waiters, []
        if isinstance(outcome, list):
            if outcome:
                self._queue.extend(outcome)
                self._cursor = outcome[-1][0]
            else:
                self._exhausted = True
            for w in waiters:
                w.callback(None)
        else:
            for w in waiters:
                w.errback(outcome)

    def _fetch(self, job_id: int, cursor: int) -> list[tuple[int, str]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(  # type: ignore[misc]
                select(hlr_job_items.c.seq, hlr_job_items.c.number)
                .where(hlr_job_items.c.job_id == job_id, hlr_job_items.c.state == PENDING,
                       hlr_job_items.c.seq > cursor)
                .order_by(hlr_job_items.c.seq).limit(self.page)
            )]

    async def _worker(self, info: JobInfo) -> None:
        open_since: float | None = None
        while True:
            item = await self._next(info.id)
            if item is None:
                return
            seq, number = item
            while True:
                try:
                    result = await self.provider.lookup(number)
                    open_since = None
                except ProviderError as exc:
                    breaker = getattr(self.provider, "breaker", None)
                    down = isinstance(exc, CircuitOpen) or (breaker is not None and breaker.state != CLOSED)
                    if not down:  # an isolated failure: this item is an error (retried on resume)
                        result = error_result(number, self.provider.name, str(exc), self.reactor.seconds())
                        break
                    # The provider is down (this failure opened the circuit, or it was open):
                    # wait for it instead of burning every item as an error.
                    now = time.monotonic()
                    open_since = open_since or now
                    if now - open_since > self.give_up_after:
                        self._gave_up = f"provider {exc} for {self.give_up_after:.0f}s"[:200]
                        self._stopping = True
                        return
                    if self.progress is not None:
                        self.progress.waiting = f"provider {exc}"
                        self._report()
                    await task.deferLater(self.reactor, 0.5)
                    if self._stopping:
                        return
                    continue
                except Exception as exc:  # a provider bug fails the item, not the job
                    log.exception("hlr provider %s failed on %s", self.provider.name, number)
                    result = error_result(number, self.provider.name, f"{type(exc).__name__}: {exc}",
                                          self.reactor.seconds())
                break
            if self.progress is not None:
                self.progress.waiting = None
            self.lookups += 1
            self.metrics.answered(self.provider.name, result.status)
            if self._aborted:
                return  # a crash: the answer is lost, the item stays pending
            d = self.writer.submit("hlr_job_result", (info.id, seq, info.account_id, info.price, result))
            self._commits.add(d)
            d.addBoth(self._committed, d)

    def _committed(self, outcome: Any, d: defer.Deferred) -> None:
        self._commits.discard(d)
        p = self.progress
        if not isinstance(outcome, str):  # a failed commit: the item stays pending
            log.error("hlr job commit failed: %s", getattr(outcome, "value", outcome))
            self._stopping = True
            return
        if outcome == "no_credit":
            self._no_credit = True
            return
        if outcome in (DONE, ERRORED) and p is not None:
            p.counts[PENDING] -= 1
            p.counts[outcome] += 1
            p.done_this_run += 1
            self._report()

    # the group-commit handler: runs in the writer thread, one transaction per batch
    def _commit(self, conn: Connection, items: list[tuple[int, int, int, int, HlrResult]]) -> list[str]:
        by_job: dict[int, list[int]] = {}
        for job_id, seq, *_ in items:
            by_job.setdefault(job_id, []).append(seq)
        sqlite = conn.dialect.name == "sqlite"
        still_open: set[tuple[int, int]] = set()
        for job_id, seqs in by_job.items():
            if sqlite:  # the driver directly (SQLite serialises writers: no row lock needed)
                for i in range(0, len(seqs), 900):
                    part = seqs[i:i + 900]
                    sql = (f"SELECT seq FROM hlr_job_items WHERE job_id = ? AND seq IN "
                           f"({', '.join('?' * len(part))}) AND state IN ('{PENDING}', '{ERRORED}')")
                    still_open.update((job_id, r[0]) for r in conn.exec_driver_sql(sql, (job_id, *part)))
                continue
            q = select(hlr_job_items.c.seq).where(
                hlr_job_items.c.job_id == job_id, hlr_job_items.c.seq.in_(seqs),
                hlr_job_items.c.state.in_((PENDING, ERRORED)),
            ).with_for_update()  # PostgreSQL: a second runner's commit of the same item waits here
            still_open.update((job_id, s) for s in conn.execute(q).scalars())
        outcomes: list[str] = ["dup"] * len(items)
        to_charge: list[int] = []
        for i, (job_id, seq, _a, price, result) in enumerate(items):
            if (job_id, seq) not in still_open:
                continue
            still_open.discard((job_id, seq))  # the same item twice in one batch: once
            if result.status == ERROR:
                outcomes[i] = ERRORED
            elif price > 0:
                to_charge.append(i)
                outcomes[i] = "charge"
            else:
                outcomes[i] = DONE
        if to_charge:
            paid = self.charge_tx(conn, [(items[i][2], items[i][3], items[i][4].number) for i in to_charge])
            for i, ok in zip(to_charge, paid, strict=True):
                outcomes[i] = DONE if ok else "no_credit"
        updates = []
        stored: list[HlrResult] = []
        for i, (job_id, seq, _a, price, result) in enumerate(items):
            o = outcomes[i]
            if o == DONE:
                updates.append({"j": job_id, "q": seq, "s": DONE, "r": result.status, "c": price, "d": None})
                stored.append(result)
            elif o == ERRORED:
                updates.append({"j": job_id, "q": seq, "s": ERRORED, "r": ERROR, "c": 0,
                                "d": (result.detail or "")[:200]})
        if updates and sqlite:
            conn.exec_driver_sql(_SQLITE_SET_ITEM, [(u["s"], u["r"], u["c"], u["d"], u["j"], u["q"])
                                                    for u in updates])
        elif updates:
            conn.execute(
                update(hlr_job_items)
                .where(and_(hlr_job_items.c.job_id == bindparam("j"), hlr_job_items.c.seq == bindparam("q")))
                .values(state=bindparam("s"), result=bindparam("r"), charged=bindparam("c"),
                        detail=bindparam("d")),
                updates,
            )
        if stored:
            upsert_results(conn, stored)
            if self.cache is not None:
                self.reactor.callFromThread(self.cache.mirror, stored)
        return outcomes

    # ------------------------------------------------------------ progress

    _last_report = 0.0

    def _report(self, force: bool = False) -> None:
        p = self.progress
        if p is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < 0.1:
            return
        self._last_report = now
        self.metrics.job(p.job_id, p.counts, p.total)
        if self.on_progress is not None:
            self.on_progress(p)


def format_progress(p: Progress, width: int = 30) -> str:
    """``[#####.....]  4,210/10,000  42%  1,830/s  ETA 0:03`` (one line, no newline)."""
    frac = p.finished / p.total if p.total else 1.0
    filled = int(frac * width)
    rate = p.rate()
    eta = p.eta()
    eta_s = "--:--" if eta is None else _clock(eta)
    line = (f"[{'#' * filled}{'.' * (width - filled)}] {p.finished:,}/{p.total:,} {frac:4.0%} "
            f"{rate:,.0f}/s ETA {eta_s}")
    extra = [f"{p.counts.get(k, 0):,} {k}" for k in (FRESH, ERRORED, INVALID_ITEM) if p.counts.get(k)]
    if extra:
        line += " (" + ", ".join(extra) + ")"
    if p.waiting:
        line += f" - waiting: {p.waiting}"
    return line


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


__all__ = [
    "DONE", "ERRORED", "FINISHED", "FRESH", "INCOMPLETE", "INTERRUPTED", "INVALID_ITEM", "ITEM_STATES",
    "NO_CREDIT", "PENDING", "RESULT_COLUMNS", "RUNNING", "JobInfo", "JobRunner", "Progress", "create_job",
    "create_tables", "find_resumable", "fingerprint", "format_progress", "get_job", "hlr_job_items",
    "hlr_jobs", "item_counts", "iter_results", "list_jobs", "normalize_number", "prepare_items",
    "read_numbers", "write_results",
]
