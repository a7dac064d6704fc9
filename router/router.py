"""The router: forward accepted messages, bring receipts back to their owners.

Correlation (carrier id -> our id) lives in memory for messages in flight, so
the hot path needs no database read; after a restart, or for a message evicted
from memory, the ``messages`` table answers (indexed on connector + upstream
id). A carrier's deliver_sm is acknowledged only after its outcome and the
client's receipt are committed: a crash in between makes the carrier resend,
never loses the receipt.
"""

from __future__ import annotations

import itertools
import logging
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable

from twisted.internet import defer

from staffetta.pdu.codec import Pdu, tlv_cstr, tlv_int
from staffetta.pdu.constants import ESM_RECEIPT, FINAL_STATES, Command, MessageState, Status, Tag
from staffetta.pdu.receipt import (
    STATE_TO_STAT,
    format_receipt,
    normalize_message_id,
    parse_receipt,
    receipt_fields,
    receipt_octets,
    stat_to_state,
)
from staffetta.pdu.window import Line
from staffetta.router import messages as store
from staffetta.router.messages import Delivery
from staffetta.router.record import (  # noqa: F401 - the TLV stream helpers are read from here too
    MessageRecord,
    decode_tlv_stream,
    encode_tlv_stream,
    text20_of,
)
from staffetta.router.routes import Choice, Routing
from staffetta.router.schedule import DEFAULT_LIMIT as SCHEDULE_LIMIT
from staffetta.router.schedule import Schedule
from staffetta.router.table import RouteQuery
from staffetta.router.upstream import Connector, Forward

log = logging.getLogger(__name__)

# Enum members read per message, as globals (an Enum class attribute costs ~120 ns
# on Python 3.11: see pdu/session.py).
_ROK = Status.ESME_ROK
_DELIVER_SM = Command.DELIVER_SM
_ENROUTE = MessageState.ENROUTE
_DELIVERED = MessageState.DELIVERED
_RECEIPTED_MESSAGE_ID = Tag.receipted_message_id
_MESSAGE_STATE = Tag.message_state
_NETWORK_ERROR_CODE = Tag.network_error_code

RECEIPT_TTL = 3 * 86400.0


#: What the router keeps of a message in flight is its record (the name its callers use).
Tracked = MessageRecord



def _bare_query(record: MessageRecord) -> RouteQuery:
    """A route query from the row alone (account by id): for a router built without the hub."""
    return RouteQuery(str(record.account_id), record.destination, record.msg_type, record.source_addr)


class UpstreamIndex(dict):
    """Carrier key (connector, carrier id) -> record, filing the key on the record.

    So that evicting a record from memory deletes its carrier key directly
    (O(1)), without a scan of this index.
    """

    __slots__ = ()

    def __setitem__(self, key: tuple[str, str], record: MessageRecord) -> None:
        if record.upstream_id is not None:  # sent again (after a drop): the newest id wins, as on the row
            old = (record.connector, record.upstream_id)
            if old != key and dict.get(self, old) is record:
                dict.__delitem__(self, old)
        record.connector, record.upstream_id = key
        dict.__setitem__(self, key, record)


def wants_receipt(registered_delivery: int, state: int) -> bool:
    mode = registered_delivery & 0x03
    if mode == 1:
        return True
    return mode == 2 and state != MessageState.DELIVERED


