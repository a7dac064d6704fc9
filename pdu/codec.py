"""Our SMPP 3.4 codec: bytes <-> :class:`Pdu`, for every PDU of the 3.4 catalogue.

Why our own: measured on this machine, decoding plus encoding a submit_sm here
runs ~18x faster than ``smpp.pdu``, which also drops vendor TLVs and cannot
encode submit_multi/replace_sm. ``smpp.pdu`` stays as the reference our tests
compare against.

Representation, chosen for speed on the hot path:

* ``fields`` is a plain dict keyed by the 3.4 field names. C-Octet strings are
  ``bytes`` without their NUL, integers are ``int``, ``short_message`` is raw
  ``bytes`` (a GSM ``@`` is 0x00 and never passes through C-string handling).
* ``tlvs`` maps the tag (int) to its raw value bytes, in wire order. Unknown and
  vendor tags are kept, so they can be passed upstream untouched.

Decoding is lenient where the spec allows (unknown TLVs, bodies on error
responses) and exact where a wrong guess would corrupt data: a C-Octet string
without its NUL, a body shorter than its mandatory fields, a truncated TLV
stream or trailing garbage raise :class:`DecodeError` carrying the precise
command_status to answer with.
"""

from __future__ import annotations

from typing import Any

from pdu.constants import RESPONSE_BIT, Command, Status, Tag

HEADER_LEN = 16

# Field kinds
_C = 0  # C-Octet string (max includes the NUL)
_U8 = 1
_U32 = 3
_SM = 4  # sm_length + short_message
_DESTS = 5  # submit_multi destination list
_UNSUCCESS = 6  # submit_multi_resp unsuccess_sme list

#: Status to answer when a C-Octet string field is malformed or too long.
_FIELD_STATUS = {
    "system_id": Status.ESME_RINVSYSID,
    "password": Status.ESME_RINVPASWD,
    "system_type": Status.ESME_RINVSYSTYP,
    "address_range": Status.ESME_RBINDFAIL,
    "service_type": Status.ESME_RINVSERTYP,
    "source_addr": Status.ESME_RINVSRCADR,
    "destination_addr": Status.ESME_RINVDSTADR,
    "esme_addr": Status.ESME_RINVDSTADR,
    "schedule_delivery_time": Status.ESME_RINVSCHED,
    "validity_period": Status.ESME_RINVEXPIRY,
    "message_id": Status.ESME_RINVMSGID,
    "dl_name": Status.ESME_RINVDLNAME,
    "final_date": Status.ESME_RSYSERR,
}

_ADDR_SM = [
    ("service_type", _C, 6),
    ("source_addr_ton", _U8, 0),
    ("source_addr_npi", _U8, 0),
    ("source_addr", _C, 21),
    ("dest_addr_ton", _U8, 0),
    ("dest_addr_npi", _U8, 0),
    ("destination_addr", _C, 21),
    ("esm_class", _U8, 0),
    ("protocol_id", _U8, 0),
    ("priority_flag", _U8, 0),
    ("schedule_delivery_time", _C, 17),
    ("validity_period", _C, 17),
    ("registered_delivery", _U8, 0),
    ("replace_if_present_flag", _U8, 0),
    ("data_coding", _U8, 0),
    ("sm_default_msg_id", _U8, 0),
    ("short_message", _SM, 254),
]
_BIND = [
    ("system_id", _C, 16),
    ("password", _C, 9),
    ("system_type", _C, 13),
    ("interface_version", _U8, 0),
    ("addr_ton", _U8, 0),
    ("addr_npi", _U8, 0),
    ("address_range", _C, 41),
]
_BIND_RESP = [("system_id", _C, 16)]
_MSGID = [("message_id", _C, 65)]

