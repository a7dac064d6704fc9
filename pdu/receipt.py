"""Delivery receipt text (SMPP 3.4 Appendix B): exact on output, liberal on input.

Output, fields in this order, single spaces (conformance §22)::

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm
    stat:DDDDDDD err:E text:first 20 characters

Input from carriers varies: capitalised keys (``Text:``), 12-digit dates with
seconds, missing ``sub``/``dlvrd``/``text``, 2-digit or longer ``err``, hex
ids.  :func:`parse_receipt` accepts all of those; :func:`normalize_message_id`
turns an upstream id into the canonical form the correlation table stores.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from staffetta.pdu import gsm
from staffetta.pdu.codec import Pdu, encode, pack_header
from staffetta.pdu.constants import MessageState

STATE_TO_STAT: dict[MessageState, str] = {
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
}
STAT_TO_STATE: dict[str, MessageState] = {v: k for k, v in STATE_TO_STAT.items()}

# Spellings seen from carriers besides the Appendix B words.
_STAT_ALIASES: dict[str, MessageState] = {
    **STAT_TO_STATE,
    "DELIVERED": MessageState.DELIVERED,
    "DELIVER": MessageState.DELIVERED,
    "UNDELIVERABLE": MessageState.UNDELIVERABLE,
    "UNDELIVERED": MessageState.UNDELIVERABLE,
    "ACCEPTED": MessageState.ACCEPTED,
    "REJECTED": MessageState.REJECTED,
    "EXPIRD": MessageState.EXPIRED,
    "DELETD": MessageState.DELETED,
}

TEXT_LEN = 20


@dataclass(frozen=True, slots=True)
class Receipt:
    """A parsed receipt; any field the carrier left out is None."""

    id: str | None
    sub: int | None
    dlvrd: int | None
    submit_date: datetime | None
    done_date: datetime | None
    stat: str | None
    err: str | None
    text: str | None

    @property
    def state(self) -> MessageState | None:
        return stat_to_state(self.stat) if self.stat else None


def stat_to_state(stat: str) -> MessageState | None:
    """A stat word (any case, Appendix B or a common variant) -> message_state, or None."""
    return _STAT_ALIASES.get(stat.strip().upper())


def _err(err: str | int) -> str:
    if isinstance(err, int):
        if err < 0:
            raise ValueError("err must not be negative")
        return f"{err:03d}"
    return err.zfill(3) if err.isdigit() else err


def _yymmddhhmm(d: datetime | float) -> str:
    if type(d) is float or type(d) is int:
        return _utc_minute(int(d // 60))
    # strftime costs several times this.
    return "%02d%02d%02d%02d%02d" % (d.year % 100, d.month, d.day, d.hour, d.minute)  # noqa: UP031 - 2x the f-string's speed


#: YYMMDDhhmm per UTC minute since the epoch. A receipt needs two, almost always
#: of the last few minutes: a dict hit instead of building two datetimes.
_MINUTES: dict[int, str] = {}


def _utc_minute(minute: int) -> str:
    s = _MINUTES.get(minute)
    if s is None:
        if len(_MINUTES) >= 4096:  # bounded: old minutes are rarely asked again
            _MINUTES.clear()
        t = time.gmtime(minute * 60)
        s = _MINUTES[minute] = "%02d%02d%02d%02d%02d" % (  # noqa: UP031
            t.tm_year % 100, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min)
    return s


#: 0-999 as three digits (``f"{n:03d}"``, a format spec costs ~4x a tuple item).
_PAD3: tuple[str, ...] = tuple(f"{n:03d}" for n in range(1000))


def format_receipt(message_id: str, sub: int, dlvrd: int, submit_date: datetime | float,
                   done_date: datetime | float, stat: str, err: str | int, text: str,
                   text_key: str = "text", alphabet: str = "gsm") -> bytes:
    """The Appendix B text, every field present, as short_message octets.

    ``stat`` is a 7-letter word (see :data:`STATE_TO_STAT`); ``text_key`` is
    'text' (default) or 'Text' per account; a date is a ``datetime``, formatted
    as given (pass it in the zone the client expects), or epoch seconds,
    formatted in UTC.  ``alphabet`` is how the receipt's
    data_coding 0 is read by the client: 'gsm' (unpacked septets; characters
    outside GSM become '?'), 'latin1' or 'ascii'.

    The hub's own receipts (integer counts and err, float dates, GSM) are put
    together in one formatting step, as it runs once per message; anything
    else takes :func:`_format_receipt_general`, which defines the format (the
    two agree on every input: tests/pdu/test_receipt.py).
    """
    if (type(err) is int and type(sub) is int and type(dlvrd) is int and 0 <= err < 1000 and 0 <= sub < 1000
            and 0 <= dlvrd < 1000 and type(submit_date) is float and type(done_date) is float
            and alphabet == "gsm" and message_id.isalnum() and stat.isalpha()):
        # Letters, digits, space and ':' sit at their ASCII codes in GSM 03.38,
        # so the head of a receipt needs no table walk.
        m = int(submit_date // 60)
        submitted = _MINUTES.get(m) or _utc_minute(m)
        m = int(done_date // 60)
        done = _MINUTES.get(m) or _utc_minute(m)
        head = (f"id:{message_id} sub:{_PAD3[sub]} dlvrd:{_PAD3[dlvrd]} submit date:{submitted} "
                f"done date:{done} stat:{stat} err:{_PAD3[err]} {text_key}:")
        return head.encode("ascii") + gsm.encode(text[:TEXT_LEN], errors="replace")
    return _format_receipt_general(message_id, sub, dlvrd, submit_date, done_date, stat, err, text,
                                   text_key, alphabet)


def _format_receipt_general(message_id: str, sub: int, dlvrd: int, submit_date: datetime | float,
                            done_date: datetime | float, stat: str, err: str | int, text: str,
                            text_key: str, alphabet: str) -> bytes:
    """:func:`format_receipt` for any input: field by field, each formatted by its own rule."""
    e = _err(err)
    head = (f"id:{message_id} sub:{sub:03d} dlvrd:{dlvrd:03d} "
            f"submit date:{_yymmddhhmm(submit_date)} done date:{_yymmddhhmm(done_date)} "
            f"stat:{stat} err:{e} {text_key}:")
    text = text[:TEXT_LEN]
    if alphabet == "gsm":
        # Letters, digits, space and ':' sit at their ASCII codes in GSM 03.38,
        # so the head of a receipt needs no table walk (it runs per receipt).
        if message_id.isalnum() and e.isalnum() and stat.isalpha():
            return head.encode("ascii") + gsm.encode(text, errors="replace")
        return gsm.encode(head + text, errors="replace")
    if alphabet in ("latin1", "ascii"):
        return (head + text).encode("latin-1" if alphabet == "latin1" else "ascii", "replace")
    raise ValueError(f"unknown alphabet {alphabet!r}")


_KEY_RE = re.compile(
    r"(?:^|(?<=\s))(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:",
    re.IGNORECASE,
)


def _date(v: str) -> datetime | None:
    v = v.strip()
    if not v.isdigit():
        return None
    try:
        if len(v) == 10:
            return datetime.strptime(v, "%y%m%d%H%M")
        if len(v) == 12:
            return datetime.strptime(v, "%y%m%d%H%M%S")
        if len(v) == 14:
            return datetime.strptime(v, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return None


def _int(v: str) -> int | None:
    v = v.strip()
    return int(v) if v.isdigit() else None


def parse_receipt(data: bytes | str, alphabet: str = "latin1") -> Receipt:
    """Parse receipt text liberally; ValueError if no receipt key is found at all.

    Octets are read as ``alphabet``: 'latin1' (default; a trailing NUL some
    carriers leave is dropped) or 'gsm' (unpacked septets, so 0x00 is '@').
    The keys read the same in both; only ``text`` depends on it.  Everything
    after ``text:`` is the text, so a text containing "stat:" cannot confuse us.
    """
    if isinstance(data, bytes | bytearray):
        s = gsm.decode(bytes(data)) if alphabet == "gsm" else data.decode("latin-1").rstrip("\x00")
    else:
        s = data
    found: dict[str, str] = {}
    matches = list(_KEY_RE.finditer(s))
    if not matches:
        raise ValueError("not a delivery receipt: no id/stat/... keys")
    for i, m in enumerate(matches):
        key = m.group(1).lower().replace("_", " ")
        if key in ("submitdate", "donedate"):
            key = key[:-4] + " date"
        if key == "text":
            found.setdefault(key, s[m.end():])
            break
        end = matches[i + 1].start() if i + 1 < len(matches) else len(s)
        found.setdefault(key, s[m.end():end].strip())
    stat = found.get("stat")
    return Receipt(
        id=found.get("id") or None,
        sub=_int(found["sub"]) if "sub" in found else None,
        dlvrd=_int(found["dlvrd"]) if "dlvrd" in found else None,
        submit_date=_date(found["submit date"]) if "submit date" in found else None,
        done_date=_date(found["done date"]) if "done date" in found else None,
        stat=stat.upper() if stat else None,
        err=found.get("err") or None,
        text=found.get("text"),
    )


_HEX = frozenset("0123456789abcdefABCDEF")
_OCTETS = (bytes, bytearray)


def normalize_message_id(s: str | bytes, style: str = "auto") -> str:
    """Canonical form of an upstream message id, for correlation.

    Carriers disagree with themselves: the submit_sm_resp id in hex and the
    receipt's ``id:`` in decimal, or with leading zeros (jookies/jasmin#20).
    A connector names the base each source uses and both sides meet here:

    * ``'hex'``: read as hexadecimal -> the decimal value as a string;
    * ``'decimal'``: read as decimal -> the decimal value as a string
      (so hex ``'1F'`` and decimal ``'031'`` both give ``'31'``);
    * ``'auto'``: opaque id: trimmed, lower-cased, leading zeros removed
      (``'0'`` stays ``'0'``); no base conversion, since ``'10'`` is ambiguous.

    ValueError if the id is empty or not valid in the named base.
    """
    if type(s) is not str and isinstance(s, _OCTETS):
        s = s.decode("latin-1")
    t = s.strip().rstrip("\x00")
    if not t:
        raise ValueError("empty message id")
    if style == "auto":  # the default, tested first: this runs twice per message
        return t.lower().lstrip("0") or "0"
    if style == "hex":
        body = t[2:] if t[:2].lower() == "0x" else t
        if not body or not _HEX.issuperset(body):
            raise ValueError(f"message id {s!r} is not hexadecimal")
        return str(int(body, 16))
    if style == "decimal":
        if not (t.isascii() and t.isdigit()):
            raise ValueError(f"message id {s!r} is not decimal")
        return str(int(t))
    raise ValueError(f"unknown style {style!r}")


# ------------------------------------------------------------ the receipt deliver_sm

_DELIVER_SM = 0x00000005
_ESM_RECEIPT = 0x04
_T_RECEIPTED_ID = 0x001E
_T_MESSAGE_STATE = 0x0427
_T_NETWORK_ERROR = 0x0423
_T_UMR = 0x0204
_T_MESSAGE_PAYLOAD = 0x0424


#: Every mandatory field of a deliver_sm, NULL. The codec's fast encoder wants
#: them all present (a missing one sends it down the slow, checking path), and
#: 3.4 §4.6.1 wants the scheduling/replace fields NULL in deliver_sm anyway.
DELIVER_SM_NULL: dict[str, bytes | int] = {
    "service_type": b"",
    "source_addr_ton": 0,
    "source_addr_npi": 0,
    "source_addr": b"",
    "dest_addr_ton": 0,
    "dest_addr_npi": 0,
    "destination_addr": b"",
    "esm_class": 0,
    "protocol_id": 0,
    "priority_flag": 0,
    "schedule_delivery_time": b"",
    "validity_period": b"",
    "registered_delivery": 0,
    "replace_if_present_flag": 0,
    "data_coding": 0,
    "sm_default_msg_id": 0,
    "short_message": b"",
}


def receipt_fields(message_id: bytes, handset: bytes, handset_ton: int, handset_npi: int,
                   owner: bytes, owner_ton: int, owner_npi: int, state: int, text: bytes,
                   network_error: int | None = None,
                   umr: bytes | None = None) -> tuple[dict[str, Any], dict[int, bytes]]:
    """A receipt deliver_sm's (fields, tlvs): the one definition of what a receipt carries.

    It comes from the handset (``handset``, the original's destination) to the
    original's sender (``owner``); esm_class 0x04, the Appendix B ``text``,
    ``receipted_message_id`` and ``message_state``, plus ``network_error_code``
    (GSM type 3) when given and the original's ``user_message_reference``.
    The hub's client receipts and the simulator's carrier receipts both come
    from here (:func:`receipt_octets` is the hub's fast form of the same).
    """
    tlvs = {_T_RECEIPTED_ID: message_id + b"\x00", _T_MESSAGE_STATE: bytes((state,))}
    if network_error is not None:
        tlvs[_T_NETWORK_ERROR] = b"\x03" + (network_error & 0xFFFF).to_bytes(2, "big")
    if umr is not None:
        tlvs[_T_UMR] = umr
    fields = {
        **DELIVER_SM_NULL,
        "source_addr_ton": handset_ton,
        "source_addr_npi": handset_npi,
        "source_addr": handset,
        "dest_addr_ton": owner_ton,
        "dest_addr_npi": owner_npi,
        "destination_addr": owner,
        "esm_class": _ESM_RECEIPT,
        "short_message": text,
    }
    return fields, tlvs


def receipt_octets(message_id: bytes, handset: bytes, handset_ton: int, handset_npi: int,
                   owner: bytes, owner_ton: int, owner_npi: int, state: int, text: bytes,
                   network_error: int | None = None, umr: bytes | None = None) -> bytes:
    """:func:`receipt_fields` encoded as a whole deliver_sm with sequence 0 (the outbox's form).

    Put together as octets in one formatting step, since the hub runs it once
    per message: no Pdu, no field dict, no generic encoder (~2x faster). It
    equals the general encoder's output octet for octet
    (tests/router/test_client_receipt.py); what does not fit the short form
    (an address over 20 octets, say) takes the general path, which refuses it
    precisely.
    """
    if (len(handset) > 20 or len(owner) > 20 or len(text) > 254 or len(message_id) > 64
            or 0 in handset or 0 in owner or 0 in message_id or (umr is not None and len(umr) != 2)):
        return _general_receipt(message_id, handset, handset_ton, handset_npi, owner, owner_ton,
                                owner_npi, state, text, network_error, umr)
    try:
        body = _RECEIPT_BODY % (handset_ton, handset_npi, handset, owner_ton, owner_npi, owner,
                                len(text), text, len(message_id) + 1, message_id, state)
    except (OverflowError, TypeError):  # a ton/npi/state outside a byte
        return _general_receipt(message_id, handset, handset_ton, handset_npi, owner, owner_ton,
                                owner_npi, state, text, network_error, umr)
    if network_error is not None:
        body += b"\x04\x23\x00\x03\x03" + (network_error & 0xFFFF).to_bytes(2, "big")
    if umr is not None:
        body += b"\x02\x04\x00\x02" + umr
    return pack_header(16 + len(body), _DELIVER_SM, 0, 0) + body


def _general_receipt(*args: Any) -> bytes:
    return encode(Pdu(_DELIVER_SM, 0, 0, *receipt_fields(*args)))


#: deliver_sm body of a receipt: service_type "", source ton/npi + address, destination
#: ton/npi + address, esm_class 0x04, then NULL fields, sm_length, the text; then
#: receipted_message_id (0x001E) and message_state (0x0427) TLVs.
_RECEIPT_BODY = (
    b"\x00%c%c%b\x00%c%c%b\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00%c%b"
    b"\x00\x1e\x00%c%b\x00\x04\x27\x00\x01%c"
)


def mo_fields(handset: bytes, handset_ton: int, handset_npi: int, number: bytes, number_ton: int,
              number_npi: int, data_coding: int, user_data: bytes,
              udh: bytes = b"") -> tuple[dict[str, Any], dict[int, bytes]]:
    """An MO deliver_sm's (fields, tlvs) as the hub hands it to the owner's bind.

    From the handset to the number it wrote to, addresses as the carrier gave
    them; esm_class 0x00 (0x40 when ``udh``, a concatenation header, leads the
    user data: conformance §15, UDHI set by whoever puts a UDH in);
    ``data_coding`` as received. User data over 254 octets travels in
    ``message_payload`` (a reassembled long MO), the short_message empty.
    """
    data = udh + user_data
    fields = {
        **DELIVER_SM_NULL,
        "source_addr_ton": handset_ton,
        "source_addr_npi": handset_npi,
        "source_addr": handset,
        "dest_addr_ton": number_ton,
        "dest_addr_npi": number_npi,
        "destination_addr": number,
        "esm_class": 0x40 if udh else 0x00,
        "data_coding": data_coding,
    }
    tlvs: dict[int, bytes] = {}
    if len(data) > 254:
        tlvs[_T_MESSAGE_PAYLOAD] = data
    else:
        fields["short_message"] = data
    return fields, tlvs


def mo_octets(handset: bytes, handset_ton: int, handset_npi: int, number: bytes, number_ton: int,
              number_npi: int, data_coding: int, user_data: bytes, udh: bytes = b"") -> bytes:
    """:func:`mo_fields` encoded as a whole deliver_sm with sequence 0 (the outbox's form).

    One formatting step for the common case, as :func:`receipt_octets` does (the
    hub builds one per MO); equal octet for octet to the general encoder
    (tests/router/test_mo_unit.py), which takes what does not fit the short form.
    """
    data = udh + user_data
    if len(handset) > 20 or len(number) > 20 or len(data) > 254 or 0 in handset or 0 in number:
        return _general_mo(handset, handset_ton, handset_npi, number, number_ton, number_npi, data_coding,
                           user_data, udh)
    try:
        body = _MO_BODY % (handset_ton, handset_npi, handset, number_ton, number_npi, number,
                           0x40 if udh else 0, data_coding, len(data), data)
    except (OverflowError, TypeError):  # a ton/npi/coding outside a byte
        return _general_mo(handset, handset_ton, handset_npi, number, number_ton, number_npi, data_coding,
                           user_data, udh)
    return pack_header(16 + len(body), _DELIVER_SM, 0, 0) + body


def _general_mo(*args: Any) -> bytes:
    return encode(Pdu(_DELIVER_SM, 0, 0, *mo_fields(*args)))


#: deliver_sm body of an MO: service_type "", source ton/npi + address, destination ton/npi
#: + address, esm_class, six NULL octets (protocol_id .. replace_if_present_flag),
#: data_coding, sm_default_msg_id 0, sm_length, the user data.
_MO_BODY = b"\x00%c%c%b\x00%c%c%b\x00%c\x00\x00\x00\x00\x00\x00%c\x00%c%b"