class Router:
    def __init__(
        self,
        writer,
        reactor,
        outbox,
        read: Callable[..., defer.Deferred],
        outbox_ids: Callable[[], int],
        *,
        max_tracked: int = 300_000,
        track_grace: float = 3600.0,
        unknown_receipt_retries: int = 5,
        receipt_ttl: float = RECEIPT_TTL,
        metrics=None,
        refund_network_failures: Callable[[int], bool] = lambda account_id: False,
        query_of: Callable[[MessageRecord], RouteQuery] | None = None,
        max_scheduled: int = SCHEDULE_LIMIT,
        schedule_horizon: float = 7 * 86400.0,
    ) -> None:
        #: Per account: is a message that fails in the network refunded? (billing policy)
        self.refund_network_failures = refund_network_failures
        self.receipt_ttl = receipt_ttl
        self.writer = writer
        self.reactor = reactor
        self.outbox = outbox
        self.read = read  # read(fn, *args) -> Deferred: runs a blocking DB read in a thread
        self.outbox_ids = outbox_ids
        self.connectors: dict[str, Connector] = {}
        #: Connectors a reload removed, until their sessions are closed and their line is empty.
        self.retiring: list[Connector] = []
        #: The route table in force (set_routing); None until the hub sets one.
        self.routing: Routing | None = None
        #: Bumped when a connector goes up or down or the table changes: routing's cached choices key on it.
        self.state_version = 0
        #: Places in line, shared by every connector's line (failover keeps a message's place).
        self._places = itertools.count()
        #: The route query of an accepted message (account name and groups, country...):
        #: the hub's, for messages routed again after a restart or a reload.
        self.query_of: Callable[[MessageRecord], RouteQuery] = query_of or _bare_query
        #: Messages awaiting their receipt kept in memory (~1 KB each, docs/operations.md);
        #: past it the oldest is forgotten and its receipt is matched from the store.
        self.max_tracked = max_tracked
        #: A message is forgotten from memory once its validity plus this has passed.
        self.track_grace = track_grace
        self.unknown_receipt_retries = unknown_receipt_retries
        self.metrics = metrics
        #: Messages in flight by our id, oldest first. An OrderedDict, not a dict:
        #: taking a dict's first item scans the slots its earlier deletions left
        #: (~160 µs a message at 300,000 in flight), an OrderedDict's is O(1).
        self._by_message: OrderedDict[int, MessageRecord] = OrderedDict()
        self._by_upstream: dict[tuple[str, str], MessageRecord] = UpstreamIndex()
        #: Messages waiting for their schedule_delivery_time (router/schedule.py).
        self.schedule = Schedule(reactor, self._released, self._expired_scheduled,
                                 horizon=schedule_horizon, limit=max_scheduled)
        #: The MO path (router.mo.MoRouter), set by the hub.
        self.mo = None

    # ---------------------------------------------------------------- routing

    def add_connector(self, connector: Connector) -> None:
        """A configured connector: its events come here; its line shares the routers' place counter."""
        self.connectors[connector.config.name] = connector
        connector.listener = self
        self.state_version += 1
        waiting = connector.line.take_entries(lambda _: True)
        connector.line = Line(limit=connector.max_queue, expired=self.expired_in_queue, clock=self.reactor,
                              places=self._places)
        if waiting:
            connector.line.put_back(waiting)

    def set_routing(self, routing: Routing) -> None:
        """The route table in force (at start, and at every reload)."""
        self.routing = routing
        self.state_version += 1

    def pick(self, destination: str) -> Connector | None:
        """The first configured connector (kept for callers that want one connector)."""
        return next(iter(self.connectors.values()), None)

    def query(self, account: str, a, now: float, mccmnc: str | None = None) -> RouteQuery:
        """The route query of a submit's assessment (``pdu.message.Assessment``) from ``account``."""
        return self.routing.query(account, a, now, mccmnc)

    def needs_lookup(self, q: RouteQuery) -> bool:
        """Whether the route for ``q`` depends on the serving network (an HLR lookup first)."""
        return self.routing.needs_lookup(q)

    def choose(self, q: RouteQuery) -> Choice | None:
        """The route for a new message, decided before its durable write (None: no rule matches)."""
        return self.routing.choose(q, self.connectors, self.state_version)

    def can_accept(self, choice: Choice) -> bool:
        """Whether the chosen connector's queue has room (else the submit gets ESME_RMSGQFUL)."""
        c = self.connectors.get(choice.order[0])
        return c is not None and not c.line.full

    def forward(self, record: MessageRecord, choice: Choice | None = None) -> None:
        """A message is committed: track it and queue it on its first connector.

        The upstream submit_sm takes the row's TLV stream as stored
        (:meth:`MessageRecord.submit_octets`).
        ``choice``: the routing decision made at submit; without one (a
        resumed message) the table in force decides again.
        A message scheduled for later waits in :attr:`schedule` (also after a restart).
        """
        if record.deliver_at is not None and self.schedule.hold(record):
            return
        self._send(record, choice)

    def _send(self, record: MessageRecord, choice: Choice | None) -> bool:
        """Track a message and queue it on its first connector (False: no route takes it any more)."""
        self._track(record)
        item = record.forward()
        if choice is None:
            choice = self._rechoose(record)
            if choice is None:
                return False
        item.rule = choice.rule
        item.order = choice.order
        if self.metrics is not None:
            self.metrics.routed(choice.rule.name)
        self.connectors[choice.order[0]].line.put(item)
        return True

    def _rechoose(self, record: MessageRecord) -> Choice | None:
        """The table in force decides for an accepted message (after a restart or a reload).

        A message no rule takes any more cannot be refused (it was
        acknowledged): it ends REJECTED, refunded, with its receipt, and the
        log says why (docs/routing.md).
        """
        choice = self.routing.choose(self.query_of(record), self.connectors, self.state_version) \
            if self.routing else None
        if choice is not None and choice.order:
            record.route = choice.rule.name
            return choice
        log.warning("message %d: no route takes it any more (%s): rejected and refunded", record.id,
                    "no rule matches" if choice is None else f"rule {choice.rule.name!r} sends nowhere")
        self._by_message.pop(record.message_id, None)
        self._finish(record, MessageState.REJECTED, 0, None, refund="no_route")
        return None

    def _next_connector(self, item: Forward, *, up_only: bool) -> str | None:
        """The next candidate after the one holding ``item``, an up one first (None: there is none)."""
        order = item.order
        n = len(order)
        if n < 2:
            return None
        connectors = self.connectors
        fallback = None
        for k in range(1, n):
            name = order[(item.step + k) % n]
            c = connectors.get(name)
            if c is None or c.removed:
                continue
            if c.up:
                return name
            if fallback is None:
                fallback = name
        return None if up_only else fallback

    def _move(self, entry: tuple[int, Forward], source: Connector, target: str, reason: str) -> None:
        """Hand a message to another connector of its route, at its place in line."""
        item = entry[1]
        item.step = item.order.index(target)
        if self.metrics is not None:
            self.metrics.failover(item.rule.name if item.rule is not None else "", source.config.name, target, reason)
        log.info("message %d: failover from %s to %s (%s)", item.message_id, source.config.name, target, reason)
        self.connectors[target].line.put_back((entry,))

    def _fail_over(self, entry: tuple[int, Forward], source: Connector, status: int | None, *,
                   up_only: bool) -> bool:
        """Move a message a carrier refused (``status``) or left unanswered (None) to its next candidate.

        Once per candidate at most, and for a refusal only when its rule fails
        over on that status. False: the message stays the caller's to finish.
        """
        item = entry[1]
        rule = item.rule
        if rule is None or item.moves >= len(item.order) - 1:
            return False
        if status is not None and status not in rule.failover_on:
            return False
        target = self._next_connector(item, up_only=up_only)
        if target is None:
            return False
        item.moves += 1
        self._move(entry, source, target, "timeout" if status is None else f"0x{status:08X}")
        return True

    def submit_throttled(self, connector: Connector, entry: tuple[int, Forward], status: int) -> None:
        """The carrier said slow down (its connector pauses): the next candidate that is up when the
        rule fails over on that status, else back to the head of this connector's queue, in order."""
        if not self._fail_over(entry, connector, status, up_only=True):
            connector.line.put_back((entry,))

    def submit_timed_out(self, connector: Connector, entry: tuple[int, Forward]) -> None:
        """No answer in time: the next candidate takes it, else it goes back to the head here."""
        if self._fail_over(entry, connector, None, up_only=False):
            return
        item = entry[1]
        log.info("connector %s: no answer to message %d in time, sent again in its place",
                 connector.config.name, item.message_id)
        connector.line.put_back((entry,))
        if connector.removed:
            self.rebalance()

    def connector_state(self, connector: Connector, up: bool, reason: str = "") -> None:
        self.state_version += 1
        if self.metrics is not None:
            self.metrics.connector_up(connector.config.name, up)
        self.rebalance()

    def judged(self, connector: Connector, delivered: bool) -> None:
        """A final outcome of a message ``connector`` carried: its delivery ratio moves.

        When the ratio crosses one of the table's least-cost floors the state
        version changes, so the next decision sees it (no cached order outlives it).
        """
        connector.outcome(delivered)
        floors = self.routing.floors if self.routing is not None else ()
        if floors:
            ratio = connector.delivery_ratio
            band = -1 if ratio is None else bisect_right(floors, ratio)
            if band != connector.band:
                connector.band = band
                self.state_version += 1

    def rebalance(self) -> int:
        """Move what waits on a connector that is down (or removed) to an up candidate of its route.

        Runs when a connector goes up or down, and after a reload; O(what
        waits on the connectors that are down). A message whose candidates
        are all down stays where it is, in its place, until one comes up.
        """
        moved = 0
        for c in [*self.connectors.values(), *self.retiring]:
            if c.up and not c.removed:
                continue
            if not len(c.line):
                continue
            for entry in c.line.take_entries(lambda _: True):
                item = entry[1]
                target = None
                if item.rule is not None and item.order and item.order[item.step] == c.config.name:
                    target = self._next_connector(item, up_only=not c.removed)
                if c.removed and target is None:
                    choice = self._rechoose_waiting(item)
                    if choice is None:
                        continue  # rejected and refunded: no rule takes it any more
                    item.rule, item.order, item.moves = choice.rule, choice.order, 0
                    target = next((n for n in choice.order if self.connectors[n].up), choice.order[0])
                if target is None:
                    c.line.put_back((entry,))
                    continue
                self._move(entry, c, target, "removed" if c.removed else "down")
                moved += 1
        self.retiring = [c for c in self.retiring if c.protocols or len(c.line)]
        return moved

    def _rechoose_waiting(self, item: Forward) -> Choice | None:
        record = self._by_message.get(item.message_id)
        if record is None:  # pragma: no cover - a waiting message is always tracked
            return None
        return self._rechoose(record)

    def retire(self, connector: Connector) -> None:
        """A reload removed it (no longer in :attr:`connectors`): it unbinds once its window drains.

        Answers and receipts that arrive on its sessions are still honoured
        (the session's UNBOUND state); what waits on it, and what its window
        gives back, is routed again by the table in force.
        """
        self.retiring.append(connector)
        connector.drain()
        self.rebalance()

    def resume(self, records: list[MessageRecord]) -> None:
        """After a restart: forward what was acknowledged but never sent upstream, in id order.

        Built by the same :meth:`MessageRecord.forward` as a first send, so the
        carrier sees the same octets; the table in force chooses the connector.
        """
        for record in records:
            self.forward(record)

    def _track(self, record: MessageRecord) -> None:
        """Remember a message in flight; past ``max_tracked``, forget the oldest in O(1).

        A forgotten message is still correlated from the table (indexed on
        connector + carrier id) when its receipt comes.
        """
        by_message = self._by_message
        if len(by_message) >= self.max_tracked:
            self._forget(by_message.popitem(last=False)[1])
        by_message[record.id] = record

    def _forget(self, old: MessageRecord) -> None:
        """Drop a record's carrier key too (it was just taken out of ``_by_message``)."""
        if old.upstream_id is not None:
            key = (old.connector, old.upstream_id)
            if self._by_upstream.get(key) is old:
                del self._by_upstream[key]

    def forget_expired(self) -> int:
        """Forget, oldest first, the messages whose validity plus ``track_grace`` has passed.

        A carrier that never sends a receipt must not keep a message in memory
        for ever: its row keeps the last state the carrier gave, and a receipt
        that still comes is matched from the store (indexed). Stops at the
        oldest message not yet due, so each sweep costs what it forgets.
        """
        limit = self.reactor.seconds() - self.track_grace
        by_message = self._by_message
        n = 0
        while by_message:
            mid = next(iter(by_message))
            record = by_message[mid]
            if record.expires_at > limit:
                break
            del by_message[mid]
            self._forget(record)
            n += 1
        return n

    # ------------------------------------------------- never sent: expiry, cancel

    def expired_in_queue(self, item: Forward) -> None:
        """Validity ran out before any carrier took it: EXPIRED, refunded, receipt."""
        t = self._by_message.pop(item.message_id, None)
        if t is not None:
            self._finish(t, MessageState.EXPIRED, 0, None, refund="expired_in_queue")

    def sweep_expired(self) -> int:
        """Expire what waits in the queues (a carrier that is down never pops them)."""
        now = self.reactor.seconds()
        n = 0
        for c in self.connectors.values():
            for item in c.line.take(lambda i: i.expires_at <= now):
                self.expired_in_queue(item)
                n += 1
        return n

    def cancel(self, account_id: int, message_id: int | None, source: str, destination: str | None) -> int:
        """cancel_sm: withdraw this account's messages not yet sent upstream; returns how many.

        With a message id, that message (the source must match when given);
        without, every pending message from ``source`` to ``destination``.
        Each ends DELETED, is refunded, and gets its receipt.
        """
        by_message = self._by_message

        def match_record(t: MessageRecord) -> bool:
            if t.account_id != account_id:
                return False
            if message_id is not None:
                return t.id == message_id and (not source or t.source == source)
            return t.source == source and (destination is None or t.destination == destination)

        def match(item: Forward) -> bool:
            t = by_message.get(item.message_id)
            return t is not None and match_record(t)

        n = 0
        for t in self.schedule.take(match_record, message_id):  # not yet released
            self._finish(t, MessageState.DELETED, 0, None, refund="cancelled")
            n += 1
        for c in self.connectors.values():
            for item in c.line.take(match):
                t = by_message.pop(item.message_id)
                self._finish(t, MessageState.DELETED, 0, None, refund="cancelled")
                n += 1
        return n

    def _released(self, record: MessageRecord) -> None:
        """Its schedule_delivery_time came: the table in force chooses its connectors, the row says ENROUTE.

        The route was chosen at acceptance, maybe days ago, when other
        connectors were up and another table may have been in force; the
        choice is made again now. With no rule taking it any more it ends
        REJECTED and refunded rather than stranded (as after a reload).
        """
        record.state = _ENROUTE
        if self._send(record, None):
            self.writer.enqueue("released", record.id)

    def _expired_scheduled(self, record: MessageRecord) -> None:
        """Validity ran out while it waited for its time: as in a queue (EXPIRED, refund, receipt)."""
        self._finish(record, MessageState.EXPIRED, 0, None, refund="expired_in_queue")

    # ------------------------------------------------------- upstream answers

    def submit_answered(self, connector: Connector, entry: tuple[int, Forward], status: int,
                        carrier_id: str | None) -> None:
        """A carrier answered a submit (throttles stay with the connector).

        A refusal with a status the message's rule fails over on moves it to
        the next candidate (once per candidate); any other refusal is final.
        """
        item = entry[1]
        mid = item.message_id
        metrics = self.metrics
        name = connector.config.name
        if metrics is not None:
            metrics.upstream_answered(name, status, self.reactor.seconds() - item.sent_at)
        if carrier_id is not None:
            t = self._by_message.get(mid)
            if t is not None:
                self._by_upstream[(name, carrier_id)] = t
            self.writer.enqueue("upstream", (mid, name, carrier_id, _ENROUTE))
            return
        if self._fail_over(entry, connector, status, up_only=False):
            return
        # Refused by the carrier: a final failure the client hears about as a receipt.
        log.info("message %d refused upstream by %s with 0x%08x", mid, name, status)
        self.judged(connector, False)
        t = self._by_message.pop(mid, None)
        if t is None:
            return
        t.connector = name
        self._finish(t, MessageState.REJECTED, status & 0xFF, None, refund="refused_upstream")

    # ------------------------------------------------------ carrier deliver_sm

    def carrier_pdu(self, connector: Connector, pdu: Pdu, ack: Callable[[int], None]) -> None:
        """A deliver_sm / data_sm from a carrier; ``ack(status)`` answers it."""
        esm = pdu.fields.get("esm_class", 0)
        if pdu.command_id == _DELIVER_SM and esm & 0x3C in (ESM_RECEIPT, 0x20):
            self._receipt(connector, pdu, ack, 0)
            return
        if self.mo is not None:  # router.mo: owner decision, durable, then ack
            self.mo.received(connector.config.name, pdu, ack)
            return
        # No MO path wired (a bare Router in tests): refuse rather than acknowledge and drop.
        log.warning("MO from %s refused: no MO routing configured", connector.config.name)
        ack(Status.ESME_RX_R_APPN)

    def _receipt(self, connector: Connector, pdu: Pdu, ack: Callable[[int], None], attempt: int) -> None:
        try:
            uid, raw, state, err = _read_receipt(pdu, connector.config.id_format)
        except ValueError as exc:
            # Not a receipt we can read: acknowledge (a resend would be as unreadable) and say so.
            log.warning("unreadable receipt from %s: %s", connector.config.name, exc)
            if self.metrics is not None:
                self.metrics.receipt_unknown(connector.config.name)
            ack(_ROK)
            return
        if state not in FINAL_STATES:
            ack(_ROK)  # intermediate notice: nothing to store
            return
        key = (connector.config.name, uid)
        t = self._by_upstream.pop(key, None)
        if t is not None:
            self.judged(connector, state == _DELIVERED)
            self._by_message.pop(t.id, None)
            self._finish(t, state, err, ack)
            return

        def found(row):
            if row is None:
                if attempt < self.unknown_receipt_retries:
                    # The submit_sm_resp may still be on its way: try again shortly.
                    self.reactor.callLater(0.2 * (attempt + 1), self._receipt, connector, pdu, ack, attempt + 1)
                else:
                    log.warning("receipt for unknown carrier id %r on %s: dropped", raw, connector.config.name)
                    if self.metrics is not None:
                        self.metrics.receipt_unknown(connector.config.name)
                    ack(_ROK)
                return
            if row["phase"] == store.FINAL:  # a duplicate receipt
                ack(_ROK)
                return
            tracked = Tracked.from_row(row)
            self.judged(connector, state == _DELIVERED)
            self._by_message.pop(tracked.message_id, None)
            self._finish(tracked, state, err, ack)

        self.read(store.message_by_upstream, connector.config.name, uid).addCallbacks(
            found, lambda f: log.error("receipt lookup failed: %s", f.getErrorMessage())
        )

    def _finish(self, t: MessageRecord, state: int, err: int, ack: Callable[[int], None] | None,
                refund: str | None = None) -> None:
        """Record a final state (and any refund) durably, then ``ack`` the carrier and queue the receipt.

        The refund policy is read per outcome from the account's live settings
        (``refund_network_failures``), never from what was known at bind.
        """
        now = self.reactor.seconds()
        mid = t.id
        if refund is None and state != _DELIVERED and self.refund_network_failures(t.account_id):
            refund = "network_failure"
        delivery = None
        if wants_receipt(t.registered_delivery, state):
            delivery = Delivery(
                self.outbox_ids(), t.account_id, mid, "dlr",
                client_receipt(t, state, err, now), now, now + self.receipt_ttl,
            )

        def committed(refunded):
            if refunded and self.metrics is not None:
                self.metrics.refunded(t.account_id, refunded)
            if ack is not None:
                ack(_ROK)
            if delivery is not None:
                self.outbox.add(delivery)

        def failed(exc):
            log.error("recording outcome of %d failed: %s", mid, exc)
            if ack is not None:  # the carrier will retry its receipt
                ack(Status.ESME_RX_T_APPN)

        # A carried message's row already names its carrier (set with its carrier id):
        # None leaves it, which spares the update ~14k instructions (router/messages.py).
        connector = None if t.upstream_id is not None else t.connector
        self.writer.submit_then("outcomes", (mid, state, err, now, delivery, refund, connector),
                                committed, failed)


