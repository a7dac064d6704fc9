"""The hub's MO wiring: the MO router, its webhooks, its ids, sweeps and replays.

Kept out of :mod:`smsc.app` so that the hub only calls :func:`attach`,
``start``, ``settings_changed`` and ``stop``.
"""

from __future__ import annotations

import logging

from twisted.internet import defer, task

from staffetta.router import mo_store
from staffetta.router.mo import MoRouter
from staffetta.router.webhooks import HttpPoster, Schedule, Webhooks
from staffetta.smsc.mo_replies import AutoReplies
from staffetta.store.ids import allocator

log = logging.getLogger(__name__)


class HubMo:
    def __init__(self, hub) -> None:
        self.hub = hub
        s = hub.settings.mo
        writer = hub.writer
        mo_store.register_handlers(writer)
        with hub.engine.connect() as conn:
            max_mo, max_webhook = mo_store.max_ids(conn)
        self.mo_ids = allocator(hub.engine, "staffetta_mo_ids", max_mo + 1)
        self.webhook_ids = allocator(hub.engine, "staffetta_webhook_ids", max_webhook + 1)
        self.poster = HttpPoster(hub.reactor, timeout=s.webhook_timeout)
        self.webhooks = Webhooks(
            writer, hub.reactor, self._target, self.poster.post,
            schedule=Schedule(s.webhook_first_retry, s.webhook_max_delay, s.webhook_retry_for),
            concurrency=s.webhook_concurrency,
            load_pending=lambda limit, exclude: hub.read(mo_store.pending_webhooks, limit, exclude),
            metrics=hub.metrics,
        )
        self.router = MoRouter(
            writer, hub.reactor, hub.outbox, hub.numbers, mo_ids=self.mo_ids, outbox_ids=hub.outbox_ids,
            webhook_ids=self.webhook_ids, account_of=hub.accounts.get, webhooks=self.webhooks,
            replies=AutoReplies(hub), reassembly_timeout=s.reassembly_timeout,
            max_reassembling=s.max_reassembling, outbox_ttl=hub.settings.outbox_ttl, metrics=hub.metrics,
        )
        # hub.accounts is replaced whole at each reload: read it through the hub.
        self.router.account_of = lambda account_id: hub.accounts.get(account_id)
        hub.router.mo = self.router
        self._sweep: task.LoopingCall | None = None
        self._replaying = False

    def _target(self, account_id: int) -> tuple[str, str] | None:
        a = self.hub.accounts.get(account_id)
        if a is None or not a.mo_url:
            return None
        return a.mo_url, a.mo_secret or ""

    def start(self) -> None:
        """After the writer started and the accounts are loaded: parts, pending webhooks, replays."""
        hub = self.hub
        with hub.engine.connect() as conn:
            parts = mo_store.stored_parts(conn)
        if parts:
            log.info("resuming the reassembly of %d stored MO parts", len(parts))
            self.router.load_parts(parts)
        self.webhooks.refill()
        self._sweep = task.LoopingCall(self.router.sweep)
        self._sweep.clock = hub.reactor
        self._sweep.start(1.0, now=False)
        self.take_replays()

    def settings_changed(self) -> None:
        """The settings version moved: a ``staffetta mo replay`` may be waiting."""
        self.take_replays()

    def take_replays(self) -> None:
        if self._replaying:
            return
        self._replaying = True

        def got(requests) -> None:
            self._replaying = False
            if not requests:
                return
            log.info("replaying %d MO", len(requests))
            self.router.replay([row for _, row in requests], None, [rid for rid, _ in requests])

        def failed(f) -> None:
            self._replaying = False
            log.error("reading MO replays failed: %s", f.getErrorMessage())

        self.hub.read(mo_store.replay_requests).addCallbacks(got, failed)

    @defer.inlineCallbacks
    def stop(self):
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        self.webhooks.stop()
        yield self.poster.close()
