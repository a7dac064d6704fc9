"""One accepted message: :class:`MessageRecord`, its row, its upstream submit_sm.

The message row is the store-and-forward queue and the log, and the same
object is what the router keeps for a message in flight (a receipt needs its
owner, addresses, dates and first 20 characters). There is one way each to

* build it from a submit (:meth:`MessageRecord.from_submit`, called by the
  submit pipeline once every rule passed),
* write its row (:data:`row_tuple`, in :data:`router.messages.MESSAGE_COLUMNS`
  order) and read it back (:meth:`MessageRecord.from_row`),
* build the submit_sm that goes upstream (:meth:`MessageRecord.submit_fields`, and its
  fast form :meth:`MessageRecord.submit_octets` that :meth:`MessageRecord.forward` sends),

so a message sent for the first time and one resumed after a restart reach
the carrier as the same octets: both are built from the row's values.

The attributes are the table's columns, taken from the table itself (one place
spells them), plus ``text20`` and ``umr`` that a receipt needs and the row
holds only encoded. ``__slots__``: one of these lives per message in flight.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    text,
)

from staffetta.pdu import text as pdutext
from staffetta.pdu.codec import Pdu, encode, pack_header
from staffetta.pdu.constants import MessageState, Tag
from staffetta.pdu.smpptime import format_smpp_time
from staffetta.router.upstream import Forward
from staffetta.store.db import metadata

QUEUED, FORWARDED, FINAL = 0, 1, 2

#: The row's message_state while it waits for its schedule_delivery_time: SMPP 5.0's
#: SCHEDULED (0). Not a 3.4 MessageState: no receipt carries it, and query_sm answers
#: it as ENROUTE unless configured otherwise (docs/conformance.md, smsc/server.py).
SCHEDULED = 0

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("account_id", Integer, nullable=False),
    Column("source_addr", String(21), nullable=False),
    Column("source_ton", SmallInteger, nullable=False),
    Column("source_npi", SmallInteger, nullable=False),
    Column("destination", String(21), nullable=False),
    Column("service_type", String(6), nullable=False),
    Column("msg_type", String(8), nullable=False),
    Column("esm_class", SmallInteger, nullable=False),
    Column("protocol_id", SmallInteger, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("registered_delivery", SmallInteger, nullable=False),
    Column("data_coding", SmallInteger, nullable=False),
    Column("short_message", LargeBinary, nullable=False),
    Column("tlvs", LargeBinary, nullable=False),  # encoded TLV stream passed upstream
    Column("segments", SmallInteger, nullable=False),
    Column("submitted_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("phase", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),  # SMPP message_state
    Column("err", SmallInteger, nullable=False, default=0),
    Column("done_at", Float, nullable=True),
    Column("connector", String(32), nullable=True),
    Column("upstream_id", String(65), nullable=True),
    Column("mccmnc", String(6), nullable=True),  # serving network from the HLR, when looked up
    Column("route", String(32), nullable=True),  # chosen before the write; NULL: rows of older versions
    # schedule_delivery_time, when in the future at acceptance (state SCHEDULED until
    # released); NULL: sent at once. Kept after release: the row says it was scheduled.
    Column("deliver_at", Float, nullable=True),
    # Partial indexes: a message enters each once and leaves the queued one once.
    # Full indexes on (phase) and (connector, upstream_id) moved an entry at every
    # phase change: 5 more b-tree writes per message, 7% of the writer's
    # instructions (callgrind, docs/benchmarks.md).
    Index(
        "ix_messages_upstream_id", "connector", "upstream_id",
        sqlite_where=text("upstream_id IS NOT NULL"), postgresql_where=text("upstream_id IS NOT NULL"),
    ),
    Index("ix_messages_queued", "id", sqlite_where=text("phase = 0"), postgresql_where=text("phase = 0")),
)

#: The row's columns, in table order: the record's attributes and the insert's values.
#: Plain interned ``str``, not SQLAlchemy's ``quoted_name`` (a ``str`` subclass):
#: CPython's type attribute cache only takes exact interned names, so with
#: ``quoted_name`` every attribute :data:`row_tuple` reads missed it and walked
#: the MRO (~2.6x slower; ~+6k instructions per message in the writer thread,
#: callgrind).
MESSAGE_COLUMNS: tuple[str, ...] = tuple(sys.intern(str(c.name)) for c in messages.columns)

_ENROUTE = int(MessageState.ENROUTE)
_UMR = int(Tag.user_message_reference)


def encode_tlv_stream(tlvs: dict[int, bytes]) -> bytes:
    """TLVs as the octets of a PDU's optional part (the row keeps them so)."""
    return b"".join(((t << 16) | len(v)).to_bytes(4, "big") + v for t, v in tlvs.items())


