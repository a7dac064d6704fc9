"""The MO path: a handset's message to the account that owns it, as durable as a receipt.

::

    carrier deliver_sm (esm_class 0) ─► Router.carrier_pdu ─► MoRouter.received(connector, pdu, ack)
       ├─ read_inbound: addresses, data_coding, user data, UDH or SAR (bad → a precise status)
       ├─ one part of several: writer "mo_part" ─► ack ─► Reassembler (any order; complete → below)
       └─ whole: Numbers.owner_of(handset, number, text)  reply window | dedicated | code/alias | dead letter
            ├─ keyword STOP/START: writer "opt_out" (numbers' kind) ─► Numbers.apply_opt
            ├─ keyword with a text (auto-reply, HELP): one MT through the submit pipeline, paid below
            └─ writer "mo_in": the MO row (owner decision), the owner's deliver_sm in the outbox (SMPP),
                               a webhooks row (HTTP), the paid reply, the parts deleted — one transaction
       ◄─ carrier deliver_sm_resp ESME_ROK      only after that commit (ESME_RX_T_APPN if it failed)
       ─► Outbox (the owner's RX/TRX binds, queued while none) and Webhooks (signed POST, retried)

A multipart MO's parts are committed one by one before their ack, so the
carrier never has to send a part twice; the parts of a message are deleted in
the transaction that writes the whole, and a restart rebuilds the reassembly
from what is left (:meth:`MoRouter.load_parts`). A message still incomplete
``reassembly_timeout`` seconds after its first part is delivered as it is,
flagged (docs/two-way.md "Multipart MO").

Time is the reactor's ``seconds()``; nothing here blocks.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import Status, Tag
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.receipt import mo_octets
from staffetta.pdu.segments import Reassembler, parse_udh, udh_concat
from staffetta.pdu.text import BINARY, decode, parse_data_coding
from staffetta.router.messages import Delivery
from staffetta.router.mo_store import PART_COLUMNS, MoRow, MoWrite, WebhookJob
from staffetta.router.numbers import MtRefused

log = logging.getLogger(__name__)

_ROK = Status.ESME_ROK
_RETRY = Status.ESME_RX_T_APPN
_SAR_REF, _SAR_TOTAL, _SAR_SEQ = Tag.sar_msg_ref_num, Tag.sar_total_segments, Tag.sar_segment_seqnum
_PAYLOAD = Tag.message_payload

SMPP, HTTP, BOTH, NONE = "smpp", "http", "both", "none"
CHANNELS = (SMPP, HTTP, BOTH)


class MoRejected(Exception):
    """A carrier deliver_sm we cannot take as an MO: answered with ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Inbound:
    """One MO as the carrier sent it: a whole message, or one part of a long one."""

    connector: str
    source: str
    source_ton: int
    source_npi: int
    destination: str
    dest_ton: int
    dest_npi: int
    data_coding: int
    data: bytes  # user data, the UDH taken off
    ref: int | None = None
    total: int = 1
    seq: int = 1
    ref16: bool = False
    received_at: float = 0.0

    def part_row(self) -> tuple:
        """This part as a ``mo_parts`` row (PART_COLUMNS order)."""
        return (part_key(self.connector, self.source, self.destination, self.ref, self.total), self.connector,
                self.source, self.source_ton, self.source_npi, self.destination, self.dest_ton, self.dest_npi,
                self.data_coding, self.ref, self.total, self.seq, self.ref16, self.data, self.received_at)

    @classmethod
    def from_part(cls, row: dict) -> Inbound:
        return cls(row["connector"], row["source"], row["source_ton"], row["source_npi"], row["destination"],
                   row["dest_ton"], row["dest_npi"], row["data_coding"], row["data"], row["ref"], row["total"],
                   row["seq"], bool(row["ref16"]), row["received_at"])


assert PART_COLUMNS[0] == "key" and PART_COLUMNS[-1] == "received_at"


def part_key(connector: str, source: str, destination: str, ref: int | None, total: int) -> str:
    """The stored name of one multipart MO being collected."""
    return f"{connector}|{source}|{destination}|{ref}|{total}"


