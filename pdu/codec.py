"""Our SMPP 3.4 codec: bytes <-> :class:`Pdu`, for every PDU of the 3.4 catalogue.

Why our own: decoding plus encoding a submit_sm here runs 20-30x faster than
``smpp.pdu`` (``python bench/bench_codec.py``), which also drops vendor TLVs and
cannot encode submit_multi/replace_sm. ``smpp.pdu`` stays as the reference our
tests compare against (tests/pdu/test_codec_differential.py).

Representation, chosen for speed on the hot path:

* ``fields`` is a plain dict keyed by the 3.4 field names. C-Octet strings are
  ``bytes`` without their NUL, integers are ``int``, ``short_message`` is raw
  ``bytes`` (a GSM ``@`` is 0x00 and never passes through C-string handling).
* ``tlvs`` maps the tag (int) to its raw value bytes, in wire order. Unknown and
  vendor tags are kept, so they can be passed upstream untouched.

Decoding is lenient where the spec allows (unknown TLVs, bodies on error
responses) and exact where a wrong guess would corrupt data: a C-Octet string
without its NUL, a body shorter than its mandatory fields, a truncated TLV
stream, a TLV twice or trailing garbage raise :class:`DecodeError` carrying
the precise command_status to answer with -- and nothing else ever escapes
:func:`decode`, whatever the bytes.

Speed comes from code generated once at import for each layout (one regular
expression match for the whole mandatory part, one ``bytes %`` format to encode
it); a plain field-by-field walk of :data:`LAYOUTS` stays as the reference that
defines the format, produces every error, and must agree with the generated
code on any input (tested). :data:`LAYOUTS` is read at import.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from staffetta.pdu.constants import RESPONSE_BIT, Command, Status, Tag

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

    # The generated decoders build a Pdu without __init__ and set each of these
    # slots themselves (_pdu_return): a new slot must be added there too.
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
#
# Two decoders that must agree. ``_decode_reference`` walks LAYOUTS field by
# field and knows every error status; it is the definition of the wire format.
# The hot path is one generated function per layout (see ``_gen_decoder``): it
# reads optimistically and, at the first thing it does not like (no regex
# match, a short_message or TLV running past the end, a TLV of the wrong size
# or seen twice), gives up and lets the reference decoder produce the precise
# DecodeError. Tests check that both agree on arbitrary input.

_HDR = struct.Struct(">IIII")
_HDR_unpack_from = _HDR.unpack_from
_HDR_pack = _HDR.pack
_TL = struct.Struct(">HH")
_TL_unpack_from = _TL.unpack_from
_TL_pack = _TL.pack
_TLV_SIZES_get = TLV_SIZES.get


class _Slow(Exception):
    """The fast path hands over to the reference path."""


def decode(data: bytes) -> Pdu:
    """Decode one whole PDU (header included), as cut by :class:`pdu.framing.Framer`.

    Raises :class:`DecodeError` and nothing else, whatever the input.
    """
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < HEADER_LEN:
        raise DecodeError(Status.ESME_RINVCMDLEN, "PDU shorter than its header", header_error=True)
    length, command_id, status, sequence = _HDR_unpack_from(data)
    if length != n:
        raise DecodeError(
            Status.ESME_RINVCMDLEN,
            f"command_length {length} but {n} octets",
            command_id=command_id,
            sequence=sequence,
            header_error=True,
        )
    return decode_frame(data, command_id, status, sequence)


#: The header of a PDU: (command_length, command_id, command_status, sequence_number).
unpack_header = _HDR_unpack_from
#: The 16-octet header (length, command_id, status, sequence): for PDUs put together as octets.
pack_header = _HDR_pack


def decode_frame(data: bytes, command_id: int, status: int, sequence: int) -> Pdu:
    """:func:`decode` for a PDU whose header the caller has read (:func:`unpack_header`)
    and whose length it has checked: the session's frames, cut by the Framer.

    Raises :class:`DecodeError` and nothing else, whatever the body.
    """
    n = len(data)
    fast = _DECODERS.get(command_id)
    if fast is None:
        raise DecodeError(
            Status.ESME_RINVCMDID,
            f"unknown command_id 0x{command_id:08x}",
            command_id=command_id,
            sequence=sequence,
            header_error=True,
        )
    if status and command_id & RESPONSE_BIT:
        # Error responses carry no body, but peers add one or a lone NUL: tolerate.
        if n > HEADER_LEN:
            try:
                return _decode_reference(data, n, command_id, status, sequence)
            except DecodeError:
                pass
        return Pdu(command_id, sequence, status, {}, {})
    try:
        return fast(data, n, command_id, status, sequence)
    except (_Slow, LookupError, ValueError, struct.error):
        return _decode_reference(data, n, command_id, status, sequence)


def _decode_reference(data: bytes, n: int, command_id: int, status: int, sequence: int) -> Pdu:
    fields: dict[str, Any] = {}
    pos = _decode_fields(data, HEADER_LEN, n, LAYOUTS[command_id], fields, command_id, sequence)
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


def _cstring(
    data: bytes, pos: int, end: int, size: int, name: str, cid: int, seq: int
) -> tuple[bytes, int]:
    """A C-Octet string of at most ``size`` octets (NUL included) at ``pos``.

    No octet left at all: the mandatory field is missing, the body is too short
    (ESME_RINVCMDLEN). Octets but no NUL within ``size`` (or before the end): the
    field itself is bad, answered with its own status (ESME_RINVSRCADR...).
    """
    if pos >= end:
        raise _short(cid, seq, name)
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
            fields[name], pos = _cstring(data, pos, end, size, name, command_id, sequence)
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
                    f"sm_length {sm_length} exceeds the octets that follow or {size}",
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
            raise _short(cid, seq, "dest_flag")
        flag = data[pos]
        pos += 1
        if flag == 1:
            if pos >= end:
                raise _short(cid, seq, "dest_addr_ton")
            if pos + 1 >= end:
                raise _short(cid, seq, "dest_addr_npi")
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
        if pos >= end:
            raise _short(cid, seq, "dest_addr_ton")
        if pos + 1 >= end:
            raise _short(cid, seq, "dest_addr_npi")
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
            # name the TLV if at least its tag made it in
            name = _tag_name(int.from_bytes(data[pos : pos + 2], "big")) if pos + 2 <= end else "tlv"
            raise DecodeError(
                Status.ESME_RINVOPTPARSTREAM,
                f"{end - pos} trailing octets are not a TLV",
                command_id=cid,
                sequence=seq,
                field=name,
            )
        tag, length = _TL_unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise DecodeError(
                Status.ESME_RINVOPTPARSTREAM,
                f"TLV 0x{tag:04x} length {length} runs past the PDU",
                command_id=cid,
                sequence=seq,
                field=_tag_name(tag),
            )
        sizes = _TLV_SIZES_get(tag)
        if sizes is not None and not sizes[0] <= length <= sizes[1]:
            raise DecodeError(
                Status.ESME_RINVPARLEN,
                f"TLV {_tag_name(tag)} has length {length}, allowed {sizes[0]}-{sizes[1]}",
                command_id=cid,
                sequence=seq,
                field=_tag_name(tag),
            )
        if tag in tlvs:
            # A dict cannot hold both, and keeping either would silently drop
            # the other: the optional part is malformed.
            raise DecodeError(
                Status.ESME_RINVOPTPARSTREAM,
                f"TLV {_tag_name(tag)} appears twice",
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


# The TLV loop, inlined in every generated decoder (a call costs more than it).
_TLV_LOOP = """\
    tlvs = {}
    while p < n:
        tag, ln = _TL_unpack_from(data, p)
        sz = _TLV_SIZES_get(tag)
        if sz is not None and not sz[0] <= ln <= sz[1] or tag in tlvs:
            raise _Slow
        p += 4
        tlvs[tag] = data[p : p + ln]
        p += ln
    if p != n:
        raise _Slow  # the last TLV ran past the end