def _read_receipt(pdu: Pdu, id_format: str) -> tuple[str, str, int, int]:
    """(normalised carrier id, raw id, message_state, err) of a carrier receipt.

    The TLVs win when present; the Appendix B text fills what they lack.
    Raises ValueError when no id can be found.
    """
    tlvs = pdu.tlvs
    parsed = None
    rid = tlvs.get(_RECEIPTED_MESSAGE_ID)
    if rid is not None:
        raw = tlv_cstr(rid).decode("ascii", "replace")
    else:
        parsed = parse_receipt(pdu.fields.get("short_message", b""))
        raw = parsed.id or ""
    uid = normalize_message_id(raw, id_format)
    st = tlvs.get(_MESSAGE_STATE)
    if st is not None:
        state = tlv_int(st)
    else:
        parsed = parsed or parse_receipt(pdu.fields.get("short_message", b""))
        state = stat_to_state(parsed.stat or "") or MessageState.UNKNOWN
    err = 0
    nec = tlvs.get(_NETWORK_ERROR_CODE)
    if nec is not None and len(nec) == 3:
        err = int.from_bytes(nec[1:3], "big")
    elif state != _DELIVERED and pdu.fields.get("short_message"):
        # Only a failure has an err worth reading from the text (parsing costs ~40 µs).
        if parsed is None:
            try:
                parsed = parse_receipt(pdu.fields["short_message"])
            except ValueError:
                parsed = None
        if parsed is not None and parsed.err and parsed.err.isdigit():
            err = int(parsed.err)
    return uid, raw, state, err


def client_receipt(t: MessageRecord, state: int, err: int, now: float) -> bytes:
    """The deliver_sm a client gets, as outbox octets: our id, exactly as submit_sm_resp gave it.

    From the handset (TON/NPI 1/1) to the message's sender, built by
    :func:`pdu.receipt.receipt_octets` (the simulator's carrier receipts use
    the same builder).
    """
    mid = str(t.id)
    text = format_receipt(mid, 1, 1 if state == _DELIVERED else 0, t.submitted_at, now,
                          STATE_TO_STAT[state], err, t.text20)
    return receipt_octets(mid.encode(), t.destination.encode(), 1, 1, t.source_addr.encode(),
                          t.source_ton, t.source_npi, state, text, err or None, t.umr)


def receipt_pdu(t: MessageRecord, state: int, err: int, text: bytes) -> Pdu:
    """The client's receipt as a Pdu (the general encoder's input; tests compare the two)."""
    fields, tlvs = receipt_fields(str(t.id).encode(), t.destination.encode(), 1, 1,
                                  t.source_addr.encode(), t.source_ton, t.source_npi, state, text,
                                  err or None, t.umr)
    return Pdu(Command.DELIVER_SM, 0, 0, fields, tlvs)