def read_inbound(connector: str, pdu: Pdu, now: float) -> Inbound:
    """A carrier's MO deliver_sm (or data_sm) → :class:`Inbound`; :class:`MoRejected` with the status.

    The concatenation comes from a UDH (esm_class UDHI, 8- or 16-bit
    reference) or from the SAR TLVs; a UDH that does not parse is
    ``ESME_RINVMSGLEN``, an empty source ``ESME_RINVSRCADR``, an empty
    destination ``ESME_RINVDSTADR``.
    """
    f = pdu.fields
    tlvs = pdu.tlvs
    source = f.get("source_addr", b"").decode("latin-1")
    destination = f.get("destination_addr", b"").decode("latin-1")
    if not source:
        raise MoRejected(Status.ESME_RINVSRCADR, "MO without source_addr")
    if not destination:
        raise MoRejected(Status.ESME_RINVDSTADR, "MO without destination_addr")
    data = f.get("short_message", b"")
    payload = tlvs.get(_PAYLOAD)
    if payload is not None:
        if data:
            raise MoRejected(Status.ESME_RINVMSGLEN, "short_message and message_payload both set")
        data = payload
    inb = Inbound(connector, source, f.get("source_addr_ton", 0), f.get("source_addr_npi", 0), destination,
                  f.get("dest_addr_ton", 0), f.get("dest_addr_npi", 0), f.get("data_coding", 0), data,
                  received_at=now)
    if f.get("esm_class", 0) & 0x40:
        try:
            udh = parse_udh(data)
        except SubmitRejected as exc:
            raise MoRejected(exc.status, exc.reason) from None
        inb.data = data[udh.header_len:]
        if udh.ref is not None and udh.total > 1:
            inb.ref, inb.total, inb.seq, inb.ref16 = udh.ref, udh.total, udh.seq, udh.ref16
        return inb
    ref = tlvs.get(_SAR_REF)
    if ref is not None:
        total, seq = tlvs.get(_SAR_TOTAL), tlvs.get(_SAR_SEQ)
        if len(ref) != 2 or not total or not seq or len(total) != 1 or len(seq) != 1:
            raise MoRejected(Status.ESME_RINVMSGLEN, "SAR TLVs incomplete or of the wrong length")
        t, s = total[0], seq[0]
        if t == 0 or s == 0 or s > t:
            raise MoRejected(Status.ESME_RINVMSGLEN, f"SAR part {s} of {t}")
        if t > 1:
            inb.ref, inb.total, inb.seq, inb.ref16 = int.from_bytes(ref, "big"), t, s, True
    return inb


def text_of(data: bytes, data_coding: int) -> str | None:
    """The MO's text for keyword matching and webhooks (None: binary or an unknown coding)."""
    try:
        alphabet = parse_data_coding(data_coding).alphabet
    except SubmitRejected:
        return None
    if alphabet == BINARY:
        return None
    return decode(data, alphabet, strict=False)


class OwnerDecider(Protocol):
    """What this module needs of :class:`router.numbers.Numbers`."""

    def owner_of(self, handset: str, number: str, text: str, now: float) -> Any: ...
    def apply_opt(self, account_id: int, handset: str, out: bool, now: float) -> None: ...
    def reply_source(self, keyword: Any, handset: str, number: str, now: float) -> str: ...


