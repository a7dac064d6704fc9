"""Binds: who may bind, at what cost to the hub, and the log line of each one.

A password check is scrypt: ~50 ms of CPU and 4 MiB of memory by design
(billing.accounts), so a hub that checked every bind it is sent would give its
CPU and memory to whoever sends the most binds. Here the cost is bounded:

- the session lets a connection have one bind in progress (pdu.session);
- a source address with ``bind_limit.failures`` failed attempts in
  ``per_seconds`` is refused before anything is read (:class:`BindLimiter`),
  and every failed attempt counts, not every connection;
- checks run on a dedicated pool of ``check_threads`` threads, never on the
  reactor's pool (which serves the store's reads); at most ``check_queue``
  binds wait for it, the next ones are answered ``ESME_RTHROTTLED`` at once
  (:class:`PasswordChecks`), and a bind whose connection closed while it
  waited is never computed;
- a client that bound successfully within ``cache_ttl`` seconds and comes back
  with the same password is checked by an HMAC instead of scrypt
  (:class:`CheckCache`), so reconnect storms of legitimate clients stay cheap.

Memory follows: at most ``check_threads`` scrypt buffers exist at once, and a
waiting bind holds only its connection. docs/operations.md gives the ceiling.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge
from twisted.internet import defer, threads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from staffetta.billing.accounts import (
    OLD_SCRYPT_N,
    OLD_SCRYPT_R,
    SCRYPT_N,
    SCRYPT_R,
    Credential,
    find_credential,
    hash_password,
    needs_rehash,
    scrypt_memory,
    update_password_hash,
    verify_password,
)
from staffetta.conf.settings import BindLimit
from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import BIND_COMMANDS, Command, Status, status_name
from staffetta.pdu.session import ProtocolViolation, State

log = logging.getLogger(__name__)

BIND_TYPE = {
    Command.BIND_TRANSMITTER: "tx",
    Command.BIND_RECEIVER: "rx",
    Command.BIND_TRANSCEIVER: "trx",
}
_STATE_BIND_TYPE = {State.BOUND_TX: "tx", State.BOUND_RX: "rx", State.BOUND_TRX: "trx"}

#: Writer kind of a hash made with today's parameters after a successful bind.
REHASH = "password_rehash"


#: What a storm adds to the hub's RSS besides the scrypt buffers and the
#: limiter: the queued binds' connections, the refused ones being torn down,
#: allocator slack (measured at 4-5 MiB for 1,000 binds, bench/bind_storm.py).
STORM_SLACK = 8 * 1024 * 1024
#: Source addresses the limiter remembers, and what each costs at most
#: (measured ~108 bytes for an IPv6 address: key, float, dict slot).
LIMITER_ADDRESSES = 20_000
LIMITER_BYTES_PER_ADDRESS = 128


def storm_memory_bound(settings: BindLimit) -> int:
    """Bytes a bind storm of any size may add to an idle hub's RSS (docs/operations.md).

    Each check thread holds one scrypt buffer at a time, of at most 16 MiB
    while hashes made with the old parameters remain (4 MiB with today's);
    the allocator may keep it after the check. Waiting binds are capped by
    ``check_queue``, the rest are refused at once; the limiter remembers at
    most ``LIMITER_ADDRESSES`` addresses.
    """
    buffer = max(scrypt_memory(SCRYPT_N, SCRYPT_R), scrypt_memory(OLD_SCRYPT_N, OLD_SCRYPT_R))
    limiter = LIMITER_ADDRESSES * LIMITER_BYTES_PER_ADDRESS
    return settings.check_threads * buffer + limiter + STORM_SLACK


class BindLimiter:
    """Failed bind attempts per source address (brute-force guard), one float per address.

    A generic cell rate algorithm: an address may fail ``failures`` times in a
    burst, then once every ``per_seconds / failures`` seconds, which is
    ``failures`` per ``per_seconds`` in the long run. Each address holds only
    its "theoretical arrival time", so remembering ``max_addresses`` of them
    costs at most ~128 bytes each (2.4 MiB with the default 20,000): a storm from
    any number of addresses cannot grow it. When full, addresses whose
    failures have all drained are forgotten first, then the oldest tenth.
    """

    def __init__(self, failures: int, per_seconds: float, clock, max_addresses: int = LIMITER_ADDRESSES) -> None:
        self.failures = failures
        self.per_seconds = per_seconds
        self.clock = clock
        self.max_addresses = max_addresses
        self._interval = per_seconds / failures if failures else 0.0
        self._tat: dict[str, float] = {}

    def blocked(self, address: str) -> bool:
        if self.failures <= 0:
            return True
        tat = self._tat.get(address)
        if tat is None:
            return False
        now = self.clock.seconds()
        if tat <= now:
            del self._tat[address]
            return False
        return tat - now > self.per_seconds - self._interval + 1e-9

    def failed(self, address: str) -> None:
        now = self.clock.seconds()
        tat = self._tat.get(address)
        if tat is None and len(self._tat) >= self.max_addresses:
            self._forget(now)
        tat = max(tat or now, now) + self._interval
        self._tat[address] = min(tat, now + self.per_seconds)

    def _forget(self, now: float) -> None:
        drained = [a for a, tat in self._tat.items() if tat <= now]
        if len(drained) < self.max_addresses // 10:
            drained += list(self._tat)[: self.max_addresses // 10 + 1]
        for a in drained:
            self._tat.pop(a, None)

    def __len__(self) -> int:
        return len(self._tat)


class CheckCache:
    """Recent successful password checks, as HMACs under a secret of this process.

    An entry, by system_id, is ``HMAC(secret, credential id, stored hash,
    password)``: it proves a password equal to one that passed scrypt against
    *this* stored hash, and it is useless outside this process (the secret is
    never written anywhere). No password is kept. An entry ends after ``ttl``
    seconds, when the stored hash is no longer the one it was made for
    (password changed, rehashed), and when the credential is refused
    (revoked, disabled: :meth:`forget`). Only successes are cached: a wrong
    password always costs the scrypt an unknown system_id costs, so timing
    tells an attacker nothing.
    """

    def __init__(self, ttl: float, clock, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_entries = max_entries
        self._secret = os.urandom(32)
        #: system_id -> (credential id, stored hash, digest, expiry)
        self._entries: collections.OrderedDict[str, tuple[int, str, bytes, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, credential_id: int, stored: str, password: bytes) -> bytes:
        msg = b"%d\0%s\0%s" % (credential_id, stored.encode(), password)
        return hmac.new(self._secret, msg, hashlib.sha256).digest()

    def _entry(self, system_id: str, password: bytes) -> tuple[int, str, bytes, float] | None:
        entry = self._entries.get(system_id)
        if entry is None:
            return None
        credential_id, stored, digest, expires = entry
        if self.clock.seconds() >= expires:
            del self._entries[system_id]
            return None
        if not hmac.compare_digest(digest, self._digest(credential_id, stored, password)):
            return None
        return entry

    def candidate(self, system_id: str, password: bytes) -> bool:
        """Whether this password passed recently (before the row is read: it may have changed since)."""
        return self._entry(system_id, password) is not None

    def hit(self, cred: Credential, password: bytes) -> bool:
        """Whether this password passed recently against the credential as it is stored now."""
        entry = self._entry(cred.system_id, password)
        if entry is None:
            return False
        if entry[0] != cred.id or entry[1] != cred.password_hash:
            del self._entries[cred.system_id]  # the credential changed since
            return False
        return True

    def remember(self, cred: Credential, stored: str, password: bytes) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(cred.system_id, None)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[cred.system_id] = (
            cred.id, stored, self._digest(cred.id, stored, password), self.clock.seconds() + self.ttl,
        )

    def forget(self, system_id: str) -> None:
        self._entries.pop(system_id, None)


class _Job:
    __slots__ = ("password", "stored", "alive", "d")

    def __init__(self, password: bytes, stored: str, alive: Callable[[], bool]) -> None:
        self.password = password
        self.stored = stored
        self.alive = alive
        self.d: defer.Deferred = defer.Deferred()


#: Niceness added to a check thread: under a storm the kernel gives the CPU to
#: the reactor and the writer first, and scrypt gets what is left.
CHECK_NICENESS = 10
_thread_state = threading.local()


def _lower_priority() -> None:
    """Make the calling thread nicer, once (Linux schedules threads one by one)."""
    if getattr(_thread_state, "niced", False):
        return
    _thread_state.niced = True
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + CHECK_NICENESS))
    except (AttributeError, OSError):  # not Linux-like: the pool's size still bounds the cost
        pass


def _verify(password: bytes, stored: str) -> tuple[bool, str | None]:
    """In a check thread: the scrypt, and today's hash of a password that passed with old parameters."""
    _lower_priority()
    text = password.decode("ascii", "replace")
    if not verify_password(text, stored):
        return False, None
    return True, hash_password(text) if needs_rehash(stored) else None


class PasswordChecks:
    """A small pool of its own for scrypt, with a bounded queue in the reactor.

    At most ``threads`` checks run at once (their memory is the bound); the
    queue is a deque the reactor owns, so a bind whose connection closed while
    it waited is dropped when its turn comes, never computed.
    """

    def __init__(self, reactor, threads_: int, queue: int) -> None:
        self.reactor = reactor
        self.threads = threads_
        self.queue = queue
        self._pool = ThreadPool(0, threads_, name="staffetta-bind-checks")
        self._pending: collections.deque[_Job] = collections.deque()
        self._running = 0
        self._started = False
        self.computed = 0  # scrypt runs, for metrics and tests
        self.dropped = 0  # checks skipped because their connection closed

    @property
    def waiting(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """No thread free and ``queue`` binds already waiting."""
        return self._running >= self.threads and len(self._pending) >= self.queue

    def submit(self, password: bytes, stored: str, alive: Callable[[], bool]) -> defer.Deferred | None:
        """A Deferred firing ``(ok, new_hash)``, or ``None`` (dropped); None at once when full."""
        if self.full:
            return None
        job = _Job(password, stored, alive)
        self._pending.append(job)
        self._pump()
        return job.d

    def _pump(self) -> None:
        while self._running < self.threads and self._pending:
            job = self._pending.popleft()
            if not job.alive():
                self.dropped += 1
                job.d.callback(None)
                continue
            if not self._started:
                self._pool.start()
                self._started = True
            self._running += 1
            self.computed += 1
            d = threads.deferToThreadPool(self.reactor, self._pool, _verify, job.password, job.stored)
            job.password = b""
            d.addBoth(self._done, job)

    def _done(self, result, job: _Job) -> None:
        self._running -= 1
        if isinstance(result, Failure):
            job.d.errback(result)
        else:
            job.d.callback(result)
        self._pump()

    def stop(self) -> None:
        """Drop what waits and join the threads (a running check finishes first)."""
        while self._pending:
            self._pending.popleft().d.callback(None)
        if self._started:
            self._pool.stop()
            self._started = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a bind's authentication; ``credential`` is set whenever the system_id exists."""

    credential: Credential | None
    ok: bool
    reason: str  # "" when ok; else the bind_failures reason label
    how: str = ""  # scrypt | cache: how a password was checked


class BindMetrics:
    def __init__(self, registry, checks: PasswordChecks, cache: CheckCache) -> None:
        self.checks = Counter(
            "staffetta_bind_checks", "bind password checks by how they were answered: "
            "scrypt, cache (recent success), dropped (connection closed first), busy (queue full)",
            ["how"], registry=registry,
        )
        waiting = Gauge("staffetta_bind_checks_waiting", "binds waiting for a password check", registry=registry)
        waiting.set_function(lambda: checks.waiting)
        cached = Gauge("staffetta_bind_cache_entries", "recent successful checks kept (HMACs)", registry=registry)
        cached.set_function(lambda: len(cache))


class Binds:
    """The hub's side of authentication: limiter, check pool, cache, rehash."""

    def __init__(self, settings: BindLimit, reactor, read, writer, registry) -> None:
        self.reactor = reactor
        self.read = read  # Hub.read: a blocking store read off the reactor thread
        self.writer = writer
        self.limiter = BindLimiter(settings.failures, settings.per_seconds, reactor)
        self.cache = CheckCache(settings.cache_ttl, reactor)
        self.checks = PasswordChecks(reactor, settings.check_threads, settings.check_queue)
        self.metrics = BindMetrics(registry, self.checks, self.cache)
        # An unknown system_id costs a check against this, as a wrong password would.
        self.dummy_hash = hash_password(os.urandom(6).hex()[:8])
        writer.register(REHASH, _rehash)

    def authenticate(self, peer: str, system_id: str, password: bytes,
                     alive: Callable[[], bool]) -> defer.Deferred:
        """A Deferred firing a :class:`Verdict` (None: the connection closed before the check)."""
        if self.limiter.blocked(peer):
            return defer.succeed(Verdict(None, False, "rate_limited"))
        if self.checks.full and not self.cache.candidate(system_id, password):  # nothing read or computed
            self.metrics.checks.labels("busy").inc()
            return defer.succeed(Verdict(None, False, "busy"))
        d = self.read(find_credential, system_id)
        d.addCallback(self._found, password, alive)
        return d

    def _found(self, cred: Credential | None, password: bytes, alive) -> defer.Deferred | Verdict | None:
        if not alive():
            self.metrics.checks.labels("dropped").inc()
            return None
        if cred is not None and self.cache.hit(cred, password):
            self.metrics.checks.labels("cache").inc()
            return Verdict(cred, True, "", "cache")
        stored = cred.password_hash if cred is not None else self.dummy_hash
        d = self.checks.submit(password, stored, alive)
        if d is None:
            self.metrics.checks.labels("busy").inc()
            return Verdict(cred, False, "busy")
        d.addCallback(self._checked, cred, password, stored)
        return d

    def _checked(self, result, cred: Credential | None, password: bytes, stored: str) -> Verdict | None:
        if result is None:
            self.metrics.checks.labels("dropped").inc()
            return None
        self.metrics.checks.labels("scrypt").inc()
        ok, new_hash = result
        if cred is None:
            return Verdict(None, False, "unknown_system_id", "scrypt")
        if not ok:
            return Verdict(cred, False, "bad_password", "scrypt")
        if new_hash is not None:
            self.writer.enqueue(REHASH, (cred.id, stored, new_hash))
            stored = new_hash
        self.cache.remember(cred, stored, password)
        return Verdict(cred, True, "", "scrypt")

    def stop(self) -> None:
        self.checks.stop()


def _rehash(conn, items: list[tuple[int, str, str]]) -> None:
    """Writer handler: today's hash for credentials that bound with old parameters."""
    for credential_id, old, new in items:
        if update_password_hash(conn, credential_id, old, new):
            log.info("credential %d rehashed with today's scrypt parameters", credential_id)


class BindHandling:
    """The bind requests of :class:`smsc.server.HubProtocol` (a mixin: the protocol's state).

    Every bind is logged once at INFO, accepted or refused, with the
    system_id, the account when the system_id exists, the bind type, the peer
    address, and the status and reason of a refusal.
    """

    hub: object
    peer: str
    credential: Credential | None
    _closed: bool

    def _bind(self, pdu: Pdu) -> None:
        system_id = pdu.fields["system_id"].decode("ascii", "replace")
        d = self.hub.binds.authenticate(self.peer, system_id, pdu.fields["password"], self._bind_alive)
        pdu.fields["password"] = b""
        d.addCallbacks(lambda v: self._bind_checked(pdu, v), lambda f: self._bind_error(pdu, f))

    def _bind_alive(self) -> bool:
        return not self._closed

    def _bind_error(self, pdu: Pdu, failure) -> None:
        log.error("bind check failed: %s", failure.getErrorMessage())
        self._bind_refused(pdu, None, "error", Status.ESME_RSYSERR)

    def _bind_checked(self, pdu: Pdu, verdict: Verdict | None) -> None:
        hub = self.hub
        if verdict is None or self._closed:
            # Never checked, or answered to nobody: unless it passed, an attempt of this address.
            cred = verdict.credential if verdict is not None else None
            self._bind_log(pdu, cred, "abandoned", "connection closed")
            if verdict is None or not verdict.ok:
                hub.binds.limiter.failed(self.peer)
            return
        cred, why = verdict.credential, verdict.reason
        if verdict.ok:
            if not cred.account.enabled or cred.revoked:
                why = "disabled"
            elif not cred.allows(self.peer):
                why = "address_not_allowed"
            elif len(hub.sessions_by_account.get(cred.account.id, ())) >= cred.max_binds * 4:
                why = "too_many_binds"
        if why:
            if cred is not None and why in ("disabled", "address_not_allowed"):
                hub.binds.cache.forget(cred.system_id)
            # The hub collapses 0x0E/0x0F into 0x0D: no account enumeration.
            status = Status.ESME_RTHROTTLED if why == "busy" else Status.ESME_RBINDFAIL
            self._bind_refused(pdu, cred, why, status)
            return
        self.credential = cred
        acct = cred.account
        hub.policy_for(acct)  # the bind's fresh read of the account replaces the hub's copy
        self.session.accept_bind(pdu, hub.settings.system_id.encode())
        self._bind_type = _STATE_BIND_TYPE[self.session.state]
        hub.metrics.account_names[acct.id] = acct.name
        hub.metrics.session_bound(acct.name, self._bind_type, 1)
        hub.sessions_by_account.setdefault(acct.id, set()).add(self)
        self._bind_log(pdu, cred, "ok", f"checked by {verdict.how}")
        self.flush()
        if self.session.can_receive:
            hub.outbox.attach(acct.id, self)

    def _bind_refused(self, pdu: Pdu, cred: Credential | None, why: str, status: int) -> None:
        hub = self.hub
        if why not in ("busy", "rate_limited", "error"):  # nothing examined, or our fault: no attempt
            hub.binds.limiter.failed(self.peer)
        hub.metrics.bind_failures.labels(why).inc()
        self._bind_log(pdu, cred, "refused", why, status)
        self._dispatch(self.session.reject_bind(pdu, status))
        self.flush()

    def on_violation(self, ev: ProtocolViolation) -> None:
        """A bind the session refused by itself (in progress, already bound, window) is logged
        too; before a successful bind it is a failed attempt of this address."""
        if ev.command_id in BIND_COMMANDS:
            self._bind_log_raw(ev.command_id, None, None, "refused", ev.reason, ev.status)
            if self.credential is None:
                self.hub.binds.limiter.failed(self.peer)
                self.hub.metrics.bind_failures.labels("protocol").inc()
            return
        super().on_violation(ev)  # type: ignore[misc]

    def _bind_log(self, pdu: Pdu, cred: Credential | None, result: str, reason: str,
                  status: int | None = None) -> None:
        system_id = pdu.fields["system_id"].decode("ascii", "replace")
        self._bind_log_raw(pdu.command_id, system_id, cred, result, reason, status)

    def _bind_log_raw(self, command_id: int, system_id: str | None, cred: Credential | None,
                      result: str, reason: str, status: int | None) -> None:
        log.info(
            "bind %s: system_id=%r account=%s type=%s peer=%s%s reason=%s",
            result,
            system_id if system_id is not None else "?",
            cred.account.name if cred is not None else "-",
            BIND_TYPE.get(command_id, "?"),
            self.peer,
            f" status={status_name(status)}" if status is not None else "",
            reason,
        )
