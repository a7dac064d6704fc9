"""Wiring: one :class:`Hub` owns the store, the writer, the router and the listeners."""

from __future__ import annotations

import logging
from dataclasses import replace

from sqlalchemy import select
from twisted.internet import defer, task, threads
from twisted.web import server as webserver

from staffetta.billing.accounts import (
    Account,
    Credential,
    accounts,
    all_accounts,
    credentials,
    credentials_by_id,
    current_settings_version,
    get_account_by_id,
    upgrade,
)
from staffetta.billing.alerts import LowCreditAlerter
from staffetta.billing.plans import PricePlan, billing_from_dict
from staffetta.billing.wallet import Report, pending_alerts
from staffetta.conf.settings import Settings, UpstreamSettings, parse_hostport
from staffetta.hlr import cache as _hlr_cache  # noqa: F401 - registers its tables
from staffetta.hlr import jobs as _hlr_jobs  # noqa: F401
from staffetta.hlr.model import HlrMetrics, parse_age
from staffetta.hlr.providers import provider_from_config
from staffetta.hlr.service import HlrService, writer_charge
from staffetta.pdu.message import AccountPolicy
from staffetta.pdu.numbering import plan as numbering_plan
from staffetta.pdu.session import Timers
from staffetta.router import messages as store
from staffetta.router import number_store
from staffetta.router.numbers import Configured, Numbers, two_way_from_dict
from staffetta.router.outbox import Outbox
from staffetta.router.router import Router
from staffetta.router.routes import routing_for
from staffetta.router.table import RouteQuery
from staffetta.router.upstream import Connector
from staffetta.smsc.binds import Binds
from staffetta.smsc.hlr_billing import billing_charge_tx
from staffetta.smsc.logs import fields
from staffetta.smsc.metrics import HubMetrics, MetricsResource
from staffetta.smsc.mo_hub import HubMo
from staffetta.smsc.pipeline import SubmitPipeline, Submitter
from staffetta.smsc.server import HubFactory
from staffetta.smsc.status import StatusResource, routes_doc
from staffetta.smsc.throttle import TokenBucket
from staffetta.store.db import create_schema, make_engine
from staffetta.store.ids import allocator
from staffetta.store.writer import GroupCommitWriter

log = logging.getLogger(__name__)

DEFAULT_VALIDITY = 72 * 3600.0  # the seed's "undelivered after 72 hours"
MAX_VALIDITY = 7 * 86400.0  # a client's validity_period is clamped to this (conformance §11)
#: How often each hub looks at the settings version (a change applies within about this).
SETTINGS_POLL = 1.0
#: Several hubs: how far back each read of the shared conversations reaches before the previous one.
CONVERSATION_SLACK = 10.0