#: Mandatory body layout of every PDU of the 3.4 catalogue.
LAYOUTS: dict[int, list[tuple[str, int, int]]] = {
    Command.GENERIC_NACK: [],
    Command.BIND_RECEIVER: _BIND,
    Command.BIND_TRANSMITTER: _BIND,
    Command.BIND_TRANSCEIVER: _BIND,
    Command.BIND_RECEIVER_RESP: _BIND_RESP,
    Command.BIND_TRANSMITTER_RESP: _BIND_RESP,
    Command.BIND_TRANSCEIVER_RESP: _BIND_RESP,
    Command.OUTBIND: [("system_id", _C, 16), ("password", _C, 9)],
    Command.UNBIND: [],
    Command.UNBIND_RESP: [],
    Command.ENQUIRE_LINK: [],
    Command.ENQUIRE_LINK_RESP: [],
    Command.SUBMIT_SM: _ADDR_SM,
    Command.SUBMIT_SM_RESP: _MSGID,
    Command.DELIVER_SM: _ADDR_SM,
    Command.DELIVER_SM_RESP: _MSGID,
    Command.DATA_SM: [
        ("service_type", _C, 6),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _C, 65),
        ("dest_addr_ton", _U8, 0),
        ("dest_addr_npi", _U8, 0),
        ("destination_addr", _C, 65),
        ("esm_class", _U8, 0),
        ("registered_delivery", _U8, 0),
        ("data_coding", _U8, 0),
    ],
    Command.DATA_SM_RESP: _MSGID,
    Command.QUERY_SM: [
        ("message_id", _C, 65),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _C, 21),
    ],
    Command.QUERY_SM_RESP: [
        ("message_id", _C, 65),
        ("final_date", _C, 17),
        ("message_state", _U8, 0),
        ("error_code", _U8, 0),
    ],
    Command.CANCEL_SM: [
        ("service_type", _C, 6),
        ("message_id", _C, 65),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _C, 21),
        ("dest_addr_ton", _U8, 0),
        ("dest_addr_npi", _U8, 0),
        ("destination_addr", _C, 21),
    ],
    Command.CANCEL_SM_RESP: [],
    Command.REPLACE_SM: [
        ("message_id", _C, 65),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _C, 21),
        ("schedule_delivery_time", _C, 17),
        ("validity_period", _C, 17),
        ("registered_delivery", _U8, 0),
        ("sm_default_msg_id", _U8, 0),
        ("short_message", _SM, 254),
    ],
    Command.REPLACE_SM_RESP: [],
    Command.SUBMIT_MULTI: [
        ("service_type", _C, 6),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _C, 21),
        ("dest_addresses", _DESTS, 254),
        ("esm_class", _U8, 0),
        ("protocol_id", _U8, 0),
        ("priority_flag", _U8, 0),
        ("schedule_delivery_time", _C, 17),
        ("validity_period", _C, 17),
        ("registered_delivery", _U8, 0),
        ("replace_if_present_flag", _U8, 0),
        ("data_coding", _U8, 0),
        ("sm_default_msg_id", _U8, 0),
        ("short_message", _SM, 254),
    ],
    Command.SUBMIT_MULTI_RESP: [
        ("message_id", _C, 65),
        ("unsuccess_sme", _UNSUCCESS, 254),
    ],
    Command.ALERT_NOTIFICATION: [
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _C, 65),
        ("esme_addr_ton", _U8, 0),
        ("esme_addr_npi", _U8, 0),
        ("esme_addr", _C, 65),
    ],
}

#: Allowed value sizes (min, max) of the TLVs we know; others are kept unchecked.
TLV_SIZES: dict[int, tuple[int, int]] = {
    **{
        t: (1, 1)
        for t in (
            Tag.dest_addr_subunit,
            Tag.dest_network_type,
            Tag.dest_bearer_type,
            Tag.source_addr_subunit,
            Tag.source_network_type,
            Tag.source_bearer_type,
            Tag.source_telematics_id,
            Tag.payload_type,
            Tag.ms_msg_wait_facilities,
            Tag.privacy_indicator,
            Tag.user_response_code,
            Tag.language_indicator,
            Tag.sar_total_segments,
            Tag.sar_segment_seqnum,
            Tag.sc_interface_version,
            Tag.callback_num_pres_ind,
            Tag.number_of_messages,
            Tag.dpf_result,
            Tag.set_dpf,
            Tag.ms_availability_status,
            Tag.delivery_failure_reason,
            Tag.more_messages_to_send,
            Tag.message_state,
            Tag.display_time,
            Tag.ms_validity,
            Tag.its_reply_type,
        )
    },
    Tag.dest_telematics_id: (2, 2),
    Tag.user_message_reference: (2, 2),
    Tag.source_port: (2, 2),
    Tag.destination_port: (2, 2),
    Tag.sar_msg_ref_num: (2, 2),
    Tag.sms_signal: (2, 2),
    Tag.its_session_info: (2, 2),
    Tag.qos_time_to_live: (4, 4),
    Tag.network_error_code: (3, 3),
    Tag.additional_status_info_text: (1, 256),
    Tag.receipted_message_id: (1, 65),
    Tag.source_subaddress: (2, 23),
    Tag.dest_subaddress: (2, 23),
    Tag.callback_num: (4, 19),
    Tag.callback_num_atag: (0, 65),
    Tag.ussd_service_op: (1, 1),
    Tag.alert_on_message_delivery: (0, 0),
    Tag.message_payload: (0, 65535),
}