def decode_tlv_stream(data: bytes) -> dict[int, bytes]:
    """The inverse of :func:`encode_tlv_stream`, in the same order."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        tag = int.from_bytes(data[pos:pos + 2], "big")
        ln = int.from_bytes(data[pos + 2:pos + 4], "big")
        out[tag] = data[pos + 4:pos + 4 + ln]
        pos += 4 + ln
    return out


def text20_of(short_message: bytes, data_coding: int) -> str:
    """The first 20 characters of a stored text, for a receipt's ``text:`` ('' if unreadable)."""
    try:
        alphabet = pdutext.parse_data_coding(data_coding).alphabet
        text = pdutext.decode(short_message, alphabet, strict=False)
    except Exception:
        return ""
    return (text or "")[:20]


#: The last validity formatted: under load, consecutive messages share it (one
#: formatting per tenth of a second instead of ~3 µs per message).
_last_validity: list[Any] = [None, b""]


def validity_period(expires_at: float) -> bytes:
    """The absolute SMPP time (UTC, tenths) at which the hub gives up on a message.

    Sent upstream as the message's validity_period, so the carrier stops when
    we do; absolute, so a message resumed after a restart keeps its deadline
    (a relative form would restart the clock).
    """
    tenths = int(expires_at * 10)
    if _last_validity[0] == tenths:
        return _last_validity[1]
    got = format_smpp_time(datetime.fromtimestamp(tenths / 10, UTC))
    _last_validity[0], _last_validity[1] = tenths, got
    return got