class Replies(Protocol):
    """The automatic reply's way through the submit pipeline (the hub's, :mod:`smsc.mo_replies`)."""

    def make(self, account_id: int, sender: str, handset: str, text: str, msg_type: str,
             now: float) -> tuple | None:
        """(MessageRecord, price) accepted by every rule of the pipeline, or None (refused, logged)."""
        ...

    def paid(self, record: Any, price: int) -> None:
        """The reply's debit and row are committed: hand it to its route."""
        ...


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def webhook_body(row: MoRow, account_name: str | None) -> bytes:
    """The JSON an account's URL receives for one MO (docs/two-way.md "Webhooks")."""
    text = text_of(row.data, row.data_coding)
    body: dict[str, Any] = {
        "id": str(row.id),
        "account": account_name,
        "from": row.source,
        "to": row.destination,
        "text": text,
        "data_coding": row.data_coding,
        "received_at": iso(row.received_at),
        "owner": {"how": row.how, "free": bool(row.free), "keyword": row.keyword, "action": row.action},
        "connector": row.connector,
        "parts": {"total": row.parts_total, "complete": row.parts_present is None,
                  "received": ([int(x) for x in row.parts_present.split(",")] if row.parts_present
                               else list(range(1, row.parts_total + 1)))},
    }
    if text is None:
        body["data_hex"] = row.data.hex()
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def deliveries_for(row: MoRow, ids: Callable[[], int], now: float, ttl: float) -> list[Delivery]:
    """The owner's deliver_sm for one MO, as outbox rows.

    A whole MO is one deliver_sm (a reassembled long one carries its text in
    ``message_payload``). An incomplete one goes as the parts that came, each
    with its concatenation UDH (esm_class 0x40): the client sees exactly
    which parts are missing (docs/two-way.md "Multipart MO").
    """
    args = (row.source.encode("latin-1"), row.source_ton, row.source_npi, row.destination.encode("latin-1"),
            row.dest_ton, row.dest_npi, row.data_coding)
    if row.parts_present is None:
        pdus = [mo_octets(*args, row.data)]
    else:
        ref = row.ref or 0
        ref16 = ref > 0xFF
        pdus, pos = [], 0
        for seq, size in zip(row.parts_present.split(","), row.part_sizes.split(","), strict=True):
            n = int(size)
            pdus.append(mo_octets(*args, row.data[pos:pos + n],
                                  udh=udh_concat(ref, row.parts_total, int(seq), ref16)))
            pos += n
    aid = row.account_id
    return [Delivery(ids(), aid, row.id, "mo", p, now, now + ttl) for p in pdus]


