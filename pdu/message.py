"""The quote: one function that judges a submit_sm and says what it will cost.

:func:`assess_submit` is what the submit path calls for every message, and
what a preview/quote calls too, so a debit can never differ from its quote
(issue 3 item 7, feature A26).  It validates every field the text layer owns,
decodes the text, counts segments with the one counter in
:mod:`pdu.segments`, checks the sender and the destination, and returns an
immutable :class:`Assessment`.  Anything wrong raises
:class:`~pdu.errors.SubmitRejected` with the exact ``command_status``.

It runs on the hot path, so it is written as straight-line dict lookups and
integer tests; numbers are read through the compiled plan of
:mod:`pdu.numbering` (a few microseconds, no ``phonenumbers`` call).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs

from staffetta.pdu.addresses import (
    DEFAULT_SENDER_CHARSET,
    Destination,
    Sender,
    SenderRules,
    check_sender,
    normalize_destination,
)
from staffetta.pdu.constants import ESM_UDHI, Npi, Status, Tag, Ton
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.segments import limits, measure_bytes, parse_udh
from staffetta.pdu.smpptime import SmppTimeError, parse_smpp_time
from staffetta.pdu.text import DEFAULT_ALPHABETS, GSM, UCS2, decode, parse_data_coding

SMART = "SMART"
PRO = "PRO"
REPLY = "REPLY"
#: Segments one message of each type may take (seed § TIPOLOGIE SMS, § LONG SMS).
MAX_SEGMENTS: dict[str, int] = {SMART: 1, PRO: 4, REPLY: 1}
_SERVICE_TYPES: dict[bytes, str] = {b"SMART": SMART, b"PRO": PRO, b"REPLY": REPLY}
#: The sender of a SMART / REPLY submit with an empty source_addr and no account default:
#: a placeholder the submit pipeline replaces with a pool number (or refuses: docs/two-way.md).
POOL_SENDER = Sender("", int(Ton.INTERNATIONAL), int(Npi.ISDN))

SINGLE = "single"
UDH = "udh"
SAR = "sar"
PAYLOAD = "payload"

_PAYLOAD_TAG = int(Tag.message_payload)
_SAR_REF = int(Tag.sar_msg_ref_num)
_SAR_TOTAL = int(Tag.sar_total_segments)
_SAR_SEQ = int(Tag.sar_segment_seqnum)
_OK_ESM_TYPES = frozenset({0x00, 0x08, 0x10})


def _sender_rules(policy: AccountPolicy) -> SenderRules:
    return SenderRules(charset=policy.sender_charset,
                       max_numeric_digits=policy.max_numeric_sender_digits,
                       default_country_code=policy.default_country_code)


def _default_sender(policy: AccountPolicy) -> Sender | None:
    s = policy.default_sender
    if s is None:
        return None
    raw = s.encode("ascii")
    digits = raw[1:] if raw[:1] == b"+" else raw
    ton, npi = (Ton.INTERNATIONAL, Npi.ISDN) if digits.isdigit() else (Ton.ALPHANUMERIC, 0)
    try:
        return check_sender(raw, ton, npi, policy.sender_rules)
    except SubmitRejected as exc:
        raise ValueError(f"default_sender {s!r}: {exc.reason}") from None


def _one_of(*allowed: Any):
    def check(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in allowed:
            raise ValueError(f"{attribute.name} must be one of {allowed}, not {value!r}")
    return check


@attrs.frozen(cache_hash=True)
class AccountPolicy:
    """What an account allows; built once per account, reused for every submit.

    ``ref16`` chooses the reference size the hub uses when it splits a message
    itself, and therefore the per-part limit it bills with (8-bit: 153 GSM).
    """

    default_type: str = attrs.field(default=PRO, validator=_one_of(SMART, PRO, REPLY))
    default_country_code: int = 39
    default_alphabet: str = attrs.field(default=GSM, validator=_one_of(*DEFAULT_ALPHABETS))
    sender_charset: frozenset[str] = attrs.field(default=DEFAULT_SENDER_CHARSET,
                                                 converter=frozenset)
    max_numeric_sender_digits: int = 15
    default_sender: str | None = None
    allow_unicode: bool = True
    ref16: bool = False
    sender_rules: SenderRules = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(_sender_rules, takes_self=True))
    default_sender_checked: Sender | None = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(_default_sender, takes_self=True))


@attrs.define
class Assessment:
    """Everything the hub needs downstream of the text layer for one submit_sm.

    Treat it as immutable (``attrs.evolve`` for a changed copy). It is not
    declared frozen because one is built for every submit_sm: a frozen
    class's ``__init__`` sets each of its 14 fields through
    ``object.__setattr__``, 1.5 µs against 0.4 µs here (~8k of the hub's
    instructions a message).

    ``segments`` is what this PDU is billed for: 1 for a part the client split
    itself (UDH or SAR), otherwise the parts the hub will send upstream.
    ``long_form``: 'single' (fits one segment, sent as is), 'udh' / 'sar' (a
    client-split part, see ``part``), 'payload' (the hub splits the user data:
    message_payload, or a short_message longer than one segment) - split it
    with ``pdu.segments.split*`` and this ``encoding`` and ``ref16``.
    """

    msg_type: str
    encoding: str
    data_coding: int
    message_class: int | None
    segments: int
    units: int
    text: str | None
    sender: Sender
    destination: Destination
    part: tuple[int, int, int] | None
    long_form: str
    schedule: datetime | None
    validity: datetime | None
    ref16: bool


def _reject(status: int, field: str, reason: str) -> SubmitRejected:
    return SubmitRejected(status, field, reason)


def _check_flags(fields: dict) -> None:
    esm = fields["esm_class"]
    if esm & 0x03 == 0x02:
        raise _reject(Status.ESME_RINVESMCLASS, "esm_class",
                      "transaction mode (bits 1-0 = 10) is not allowed in submit_sm")
    if esm & 0x3C not in _OK_ESM_TYPES:
        raise _reject(Status.ESME_RINVESMCLASS, "esm_class",
                      f"message type bits 0x{esm & 0x3C:02X} not allowed from an ESME")
    if fields["priority_flag"] > 3:
        raise _reject(Status.ESME_RINVPRTFLG, "priority_flag",
                      f"{fields['priority_flag']} is above 3")
    rd = fields["registered_delivery"]
    if rd & 0xE0 or rd & 0x03 == 0x03:
        raise _reject(Status.ESME_RINVREGDLVFLG, "registered_delivery",
                      f"0x{rd:02X} sets reserved bits")
    rep = fields["replace_if_present_flag"]
    if rep:
        if rep > 1:
            raise _reject(Status.ESME_RINVREPFLAG, "replace_if_present_flag",
                          f"{rep} is reserved")
        raise _reject(Status.ESME_RINVSUBREP, "replace_if_present_flag",
                      "replace-if-present is not offered")
    if fields["sm_default_msg_id"]:
        raise _reject(Status.ESME_RINVDFTMSGID, "sm_default_msg_id",
                      "no canned messages are defined")


def _times(fields: dict, now: datetime | None) -> tuple[datetime | None, datetime | None]:
    sched_raw = fields["schedule_delivery_time"]
    val_raw = fields["validity_period"]
    if not sched_raw and not val_raw:
        return None, None
    if now is None:
        now = datetime.now(UTC)
    try:
        schedule = parse_smpp_time(sched_raw, now)
    except SmppTimeError as exc:
        raise _reject(Status.ESME_RINVSCHED, "schedule_delivery_time", str(exc)) from None
    try:
        validity = parse_smpp_time(val_raw, now)
    except SmppTimeError as exc:
        raise _reject(Status.ESME_RINVEXPIRY, "validity_period", str(exc)) from None
    if validity is not None:
        if validity <= now:
            raise _reject(Status.ESME_RINVEXPIRY, "validity_period", "already in the past")
        if schedule is not None and validity <= schedule:
            raise _reject(Status.ESME_RINVEXPIRY, "validity_period",
                          "ends before the scheduled delivery time")
    return schedule, validity


def _sar(tlvs: dict[int, bytes]) -> tuple[int, int, int] | None:
    ref_v = tlvs.get(_SAR_REF)
    total_v = tlvs.get(_SAR_TOTAL)
    seq_v = tlvs.get(_SAR_SEQ)
    if ref_v is None or total_v is None or seq_v is None:
        return None  # all three or none; a partial set is ignored (conformance §21)
    for name, v, size in (("sar_msg_ref_num", ref_v, 2), ("sar_total_segments", total_v, 1),
                          ("sar_segment_seqnum", seq_v, 1)):
        if len(v) != size:
            raise _reject(Status.ESME_RINVPARLEN, name, f"{len(v)} octets, expected {size}")
    total, seq = total_v[0], seq_v[0]
    if total == 0 or seq == 0 or seq > total:
        raise _reject(Status.ESME_RINVMSGLEN, "sar_segment_seqnum", f"part {seq} of {total}")
    return int.from_bytes(ref_v, "big"), total, seq


def _part_capacity(encoding: str, header_len: int, ref16: bool) -> int:
    """Units one client-built part may carry: 140 octets less its UDH (or the SAR-added UDH)."""
    if header_len == 0:  # SAR: the carrier adds an 8-bit-ref UDH
        return limits(encoding, ref16)[1]
    if encoding == GSM:
        return 160 - (header_len * 8 + 6) // 7
    if encoding == UCS2:
        return (140 - header_len) // 2
    return 140 - header_len


def assess_submit(fields: dict, tlvs: dict[int, bytes], policy: AccountPolicy, *,
                  now: datetime | None = None) -> Assessment:
    """Validate a decoded submit_sm and return its :class:`Assessment`, or raise SubmitRejected.

    ``fields`` are the mandatory fields as the codec gives them (C-strings as
    bytes without NUL); ``tlvs`` maps tag -> raw value.  ``now`` (UTC) is only
    consulted when a time field is set; it defaults to the wall clock.
    """
    st = fields["service_type"]
    msg_type = _SERVICE_TYPES.get(st) if st else policy.default_type
    if msg_type is None:
        raise _reject(Status.ESME_RINVSERTYP, "service_type",
                      f"{st!r} is not one of '', SMART, PRO, REPLY")
    _check_flags(fields)
    schedule, validity = _times(fields, now)

    src = fields["source_addr"]
    if src:
        sender = check_sender(src, fields["source_addr_ton"], fields["source_addr_npi"],
                              policy.sender_rules)
    else:
        sender = policy.default_sender_checked
        if sender is None:
            if msg_type == PRO:
                raise _reject(Status.ESME_RINVSRCADR, "source_addr",
                              "empty and the account has no default sender")
            sender = POOL_SENDER  # SMART / REPLY: the submit pipeline takes one from the pool
    destination = normalize_destination(fields["destination_addr"], fields["dest_addr_ton"],
                                        fields["dest_addr_npi"], policy.default_country_code)

    dc = fields["data_coding"]
    coding = parse_data_coding(dc, policy.default_alphabet)
    encoding = coding.alphabet
    if encoding == UCS2 and not policy.allow_unicode:
        raise _reject(Status.ESME_RSUBMITFAIL, "data_coding",
                      "UCS-2 (Unicode) messages are not enabled for this account")

    sm = fields["short_message"]
    if fields["sm_length"] != len(sm):
        raise _reject(Status.ESME_RINVMSGLEN, "sm_length",
                      f"{fields['sm_length']} but short_message has {len(sm)} octets")
    payload = tlvs.get(_PAYLOAD_TAG) if tlvs else None
    if payload:
        if sm:
            raise _reject(Status.ESME_RINVMSGLEN, "message_payload",
                          "both short_message and message_payload carry data")
        data, field = payload, "message_payload"
    else:
        data, field = sm, "short_message"

    part: tuple[int, int, int] | None = None
    header_len = -1  # -1: no client part; 0: SAR part; >0: UDH octets incl. UDHL
    if fields["esm_class"] & ESM_UDHI:
        if tlvs and (_SAR_REF in tlvs or _SAR_TOTAL in tlvs or _SAR_SEQ in tlvs):
            raise _reject(Status.ESME_ROPTPARNOTALLWD, "sar_msg_ref_num",
                          "sar_* TLVs are not allowed together with a UDH (UDHI set)")
        udh = parse_udh(data, field)
        header_len = udh.header_len
        ud = data[header_len:]
        if udh.total is not None:
            part = (udh.ref, udh.total, udh.seq)  # type: ignore[assignment]
        long_form = UDH if part else SINGLE
    else:
        part = _sar(tlvs) if tlvs else None
        if part is not None:
            header_len = 0
            long_form = SAR
        else:
            long_form = PAYLOAD if payload else SINGLE
        ud = data

    if not ud:
        raise _reject(Status.ESME_RINVMSGLEN, field, "empty message")
    text = decode(ud, encoding, field=field)
    limit = MAX_SEGMENTS[msg_type]

    if header_len >= 0:
        units = len(ud) >> 1 if encoding == UCS2 else len(ud)
        cap = _part_capacity(encoding, header_len, policy.ref16)
        if units > cap:
            raise _reject(Status.ESME_RINVMSGLEN, field,
                          f"part carries {units} units, at most {cap} fit ({encoding})")
        if part is not None and part[1] > limit:
            raise _reject(Status.ESME_RINVMSGLEN, field,
                          f"{msg_type} allows at most {limit} segment(s); part says {part[1]}")
        segments = 1
    else:
        units, segments, _per = measure_bytes(ud, encoding, policy.ref16)
        if segments > limit:
            raise _reject(Status.ESME_RINVMSGLEN, field,
                          f"{msg_type} allows at most {limit} segment(s); "
                          f"this needs {segments} ({units} {encoding} units)")
        if segments > 1:
            long_form = PAYLOAD

    return Assessment(msg_type, encoding, dc, coding.message_class, segments, units, text,
                      sender, destination, part, long_form, schedule, validity, policy.ref16)