class MessageRecord:
    """An accepted message: its row's values, and what a receipt needs of it."""

    __slots__ = (*MESSAGE_COLUMNS, "text20", "umr")

    # The names the router's correlation code reads.
    @property
    def message_id(self) -> int:
        return self.id

    @property
    def source(self) -> str:
        return self.source_addr

    @classmethod
    def from_submit(cls, message_id: int, account_id: int, fields: dict, tlvs: dict[int, bytes],
                    assessment: Any, now: float, expires_at: float, route: str | None,
                    mccmnc: str | None, deliver_at: float | None = None) -> MessageRecord:
        """A message the pipeline accepted, before its durable write (phase QUEUED, ENROUTE).

        ``deliver_at``: its release time when scheduled (state SCHEDULED until then).
        """
        r = cls.__new__(cls)
        sender = assessment.sender
        r.id = message_id
        r.account_id = account_id
        r.source_addr = sender.addr
        r.source_ton = sender.ton
        r.source_npi = sender.npi
        r.destination = assessment.destination.e164
        r.service_type = fields["service_type"].decode("ascii", "replace")
        r.msg_type = assessment.msg_type
        r.esm_class = fields["esm_class"]
        r.protocol_id = fields["protocol_id"]
        r.priority = fields["priority_flag"]
        r.registered_delivery = fields["registered_delivery"]
        r.data_coding = fields["data_coding"]
        r.short_message = fields["short_message"]
        if tlvs:
            r.tlvs = encode_tlv_stream(tlvs)
            r.umr = tlvs.get(_UMR)
        else:
            r.tlvs = b""
            r.umr = None
        r.segments = assessment.segments
        r.submitted_at = now
        r.expires_at = expires_at
        r.phase = QUEUED
        r.state = _ENROUTE if deliver_at is None else SCHEDULED
        r.err = 0
        r.done_at = None
        r.connector = None
        r.upstream_id = None
        r.mccmnc = mccmnc
        r.route = route
        r.deliver_at = deliver_at
        r.text20 = (assessment.text or "")[:20]
        return r

    @classmethod
    def from_row(cls, row) -> MessageRecord:
        """A record from a row mapping (``row._mapping``, or a dict with every column)."""
        r = cls.__new__(cls)
        for name in MESSAGE_COLUMNS:
            setattr(r, name, row[name])
        tlvs = r.tlvs or b""
        r.tlvs = tlvs
        r.umr = decode_tlv_stream(tlvs).get(_UMR) if tlvs else None
        r.text20 = text20_of(r.short_message, r.data_coding)
        return r

    def submit_fields(self) -> tuple[dict[str, Any], dict[int, bytes]]:
        """The upstream submit_sm's (fields, tlvs): the one definition of what a carrier gets.

        Built from the row's values only, so a message sent for the first time
        and one resumed after a restart are the same submit_sm. Our own
        ``validity_period`` (absolute, see :func:`validity_period`), TON/NPI
        1/1 for the E.164 destination, and always a receipt asked for (we
        need the outcome whatever the client asked). :meth:`submit_octets`
        is the hot path's form of the same.
        """
        fields = {
            "service_type": b"",
            "source_addr_ton": self.source_ton,
            "source_addr_npi": self.source_npi,
            "source_addr": self.source_addr.encode(),
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": self.destination.encode(),
            "esm_class": self.esm_class,
            "protocol_id": self.protocol_id,
            "priority_flag": self.priority,
            "validity_period": validity_period(self.expires_at),
            "registered_delivery": 1,  # we always need the outcome
            "data_coding": self.data_coding,
            "short_message": self.short_message,
        }
        return fields, decode_tlv_stream(self.tlvs) if self.tlvs else {}

    def submit_octets(self) -> bytes:
        """:meth:`submit_fields` encoded as a whole submit_sm with sequence 0 (``send_encoded``'s form).

        One formatting step per message, as :func:`pdu.receipt.receipt_octets`
        does for the client's receipt: no field dict, no Pdu, no generic
        encoder, and the TLVs are the row's stream as stored (the codec would
        write the same octets from their dict). Equal octet for octet to the
        general encoder (tests/router/test_record.py); what does not fit the
        short form takes the general path, which refuses it precisely.
        """
        source = self.source_addr.encode()
        destination = self.destination.encode()
        sm = self.short_message
        if len(source) > 20 or len(destination) > 20 or len(sm) > 254 or 0 in source or 0 in destination:
            return _general_submit(self)
        try:
            body = _SUBMIT_BODY % (self.source_ton, self.source_npi, source, destination, self.esm_class,
                                   self.protocol_id, self.priority, validity_period(self.expires_at),
                                   self.data_coding, len(sm), sm)
        except (OverflowError, TypeError):  # a ton/npi/flag outside a byte
            return _general_submit(self)
        tlvs = self.tlvs
        if tlvs:
            body += tlvs
        return pack_header(16 + len(body), _SUBMIT_SM, 0, 0) + body

    def forward(self) -> Forward:
        """The upstream submit_sm, as the connector sends it (:meth:`submit_octets`)."""
        return Forward(self.id, self.submit_octets(), self.expires_at)

    def __repr__(self) -> str:
        return f"<MessageRecord {self.id} account {self.account_id} to {self.destination}>"


#: The row of a record, in ``MESSAGE_COLUMNS`` order, for the insert (one C call).
row_tuple = attrgetter(*MESSAGE_COLUMNS)

_SUBMIT_SM = 0x00000004

#: submit_sm body of an upstream submit: service_type "", source ton/npi + address,
#: destination 1/1 + address, esm_class, protocol_id, priority_flag,
#: schedule_delivery_time "", validity_period, registered_delivery 1,
#: replace_if_present_flag 0, data_coding, sm_default_msg_id 0, sm_length, the text.
_SUBMIT_BODY = b"\x00%c%c%b\x00\x01\x01%b\x00%c%c%c\x00%b\x00\x01\x00%c\x00%c%b"


def _general_submit(record: MessageRecord) -> bytes:
    """The general encoder's submit_sm of a record (what the short form does not fit)."""
    return encode(Pdu(_SUBMIT_SM, 0, 0, *record.submit_fields()))
