"""data_coding interpretation and per-alphabet decoding (conformance §14)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from staffetta.pdu.constants import Status
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.text import (
    BINARY,
    GSM,
    LATIN1,
    UCS2,
    Coding,
    data_coding_for,
    decode,
    encode,
    parse_data_coding,
    units,
)


@pytest.mark.parametrize(
    ("dc", "default", "expected"),
    [
        (0x00, GSM, Coding(GSM)),
        (0x00, LATIN1, Coding(LATIN1)),
        (0x01, LATIN1, Coding(GSM)),
        (0x02, GSM, Coding(BINARY)),
        (0x03, GSM, Coding(LATIN1)),
        (0x04, GSM, Coding(BINARY)),
        (0x08, GSM, Coding(UCS2)),
        (0x10, GSM, Coding(GSM, 0)),      # flash, general group
        (0x11, GSM, Coding(GSM, 1)),
        (0x12, GSM, Coding(GSM, 2)),      # SIM
        (0x16, GSM, Coding(BINARY, 2)),
        (0x18, GSM, Coding(UCS2, 0)),     # UCS-2 flash
        (0x1A, GSM, Coding(UCS2, 2)),     # UCS-2 SIM
        (0xF0, GSM, Coding(GSM, 0)),      # flash
        (0xF1, GSM, Coding(GSM, 1)),
        (0xF2, GSM, Coding(GSM, 2)),      # SIM
        (0xF3, GSM, Coding(GSM, 3)),
        (0xF4, GSM, Coding(BINARY, 0)),
        (0xF6, GSM, Coding(BINARY, 2)),
    ],
)
def test_parse_data_coding(dc: int, default: str, expected: Coding) -> None:
    assert parse_data_coding(dc, default) == expected


@pytest.mark.parametrize(
    "dc", [0x05, 0x06, 0x07, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x1C, 0x1F, 0x20,
           0x3F, 0x40, 0xBF, 0xC0, 0xD0, 0xE0, 0xEF],
)
def test_unsupported_data_coding_is_submitfail(dc: int) -> None:
    with pytest.raises(SubmitRejected) as exc:
        parse_data_coding(dc)
    assert exc.value.status == Status.ESME_RSUBMITFAIL
    assert exc.value.field == "data_coding"


def test_every_octet_either_parses_or_is_refused_cleanly() -> None:
    accepted = 0
    for dc in range(256):
        try:
            coding = parse_data_coding(dc)
        except SubmitRejected as exc:
            assert exc.status == Status.ESME_RSUBMITFAIL
        else:
            accepted += 1
            assert coding.alphabet in (GSM, LATIN1, UCS2, BINARY)
            assert coding.message_class in (None, 0, 1, 2, 3)
    assert accepted == 6 + 12 + 16  # 0-4 and 8; 0x10-0x1B; 0xF0-0xFF


def test_unknown_default_alphabet() -> None:
    with pytest.raises(ValueError):
        parse_data_coding(0, "ebcdic")


@pytest.mark.parametrize("alphabet", [GSM, BINARY, UCS2])
@pytest.mark.parametrize("cls", [None, 0, 1, 2, 3])
def test_data_coding_for_round_trips(alphabet: str, cls: int | None) -> None:
    assert parse_data_coding(data_coding_for(alphabet, cls)) == Coding(alphabet, cls)


def test_data_coding_for_flash_and_sim_values() -> None:
    assert data_coding_for(GSM, 0) == 0xF0
    assert data_coding_for(UCS2, 0) == 0x18
    assert data_coding_for(GSM, 2) == 0xF2
    assert data_coding_for(UCS2, 2) == 0x1A
    assert data_coding_for(LATIN1) == 0x03
    assert data_coding_for(GSM) == 0x00
    with pytest.raises(ValueError):
        data_coding_for(LATIN1, 0)


def test_ucs2_emoji_is_two_units() -> None:
    data = encode("😀", UCS2)
    assert data == b"\xd8\x3d\xde\x00"
    assert units(data, UCS2) == 2
    assert decode(data, UCS2) == "😀"


def test_ucs2_odd_length_is_submitfail() -> None:
    with pytest.raises(SubmitRejected) as exc:
        decode(b"\x00a\x00", UCS2)
    assert exc.value.status == Status.ESME_RSUBMITFAIL
    assert decode(b"\x00a\x00", UCS2, strict=False) == "a\ufffd"


def test_ucs2_lone_surrogate() -> None:
    with pytest.raises(SubmitRejected) as exc:
        decode(b"\xd8\x3d\x00a", UCS2, field="message_payload")
    assert exc.value.field == "message_payload"
    assert decode(b"\xd8\x3d\x00a", UCS2, strict=False).endswith("a")


def test_gsm_high_octet_refused_in_strict_mode() -> None:
    with pytest.raises(SubmitRejected) as exc:
        decode(b"ab\xe8", GSM)
    assert exc.value.status == Status.ESME_RSUBMITFAIL
    assert "position" not in str(exc.value) and "at 2" in str(exc.value)
    assert decode(b"ab\xe8", GSM, strict=False) == "ab?"


def test_latin1_and_binary() -> None:
    assert decode(b"\xe8\xe9", LATIN1) == "èé"
    assert encode("èé", LATIN1) == b"\xe8\xe9"
    assert decode(b"\x00\xff", BINARY) is None
    with pytest.raises(ValueError):
        encode("x", BINARY)


@given(st.text(max_size=100))
def test_ucs2_round_trip(text: str) -> None:
    data = encode(text, UCS2)
    assert decode(data, UCS2) == text
    assert units(data, UCS2) == len(data) // 2