class DecodeError(Exception):
    """A PDU that cannot be accepted; ``status`` is what to answer with.

    ``header_error`` distinguishes a bad header (generic_nack, and for a bad
    length, close) from a bad body (the request's own ``*_resp``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        command_id: int = 0,
        sequence: int = 0,
        field: str | None = None,
        header_error: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.command_id = command_id
        self.sequence = sequence
        self.field = field
        self.header_error = header_error


class Pdu:
    """One SMPP PDU. Deliberately a plain slotted object: it is built and read
    millions of times, and attrs/dataclass validation would cost on each."""

    __slots__ = ("command_id", "status", "sequence", "fields", "tlvs")

    def __init__(
        self,
        command_id: int,
        sequence: int = 0,
        status: int = 0,
        fields: dict[str, Any] | None = None,
        tlvs: dict[int, bytes] | None = None,
    ) -> None:
        self.command_id = command_id
        self.sequence = sequence
        self.status = status
        self.fields = fields if fields is not None else {}
        self.tlvs = tlvs if tlvs is not None else {}

    def __repr__(self) -> str:
        try:
            name = Command(self.command_id).name.lower()
        except ValueError:
            name = hex(self.command_id)
        return (
            f"Pdu({name}, seq={self.sequence}, status=0x{self.status:08x}, "
            f"fields={self.fields!r}, tlvs={self.tlvs!r})"
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Pdu)
            and self.command_id == other.command_id
            and self.sequence == other.sequence
            and self.status == other.status
            and self.fields == other.fields
            and self.tlvs == other.tlvs
        )

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)


# --------------------------------------------------------------------- TLV values


def u8(n: int) -> bytes:
    return bytes((n,))


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def cstr(value: bytes | str) -> bytes:
    """A C-Octet string TLV value (receipted_message_id and friends)."""
    if isinstance(value, str):
        value = value.encode("ascii")
    return value + b"\x00"


def tlv_int(value: bytes) -> int:
    return int.from_bytes(value, "big")


def tlv_cstr(value: bytes) -> bytes:
    """Value of a C-Octet string TLV without its NUL; tolerant of a missing NUL."""
    n = value.find(b"\x00")
    return value if n < 0 else value[:n]


# ------------------------------------------------------------------------ decode


def decode(data: bytes) -> Pdu:
    """Decode one whole PDU (header included), as cut by :class:`pdu.framing.Framer`."""
    n = len(data)
    if n < HEADER_LEN:
        raise DecodeError(Status.ESME_RINVCMDLEN, "PDU shorter than its header", header_error=True)
    length = int.from_bytes(data[0:4], "big")
    command_id = int.from_bytes(data[4:8], "big")
    status = int.from_bytes(data[8:12], "big")
    sequence = int.from_bytes(data[12:16], "big")
    if length != n:
        raise DecodeError(
            Status.ESME_RINVCMDLEN,
            f"command_length {length} but {n} octets",
            command_id=command_id,
            sequence=sequence,
            header_error=True,
        )
    layout = LAYOUTS.get(command_id)
    if layout is None:
        raise DecodeError(
            Status.ESME_RINVCMDID,
            f"unknown command_id 0x{command_id:08x}",
            command_id=command_id,
            sequence=sequence,
            header_error=True,
        )
    fields: dict[str, Any] = {}
    pos = HEADER_LEN
    # Error responses carry no body, but peers add one or a lone NUL: tolerate.
    if status and command_id & RESPONSE_BIT:
        try:
            pos = _decode_fields(data, pos, n, layout, fields, command_id, sequence)
            tlvs = _decode_tlvs(data, pos, n, command_id, sequence)
        except DecodeError:
            fields.clear()
            tlvs = {}
        return Pdu(command_id, sequence, status, fields, tlvs)
    pos = _decode_fields(data, pos, n, layout, fields, command_id, sequence)
    tlvs = _decode_tlvs(data, pos, n, command_id, sequence) if pos < n else {}
    return Pdu(command_id, sequence, status, fields, tlvs)


def _short(command_id: int, sequence: int, name: str) -> DecodeError:
    return DecodeError(
        Status.ESME_RINVCMDLEN,
        f"body too short for mandatory field {name}",
        command_id=command_id,
        sequence=sequence,
        field=name,
    )


def _decode_fields(
    data: bytes,
    pos: int,
    end: int,
    layout: list[tuple[str, int, int]],
    fields: dict[str, Any],
    command_id: int,
    sequence: int,
) -> int:
    for name, kind, size in layout:
        if kind == _C:
            nul = data.find(b"\x00", pos, min(end, pos + size))
            if nul < 0:
                if end - pos < size and data.find(b"\x00", pos, end) < 0:
                    raise _short(command_id, sequence, name)
                raise DecodeError(
                    _FIELD_STATUS.get(name, Status.ESME_RINVCMDLEN),
                    f"{name} longer than {size - 1} characters or without NUL",
                    command_id=command_id,
                    sequence=sequence,
                    field=name,
                )
            fields[name] = data[pos:nul]
            pos = nul + 1
        elif kind == _U8:
            if pos >= end:
                raise _short(command_id, sequence, name)
            fields[name] = data[pos]
            pos += 1
        elif kind == _SM:
            if pos >= end:
                raise _short(command_id, sequence, "sm_length")
            sm_length = data[pos]
            pos += 1
            if sm_length > size or pos + sm_length > end:
                raise DecodeError(
                    Status.ESME_RINVMSGLEN,
                    f"sm_length {sm_length} exceeds the octets that follow",
                    command_id=command_id,
                    sequence=sequence,
                    field="sm_length",
                )
            fields["sm_length"] = sm_length
            fields[name] = data[pos : pos + sm_length]
            pos += sm_length
        elif kind == _DESTS:
            pos = _decode_dests(data, pos, end, fields, command_id, sequence)
        elif kind == _UNSUCCESS:
            pos = _decode_unsuccess(data, pos, end, fields, command_id, sequence)
        else:  # pragma: no cover - layouts are static
            raise AssertionError(kind)
    return pos


def _cstring(data: bytes, pos: int, end: int, size: int, name: str, cid: int, seq: int):
    nul = data.find(b"\x00", pos, min(end, pos + size))
    if nul < 0:
        raise DecodeError(
            _FIELD_STATUS.get(name, Status.ESME_RINVCMDLEN),
            f"{name} longer than {size - 1} characters or without NUL",
            command_id=cid,
            sequence=seq,
            field=name,
        )
    return data[pos:nul], nul + 1


def _decode_dests(data: bytes, pos: int, end: int, fields: dict, cid: int, seq: int) -> int:
    if pos >= end:
        raise _short(cid, seq, "number_of_dests")
    count = data[pos]
    pos += 1
    if count == 0 or count > 254:
        raise DecodeError(
            Status.ESME_RINVNUMDESTS,
            f"number_of_dests {count} outside 1-254",
            command_id=cid,
            sequence=seq,
            field="number_of_dests",
        )
    dests = []
    for _ in range(count):
        if pos >= end:
            raise _short(cid, seq, "dest_address")
        flag = data[pos]
        pos += 1
        if flag == 1:
            if pos + 2 > end:
                raise _short(cid, seq, "dest_address")
            ton, npi = data[pos], data[pos + 1]
            addr, pos = _cstring(data, pos + 2, end, 21, "destination_addr", cid, seq)
            dests.append(
                {"dest_flag": 1, "dest_addr_ton": ton, "dest_addr_npi": npi, "destination_addr": addr}
            )
        elif flag == 2:
            name, pos = _cstring(data, pos, end, 21, "dl_name", cid, seq)
            dests.append({"dest_flag": 2, "dl_name": name})
        else:
            raise DecodeError(
                Status.ESME_RINVDESTFLAG,
                f"dest_flag {flag} is neither 1 nor 2",
                command_id=cid,
                sequence=seq,
                field="dest_flag",
            )
    fields["dest_addresses"] = dests
    return pos


def _decode_unsuccess(data: bytes, pos: int, end: int, fields: dict, cid: int, seq: int) -> int:
    if pos >= end:
        raise _short(cid, seq, "no_unsuccess")
    count = data[pos]
    pos += 1
    items = []
    for _ in range(count):
        if pos + 2 > end:
            raise _short(cid, seq, "unsuccess_sme")
        ton, npi = data[pos], data[pos + 1]
        addr, pos = _cstring(data, pos + 2, end, 21, "destination_addr", cid, seq)
        if pos + 4 > end:
            raise _short(cid, seq, "error_status_code")
        code = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        items.append(
            {
                "dest_addr_ton": ton,
                "dest_addr_npi": npi,
                "destination_addr": addr,
                "error_status_code": code,
            }
        )
    fields["unsuccess_sme"] = items
    return pos


def _decode_tlvs(data: bytes, pos: int, end: int, cid: int, seq: int) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    while pos < end:
        if pos + 4 > end:
            raise DecodeError(
                Status.ESME_RINVOPTPARSTREAM,
                "trailing octets are not a TLV",
                command_id=cid,
                sequence=seq,
                field="tlv",
            )
        tag = (data[pos] << 8) | data[pos + 1]
        length = (data[pos + 2] << 8) | data[pos + 3]
        pos += 4
        if pos + length > end:
            raise DecodeError(
                Status.ESME_RINVOPTPARSTREAM,
                f"TLV 0x{tag:04x} length {length} runs past the PDU",
                command_id=cid,
                sequence=seq,
                field=_tag_name(tag),
            )
        sizes = TLV_SIZES.get(tag)
        if sizes is not None and not sizes[0] <= length <= sizes[1]:
            raise DecodeError(
                Status.ESME_RINVPARLEN,
                f"TLV {_tag_name(tag)} has length {length}, allowed {sizes[0]}-{sizes[1]}",
                command_id=cid,
                sequence=seq,
                field=_tag_name(tag),
            )
        tlvs[tag] = data[pos : pos + length]
        pos += length
    return tlvs


def _tag_name(tag: int) -> str:
    try:
        return Tag(tag).name
    except ValueError:
        return f"tlv_0x{tag:04x}"


# ------------------------------------------------------------------------ encode


def encode(pdu: Pdu) -> bytes:
    """Encode exactly. Missing mandatory fields default to NULL (0 / empty).

    An error response is sent header-only, as 3.4 asks (§4.1.2, §4.4.2 notes).
    """
    command_id = pdu.command_id
    if pdu.status and command_id & RESPONSE_BIT:
        body = b""
    else:
        layout = LAYOUTS[command_id]
        parts: list[bytes] = []
        append = parts.append
        fields = pdu.fields
        get = fields.get
        for name, kind, size in layout:
            if kind == _C:
                value = get(name, b"")
                if len(value) >= size:
                    raise ValueError(f"{name} longer than {size - 1} octets")
                append(value)
                append(b"\x00")
            elif kind == _U8:
                append(_BYTE[get(name, 0)])
            elif kind == _SM:
                sm = get(name, b"")
                if len(sm) > size:
                    raise ValueError(f"short_message longer than {size} octets")
                append(_BYTE[len(sm)])
                append(sm)
            elif kind == _DESTS:
                append(_encode_dests(get(name, [])))
            elif kind == _UNSUCCESS:
                append(_encode_unsuccess(get(name, [])))
        for tag, value in pdu.tlvs.items():
            append(((tag << 16) | len(value)).to_bytes(4, "big"))
            append(value)
        body = b"".join(parts)
    length = HEADER_LEN + len(body)
    return (
        length.to_bytes(4, "big")
        + command_id.to_bytes(4, "big")
        + pdu.status.to_bytes(4, "big")
        + pdu.sequence.to_bytes(4, "big")
        + body
    )


_BYTE = [bytes((i,)) for i in range(256)]


def _encode_dests(dests: list[dict]) -> bytes:
    out = [_BYTE[len(dests)]]
    for d in dests:
        if d.get("dest_flag", 1) == 1:
            out.append(
                bytes((1, d.get("dest_addr_ton", 0), d.get("dest_addr_npi", 0)))
                + d.get("destination_addr", b"")
                + b"\x00"
            )
        else:
            out.append(b"\x02" + d["dl_name"] + b"\x00")
    return b"".join(out)


def _encode_unsuccess(items: list[dict]) -> bytes:
    out = [_BYTE[len(items)]]
    for d in items:
        out.append(
            bytes((d.get("dest_addr_ton", 0), d.get("dest_addr_npi", 0)))
            + d.get("destination_addr", b"")
            + b"\x00"
            + d.get("error_status_code", 0).to_bytes(4, "big")
        )
    return b"".join(out)


def response_to(request: Pdu, status: int = 0, fields: dict | None = None,
                tlvs: dict[int, bytes] | None = None) -> Pdu:
    """The response PDU for ``request``, echoing its sequence number."""
    return Pdu(request.command_id | RESPONSE_BIT, request.sequence, status, fields, tlvs)


def generic_nack(sequence: int, status: int) -> bytes:
    return encode(Pdu(Command.GENERIC_NACK, sequence, status))
