"""assess_submit: the quote the submit path bills with (issue 3 item 7; features A26-A29, D6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staffetta.pdu import gsm
from staffetta.pdu.addresses import Destination, Sender
from staffetta.pdu.constants import Status, Tag
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.message import AccountPolicy, Assessment, assess_submit
from staffetta.pdu.segments import choose_encoding, split, split_sar, udh_concat
from tests.builders import submit_fields

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
POLICY = AccountPolicy()


fields = submit_fields


def payload(data: bytes, **over) -> tuple[dict, dict]:
    return fields(None, **over), {Tag.message_payload: data}


def assess(f: dict, tlvs: dict | None = None, policy: AccountPolicy = POLICY) -> Assessment:
    return assess_submit(f, tlvs or {}, policy, now=NOW)


def rejected(f: dict, tlvs: dict | None = None, policy: AccountPolicy = POLICY) -> SubmitRejected:
    with pytest.raises(SubmitRejected) as exc:
        assess(f, tlvs, policy)
    return exc.value


def test_plain_gsm_single() -> None:
    a = assess(fields("Hello"))
    assert a == Assessment(
        msg_type="PRO", encoding="gsm", data_coding=0, message_class=None, segments=1,
        units=5, text="Hello", sender=Sender("Staffetta", 5, 0),
        destination=Destination("393481234567", "IT", 39), part=None, long_form="single",
        schedule=None, validity=None, ref16=False)


def test_gsm_special_characters_byte_exact() -> None:
    text = "@ € èéùìòà £$ {x}"
    f = fields(text)
    assert f["short_message"].startswith(b"\x00 \x1b\x65 \x04\x05\x06\x07\x08\x7f")
    a = assess(f)
    assert a.text == text
    assert a.units == len(text) + 3


# -- limits per type and encoding (tables 160/161, 612/613, 70/71, 268/269) ---------------


@pytest.mark.parametrize(
    ("service_type", "text", "segments"),
    [
        (b"SMART", "a" * 160, 1), (b"SMART", "a" * 161, None),
        (b"REPLY", "a" * 160, 1), (b"REPLY", "a" * 161, None),
        (b"SMART", "È" * 70, 1), (b"SMART", "È" * 71, None),
        (b"PRO", "a" * 161, 2), (b"PRO", "a" * 612, 4), (b"PRO", "a" * 613, None),
        (b"", "a" * 612, 4), (b"", "a" * 613, None),
        (b"PRO", "È" * 70, 1), (b"PRO", "È" * 71, 2), (b"PRO", "È" * 268, 4),
        (b"PRO", "È" * 269, None),
        (b"PRO", "a" * 159 + "€", 2),
    ],
)
def test_limits_via_message_payload(service_type: bytes, text: str, segments: int | None) -> None:
    encoding, data = choose_encoding(text)
    f, tlvs = payload(data, service_type=service_type, data_coding=8 if encoding == "ucs2" else 0)
    if segments is None:
        exc = rejected(f, tlvs)
        assert exc.status == Status.ESME_RINVMSGLEN
        assert exc.field == "message_payload"
    else:
        a = assess(f, tlvs)
        assert (a.segments, a.long_form) == (segments, "payload")
        assert a.segments == len(split(text, encoding, ref=1))


def test_type_from_service_type() -> None:
    assert assess(fields(service_type=b"SMART")).msg_type == "SMART"
    assert assess(fields(service_type=b"REPLY")).msg_type == "REPLY"
    assert assess(fields(), policy=AccountPolicy(default_type="SMART")).msg_type == "SMART"
    for bad in (b"CMT", b"smart", b"X"):
        assert rejected(fields(service_type=bad)).status == Status.ESME_RINVSERTYP


def test_long_short_message_is_split_by_the_hub() -> None:
    a = assess(fields("a" * 200))
    assert (a.segments, a.long_form) == (2, "payload")
    assert rejected(fields("a" * 200, service_type=b"SMART")).status == Status.ESME_RINVMSGLEN


def test_d6_payload_and_client_parts_bill_the_same() -> None:
    text = "x" * 300
    f, tlvs = payload(gsm.encode(text))
    assert assess(f, tlvs).segments == 2
    parts = split(text, "gsm", ref=0x42)
    billed = [assess(fields(None, esm_class=0x40, short_message=p)) for p in parts]
    assert [b.segments for b in billed] == [1, 1]
    assert [b.part for b in billed] == [(0x42, 2, 1), (0x42, 2, 2)]
    assert {b.long_form for b in billed} == {"udh"}
    sar = split_sar(text, "gsm", ref=0x4242)
    billed = [assess(fields(None, short_message=p.payload), {
        Tag.sar_msg_ref_num: p.ref.to_bytes(2, "big"),
        Tag.sar_total_segments: bytes([p.total]), Tag.sar_segment_seqnum: bytes([p.seq])})
        for p in sar]
    assert [(b.segments, b.part, b.long_form) for b in billed] == [
        (1, (0x4242, 2, 1), "sar"), (1, (0x4242, 2, 2), "sar")]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab €{@èÈ😀\n"), min_size=1, max_size=700),
       st.sampled_from([b"", b"SMART", b"PRO"]))
def test_quote_equals_parts_sent(text: str, service_type: bytes) -> None:
    """A26: what assess_submit bills is exactly the number of parts the splitter makes."""
    encoding, data = choose_encoding(text)
    f, tlvs = payload(data, service_type=service_type,
                      data_coding=8 if encoding == "ucs2" else 0)
    parts = split(text, encoding, ref=9, ref16=POLICY.ref16)
    limit = 1 if service_type == b"SMART" else 4
    if len(parts) > limit:
        assert rejected(f, tlvs).status == Status.ESME_RINVMSGLEN
    else:
        a = assess(f, tlvs)
        assert a.segments == len(parts)
        assert a.text == text and a.encoding == encoding


# -- client-split parts --------------------------------------------------------------------


def test_udh_parts_limits() -> None:
    ok = fields(None, esm_class=0x40, short_message=udh_concat(1, 4, 4) + b"a" * 153)
    assert assess(ok).part == (1, 4, 4)
    too_many = fields(None, esm_class=0x40, short_message=udh_concat(1, 5, 1) + b"a")
    assert rejected(too_many).status == Status.ESME_RINVMSGLEN
    smart = fields(None, esm_class=0x40, service_type=b"SMART",
                   short_message=udh_concat(1, 2, 1) + b"a")
    assert rejected(smart).status == Status.ESME_RINVMSGLEN
    too_long = fields(None, esm_class=0x40, short_message=udh_concat(1, 2, 1) + b"a" * 154)
    assert rejected(too_long).status == Status.ESME_RINVMSGLEN
    ref16 = fields(None, esm_class=0x40,
                   short_message=udh_concat(0x1234, 2, 1, ref16=True) + b"a" * 152)
    assert assess(ref16).part == (0x1234, 2, 1)
    ref16_long = fields(None, esm_class=0x40,
                        short_message=udh_concat(0x1234, 2, 1, ref16=True) + b"a" * 153)
    assert rejected(ref16_long).status == Status.ESME_RINVMSGLEN


def test_udh_ucs2_and_binary_parts() -> None:
    ucs2 = fields(None, esm_class=0x40, data_coding=8,
                  short_message=udh_concat(1, 2, 1) + "È".encode("utf-16-be") * 67)
    assert assess(ucs2).units == 67
    ucs2_long = fields(None, esm_class=0x40, data_coding=8,
                       short_message=udh_concat(1, 2, 1) + "È".encode("utf-16-be") * 68)
    assert rejected(ucs2_long).status == Status.ESME_RINVMSGLEN
    binary = fields(None, esm_class=0x40, data_coding=4,
                    short_message=udh_concat(1, 2, 2) + b"\xff" * 134)
    a = assess(binary)
    assert (a.text, a.encoding, a.units) == (None, "binary", 134)


def test_udh_without_concatenation_is_single() -> None:
    port_udh = bytes.fromhex("0605040B8423F0")
    a = assess(fields(None, esm_class=0x40, data_coding=4, short_message=port_udh + b"\x01\x02"))
    assert (a.part, a.long_form, a.segments, a.units) == (None, "single", 1, 2)


@pytest.mark.parametrize("udh", ["050003010001", "050003010200", "050003010203", "0500030102"])
def test_bad_udh(udh: str) -> None:
    f = fields(None, esm_class=0x40, short_message=bytes.fromhex(udh) + b"a")
    assert rejected(f).status == Status.ESME_RINVMSGLEN


def test_udh_with_no_text_is_empty() -> None:
    f = fields(None, esm_class=0x40, short_message=udh_concat(1, 2, 1))
    assert rejected(f).status == Status.ESME_RINVMSGLEN


def test_udhi_with_sar_is_not_allowed() -> None:
    f = fields(None, esm_class=0x40, short_message=udh_concat(1, 2, 1) + b"a")
    exc = rejected(f, {Tag.sar_msg_ref_num: b"\x00\x01"})
    assert exc.status == Status.ESME_ROPTPARNOTALLWD


def test_sar_checks() -> None:
    base = {Tag.sar_msg_ref_num: b"\x00\x01", Tag.sar_total_segments: b"\x02",
            Tag.sar_segment_seqnum: b"\x01"}
    assert assess(fields("a" * 153), base).part == (1, 2, 1)
    assert rejected(fields("a" * 154), base).status == Status.ESME_RINVMSGLEN
    assert rejected(fields("a"), {**base, Tag.sar_segment_seqnum: b"\x03"}).status == \
        Status.ESME_RINVMSGLEN
    assert rejected(fields("a"), {**base, Tag.sar_total_segments: b"\x05"}).status == \
        Status.ESME_RINVMSGLEN
    assert rejected(fields("a"), {**base, Tag.sar_msg_ref_num: b"\x01"}).status == \
        Status.ESME_RINVPARLEN
    # a partial set is ignored (conformance §21)
    a = assess(fields("a"), {Tag.sar_msg_ref_num: b"\x00\x01"})
    assert (a.part, a.long_form) == (None, "single")


# -- user data presence and length ---------------------------------------------------------


def test_empty_message() -> None:
    exc = rejected(fields(""))
    assert (exc.status, exc.field) == (Status.ESME_RINVMSGLEN, "short_message")
    assert rejected(*payload(b"")).status == Status.ESME_RINVMSGLEN


def test_short_message_and_payload_both() -> None:
    assert rejected(fields("a"), {Tag.message_payload: b"b"}).status == Status.ESME_RINVMSGLEN


def test_sm_length_mismatch() -> None:
    exc = rejected(fields("abc", sm_length=4))
    assert (exc.status, exc.field) == (Status.ESME_RINVMSGLEN, "sm_length")


# -- data_coding ---------------------------------------------------------------------------


@pytest.mark.parametrize(("dc", "encoding", "cls"),
                         [(0xF0, "gsm", 0), (0x10, "gsm", 0), (0xF2, "gsm", 2), (0x12, "gsm", 2),
                          (0x01, "gsm", None), (0x03, "latin1", None)])
def test_message_class_preserved(dc: int, encoding: str, cls: int | None) -> None:
    a = assess(fields("Flash", data_coding=dc))
    assert (a.encoding, a.message_class, a.data_coding) == (encoding, cls, dc)


def test_ucs2_flash_and_sim() -> None:
    for dc, cls in ((0x18, 0), (0x1A, 2)):
        a = assess(fields(None, data_coding=dc, short_message="Ciao È".encode("utf-16-be")))
        assert (a.encoding, a.message_class, a.text, a.units) == ("ucs2", cls, "Ciao È", 6)


def test_emoji_units() -> None:
    a = assess(fields(None, data_coding=8, short_message="😀😀".encode("utf-16-be")))
    assert (a.units, a.segments) == (4, 1)


def test_bad_data_coding() -> None:
    assert rejected(fields(data_coding=0x06)).status == Status.ESME_RSUBMITFAIL
    odd = fields(None, data_coding=8, short_message=b"\x00a\x00")
    assert rejected(odd).status == Status.ESME_RSUBMITFAIL
    latin_as_gsm = fields(None, short_message="è".encode("latin-1"))
    assert rejected(latin_as_gsm).status == Status.ESME_RSUBMITFAIL


def test_latin1_default_alphabet() -> None:
    policy = AccountPolicy(default_alphabet="latin1")
    a = assess(fields(None, short_message="Però".encode("latin-1")), policy=policy)
    assert (a.encoding, a.text, a.units) == ("latin1", "Però", 4)


def test_unicode_disabled_account() -> None:
    policy = AccountPolicy(allow_unicode=False)
    exc = rejected(fields(None, data_coding=8, short_message="È".encode("utf-16-be")),
                   policy=policy)
    assert (exc.status, exc.field) == (Status.ESME_RSUBMITFAIL, "data_coding")


# -- mandatory field checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "status", "field"),
    [
        ({"priority_flag": 4}, Status.ESME_RINVPRTFLG, "priority_flag"),
        ({"registered_delivery": 0x03}, Status.ESME_RINVREGDLVFLG, "registered_delivery"),
        ({"registered_delivery": 0x20}, Status.ESME_RINVREGDLVFLG, "registered_delivery"),
        ({"esm_class": 0x02}, Status.ESME_RINVESMCLASS, "esm_class"),
        ({"esm_class": 0x04}, Status.ESME_RINVESMCLASS, "esm_class"),
        ({"esm_class": 0x20}, Status.ESME_RINVESMCLASS, "esm_class"),
        ({"replace_if_present_flag": 1}, Status.ESME_RINVSUBREP, "replace_if_present_flag"),
        ({"replace_if_present_flag": 2}, Status.ESME_RINVREPFLAG, "replace_if_present_flag"),
        ({"sm_default_msg_id": 1}, Status.ESME_RINVDFTMSGID, "sm_default_msg_id"),
        ({"source_addr_ton": 7}, Status.ESME_RINVSRCTON, "source_addr_ton"),
        ({"source_addr_npi": 2}, Status.ESME_RINVSRCNPI, "source_addr_npi"),
        ({"dest_addr_ton": 9}, Status.ESME_RINVDSTTON, "dest_addr_ton"),
        ({"dest_addr_npi": 5}, Status.ESME_RINVDSTNPI, "dest_addr_npi"),
        ({"source_addr_ton": 1}, Status.ESME_RINVSRCTON, "source_addr_ton"),
        ({"source_addr": b"Sh"}, Status.ESME_RINVSRCADR, "source_addr"),
        ({"source_addr": b""}, Status.ESME_RINVSRCADR, "source_addr"),
        ({"destination_addr": b"390612345678"}, Status.ESME_RINVDSTADR, "destination_addr"),
        ({"destination_addr": b""}, Status.ESME_RINVDSTADR, "destination_addr"),
        ({"schedule_delivery_time": b"2406011200"}, Status.ESME_RINVSCHED,
         "schedule_delivery_time"),
        ({"validity_period": b"241301000000000+"}, Status.ESME_RINVEXPIRY, "validity_period"),
        ({"validity_period": b"240101000000000+"}, Status.ESME_RINVEXPIRY, "validity_period"),
        ({"schedule_delivery_time": b"000002000000000R",
          "validity_period": b"000001000000000R"}, Status.ESME_RINVEXPIRY, "validity_period"),
    ],
)
def test_field_checks(over: dict, status: int, field: str) -> None:
    exc = rejected(fields(**over))
    assert (exc.status, exc.field) == (status, field)
    assert field in str(exc)


@pytest.mark.parametrize("ok", [{"esm_class": 0x03}, {"esm_class": 0x08}, {"esm_class": 0x10},
                                {"esm_class": 0x80}, {"registered_delivery": 0x1E},
                                {"priority_flag": 3}])
def test_allowed_flags(ok: dict) -> None:
    assert assess(fields(**ok)).segments == 1


def test_times_returned() -> None:
    a = assess(fields(schedule_delivery_time=b"000000010000000R",
                      validity_period=b"240601150000004+"))
    assert a.schedule == NOW + timedelta(hours=1)
    assert a.validity == datetime(2024, 6, 1, 14, 0, tzinfo=UTC)


def test_default_sender() -> None:
    policy = AccountPolicy(default_sender="MyShop")
    assert assess(fields(source_addr=b""), policy=policy).sender == Sender("MyShop", 5, 0)
    policy = AccountPolicy(default_sender="+393481234567")
    assert assess(fields(source_addr=b""), policy=policy).sender == Sender("393481234567", 1, 1)
    with pytest.raises(ValueError):
        AccountPolicy(default_sender="x")


def test_numeric_sender_and_foreign_destination() -> None:
    a = assess(fields(source_addr=b"+393481234567", source_addr_ton=1, source_addr_npi=1,
                      destination_addr=b"447400123456"))
    assert a.sender == Sender("393481234567", 1, 1)
    assert (a.destination.region, a.destination.calling_code) == ("GB", 44)


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        AccountPolicy(default_type="GOLD")
    with pytest.raises(ValueError):
        AccountPolicy(default_alphabet="ucs2")
    assert AccountPolicy(sender_charset="ABC-").sender_rules.charset == frozenset("ABC-")


_octet = st.integers(0, 255)


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({
    "service_type": st.sampled_from([b"", b"PRO", b"SMART", b"CMT"]),
    "source_addr_ton": _octet, "source_addr_npi": _octet,
    "source_addr": st.sampled_from([b"", b"Staffetta", b"393481234567", b"ab"]),
    "dest_addr_ton": st.integers(0, 7), "dest_addr_npi": st.sampled_from([0, 1, 2]),
    "destination_addr": st.sampled_from([b"393481234567", b"3481234567", b"0612", b"x"]),
    "esm_class": _octet, "protocol_id": _octet, "priority_flag": st.integers(0, 5),
    "schedule_delivery_time": st.sampled_from([b"", b"000001000000000R", b"bad"]),
    "validity_period": st.sampled_from([b"", b"000002000000000R", b"991231235959000+"]),
    "registered_delivery": _octet, "replace_if_present_flag": st.integers(0, 2),
    "data_coding": _octet, "sm_default_msg_id": st.integers(0, 1),
    "short_message": st.binary(max_size=254),
}), st.dictionaries(st.sampled_from([Tag.message_payload, Tag.sar_msg_ref_num,
                                     Tag.sar_total_segments, Tag.sar_segment_seqnum]),
                    st.binary(max_size=400), max_size=4))
def test_fuzz_only_submit_rejected(f: dict, tlvs: dict) -> None:
    """Principle 6: whatever arrives, the answer is an Assessment or a precise status."""
    f["sm_length"] = len(f["short_message"])
    try:
        a = assess(f, tlvs)
    except SubmitRejected as exc:
        assert exc.status in Status.__members__.values()
        assert exc.field
    else:
        assert 1 <= a.segments <= 4
        assert a.units > 0
