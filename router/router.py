"""The router: forward accepted messages, bring receipts back to their owners.

Correlation (carrier id -> our id) lives in memory for messages in flight, so
the hot path needs no database read; after a restart, or for a message evicted
from memory, the ``messages`` table answers (indexed on connector + upstream
id). A carrier's deliver_sm is acknowledged only after its outcome and the
client's receipt are committed: a crash in between makes the carrier resend,
never loses the receipt.
"""

from __future__ import annotations

import logging
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
from staffetta.router import messages as store
from staffetta.router.messages import Delivery
from staffetta.router.record import (  # noqa: F401 - the TLV stream helpers are read from here too
    MessageRecord,
    decode_tlv_stream,
    encode_tlv_stream,
    text20_of,
)
from staffetta.router.routes import Route
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

#: The route every message takes until the route table (issue 13) exists.
DEFAULT_ROUTE = "default"


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
        #: Route name -> route. For now one route, "default", with every connector
        #: in config order; the route table comes with issue 13.
        self.routes: dict[str, Route] = {}
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
        #: The MO path (router.mo.MoRouter), set by the hub.
        self.mo = None

    # ---------------------------------------------------------------- routing

    def add_connector(self, connector: Connector) -> None:
        """A configured connector: its events come here, it serves the "default" route."""
        self.connectors[connector.config.name] = connector
        connector.listener = self
        route = self.routes.get("default")
        if route is None:
            route = self.routes["default"] = Route(
                "default", limit=connector.max_queue, expired=self.expired_in_queue, clock=self.reactor
            )
        route.add(connector)

    def pick(self, destination: str) -> Connector | None:
        """The first connector of the default route (kept for callers that want one connector)."""
        route = self.routes.get("default")
        return route.connectors[0] if route is not None and route.connectors else None

    def can_accept(self, route_name: str = "default") -> bool:
        """Whether the route exists and its queue has room (else the submit gets ESME_RMSGQFUL)."""
        route = self.routes.get(route_name)
        return route is not None and not route.line.full

    def enqueue(self, route_name: str, item: Forward) -> None:
        """Hand an accepted, committed message to its route's queue."""
        route = self.routes.get(route_name)
        if route is None:  # pragma: no cover - choose_route only names routes that exist
            log.error("no route %r for message %d", route_name, item.message_id)
            return
        route.line.put(item)

    def choose_route(self, account_id: int, destination: str, msg_type: str) -> str | None:
        """The route a new message takes, decided before its durable write (None: no route).

        One route, "default", over every configured connector, until the
        route table (issue 13) matches on account, destination and type.
        """
        return DEFAULT_ROUTE if self.connectors else None

    def forward(self, record: MessageRecord, tlvs: dict[int, bytes] | None = None) -> None:
        """A message is committed: track it and hand it to its route.

        ``tlvs``: the submit's TLV dict when the caller has it (see
        :meth:`MessageRecord.forward`); a resumed message decodes its row's.
        """
        self._track(record)
        self.enqueue(record.route or DEFAULT_ROUTE, record.forward(tlvs))

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

    def resume(self, records: list[MessageRecord]) -> None:
        """After a restart: forward what was acknowledged but never sent upstream, in id order.

        Built by the same :meth:`MessageRecord.forward` as a first send, so the
        carrier sees the same octets.
        """
        for record in records:
            if record.route is None:  # a row written before routes were stored
                record.route = self.choose_route(record.account_id, record.destination, record.msg_type)
            self.forward(record)

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
        for route in self.routes.values():
            for item in route.take(lambda i: i.expires_at <= now):
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

        def match(item: Forward) -> bool:
            t = by_message.get(item.message_id)
            if t is None or t.account_id != account_id:
                return False
            if message_id is not None:
                return item.message_id == message_id and (not source or t.source == source)
            return t.source == source and (destination is None or t.destination == destination)

        n = 0
        for route in self.routes.values():
            for item in route.take(match):
                t = by_message.pop(item.message_id)
                self._finish(t, MessageState.DELETED, 0, None, refund="cancelled")
                n += 1
        return n

    # ------------------------------------------------------- upstream answers

    def submit_answered(self, connector: Connector, item: Forward, status: int, carrier_id: str | None) -> None:
        """A carrier answered a submit (throttles and time-outs stay with the connector)."""
        mid = item.message_id
        if carrier_id is not None:
            t = self._by_message.get(mid)
            if t is not None:
                self._by_upstream[(connector.config.name, carrier_id)] = t
            self.writer.enqueue("upstream", (mid, connector.config.name, carrier_id, _ENROUTE))
            return
        # Refused by the carrier: a final failure the client hears about as a receipt.
        log.info("message %d refused upstream with 0x%08x", mid, status)
        t = self._by_message.pop(mid, None)
        if t is None:
            return
        self._finish(t, MessageState.REJECTED, status & 0xFF, None, refund="refused_upstream")

    def connector_state(self, connector: Connector, up: bool, reason: str = "") -> None:
        if self.metrics is not None:
            self.metrics.connector_up(connector.config.name, up)

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
            self._by_message.pop(t.message_id, None)
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
        if refund is None and state != _DELIVERED and self.refund_network_failures(t.account_id):
            refund = "network_failure"
        delivery = None
        if wants_receipt(t.registered_delivery, state):
            delivery = Delivery(
                self.outbox_ids(), t.account_id, t.message_id, "dlr",
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
            log.error("recording outcome of %d failed: %s", t.message_id, exc)
            if ack is not None:  # the carrier will retry its receipt
                ack(Status.ESME_RX_T_APPN)

        self.writer.submit_then("outcomes", (t.message_id, state, err, now, delivery, refund), committed, failed)


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