"""


def _pdu_return(indent: str, tlvs: str) -> list[str]:
    # Building the Pdu without running __init__: every slot is set right here.
    return [
        f"{indent}pdu = _new(Pdu)",
        f"{indent}pdu.command_id = cid",
        f"{indent}pdu.sequence = seq",
        f"{indent}pdu.status = status",
        f"{indent}pdu.fields = fields",
        f"{indent}pdu.tlvs = {tlvs}",
        f"{indent}return pdu",
    ]


def _gen_decoder(name: str, layout: list[tuple[str, int, int]]) -> str:
    """Source of the fast decoder of one layout: straight-line code, no per-field dispatch.

    One precompiled regular expression matches the whole mandatory part in a
    single C call -- ``([^\\x00]{0,max-1})\\x00`` per C-Octet string, one
    ``(...)`` group per run of integers (sm_length included), whose bytes unpack
    straight into ints. A layout of a single C-Octet string (the *_resp with a
    message_id) uses one ``bytes.find`` instead, cheaper than a match.
    Both read exactly what the reference walk reads whenever it succeeds; a
    non-match defers to it for the precise error.
    """
    kinds = [kind for _, kind, _ in layout]
    if _SM in kinds and kinds.index(_SM) != len(kinds) - 1:  # pragma: no cover - static layouts
        raise AssertionError("short_message must close the layout")
    lines = [f"def _decode_{name}(data, n, cid, status, seq):"]
    items: list[tuple[str, str]] = []  # (field name, local) in wire order, for the dict display
    if not layout:
        lines.append("    p = 16")
    elif kinds == [_C]:
        size = layout[0][2]
        lines += [
            f"    e = data.find(0, 16, {16 + size})",
            "    if e < 0:",
            "        raise _Slow",
            "    v0 = data[16:e]",
            "    p = e + 1",
        ]
        items.append((layout[0][0], "v0"))
    else:
        pattern = b""
        targets: list[str] = []  # what each regex group is assigned to
        unpack: list[str] = []
        run: list[tuple[str, str]] = []

        def close_run() -> None:
            nonlocal pattern
            if run:
                group = f"r{len(targets)}"
                pattern += b"(" + b"." * len(run) + b")"
                targets.append(group)
                unpack.append(f"    {', '.join(local for _, local in run)}, = {group}")
                items.extend(run)
                run.clear()

        for i, (fname, kind, size) in enumerate(layout):
            if kind == _C:
                close_run()
                pattern += b"([^\\x00]{0,%d})\\x00" % (size - 1)
                targets.append(f"v{i}")
                items.append((fname, f"v{i}"))
            elif kind == _U8:
                run.append((fname, f"v{i}"))
            else:  # _SM: its length octet closes the last run
                run.append(("sm_length", "sl"))
        close_run()
        _PATTERNS[name] = pattern
        lines += [
            f"    m = _re_{name}(data, 16)",
            "    if m is None:",
            "        raise _Slow",
            f"    {', '.join(targets)}, = m.groups()",
            *unpack,
            "    p = m.end()",
        ]
    if _SM in kinds:
        i = kinds.index(_SM)
        lines += [
            "    e = p + sl",
            f"    if e > n or sl > {layout[i][2]}:",
            "        raise _Slow",
            f"    v{i} = data[p:e]",
            "    p = e",
        ]
        items.append((layout[i][0], f"v{i}"))
    lines.append("    fields = {" + ", ".join(f"{k!r}: {v}" for k, v in items) + "}")
    lines.append("    if p == n:")
    lines += _pdu_return(" " * 8, "{}")
    lines.append(_TLV_LOOP.rstrip("\n"))
    lines += _pdu_return(" " * 4, "tlvs")
    return "\n".join(lines) + "\n"


_PATTERNS: dict[str, bytes] = {}

#: Layouts :func:`response_octets` packs itself: nothing but the header, or a
#: lone message_id (submit_sm_resp, deliver_sm_resp, data_sm_resp).
_HEADER_ONLY = frozenset(int(c) for c, layout in LAYOUTS.items() if not layout)
_MSGID_ONLY = frozenset(int(c) for c, layout in LAYOUTS.items() if layout == _MSGID)


# ------------------------------------------------------------------------ encode


def encode(pdu: Pdu) -> bytes:
    """Encode exactly. Missing mandatory fields default to NULL (0 / empty).

    An error response is sent header-only, as 3.4 asks (§4.1.2, §4.4.2 notes).
    A value that cannot be put on the wire as given (a C-Octet string too long
    or holding a NUL, an integer out of range, a TLV value over 65535 octets)
    raises ValueError rather than producing a PDU the peer would misread.
    """
    command_id = pdu.command_id
    if pdu.status and command_id & RESPONSE_BIT:
        try:
            return _HDR_pack(HEADER_LEN, command_id, pdu.status, pdu.sequence)
        except struct.error:
            _check_header(pdu)  # raises the precise ValueError/TypeError
            raise
    fast = _ENCODERS.get(command_id)
    if fast is None:
        raise KeyError(command_id)  # same as LAYOUTS[command_id]: not a 3.4 PDU
    try:
        return fast(pdu)
    except (_Slow, LookupError, TypeError, ValueError, OverflowError, struct.error):
        return _encode_reference(pdu)


def response_octets(
    command_id: int,
    sequence: int,
    status: int = 0,
    fields: dict[str, Any] | None = None,
    tlvs: dict[int, bytes] | None = None,
) -> bytes:
    """``encode(Pdu(command_id, sequence, status, fields, tlvs))``, without the Pdu when it is plain.

    Why: the hub answers every submit_sm (a message_id) and every receipt
    (deliver_sm_resp), and a session answers enquire_link and errors, with
    nothing more than a header and at most one C-Octet string. Packing those
    directly skips building a Pdu and the general encoder's dispatch. Anything
    else (TLVs, another layout, a value the wire cannot carry) goes through
    :func:`encode`, which has the last word on every error (tested equal).
    """
    try:
        if status:
            if command_id & RESPONSE_BIT:  # an error response is header-only
                return _HDR_pack(HEADER_LEN, command_id, status, sequence)
        elif not tlvs:
            if command_id in _MSGID_ONLY:
                mid = fields.get("message_id", b"") if fields else b""
                if type(mid) is bytes and len(mid) < 65 and 0 not in mid:
                    return _HDR_pack(HEADER_LEN + 1 + len(mid), command_id, 0, sequence) + mid + b"\x00"
            elif command_id in _HEADER_ONLY:
                return _HDR_pack(HEADER_LEN, command_id, 0, sequence)
    except struct.error:
        pass  # encode() raises the precise error
    return encode(Pdu(command_id, sequence, status, fields, tlvs))


def _check_header(pdu: Pdu) -> None:
    for name in ("command_id", "status", "sequence"):
        value = getattr(pdu, name)
        if not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{name} {value} outside 0-0xFFFFFFFF")


def _u8_value(name: str, value: int) -> bytes:
    if isinstance(value, bytes | bytearray) and len(value) == 1:
        return bytes(value)  # as ``b"%c"`` in the fast encoders takes it
    if not 0 <= value <= 255:
        raise ValueError(f"{name} {value} outside 0-255")
    return _BYTE[value]


def _cstr_value(name: str, value: bytes, size: int) -> bytes:
    if len(value) >= size:
        raise ValueError(f"{name} longer than {size - 1} octets")
    if 0 in value:
        raise ValueError(f"{name} contains a NUL octet")
    return value


def _encode_reference(pdu: Pdu) -> bytes:
    """Field by field, with a precise ValueError; the fast encoders must agree."""
    _check_header(pdu)
    if pdu.status and pdu.command_id & RESPONSE_BIT:
        return _HDR_pack(HEADER_LEN, pdu.command_id, pdu.status, pdu.sequence)
    parts: list[bytes] = []
    append = parts.append
    get = pdu.fields.get
    for name, kind, size in LAYOUTS[pdu.command_id]:
        if kind == _C:
            append(_cstr_value(name, get(name, b""), size))
            append(b"\x00")
        elif kind == _U8:
            append(_u8_value(name, get(name, 0)))
        elif kind == _SM:
            sm = get(name, b"")
            if len(sm) > size:
                raise ValueError(f"{name} longer than {size} octets")
            append(_BYTE[len(sm)])
            append(sm)
        elif kind == _DESTS:
            append(_encode_dests(get(name, [])))
        elif kind == _UNSUCCESS:
            append(_encode_unsuccess(get(name, [])))
    append(_encode_tlvs(pdu.tlvs))
    body = b"".join(parts)
    return _HDR_pack(HEADER_LEN + len(body), pdu.command_id, pdu.status, pdu.sequence) + body


def _encode_tlvs(tlvs: dict[int, bytes]) -> bytes:
    parts = []
    append = parts.append
    for tag, value in tlvs.items():
        try:
            append(_TL_pack(tag, len(value)))
        except struct.error:
            raise ValueError(
                f"TLV 0x{tag:x}: tag or length {len(value)} outside 0-0xFFFF"
            ) from None
        append(value)
    return b"".join(parts)


_BYTE = [bytes((i,)) for i in range(256)]


def _encode_dests(dests: list[dict]) -> bytes:
    if len(dests) > 254:
        raise ValueError(f"{len(dests)} destinations, at most 254")
    out = [_BYTE[len(dests)]]
    for d in dests:
        flag = d.get("dest_flag", 1)
        if flag == 1:
            out.append(b"\x01")
            out.append(_u8_value("dest_addr_ton", d.get("dest_addr_ton", 0)))
            out.append(_u8_value("dest_addr_npi", d.get("dest_addr_npi", 0)))
            out.append(_cstr_value("destination_addr", d.get("destination_addr", b""), 21))
        elif flag == 2:
            out.append(b"\x02")
            out.append(_cstr_value("dl_name", d["dl_name"], 21))
        else:
            raise ValueError(f"dest_flag {flag} is neither 1 nor 2")
        out.append(b"\x00")
    return b"".join(out)


def _encode_unsuccess(items: list[dict]) -> bytes:
    if len(items) > 255:
        raise ValueError(f"{len(items)} unsuccess_sme entries, at most 255")
    out = [_BYTE[len(items)]]
    for d in items:
        out.append(_u8_value("dest_addr_ton", d.get("dest_addr_ton", 0)))
        out.append(_u8_value("dest_addr_npi", d.get("dest_addr_npi", 0)))
        out.append(_cstr_value("destination_addr", d.get("destination_addr", b""), 21))
        out.append(b"\x00")
        code = d.get("error_status_code", 0)
        if not 0 <= code <= 0xFFFFFFFF:
            raise ValueError(f"error_status_code {code} outside 0-0xFFFFFFFF")
        out.append(code.to_bytes(4, "big"))
    return b"".join(out)


def _gen_encoder(name: str, layout: list[tuple[str, int, int]]) -> str:
    """Source of the fast encoder of one layout: one ``bytes %`` for the body.

    Missing fields default to NULL; any other surprise (a wrong type, an
    out-of-range value) falls back to :func:`_encode_reference`, which explains.
    """
    lines = [f"def _encode_{name}(pdu):"]
    fmt = []
    args = []
    checks = []
    if layout:
        lines.append("    f = pdu.fields")
    for i, (fname, kind, size) in enumerate(layout):
        v = f"v{i}"
        # A missing mandatory field is NULL (3.4 §3.1): default it here rather
        # than fall back to the reference encoder (an exception costs ~30 µs).
        # (A dict.get per field: overlaying the NULL defaults with dict.update
        # and one itemgetter is faster on the clock but ~3k instructions more.)
        default = "0" if kind == _U8 else "b''"
        lines.append(f"    {v} = f.get({fname!r}, {default})")
        if kind == _C:
            fmt.append("%b\\x00")
            checks.append(f"len({v}) >= {size} or 0 in {v}")
            args.append(v)
        elif kind == _U8:
            # %c refuses anything outside 0-255 (OverflowError -> reference path)
            fmt.append("%c")
            args.append(v)
        elif kind == _SM:
            lines.append(f"    sl = len({v})")
            checks.append(f"sl > {size}")
            fmt.append("%c%b")
            args += ["sl", v]
        else:  # pragma: no cover
            raise AssertionError(kind)
    if checks:
        lines.append("    if " + " or ".join(checks) + ":")
        lines.append("        raise _Slow")
    if layout:
        lines.append(f"    body = b'{''.join(fmt)}' % ({', '.join(args)},)")
    else:
        lines.append("    body = b''")
    lines += [
        "    tlvs = pdu.tlvs",
        "    if not tlvs:",
        "        return _HDR_pack(16 + len(body), pdu.command_id, pdu.status, pdu.sequence) + body",
        "    parts = [b'', body]",
        "    size = 16 + len(body)",
        "    for tag, value in tlvs.items():",
        "        ln = len(value)",
        "        parts += (_TL_pack(tag, ln), value)",
        "        size += 4 + ln",
        "    parts[0] = _HDR_pack(size, pdu.command_id, pdu.status, pdu.sequence)",
        "    return b''.join(parts)",
    ]
    return "\n".join(lines) + "\n"


def _compile() -> tuple[dict[int, Any], dict[int, Any], dict[int, str]]:
    namespace = {
        "Pdu": Pdu,
        "_Slow": _Slow,
        "_TL_unpack_from": _TL_unpack_from,
        "_TL_pack": _TL_pack,
        "_TLV_SIZES_get": _TLV_SIZES_get,
        "_HDR_pack": _HDR_pack,
        "_new": Pdu.__new__,
    }
    decoders: dict[int, Any] = {}
    encoders: dict[int, Any] = {}
    sources: dict[int, str] = {}
    for command_id, layout in LAYOUTS.items():
        name = Command(command_id).name.lower()
        plain = all(kind in (_C, _U8, _SM) for _, kind, _ in layout)
        if not plain:  # submit_multi and its response: the reference code is fast enough
            decoders[int(command_id)] = _decode_reference
            encoders[int(command_id)] = _encode_reference
            continue
        src = _gen_decoder(name, layout) + "\n" + _gen_encoder(name, layout)
        if name in _PATTERNS:
            namespace[f"_re_{name}"] = re.compile(_PATTERNS[name], re.DOTALL).match
        exec(compile(src, f"<pdu.codec {name}>", "exec"), namespace)
        decoders[int(command_id)] = namespace[f"_decode_{name}"]
        encoders[int(command_id)] = namespace[f"_encode_{name}"]
        sources[int(command_id)] = src
    return decoders, encoders, sources


#: Generated per-layout decoders/encoders, keyed by command_id; _SOURCES keeps
#: their text for inspection (``print(codec._SOURCES[4])``).
_DECODERS, _ENCODERS, _SOURCES = _compile()


def response_to(request: Pdu, status: int = 0, fields: dict | None = None,
                tlvs: dict[int, bytes] | None = None) -> Pdu:
    """The response PDU for ``request``, echoing its sequence number."""
    return Pdu(request.command_id | RESPONSE_BIT, request.sequence, status, fields, tlvs)


def generic_nack(sequence: int, status: int) -> bytes:
    return encode(Pdu(Command.GENERIC_NACK, sequence, status))