class MoRouter:
    """Owner decision, durable write and hand-off of every MO; the reassembly of long ones.

    ``account_of(id)`` gives the live settings of an account (its MO channel
    and webhook target) or None; ``webhooks`` schedules HTTP deliveries;
    ``replies`` turns a keyword's text into a paid MT. ``metrics`` (optional)
    takes ``mo_in(connector)``, ``mo_dead(cause)``, ``mo_rejected(connector)``.
    """

    def __init__(self, writer, reactor, outbox, numbers: OwnerDecider, *,
                 mo_ids: Callable[[], int], outbox_ids: Callable[[], int], webhook_ids: Callable[[], int],
                 account_of: Callable[[int], Any], webhooks=None, replies: Replies | None = None,
                 reassembly_timeout: float = 600.0, max_reassembling: int = 10_000,
                 outbox_ttl: float = 3 * 86400.0, metrics=None, retry_delay: float = 1.0) -> None:
        self.writer = writer
        self.reactor = reactor
        self.outbox = outbox
        self.numbers = numbers
        self.mo_ids = mo_ids
        self.outbox_ids = outbox_ids
        self.webhook_ids = webhook_ids
        self.account_of = account_of
        self.webhooks = webhooks
        self.replies = replies
        self.outbox_ttl = outbox_ttl
        self.metrics = metrics
        self.retry_delay = retry_delay
        self.reassembly_timeout = reassembly_timeout
        self.reassembler = Reassembler(reassembly_timeout, max_reassembling)
        #: (conversation, ref, total) -> the first part's header, while collecting.
        self._heads: dict[tuple, Inbound] = {}
        #: Messages completed lately: a part the carrier sends again (our ack was lost) is
        #: acknowledged, not collected as the start of a new message. Bounded, oldest first.
        self._recent: OrderedDict[tuple, float] = OrderedDict()
        self.max_recent = max_reassembling

    # ------------------------------------------------------------------ intake

    def received(self, connector: str, pdu: Pdu, ack: Callable[[int], None]) -> None:
        """A carrier's MO; ``ack(status)`` answers it once what it carries is durable."""
        now = self.reactor.seconds()
        try:
            inb = read_inbound(connector, pdu, now)
        except MoRejected as exc:
            log.warning("MO from %s refused with 0x%08X: %s", connector, exc.status, exc.reason)
            if self.metrics is not None:
                self.metrics.mo_rejected(connector)
            ack(exc.status)
            return
        if self.metrics is not None:
            self.metrics.mo_in(connector)
        if inb.total > 1:
            self._part(inb, ack)
        else:
            self._whole(inb, inb.data, None, ack)

    def _part(self, inb: Inbound, ack: Callable[[int], None]) -> None:
        full = ((inb.connector, inb.source, inb.destination), inb.ref, inb.total)
        if full in self._recent:
            ack(_ROK)  # a part of a message already delivered, sent again
            return

        def committed(_) -> None:
            ack(_ROK)
            self._collect(inb)

        def failed(exc) -> None:
            log.error("storing an MO part failed: %s", exc)
            ack(_RETRY)

        self.writer.submit_then("mo_part", inb.part_row(), committed, failed)

    def _collect(self, inb: Inbound) -> None:
        """A stored part into the reassembly; the last one turns the parts into one MO."""
        conv = (inb.connector, inb.source, inb.destination)
        full = (conv, inb.ref, inb.total)
        self._heads.setdefault(full, inb)
        joined = self.reassembler.add(conv, inb.ref, inb.total, inb.seq, inb.data, inb.received_at)
        if joined is None:
            return
        head = self._heads.pop(full, inb)
        self._remember_done(full)
        self._whole(head, joined, part_key(*conv, inb.ref, inb.total), None, ref=inb.ref, total=inb.total)

    def _remember_done(self, full: tuple) -> None:
        recent = self._recent
        recent[full] = self.reactor.seconds()
        if len(recent) > self.max_recent:
            recent.popitem(last=False)

    def load_parts(self, rows: list[dict]) -> int:
        """At start: the stored parts back into the reassembly (arrival order); returns how many.

        A message whose last part was acknowledged just before a stop is
        complete here and goes on at once; the others keep the deadline of
        their first part.
        """
        for row in rows:
            self._collect(Inbound.from_part(row))
        return len(rows)

    def sweep(self) -> int:
        """Deliver, flagged, what stayed incomplete past ``reassembly_timeout`` (or was evicted)."""
        now = self.reactor.seconds()
        n = 0
        for conv, ref, total, parts in self.reassembler.expire(now):
            full = (conv, ref, total)
            head = self._heads.pop(full, None)
            if head is None:  # pragma: no cover - every collected part leaves its head
                continue
            present = sorted(parts)
            data = b"".join(parts[i] for i in present)
            log.info("MO %s from %s: %d of %d parts after %gs, delivered as they are",
                     ref, head.source, len(present), total, self.reassembly_timeout)
            self._remember_done(full)
            self._whole(head, data, part_key(*conv, ref, total), None, ref=ref, total=total,
                        present=present, sizes=[len(parts[i]) for i in present])
            n += 1
        limit = now - self.reassembly_timeout
        recent = self._recent
        while recent and next(iter(recent.values())) < limit:
            recent.popitem(last=False)
        return n

    # ------------------------------------------------------------ the decision

    def _whole(self, head: Inbound, data: bytes, key: str | None, ack: Callable[[int], None] | None, *,
               ref: int | None = None, total: int = 1, present: list[int] | None = None,
               sizes: list[int] | None = None) -> None:
        now = self.reactor.seconds()
        text = text_of(data, head.data_coding)
        owner = self.numbers.owner_of(head.source, head.destination, text or "", now)
        aid = owner.account_id
        account = self.account_of(aid) if aid is not None else None
        if aid is not None and account is None:
            log.warning("MO owner %d is not a known account: dead letter", aid)
            aid = None
        kw = owner.keyword if aid is not None else None
        channel = NONE if aid is None else channel_of(account)
        row = MoRow(
            self.mo_ids(), head.received_at, head.connector, head.source, head.source_ton, head.source_npi,
            head.destination, head.dest_ton, head.dest_npi, head.data_coding, data, ref, total,
            None if present is None else ",".join(map(str, present)),
            None if sizes is None else ",".join(map(str, sizes)),
            aid, owner.how if aid is not None else "dead_letter",
            (owner.cause or "unknown_owner") if aid is None else "", bool(owner.free) and aid is not None,
            kw.word if kw is not None else None, kw.action if kw is not None else None, channel,
        )
        reply = None
        if kw is not None and kw.reply_text and self.replies is not None:
            # Made before the opt-out is applied: a STOP's confirmation still reaches the handset.
            try:
                sender = self.numbers.reply_source(kw, head.source, head.destination, now)
            except MtRefused as exc:  # PoolExhausted: refused like any MT, logged
                log.warning("automatic reply of account %d to %s not sent: %s", aid, head.source, exc)
                sender = None
            if sender is not None:
                reply = self.replies.make(aid, sender, head.source, kw.reply_text, kw.reply_type, now)
            if reply is not None:
                row.reply_id = reply[0].id
        deliveries = deliveries_for(row, self.outbox_ids, now, self.outbox_ttl) if channel in (SMPP, BOTH) else []
        job = None
        if channel in (HTTP, BOTH):
            job = WebhookJob(self.webhook_ids(), row.id, aid, webhook_body(row, account.name), now, 0, now)
        write = MoWrite(row, key, deliveries, job, reply)

        def committed(results) -> None:
            paid = results
            if ack is not None:
                ack(_ROK)
            for d in deliveries:
                self.outbox.add(d)
            if job is not None and self.webhooks is not None:
                self.webhooks.add(job)
            if aid is None and self.metrics is not None:
                self.metrics.mo_dead(row.cause)
            if reply is not None:
                if paid:
                    self.replies.paid(*reply)
                else:
                    log.warning("automatic reply to %s for account %d not sent: no credit", head.source, aid)

        def failed(exc) -> None:
            log.error("storing MO from %s failed: %s", head.source, exc)
            if ack is not None:
                ack(_RETRY)  # the carrier sends it again
            else:  # a reassembled or flagged message: its parts are still stored; try again
                self.reactor.callLater(self.retry_delay, self._whole, head, data, key, None, ref=ref,
                                       total=total, present=present, sizes=sizes)

        def store_mo(_=None) -> None:
            self.writer.submit_then("mo_in", write, committed, failed)

        if kw is not None and kw.action in ("stop", "start"):
            out = kw.action == "stop"

            def opted(_) -> None:
                self.numbers.apply_opt(aid, head.source, out, now)
                store_mo()

            # The opt-out first: a crash before the MO commits makes the carrier resend,
            # and applying it twice is harmless; the other order could lose it.
            self.writer.submit_then("opt_out", (aid, head.source, out, now), opted, failed)
            return
        store_mo()

    # ------------------------------------------------------------------ replay

    def replay(self, rows: list[MoRow], done: Callable[[], None] | None = None,
               requests: list[int] = ()) -> int:
        """Deliver stored MO again to their owners, on their channel as set now; returns how many.

        ``requests``: the ``mo_replays`` rows these answer, deleted in the same commit.
        """
        now = self.reactor.seconds()
        items = []
        for row in rows:
            account = self.account_of(row.account_id) if row.account_id is not None else None
            if account is None:
                continue
            channel = channel_of(account)
            ds = deliveries_for(row, self.outbox_ids, now, self.outbox_ttl) if channel in (SMPP, BOTH) else []
            job = (WebhookJob(self.webhook_ids(), row.id, row.account_id, webhook_body(row, account.name), now, 0,
                              now) if channel in (HTTP, BOTH) else None)
            items.append((ds, job))

        def committed(_) -> None:
            for ds, job in items:
                for d in ds:
                    self.outbox.add(d)
                if job is not None and self.webhooks is not None:
                    self.webhooks.add(job)
            if done is not None:
                done()

        def failed(exc) -> None:
            log.error("MO replay failed: %s", exc)

        self.writer.submit_then("mo_replay", (items, list(requests)), committed, failed)
        return len(items)


def channel_of(account: Any) -> str:
    """smpp | http | both: how an account takes its MO (its live settings).

    An account whose channel is http but has no URL gets them on SMPP: an MO
    is never stranded by a half-made setting.
    """
    channel = getattr(account, "mo_channel", None) or SMPP
    if channel in (HTTP, BOTH) and not getattr(account, "mo_url", None):
        return SMPP
    return channel