class Hub:
    def __init__(self, settings: Settings, reactor, engine=None) -> None:
        self.settings = settings
        self.reactor = reactor
        self.engine = engine or make_engine(settings.db_url)
        create_schema(self.engine)
        upgrade(self.engine)
        store.upgrade(self.engine)
        self.billing = billing_from_dict(settings.billing)
        s = settings.session
        self.timers = Timers(s.session_init, s.enquire_link, s.response, s.inactivity)
        self.metrics = HubMetrics()
        self.writer = GroupCommitWriter(
            self.engine, reactor, max_batch=settings.writer_batch, max_delay=settings.writer_delay,
            on_batch=self.metrics.batch,
        )
        store.register_handlers(self.writer)
        number_store.register_handlers(self.writer)
        #: Pools, the reply window, codes, keywords, opt-outs (router/numbers.py): configured
        #: part reloaded with the settings, the window rebuilt from the messages at start.
        self.numbers = Numbers(two_way_from_dict(settings.numbers))
        # Several hubs may share a PostgreSQL store: each shares the conversations it opens.
        self.numbers.journaling = self.engine.dialect.name == "postgresql"
        self._conversations_seen = 0.0
        self._sharing = False
        self.metrics.watch_numbers(self.numbers)
        with self.engine.connect() as conn:
            max_message, max_outbox = store.max_ids(conn)
        self.message_ids = allocator(self.engine, "staffetta_message_ids", max_message + 1)
        self.outbox_ids = allocator(self.engine, "staffetta_outbox_ids", max_outbox + 1)
        self.outbox = Outbox(
            self.writer, reactor, self._load_outbox, on_event=self.metrics.receipt_event
        )
        self.router = Router(
            self.writer, reactor, self.outbox, self.read, self.outbox_ids, metrics=self.metrics,
            receipt_ttl=settings.outbox_ttl, refund_network_failures=self._refunds_network_failures,
            max_tracked=settings.max_tracked, track_grace=settings.track_grace, query_of=self._query_of,
            max_scheduled=settings.max_scheduled, schedule_horizon=MAX_VALIDITY,
        )
        self.router.set_routing(routing_for(settings))
        self.alerter = LowCreditAlerter(reactor, on_metric=self._alert_metric, on_sent=self._alert_sent)
        #: Every account's settings, by id: loaded at start, reloaded whenever the
        #: settings version moves (``_poll_settings``), so outcomes of accounts not
        #: bound since a restart use their real settings too.
        self.accounts: dict[int, Account] = {}
        #: The credentials of bound sessions as they are now, by id (reloaded with the accounts).
        self._credentials: dict[int, Credential] = {}
        self._submitters: dict[int, Submitter] = {}
        self._settings_version = -1
        self._reloading = False
        self.hlr = self._make_hlr()
        for u in settings.upstreams:
            self.router.add_connector(self._connector(u))
        self.binds = Binds(settings.bind_limit, reactor, self.read, self.writer, self.metrics.registry)
        self.default_validity = DEFAULT_VALIDITY
        self.max_validity = MAX_VALIDITY
        self.pipeline = SubmitPipeline(
            routes=self.router, message_ids=self.message_ids, default_validity=DEFAULT_VALIDITY,
            max_validity=MAX_VALIDITY, check_schedule=self.router.schedule.admit, numbers=self.numbers,
        )
        self.clients: set = set()
        self.sessions_by_account: dict[int, set] = {}
        self._policies: dict[int, AccountPolicy] = {}
        self._sweeps: list[task.LoopingCall] = []
        self._buckets: dict[int, TokenBucket] = {}
        self.port = None
        self.metrics_port = None
        #: The MO path (smsc/mo_hub.py): owner decision, durable write, outbox and webhooks.
        self.mo = HubMo(self)

    # ----------------------------------------------------------------- helpers

    def _connector(self, u: UpstreamSettings) -> Connector:
        timers = self.timers
        if u.enquire_link is not None:
            timers = Timers(timers.session_init, u.enquire_link, timers.response, timers.inactivity)
        return Connector(u, self.router, self.reactor, timers=timers, pdu_counts=self.metrics.pdu_counts,
                         max_queue=self.settings.max_queue)

    def _query_of(self, record) -> RouteQuery:
        """The route query of an accepted message, for the table in force (after a restart or a reload)."""
        a = self.accounts.get(record.account_id)
        name = a.name if a is not None else str(record.account_id)
        routing = self.router.routing
        reading = numbering_plan().read(record.destination)
        weekday = minute = 0
        if routing.needs_time:
            weekday, minute = routing.table.when(self.reactor.seconds())
        return RouteQuery(name, record.destination, record.msg_type, record.source_addr,
                          routing.groups.get(name, frozenset()), reading.region if reading else None,
                          record.mccmnc, weekday, minute)

    def _compile_numbering(self) -> None:
        """Compile the numbering plan for the countries the price plans serve, before the first submit.

        Otherwise the first number of each length to each country pays its
        classifier's compile (milliseconds) on the submit path while traffic
        waits (docs/benchmarks.md, "a warm-up cost in every short run").
        """
        regions = {r for p in self.billing.plans.values() for r in (*p.home_regions, *p.countries)}
        numbering_plan().compile_regions(sorted(regions))

    # ------------------------------------------------------------ routing, live

    def connector_states(self) -> list[dict]:
        """Each connector's live state (bound sessions, window, queue, last error, delivery ratio)."""
        return [c.state() for c in self.router.connectors.values() if not c.removed]

    def reload_config(self, new: Settings) -> dict:
        """Put a new route table and connector list in force without a restart (SIGHUP, ``route reload``).

        The table is built first: a bad one raises ConfigError and nothing
        changes. New connectors start and bind; removed ones unbind after
        their window drains (answers that arrive are honoured) and what waits
        on them is routed again by the new table; a connector whose address
        or login changed is replaced the same way. Messages in flight are
        neither lost nor sent twice by the reload itself.
        """
        routing = routing_for(new)
        old = {u.name: u for u in self.settings.upstreams}
        fresh = {u.name: u for u in new.upstreams}
        added = [n for n in fresh if n not in old]
        removed = [n for n in old if n not in fresh]
        changed = [n for n in fresh if n in old and fresh[n] != old[n]]
        router = self.router
        retiring = [router.connectors.pop(name) for name in removed + changed]
        self.settings = replace(self.settings, upstreams=new.upstreams, routes=new.routes,
                                route_timezone=new.route_timezone, account_groups=new.account_groups)
        for name in added + changed:
            c = self._connector(fresh[name])
            router.add_connector(c)
            c.start()
        router.set_routing(routing)
        for c in retiring:
            router.retire(c)
        router.rebalance()  # rules changed: what waits on a connector that is down may have an up one now
        summary = {"rules": len(routing.table.rules), "added": added, "removed": removed, "changed": changed}
        log.info("route table reloaded", extra=fields(**summary))
        return summary

    def read(self, fn, *args) -> defer.Deferred:
        """Run a blocking read in a thread with its own connection."""

        def run():
            with self.engine.connect() as conn:
                return fn(conn, *args)

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), run)

    def _load_outbox(self, account_id: int, limit: int, after_id: int = 0) -> defer.Deferred:
        return self.read(store.pending_deliveries, account_id, after_id, limit)

    def policy_for(self, account: Account) -> AccountPolicy:
        """At bind, with the account just read from the store: its submit policy.

        That read is the freshest there is, so it replaces what the hub holds;
        the next poll reloads everything (a reload may have landed between the
        read and now, and must win over it).
        """
        if self.accounts.get(account.id) != account:
            self.accounts[account.id] = account
            self._policies.pop(account.id, None)
            self._submitters.clear()
            self._settings_version = -1
        return self._policy(account)

    def _policy(self, account: Account) -> AccountPolicy:
        p = self._policies.get(account.id)
        if p is None:
            p = self._policies[account.id] = AccountPolicy(
                default_type=account.default_type,
                default_country_code=account.default_country_code,
                default_sender=account.default_sender,
            )
        return p

    def submitter(self, credential: Credential) -> Submitter:
        """What the pipeline reads of a bound credential: its account's live settings.

        Built on first use and again after every settings reload; ``credential``
        is the one read at bind, used only until the reload knows it.
        """
        s = self._submitters.get(credential.id)
        if s is None:
            cred = self._credentials.setdefault(credential.id, credential)
            account = self.accounts.setdefault(cred.account.id, cred.account)
            s = self._submitters[credential.id] = Submitter(
                account, self._policy(account), self.plan_for(account), self.bucket_for(cred),
                self.hlr_mode(account),
            )
        return s

    def _load_settings(self, conn, bound: list[int]) -> tuple[int, dict[int, Account], dict[int, Credential],
                                                               Configured]:
        """The version, then every account, the bound credentials and the numbers (a change in between is
        seen next poll)."""
        version = current_settings_version(conn)
        return (version, all_accounts(conn), credentials_by_id(conn, bound) if bound else {},
                number_store.load_configured(conn))

    def _apply_settings(self, loaded: tuple[int, dict[int, Account], dict[int, Credential], Configured]) -> None:
        version, accts, creds, configured = loaded
        self.numbers.configure(configured, self.reactor.seconds())
        if version != self._settings_version:
            log.debug("settings version %d: %d accounts reloaded", version, len(accts))
        self._settings_version = version
        self.accounts = accts
        self._credentials.update(creds)
        self._policies.clear()
        self._submitters.clear()
        mo = getattr(self, "mo", None)
        if mo is not None:
            mo.settings_changed()  # a `staffetta mo replay` may be waiting

    def _poll_settings(self) -> defer.Deferred | None:
        """Reload account and credential settings when a change bumped the version."""
        if self._reloading:
            return None
        self._reloading = True
        bound = sorted({p.credential.id for p in self.clients if p.credential is not None})

        def read(conn):
            if current_settings_version(conn) == self._settings_version:
                return None
            return self._load_settings(conn, bound)

        def done(loaded):
            self._reloading = False
            if loaded is not None:
                self._apply_settings(loaded)

        def failed(f):
            self._reloading = False
            log.error("settings reload failed: %s", f.getErrorMessage())

        return self.read(read).addCallbacks(done, failed)

    def _make_hlr(self) -> HlrService | None:
        """The HLR service when a provider is configured or lookups are on by default."""
        h = self.settings.hlr
        if h.provider is None and h.mode == "off":
            return None
        metrics = HlrMetrics(self.metrics.registry)
        provider = provider_from_config(self.reactor, h.provider or {"type": "simulator"}, metrics=metrics)
        return HlrService(
            self.reactor, self.engine, self.writer, provider, writer_charge(self.writer, billing_charge_tx),
            price=self._hlr_price, max_age=parse_age(h.max_age), redis_url=self.settings.redis_url,
            memory_size=h.memory_size, metrics=metrics,
        )

    def _hlr_price(self, account_id: int) -> int:
        a = self.accounts.get(account_id)
        return self.billing.plan(a.price_plan if a else None).hlr_price

    def hlr_mode(self, account: Account) -> str:
        """off | cached | always for this account (its own setting, else the config's)."""
        if self.hlr is None:
            return "off"
        return account.hlr_mode or self.settings.hlr.mode

    def bucket_for(self, credential) -> TokenBucket | None:
        """One bucket per credential, shared by its sessions (None: no limit)."""
        if not credential.max_rate:
            return None
        b = self._buckets.get(credential.id)
        if b is None or b.rate != credential.max_rate:
            b = self._buckets[credential.id] = TokenBucket(credential.max_rate, self.reactor.seconds())
        return b

    def plan_for(self, account: Account) -> PricePlan:
        return self.billing.plan(account.price_plan)

    def _refunds_network_failures(self, account_id: int) -> bool:
        """Read per outcome from the live settings (every account, bound or not)."""
        a = self.accounts.get(account_id)
        if a is None:  # created after the last reload and not bound here: read it now
            with self.engine.connect() as conn:
                a = get_account_by_id(conn, account_id)
            if a is None:
                return False
            self.accounts[account_id] = a
        return a.refund_on_network_failure

    def billing_report(self, report: Report) -> None:
        """After a commit that moved money: balance gauges, and one alert per crossing."""
        self.metrics.balances(report.balances)
        for crossing in report.crossed:
            self.alerter.notify(crossing)

    def _alert_metric(self, event: str, c) -> None:
        self.metrics.low_credit_alerts.labels(c.account_name, event).inc()

    def _alert_sent(self, c) -> None:
        self.writer.enqueue("alerts_sent", (c.alert_id, self.reactor.seconds()))

    def _sweep_lots(self) -> None:
        def swept(report):
            if report is not None:
                self.billing_report(report)

        self.writer.submit("expire_lots", self.reactor.seconds()).addCallbacks(
            swept, lambda f: log.error("lot expiry sweep failed: %s", f.getErrorMessage())
        )

    def _check_credentials(self) -> defer.Deferred | None:
        """Unbind, within seconds, sessions whose account was disabled or credential revoked."""
        by_cred: dict[int, list] = {}
        for p in self.clients:
            if p.credential is not None and p.session.bound:
                by_cred.setdefault(p.credential.id, []).append(p)
        if not by_cred:
            return None

        def read(conn):
            rows = conn.execute(
                select(credentials.c.id, credentials.c.revoked, accounts.c.enabled)
                .join(accounts, accounts.c.id == credentials.c.account_id)
                .where(credentials.c.id.in_(list(by_cred)))
            )
            return {r.id for r in rows if not r.revoked and r.enabled}

        def unbind(still_ok):
            for cred_id, protos in by_cred.items():
                if cred_id not in still_ok:
                    for p in protos:
                        log.info("unbinding %s: account disabled or credential revoked", p.credential.system_id)
                        p.session.unbind()
                        p.flush()

        return self.read(read).addCallbacks(unbind, lambda f: log.error("credential check failed: %s", f.getErrorMessage()))

    def _forget_conversations(self) -> None:
        now = self.reactor.seconds()
        self.numbers.forget_expired(now)
        if self.numbers.journaling:
            self.writer.enqueue("conversations_sweep", now - self.numbers.window)

    def _share_conversations(self) -> defer.Deferred | None:
        """Several hubs: write the conversations opened here, take the ones the others opened.

        Each second; rows are read back from a little before the previous read
        (``CONVERSATION_SLACK``: commit lag and clock skew between hubs).
        """
        batch = self.numbers.take_journal()
        if batch:
            self.writer.enqueue("conversations", batch)
        if self._sharing:
            return None
        self._sharing = True
        started = self.reactor.seconds()

        def done(rows):
            self._sharing = False
            self._conversations_seen = started - CONVERSATION_SLACK
            self.numbers.merge(rows)

        def failed(f):
            self._sharing = False
            log.error("reading the shared conversations failed: %s", f.getErrorMessage())

        return self.read(number_store.conversations_since, self._conversations_seen).addCallbacks(done, failed)

    def _refresh_gauges(self) -> None:
        m = self.metrics
        for c in self.router.connectors.values():
            if c.removed:
                continue
            name = c.config.name
            m.upstream_window.labels(name).set(c.in_flight)
            m.upstream_queue.labels(name).set(len(c.queue))
            ratio = c.delivery_ratio
            if ratio is not None:
                m.upstream_ratio.labels(name).set(ratio)
        m.scheduled.set(len(self.router.schedule))

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.writer.start()
        for c in self.router.connectors.values():
            c.start()
        with self.engine.connect() as conn:
            # Queued rows include those scheduled for later (the router holds them back).
            queued = store.queued_messages(conn, limit=self.settings.max_queue + self.settings.max_scheduled)
            alerts = pending_alerts(conn)
            self._apply_settings(self._load_settings(conn, []))
            now = self.reactor.seconds()
            for account_id, handset, number, msg_type, at in number_store.recent_pool_mt(
                    conn, now - self.numbers.window, self.numbers.pool_numbers()):
                self.numbers.remember_mt(account_id, handset, number, at, msg_type)
            self.numbers.take_journal()  # already in the store
            self._conversations_seen = now - self.numbers.window
        self.metrics.know_accounts(self.engine)  # resumed messages are labelled by name, not id
        for crossing in alerts:  # alerts whose POST never succeeded before a stop
            self.alerter.notify(crossing)
        for fn, every in ((self._sweep_lots, 60.0), (self._check_credentials, 2.0),
                          (self.router.sweep_expired, 5.0), (self.router.forget_expired, 5.0),
                          (self._poll_settings, SETTINGS_POLL), (self._forget_conversations, 60.0),
                          *(((self._share_conversations, SETTINGS_POLL),) if self.numbers.journaling else ())):
            loop = task.LoopingCall(fn)
            loop.clock = self.reactor
            loop.start(every, now=False)
            self._sweeps.append(loop)
        if queued:
            log.info("resuming %d messages accepted but not yet sent upstream", len(queued))
            self.router.resume(queued)
            if len(self.router.schedule):
                log.info("%d of them wait for their scheduled time", len(self.router.schedule))
        self.mo.start()
        self._compile_numbering()
        host, port = parse_hostport(self.settings.listen, "listen")
        self.port = self.reactor.listenTCP(port, HubFactory(self), interface=host)
        if self.settings.metrics_listen:
            mhost, mport = parse_hostport(self.settings.metrics_listen, "metrics_listen")
            site = webserver.Site(StatusResource(self.connector_states, lambda: routes_doc(self.settings),
                                                 MetricsResource(self.metrics, self._refresh_gauges)))
            site.noisy = False
            self.metrics_port = self.reactor.listenTCP(mport, site, interface=mhost)

    @property
    def smpp_port(self) -> int:
        return self.port.getHost().port

    @defer.inlineCallbacks
    def stop(self):
        for loop in self._sweeps:
            if loop.running:
                loop.stop()
        self.router.schedule.stop()
        if self.port is not None:
            yield self.port.stopListening()
        if self.metrics_port is not None:
            yield self.metrics_port.stopListening()
        for c in [*self.router.connectors.values(), *self.router.retiring]:  # retiring: a reload removed them
            c.stop()
            c.disconnect()
        for p in list(self.clients):
            if p.transport is not None:
                p.transport.loseConnection()
        self.binds.stop()
        yield self.mo.stop()
        if self.hlr is not None:
            yield self.hlr.close()
        yield self.writer.stop()
        self.engine.dispose()
