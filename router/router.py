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
import struct
from collections.abc import Callable

from twisted.internet import defer

from staffetta.pdu import text as pdutext
from staffetta.pdu.codec import Pdu, cstr, encode, tlv_cstr, tlv_int, u8
from staffetta.pdu.constants import ESM_RECEIPT, FINAL_STATES, Command, MessageState, Status, Tag
from staffetta.pdu.receipt import (
    STATE_TO_STAT,
    format_receipt,
    normalize_message_id,
    parse_receipt,
    stat_to_state,
)
from staffetta.router import messages as store
from staffetta.router.messages import Delivery
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


class Tracked:
    """What a receipt needs to know about a message in flight."""

    __slots__ = (
        "message_id", "account_id", "source", "source_ton", "source_npi", "destination",
        "registered_delivery", "submitted_at", "text20", "umr",
    )

    def __init__(self, message_id, account_id, source, source_ton, source_npi, destination,
                 registered_delivery, submitted_at, text20, umr=None) -> None:
        self.message_id = message_id
        self.account_id = account_id
        self.source = source
        self.source_ton = source_ton
        self.source_npi = source_npi
        self.destination = destination
        self.registered_delivery = registered_delivery
        self.submitted_at = submitted_at
        self.text20 = text20
        self.umr = umr

    @classmethod
    def from_row(cls, row: dict) -> Tracked:
        tlvs = row.get("tlvs") or b""
        return cls(
            row["id"], row["account_id"], row["source_addr"], row["source_ton"], row["source_npi"],
            row["destination"], row["registered_delivery"], row["submitted_at"],
            text20_of(row["short_message"], row["data_coding"]), _umr_of(tlvs),
        )


def text20_of(short_message: bytes, data_coding: int) -> str:
    try:
        alphabet = pdutext.parse_data_coding(data_coding).alphabet
        text = pdutext.decode(short_message, alphabet, strict=False)
    except Exception:
        return ""
    return (text or "")[:20]


def _umr_of(tlv_stream: bytes) -> bytes | None:
    return decode_tlv_stream(tlv_stream).get(Tag.user_message_reference) if tlv_stream else None


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
        max_tracked: int = 1_000_000,
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
        self.max_tracked = max_tracked
        self.unknown_receipt_retries = unknown_receipt_retries
        self.metrics = metrics
        self._by_message: dict[int, Tracked] = {}
        self._by_upstream: dict[tuple[str, str], Tracked] = {}

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

    def forward(self, tracked: Tracked, fields: dict, tlvs: dict[int, bytes], expires_at: float) -> None:
        """A message is committed: track it and send it upstream before ``expires_at``."""
        self._track(tracked)
        self.enqueue("default", Forward(tracked.message_id, fields, tlvs, expires_at))

    def _track(self, t: Tracked) -> None:
        by_message = self._by_message
        if len(by_message) >= self.max_tracked:  # bounded: the table still has it
            old = by_message.pop(next(iter(by_message)))
            self._by_upstream = {k: v for k, v in self._by_upstream.items() if v is not old}
        by_message[t.message_id] = t

    def resume(self, rows: list[dict]) -> None:
        """After a restart: forward what was acknowledged but never sent upstream."""
        for row in rows:
            fields = {
                "service_type": b"",
                "source_addr_ton": row["source_ton"],
                "source_addr_npi": row["source_npi"],
                "source_addr": row["source_addr"].encode(),
                "dest_addr_ton": 1,
                "dest_addr_npi": 1,
                "destination_addr": row["destination"].encode(),
                "esm_class": row["esm_class"],
                "protocol_id": row["protocol_id"],
                "priority_flag": row["priority"],
                "registered_delivery": 1,
                "data_coding": row["data_coding"],
                "short_message": row["short_message"],
            }
            self.forward(Tracked.from_row(row), fields, decode_tlv_stream(row["tlvs"]), row["expires_at"])

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
        # MO ownership (reply window, keywords, dedicated numbers) is its own issue:
        # refuse rather than acknowledge and drop.
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

    def _finish(self, t: Tracked, state: int, err: int, ack: Callable[[int], None] | None,
                refund: str | None = None) -> None:
        """Record a final state (and any refund) durably, then ``ack`` the carrier and queue the receipt."""
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


