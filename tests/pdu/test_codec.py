"""Our SMPP codec on its own: round trips for every PDU type, malformed input.

The comparison with ``smpp.pdu`` lives in test_codec_differential.py; here we
cover what it cannot (submit_multi, replace_sm, vendor TLVs, reserved values)
and every way a peer can get the bytes wrong. Each malformed input must end in
a DecodeError carrying the exact command_status the session answers with --
never another exception type, never a half-decoded PDU.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from staffetta.pdu import codec
from staffetta.pdu.codec import (
    HEADER_LEN,
    LAYOUTS,
    TLV_SIZES,
    DecodeError,
    Pdu,
    cstr,
    decode,
    encode,
    generic_nack,
    response_octets,
    response_to,
    tlv_cstr,
    tlv_int,
    u8,
    u16,
)
from staffetta.pdu.constants import RESPONSE_BIT, Command, Status, Tag

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALL_COMMANDS = list(Command)
RESPONSES = [c for c in Command if c & RESPONSE_BIT]


def header(length: int, command_id: int, status: int = 0, sequence: int = 1) -> bytes:
    return struct.pack(">IIII", length, command_id, status, sequence)


def frame(command_id: int, body: bytes, status: int = 0, sequence: int = 1) -> bytes:
    return header(HEADER_LEN + len(body), command_id, status, sequence) + body


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def reference_decode(data: bytes) -> Pdu:
    """The field-by-field decoder the generated fast path must agree with."""
    length, command_id, status, sequence = struct.unpack_from(">IIII", data)
    return codec._decode_reference(data, len(data), command_id, status, sequence)


def decode_outcome(decoder, data: bytes):
    try:
        return ("ok", decoder(data))
    except DecodeError as exc:
        return ("error", exc.status, exc.field, exc.header_error)


# ------------------------------------------------------------------ strategies

nul_free = st.binary(max_size=64).filter(lambda b: 0 not in b)


def cstring(size: int):
    return st.binary(max_size=size - 1).map(lambda b: b.replace(b"\x00", b"0"))


octet = st.integers(0, 255)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def tlv_values(draw) -> dict[int, bytes]:
    """Known tags with a legal size, vendor tags (0x1400-0x3FFF) and unknown ones."""
    tags = draw(
        st.lists(
            st.one_of(
                st.sampled_from(sorted(TLV_SIZES)),
                st.integers(0x1400, 0x3FFF),
                st.integers(0, 0xFFFF).filter(lambda t: t not in TLV_SIZES),
            ),
            unique=True,
            max_size=5,
        )
    )
    out = {}
    for tag in tags:
        lo, hi = TLV_SIZES.get(tag, (0, 40))
        out[tag] = draw(st.binary(min_size=lo, max_size=min(hi, 300)))
    return out


@st.composite
def dest_addresses(draw) -> list[dict]:
    n = draw(st.integers(1, 6))
    out = []
    for _ in range(n):
        if draw(st.booleans()):
            out.append(
                {
                    "dest_flag": 1,
                    "dest_addr_ton": draw(octet),
                    "dest_addr_npi": draw(octet),
                    "destination_addr": draw(cstring(21)),
                }
            )
        else:
            out.append({"dest_flag": 2, "dl_name": draw(cstring(21))})
    return out


@st.composite
def unsuccess_smes(draw) -> list[dict]:
    return [
        {
            "dest_addr_ton": draw(octet),
            "dest_addr_npi": draw(octet),
            "destination_addr": draw(cstring(21)),
            "error_status_code": draw(u32),
        }
        for _ in range(draw(st.integers(0, 5)))
    ]


@st.composite
def pdus(draw, command_id: int | None = None) -> Pdu:
    """Any PDU our codec must carry unchanged, reserved values included."""
    if command_id is None:
        command_id = draw(st.sampled_from(ALL_COMMANDS))
    sequence = draw(u32)
    status = draw(st.one_of(st.just(0), u32))
    if status and command_id & RESPONSE_BIT:
        return Pdu(command_id, sequence, status)  # error responses are header-only
    fields: dict = {}
    for name, kind, size in LAYOUTS[command_id]:
        if kind == codec._C:
            fields[name] = draw(cstring(size))
        elif kind == codec._U8:
            fields[name] = draw(octet)
        elif kind == codec._SM:
            sm = draw(st.binary(max_size=size))
            fields["sm_length"] = len(sm)
            fields[name] = sm
        elif kind == codec._DESTS:
            fields[name] = draw(dest_addresses())
        elif kind == codec._UNSUCCESS:
            fields[name] = draw(unsuccess_smes())
    return Pdu(command_id, sequence, status, fields, draw(tlv_values()))


# ----------------------------------------------------------------- round trips


@SETTINGS
@given(pdu=pdus())
def test_decode_encode_round_trip_every_pdu_type(pdu: Pdu) -> None:
    wire = encode(pdu)
    assert len(wire) == int.from_bytes(wire[:4], "big")
    back = decode(wire)
    assert back == pdu
    assert list(back.tlvs) == list(pdu.tlvs)  # wire order kept
    assert encode(back) == wire


@pytest.mark.parametrize(
    "command_id",
    [Command.SUBMIT_MULTI, Command.SUBMIT_MULTI_RESP, Command.REPLACE_SM, Command.ALERT_NOTIFICATION],
    ids=lambda c: Command(c).name.lower(),
)
def test_round_trip_types_smpp_pdu_cannot_encode(command_id: int) -> None:
    @settings(max_examples=60, deadline=None)
    @given(pdu=pdus(command_id))
    def check(pdu: Pdu) -> None:
        assert decode(encode(pdu)) == pdu
        assert codec._encode_reference(pdu) == encode(pdu)

    check()


@SETTINGS
@given(pdu=pdus())
def test_fast_paths_agree_with_reference(pdu: Pdu) -> None:
    wire = codec._encode_reference(pdu)
    assert encode(pdu) == wire
    if not (pdu.status and pdu.command_id & RESPONSE_BIT):
        assert reference_decode(wire) == decode(wire)


@settings(max_examples=300, deadline=None)
@given(
    command_id=st.sampled_from(ALL_COMMANDS),
    body=st.binary(max_size=120),
    status=st.sampled_from([0, 0, 0, 8]),
)
def test_encode_of_decode_is_identity_on_any_accepted_bytes(command_id, body, status) -> None:
    wire = frame(command_id, body, status=status)
    try:
        pdu = decode(wire)
    except DecodeError:
        return
    if status and command_id & RESPONSE_BIT:
        # the body of an error response is dropped
        assert encode(pdu) == header(HEADER_LEN, command_id, status)
    else:
        assert encode(pdu) == wire


def test_vendor_and_unknown_tlvs_kept_byte_exact_in_wire_order() -> None:
    tlvs = {
        0x1400: b"1701158019811140068",  # Indian DLT PE_ID
        Tag.user_message_reference: u16(7),
        0x3FFF: b"",
        0x0600: b"\x00\x01\x02",  # reserved range, unknown to us
        0x1401: b"\x00" * 300,
    }
    pdu = Pdu(Command.SUBMIT_SM, 3, 0, {"short_message": b"hi"}, tlvs)
    wire = encode(pdu)
    back = decode(wire)
    assert list(back.tlvs.items()) == list(tlvs.items())
    assert wire.endswith(b"".join(tlv(t, v) for t, v in tlvs.items()))


def test_missing_fields_encode_as_null() -> None:
    wire = encode(Pdu(Command.SUBMIT_SM, 1))
    # 6 C-Octet strings... every field NULL: 17 octets of zero (sm_length 0 included)
    assert wire == header(HEADER_LEN + 17, Command.SUBMIT_SM) + b"\x00" * 17
    back = decode(wire)
    assert back.fields["source_addr"] == b"" and back.fields["sm_length"] == 0
    multi = decode(encode(Pdu(Command.SUBMIT_MULTI_RESP, 2, 0, {"message_id": b"9"})))
    assert multi.fields == {"message_id": b"9", "unsuccess_sme": []}


def test_decoded_representation() -> None:
    wire = encode(
        Pdu(
            Command.DELIVER_SM,
            42,
            0,
            {"source_addr": b"393331234567", "esm_class": 4, "short_message": b"\x00@ GSM at"},
            {Tag.receipted_message_id: cstr("abc"), Tag.message_state: u8(2)},
        )
    )
    pdu = decode(memoryview(wire))  # any bytes-like input; fields come out as bytes
    assert type(pdu.fields["source_addr"]) is bytes
    assert pdu.fields["short_message"] == b"\x00@ GSM at"  # raw: a GSM '@' is 0x00
    assert pdu.fields["sm_length"] == 9
    assert pdu.fields["esm_class"] == 4
    assert pdu.tlvs == {Tag.receipted_message_id: b"abc\x00", Tag.message_state: b"\x02"}
    assert tlv_cstr(pdu.tlvs[Tag.receipted_message_id]) == b"abc"
    assert tlv_int(pdu.tlvs[Tag.message_state]) == 2
    assert decode(bytearray(wire)) == pdu
    assert not pdu.is_response and response_to(pdu).is_response


def test_helpers() -> None:
    assert u8(5) == b"\x05" and u16(0x0102) == b"\x01\x02"
    assert cstr("ab") == cstr(b"ab") == b"ab\x00"
    assert tlv_cstr(b"no-nul") == b"no-nul"
    assert tlv_int(b"\x00\x00\x01\x00") == 256
    resp = response_to(Pdu(Command.SUBMIT_SM, 99), Status.ESME_RTHROTTLED)
    assert (resp.command_id, resp.sequence, resp.status) == (Command.SUBMIT_SM_RESP, 99, 0x58)
    assert generic_nack(7, Status.ESME_RINVCMDID) == header(16, Command.GENERIC_NACK, 3, 7)
    assert "submit_sm_resp" in repr(resp) and "0x1234abcd" in repr(Pdu(0x1234ABCD))


# -------------------------------------------------------------- error responses


@pytest.mark.parametrize("command_id", RESPONSES, ids=lambda c: Command(c).name.lower())
def test_error_responses_are_header_only_and_decoded_leniently(command_id: int) -> None:
    fields = {name: b"x" for name, kind, _ in LAYOUTS[command_id] if kind == codec._C}
    wire = encode(Pdu(command_id, 5, Status.ESME_RSYSERR, fields, {0x1400: b"v"}))
    assert wire == header(16, command_id, Status.ESME_RSYSERR, 5)
    assert decode(wire) == Pdu(command_id, 5, Status.ESME_RSYSERR)
    # peers add a lone NUL, garbage, or a whole body: never an error
    for body in (b"\x00", b"\xff", b"\x00\x00\x00", b"12345\x00", b"\x00\x00\x00\x07\xff"):
        got = decode(frame(command_id, body, status=Status.ESME_RSYSERR, sequence=5))
        assert (got.command_id, got.sequence, got.status) == (command_id, 5, Status.ESME_RSYSERR)


def test_error_response_body_read_when_it_parses() -> None:
    got = decode(frame(Command.SUBMIT_SM_RESP, b"77\x00", status=Status.ESME_RSYSERR))
    assert got.fields == {"message_id": b"77"}
    got = decode(frame(Command.SUBMIT_SM_RESP, b"77", status=Status.ESME_RSYSERR))
    assert got.fields == {} and got.tlvs == {}


# ----------------------------------------------------------------- bad headers


def test_shorter_than_header() -> None:
    for n in range(16):
        with pytest.raises(DecodeError) as err:
            decode(header(16, Command.ENQUIRE_LINK)[:n])
        assert err.value.status == Status.ESME_RINVCMDLEN and err.value.header_error


@pytest.mark.parametrize("declared", [15, 17, 100, 0xFFFFFFFF])
def test_command_length_disagrees_with_frame(declared: int) -> None:
    wire = header(declared, Command.ENQUIRE_LINK, sequence=9)
    with pytest.raises(DecodeError) as err:
        decode(wire)
    assert (err.value.status, err.value.header_error, err.value.sequence) == (
        Status.ESME_RINVCMDLEN,
        True,
        9,
    )


@pytest.mark.parametrize(
    "command_id", [0x0A, 0x0C, 0x14, 0x16, 0x20, 0x22, 0x101, 0x111, 0x113, 0x10200, 0x800000FF, 0xFFFFFFFF]
)
def test_unknown_command_id_is_a_header_error(command_id: int) -> None:
    with pytest.raises(DecodeError) as err:
        decode(frame(command_id, b"\x00\x00", sequence=1234))
    exc = err.value
    assert (exc.status, exc.header_error, exc.command_id, exc.sequence) == (
        Status.ESME_RINVCMDID,
        True,
        command_id,
        1234,
    )


# ----------------------------------------------------------------- truncations

SUBMIT_PIECES = [
    # (field, octets, kind) -- written out by hand, independent of the codec
    ("service_type", b"CMT\x00", "c"),
    ("source_addr_ton", b"\x05", "u8"),
    ("source_addr_npi", b"\x00", "u8"),
    ("source_addr", b"Staffetta\x00", "c"),
    ("dest_addr_ton", b"\x01", "u8"),
    ("dest_addr_npi", b"\x01", "u8"),
    ("destination_addr", b"393331234567\x00", "c"),
    ("esm_class", b"\x00", "u8"),
    ("protocol_id", b"\x00", "u8"),
    ("priority_flag", b"\x01", "u8"),
    ("schedule_delivery_time", b"240102150400000+\x00", "c"),
    ("validity_period", b"000001000000000R\x00", "c"),
    ("registered_delivery", b"\x01", "u8"),
    ("replace_if_present_flag", b"\x00", "u8"),
    ("data_coding", b"\x00", "u8"),
    ("sm_default_msg_id", b"\x00", "u8"),
    ("short_message", b"\x05hello", "sm"),
    ("user_message_reference", tlv(Tag.user_message_reference, b"\x00\x2a"), "tlv"),
    ("tlv_0x1400", tlv(0x1400, b"1701158019811140068"), "tlv"),
]
FIELD_STATUS = {
    "service_type": Status.ESME_RINVSERTYP,
    "source_addr": Status.ESME_RINVSRCADR,
    "destination_addr": Status.ESME_RINVDSTADR,
    "schedule_delivery_time": Status.ESME_RINVSCHED,
    "validity_period": Status.ESME_RINVEXPIRY,
}
SUBMIT_BODY = b"".join(octets for _, octets, _ in SUBMIT_PIECES)


def expected_truncation(k: int):
    """What a submit_sm body cut after ``k`` octets must decode to."""
    offset = 0
    for name, octets, kind in SUBMIT_PIECES:
        if k == offset:
            if kind == "tlv":
                return ("ok", None, None)  # a shorter, valid TLV list
            return ("error", Status.ESME_RINVCMDLEN, "sm_length" if kind == "sm" else name)
        if k < offset + len(octets):
            if kind == "c":
                return ("error", FIELD_STATUS[name], name)
            if kind == "sm":
                return ("error", Status.ESME_RINVMSGLEN, "sm_length")
            # a TLV is named once its tag is in
            return ("error", Status.ESME_RINVOPTPARSTREAM, name if k >= offset + 2 else "tlv")
        offset += len(octets)
    return ("ok", None, None)


def test_the_reference_submit_sm_decodes() -> None:
    pdu = decode(frame(Command.SUBMIT_SM, SUBMIT_BODY))
    assert pdu.fields["validity_period"] == b"000001000000000R"
    assert pdu.fields["short_message"] == b"hello"
    assert pdu.tlvs == {Tag.user_message_reference: b"\x00\x2a", 0x1400: b"1701158019811140068"}
    assert encode(pdu) == frame(Command.SUBMIT_SM, SUBMIT_BODY)


@pytest.mark.parametrize("k", range(len(SUBMIT_BODY)))
def test_every_truncation_of_a_submit_sm(k: int) -> None:
    wire = frame(Command.SUBMIT_SM, SUBMIT_BODY[:k], sequence=31)
    want = expected_truncation(k)
    for decoder in (decode, reference_decode):
        try:
            pdu = decoder(wire)
        except DecodeError as exc:
            assert want[0] == "error", f"cut at {k}: unexpected {exc}"
            assert (exc.status, exc.field) == want[1:], f"cut at {k}: {exc}"
            assert not exc.header_error and exc.sequence == 31
            assert exc.command_id == Command.SUBMIT_SM
        else:
            assert want[0] == "ok", f"cut at {k} decoded, expected {want}"
            assert encode(pdu) == wire
    # the same cut with the original command_length is a header error
    with pytest.raises(DecodeError) as err:
        decode(header(HEADER_LEN + len(SUBMIT_BODY), Command.SUBMIT_SM) + SUBMIT_BODY[:k])
    assert err.value.status == Status.ESME_RINVCMDLEN and err.value.header_error


# ------------------------------------------------------------- malformed fields


def submit_body(**override: bytes) -> bytes:
    return b"".join(override.get(name, octets) for name, octets, _ in SUBMIT_PIECES)


@pytest.mark.parametrize(
    "field, value, status",
    [
        ("service_type", b"ABCDEF\x00", Status.ESME_RINVSERTYP),
        ("source_addr", b"1" * 21 + b"\x00", Status.ESME_RINVSRCADR),
        ("destination_addr", b"2" * 21 + b"\x00", Status.ESME_RINVDSTADR),
        ("schedule_delivery_time", b"2" * 20 + b"\x00", Status.ESME_RINVSCHED),
        ("schedule_delivery_time", b"2" * 17 + b"\x00", Status.ESME_RINVSCHED),
        ("validity_period", b"3" * 20 + b"\x00", Status.ESME_RINVEXPIRY),
    ],
)
def test_c_string_over_its_maximum_gets_the_fields_status(field: str, value: bytes, status: int) -> None:
    wire = frame(Command.SUBMIT_SM, submit_body(**{field: value}))
    for decoder in (decode, reference_decode):
        with pytest.raises(DecodeError) as err:
            decoder(wire)
        assert (err.value.status, err.value.field, err.value.header_error) == (status, field, False)


def test_c_string_at_its_maximum_is_accepted() -> None:
    pdu = decode(frame(Command.SUBMIT_SM, submit_body(source_addr=b"1" * 20 + b"\x00")))
    assert pdu.fields["source_addr"] == b"1" * 20


@pytest.mark.parametrize(
    "command_id, body, field, status",
    [
        (Command.BIND_TRANSMITTER, b"s" * 16 + b"\x00pw\x00\x00\x34\x00\x00\x00", "system_id", Status.ESME_RINVSYSID),
        (Command.BIND_RECEIVER, b"sys\x00" + b"p" * 9 + b"\x00\x00\x34\x00\x00\x00", "password", Status.ESME_RINVPASWD),
        (Command.BIND_TRANSCEIVER, b"sys\x00pw\x00" + b"t" * 13 + b"\x00\x34\x00\x00\x00", "system_type", Status.ESME_RINVSYSTYP),
        (Command.BIND_TRANSCEIVER, b"sys\x00pw\x00\x00\x34\x00\x00" + b"r" * 41 + b"\x00", "address_range", Status.ESME_RBINDFAIL),
        (Command.SUBMIT_SM_RESP, b"9" * 65 + b"\x00", "message_id", Status.ESME_RINVMSGID),
        (Command.QUERY_SM, b"9" * 65 + b"\x00\x00\x00\x00", "message_id", Status.ESME_RINVMSGID),
        (Command.DATA_SM, b"\x00\x01\x01" + b"1" * 65 + b"\x00\x01\x01\x00\x00\x00\x00", "source_addr", Status.ESME_RINVSRCADR),
        (Command.ALERT_NOTIFICATION, b"\x01\x01123\x00\x01\x01" + b"4" * 65 + b"\x00", "esme_addr", Status.ESME_RINVDSTADR),
        (Command.SUBMIT_MULTI, b"\x00\x01\x01src\x00\x01\x02" + b"L" * 21 + b"\x00", "dl_name", Status.ESME_RINVDLNAME),
        (Command.SUBMIT_MULTI, b"\x00\x01\x01src\x00\x01\x01\x01\x01" + b"5" * 21 + b"\x00", "destination_addr", Status.ESME_RINVDSTADR),
        # no NUL before the end of the PDU: the field's own status too
        (Command.SUBMIT_SM_RESP, b"12345", "message_id", Status.ESME_RINVMSGID),
        (Command.BIND_TRANSMITTER, b"sys", "system_id", Status.ESME_RINVSYSID),
        (Command.SUBMIT_MULTI, b"\x00\x01\x01src\x00\x01\x02LIST", "dl_name", Status.ESME_RINVDLNAME),
        # the field is missing altogether: the body is too short
        (Command.SUBMIT_SM_RESP, b"", "message_id", Status.ESME_RINVCMDLEN),
        (Command.BIND_TRANSMITTER, b"sys\x00pw\x00\x00\x34\x00", "addr_npi", Status.ESME_RINVCMDLEN),
        (Command.SUBMIT_MULTI, b"\x00\x01\x01src\x00\x02\x01\x01\x01a\x00", "dest_flag", Status.ESME_RINVCMDLEN),
        (Command.SUBMIT_MULTI, b"\x00\x01\x01src\x00\x01\x01\x01", "dest_addr_npi", Status.ESME_RINVCMDLEN),
        (Command.SUBMIT_MULTI_RESP, b"1\x00\x01\x01\x01a\x00\x00\x00", "error_status_code", Status.ESME_RINVCMDLEN),
        (Command.SUBMIT_MULTI_RESP, b"1\x00", "no_unsuccess", Status.ESME_RINVCMDLEN),
        # submit_multi's own statuses
        (Command.SUBMIT_MULTI, b"\x00\x01\x01src\x00\x00", "number_of_dests", Status.ESME_RINVNUMDESTS),
        (Command.SUBMIT_MULTI, b"\x00\x01\x01src\x00\xff", "number_of_dests", Status.ESME_RINVNUMDESTS),
        (Command.SUBMIT_MULTI, b"\x00\x01\x01src\x00\x01\x03abc\x00", "dest_flag", Status.ESME_RINVDESTFLAG),
    ],
)
def test_malformed_mandatory_fields(command_id: int, body: bytes, field: str, status: int) -> None:
    wire = frame(command_id, body, sequence=8)
    for decoder in (decode, reference_decode):
        with pytest.raises(DecodeError) as err:
            decoder(wire)
        exc = err.value
        assert (exc.status, exc.field, exc.header_error, exc.sequence) == (status, field, False, 8)


@pytest.mark.parametrize("sm_length", [6, 100, 254, 255])
def test_sm_length_past_the_end(sm_length: int) -> None:
    body = submit_body(short_message=bytes((sm_length,)) + b"hello", user_message_reference=b"", tlv_0x1400=b"")
    with pytest.raises(DecodeError) as err:
        decode(frame(Command.SUBMIT_SM, body))
    assert (err.value.status, err.value.field) == (Status.ESME_RINVMSGLEN, "sm_length")


def test_sm_length_255_is_refused_even_when_the_octets_are_there() -> None:
    body = submit_body(short_message=b"\xff" + b"x" * 255, user_message_reference=b"", tlv_0x1400=b"")
    with pytest.raises(DecodeError) as err:
        decode(frame(Command.SUBMIT_SM, body))
    assert err.value.status == Status.ESME_RINVMSGLEN


# ------------------------------------------------------------------------ TLVs


@pytest.mark.parametrize(
    "tail",
    [b"\x02", b"\x02\x04", b"\x02\x04\x00", tlv(0x0204, b"\x00\x01")[:-1], tlv(0x1400, b"abcdef")[:-3],
     struct.pack(">HH", 0x0424, 0xFFFF) + b"short"],
)
def test_truncated_tlv_stream(tail: bytes) -> None:
    body = submit_body(user_message_reference=b"", tlv_0x1400=tail)
    for decoder in (decode, reference_decode):
        with pytest.raises(DecodeError) as err:
            decoder(frame(Command.SUBMIT_SM, body))
        assert err.value.status == Status.ESME_RINVOPTPARSTREAM and not err.value.header_error


def _bad_lengths(tag: int) -> list[int]:
    lo, hi = TLV_SIZES[tag]
    return [n for n in (lo - 1, hi + 1) if 0 <= n <= 0xFFFF]


@pytest.mark.parametrize("tag", [t for t in sorted(TLV_SIZES) if _bad_lengths(t)], ids=lambda t: Tag(t).name)
def test_known_tlv_of_wrong_size(tag: int) -> None:
    lo, hi = TLV_SIZES[tag]
    for n in _bad_lengths(tag):
        body = submit_body(user_message_reference=tlv(tag, b"\x01" * n))
        for decoder in (decode, reference_decode):
            with pytest.raises(DecodeError) as err:
                decoder(frame(Command.SUBMIT_SM, body))
            assert (err.value.status, err.value.field) == (Status.ESME_RINVPARLEN, Tag(tag).name)
    for n in {lo, hi}:
        body = submit_body(user_message_reference=tlv(tag, b"\x01" * n))
        assert decode(frame(Command.SUBMIT_SM, body)).tlvs[tag] == b"\x01" * n


def test_duplicate_tlv_is_refused_rather_than_silently_dropped() -> None:
    body = submit_body(tlv_0x1400=tlv(Tag.user_message_reference, b"\x00\x2b"))
    for decoder in (decode, reference_decode):
        with pytest.raises(DecodeError) as err:
            decoder(frame(Command.SUBMIT_SM, body))
        assert (err.value.status, err.value.field) == (Status.ESME_RINVOPTPARSTREAM, "user_message_reference")


def test_tlvs_after_header_only_pdus() -> None:
    wire = frame(Command.ENQUIRE_LINK, tlv(0x1400, b"x"))
    assert decode(wire).tlvs == {0x1400: b"x"}
    with pytest.raises(DecodeError) as err:
        decode(frame(Command.UNBIND, b"\x00"))
    assert err.value.status == Status.ESME_RINVOPTPARSTREAM


# ------------------------------------------------------------------ fuzzing


@settings(max_examples=300, deadline=None)
@given(command_id=st.sampled_from(ALL_COMMANDS + [0x0A, 0x80000104]), body=st.binary(max_size=80),
       status=st.sampled_from([0, 0, 0, 1]))
def test_random_bytes_after_a_valid_header_raise_only_decode_error(command_id, body, status) -> None:
    wire = frame(command_id, body, status=status)
    outcome = decode_outcome(decode, wire)  # anything but DecodeError fails the test
    if command_id in LAYOUTS and not (status and command_id & RESPONSE_BIT):
        assert outcome == decode_outcome(reference_decode, wire)


@settings(max_examples=200, deadline=None)
@given(pdu=pdus(), data=st.data())
def test_mutated_valid_pdus_raise_only_decode_error(pdu: Pdu, data) -> None:
    wire = bytearray(encode(pdu))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        at = data.draw(st.integers(HEADER_LEN, len(wire)))
        if action == "flip" and at < len(wire):
            wire[at] = data.draw(octet)
        elif action == "insert":
            wire[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif action == "delete" and at < len(wire):
            del wire[at]
    wire[0:4] = len(wire).to_bytes(4, "big")
    wire = bytes(wire)
    outcome = decode_outcome(decode, wire)
    if not (pdu.status and pdu.command_id & RESPONSE_BIT):
        assert outcome == decode_outcome(reference_decode, wire)
        if outcome[0] == "ok":
            assert encode(outcome[1]) == wire


# ------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    "fields, tlvs",
    [
        ({"source_addr": b"1" * 21}, {}),
        ({"service_type": b"ABCDEF"}, {}),
        ({"schedule_delivery_time": b"1" * 17}, {}),
        ({"destination_addr": b"12\x0034"}, {}),  # an embedded NUL would shift every field after it
        ({"esm_class": 256}, {}),
        ({"esm_class": -1}, {}),
        ({"short_message": b"x" * 255}, {}),
        ({"short_message": b"x" * 256}, {}),
        ({"validity_period": b"1\x00"}, {}),
        ({}, {0x1400: b"x" * 65536}),
        ({}, {0x10000: b"x"}),
    ],
)
def test_encode_refuses_what_the_wire_cannot_carry(fields: dict, tlvs: dict) -> None:
    full = dict(decode(frame(Command.SUBMIT_SM, SUBMIT_BODY)).fields)  # every field present
    for given_fields in (fields, {**full, **fields}):
        with pytest.raises(ValueError):
            encode(Pdu(Command.SUBMIT_SM, 1, 0, given_fields, tlvs))
        with pytest.raises(ValueError):
            codec._encode_reference(Pdu(Command.SUBMIT_SM, 1, 0, given_fields, tlvs))


def test_encode_refuses_bad_header_values_and_unknown_commands() -> None:
    for pdu in (Pdu(Command.SUBMIT_SM, -1), Pdu(Command.ENQUIRE_LINK, 2**32), Pdu(Command.SUBMIT_SM_RESP, 1, 2**32)):
        with pytest.raises(ValueError):
            encode(pdu)
    with pytest.raises(KeyError):
        encode(Pdu(0x0A, 1))


@pytest.mark.parametrize(
    "command_id, fields",
    [
        (Command.SUBMIT_MULTI, {"dest_addresses": [{"dest_flag": 3, "dl_name": b"x"}]}),
        (Command.SUBMIT_MULTI, {"dest_addresses": [{"dest_flag": 2, "dl_name": b"x" * 21}]}),
        (Command.SUBMIT_MULTI, {"dest_addresses": [{"dest_flag": 1, "destination_addr": b"1" * 21}]}),
        (Command.SUBMIT_MULTI, {"dest_addresses": [{"dest_flag": 1, "dest_addr_ton": 300}]}),
        (Command.SUBMIT_MULTI, {"dest_addresses": [{"dest_flag": 2, "dl_name": b"l"}] * 255}),
        (Command.SUBMIT_MULTI_RESP, {"unsuccess_sme": [{"error_status_code": 2**32}]}),
        (Command.SUBMIT_MULTI_RESP, {"unsuccess_sme": [{"destination_addr": b"a\x00b"}]}),
    ],
)
def test_encode_refuses_bad_submit_multi_lists(command_id: int, fields: dict) -> None:
    with pytest.raises(ValueError):
        encode(Pdu(command_id, 1, 0, fields))


def test_submit_multi_with_254_destinations() -> None:
    dests = [{"dest_flag": 1, "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": b"%020d" % i}
             for i in range(254)]
    pdu = Pdu(Command.SUBMIT_MULTI, 1, 0, {"dest_addresses": dests, "short_message": b"x"})
    back = decode(encode(pdu))
    assert back.fields["dest_addresses"] == dests


def encode_outcome(encoder, pdu: Pdu):
    try:
        return ("ok", encoder(pdu))
    except (ValueError, TypeError) as exc:
        return ("error", type(exc))


@settings(max_examples=150, deadline=None)
@given(pdu=pdus(), data=st.data())
def test_fast_encoder_refuses_exactly_what_the_reference_refuses(pdu: Pdu, data) -> None:
    names = [name for name, kind, _ in LAYOUTS[pdu.command_id] if kind in (codec._C, codec._U8, codec._SM)]
    if not names or (pdu.status and pdu.command_id & RESPONSE_BIT):
        return
    name = data.draw(st.sampled_from(names))
    pdu.fields[name] = data.draw(
        st.one_of(
            st.binary(min_size=0, max_size=300),  # too long, NULs inside, or fine
            st.binary(min_size=1, max_size=1),
            st.integers(-2, 300),
            st.none(),
            st.text(max_size=3),
        )
    )
    if data.draw(st.booleans()):
        del pdu.fields[name]  # missing: NULL
    assert encode_outcome(encode, pdu) == encode_outcome(codec._encode_reference, pdu)


def _outcome(build):
    try:
        return ("ok", build())
    except Exception as exc:  # the same exception type, whatever it is
        return ("error", type(exc))


@settings(max_examples=400, deadline=None)
@given(
    command_id=st.sampled_from(ALL_COMMANDS + [0x0A, 0x80000104]),
    sequence=st.one_of(u32, st.just(-1), st.just(2**32)),
    status=st.one_of(st.just(0), u32, st.just(2**32)),
    fields=st.one_of(
        st.none(),
        st.just({}),
        st.fixed_dictionaries({"message_id": st.one_of(st.binary(max_size=70), st.text(max_size=3), st.none())}),
        st.fixed_dictionaries({"message_id": cstring(65), "system_id": cstring(16)}),
    ),
    tlvs=st.one_of(st.none(), st.just({}), tlv_values()),
)
def test_response_octets_equal_the_general_encoder(command_id, sequence, status, fields, tlvs) -> None:
    """The direct packing of plain responses is encode(Pdu(...)) octet for octet, errors included."""
    expected = _outcome(lambda: encode(Pdu(command_id, sequence, status, fields, tlvs)))
    assert _outcome(lambda: response_octets(command_id, sequence, status, fields, tlvs)) == expected


@pytest.mark.parametrize("command_id", [Command.SUBMIT_SM_RESP, Command.DELIVER_SM_RESP, Command.DATA_SM_RESP,
                                        Command.ENQUIRE_LINK_RESP, Command.UNBIND_RESP, Command.GENERIC_NACK],
                         ids=lambda c: Command(c).name.lower())
def test_response_octets_of_the_hot_answers(command_id: int) -> None:
    for status, fields in ((0, None), (0, {"message_id": b"123"}), (Status.ESME_RTHROTTLED, {"message_id": b"1"})):
        wire = response_octets(command_id, 7, status, fields)
        assert wire == encode(Pdu(command_id, 7, status, fields))
        assert decode(wire).sequence == 7