def client_receipt(t: Tracked, state: int, err: int, now: float) -> bytes:
    """The deliver_sm a client gets: our id, exactly as submit_sm_resp gave it.

    Put together as octets in one formatting step, since it runs once per
    message: no Pdu, no field dict, no generic encoder (~2x faster). It equals
    ``encode(receipt_pdu(...))`` octet for octet (tests/router/test_client_receipt.py);
    what does not fit the short form (an address over 20 octets, say) takes
    that general path, which refuses it precisely.
    """
    mid = str(t.message_id)
    text = format_receipt(mid, 1, 1 if state == _DELIVERED else 0, t.submitted_at, now,
                          STATE_TO_STAT[state], err, t.text20)
    source = t.destination.encode()  # the receipt comes from the handset
    dest = t.source.encode()
    umr = t.umr
    if (len(source) > 20 or len(dest) > 20 or len(text) > 254 or len(mid) > 64
            or 0 in source or 0 in dest or (umr is not None and len(umr) != 2)):
        return encode(receipt_pdu(t, state, err, text))
    try:
        body = _RECEIPT_BODY % (source, t.source_ton, t.source_npi, dest, len(text), text,
                                len(mid) + 1, mid.encode(), state)
    except (OverflowError, TypeError):  # a ton/npi/state outside a byte
        return encode(receipt_pdu(t, state, err, text))
    if err:
        body += b"\x04\x23\x00\x03\x03" + (err & 0xFFFF).to_bytes(2, "big")
    if umr is not None:
        body += b"\x02\x04\x00\x02" + umr
    return _pack_header(16 + len(body), _DELIVER_SM, 0, 0) + body


#: deliver_sm body of a receipt: service_type "", source 1/1 + address, destination
#: ton/npi + address, esm_class 0x04, then NULL fields, sm_length, the text; then
#: receipted_message_id (0x001E) and message_state (0x0427) TLVs.
_RECEIPT_BODY = (
    b"\x00\x01\x01%b\x00%c%c%b\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00%c%b"
    b"\x00\x1e\x00%c%b\x00\x04\x27\x00\x01%c"
)
_pack_header = struct.Struct(">IIII").pack


def receipt_pdu(t: Tracked, state: int, err: int, text: bytes) -> Pdu:
    """The client's receipt as a Pdu, for the general encoder."""
    tlvs = {Tag.receipted_message_id: cstr(str(t.message_id)), Tag.message_state: u8(state)}
    if err:
        tlvs[Tag.network_error_code] = b"\x03" + (err & 0xFFFF).to_bytes(2, "big")
    if t.umr is not None:
        tlvs[Tag.user_message_reference] = t.umr
    return Pdu(
        Command.DELIVER_SM,
        0,
        0,
        {
            "source_addr_ton": 1,
            "source_addr_npi": 1,
            "source_addr": t.destination.encode(),
            "dest_addr_ton": t.source_ton,
            "dest_addr_npi": t.source_npi,
            "destination_addr": t.source.encode(),
            "esm_class": ESM_RECEIPT,
            "short_message": text,
        },
        tlvs,
    )


def encode_tlv_stream(tlvs: dict[int, bytes]) -> bytes:
    return b"".join(((t << 16) | len(v)).to_bytes(4, "big") + v for t, v in tlvs.items())


def decode_tlv_stream(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        tag = int.from_bytes(data[pos:pos + 2], "big")
        ln = int.from_bytes(data[pos + 2:pos + 4], "big")
        out[tag] = data[pos + 4:pos + 4 + ln]
        pos += 4 + ln
    return out
