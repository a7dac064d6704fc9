"""GSM 03.38 tables, unpacked encoding, tolerant decoding, septet packing (conformance §23)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staffetta.pdu import gsm

GSM_ALPHABET = "".join(sorted(gsm.GSM_CHARS))
gsm_text = st.text(alphabet=GSM_ALPHABET, max_size=400)


@pytest.mark.parametrize(
    ("char", "code"),
    [("@", 0x00), ("£", 0x01), ("$", 0x02), ("¥", 0x03), ("è", 0x04), ("Ç", 0x09),
     ("\n", 0x0A), ("\r", 0x0D), ("Δ", 0x10), ("_", 0x11), ("É", 0x1F), (" ", 0x20),
     ("¤", 0x24), ("0", 0x30), ("¡", 0x40), ("A", 0x41), ("§", 0x5F), ("¿", 0x60),
     ("a", 0x61), ("à", 0x7F)],
)
def test_basic_table_positions(char: str, code: int) -> None:
    assert gsm.encode(char) == bytes([code])
    assert gsm.decode(bytes([code])) == char
    assert gsm.septets(char) == 1


@pytest.mark.parametrize(
    ("char", "code"),
    [("\f", 0x0A), ("^", 0x14), ("{", 0x28), ("}", 0x29), ("\\", 0x2F), ("[", 0x3C),
     ("~", 0x3D), ("]", 0x3E), ("|", 0x40), ("€", 0x65)],
)
def test_every_escape_pair(char: str, code: int) -> None:
    assert gsm.encode(char) == bytes([0x1B, code])
    assert gsm.decode(bytes([0x1B, code])) == char
    assert gsm.septets(char) == 2


def test_extension_table_is_exactly_ten_characters() -> None:
    assert gsm.EXTENSION_CHARS == set("\f^{}\\[~]|€")
    # 128 basic codes minus the escape, plus ten extension characters
    assert len(gsm.GSM_CHARS) == 127 + 10


def test_at_sign_is_zero_and_survives() -> None:
    assert gsm.encode("@a@") == b"\x00a\x00"
    assert gsm.decode(b"\x00\x00") == "@@"


@pytest.mark.parametrize("ch", ["`", "È", "À", "…", "“", "ç", "😀", "\t", "\x00"])
def test_characters_outside_the_tables(ch: str) -> None:
    assert not gsm.is_gsm("ab" + ch)
    with pytest.raises(gsm.GsmEncodeError) as exc:
        gsm.encode("ab" + ch + "c")
    assert exc.value.position == 2
    with pytest.raises(ValueError):
        gsm.septets(ch)


def test_replace_mode() -> None:
    assert gsm.encode("a`b€", errors="replace") == b"a?b\x1b\x65"


@given(gsm_text)
def test_round_trip_whole_table(text: str) -> None:
    enc = gsm.encode(text)
    assert enc.isascii()
    assert gsm.decode(enc) == text
    assert gsm.is_gsm(text)
    assert gsm.septets(text) == len(enc) == len(text) + sum(c in gsm.EXTENSION_CHARS for c in text)


def test_round_trip_every_character_at_once() -> None:
    text = GSM_ALPHABET * 2
    assert gsm.decode(gsm.encode(text)) == text


@pytest.mark.parametrize(
    ("data", "text"),
    [(b"ab\x1b", "ab "),            # escape at the end
     (b"\x1bA", " A"),               # escape before an undefined code
     (b"\x1b\x1b\x65", " €"),        # escape before escape
     (b"a\x80\xffb", "a??b"),        # not septets
     (b"\x1b", " ")],
)
def test_tolerant_decode(data: bytes, text: str) -> None:
    assert gsm.decode(data) == text


@given(st.binary(max_size=300))
def test_decode_never_crashes(data: bytes) -> None:
    assert isinstance(gsm.decode(data), str)


def test_pack_known_vector() -> None:
    # 'hellohello' packed is the textbook example of 23.038 septet packing
    assert gsm.pack_septets(gsm.encode("hellohello")).hex().upper() == "E8329BFD4697D9EC37"
    assert gsm.unpack_septets(bytes.fromhex("E8329BFD4697D9EC37"), 10) == b"hellohello"


def test_pack_with_fill_bits() -> None:
    # after a 6-octet UDH, one fill bit aligns the text to a septet boundary
    packed = gsm.pack_septets(b"\x41", fill_bits=1)
    assert packed == bytes([0x41 << 1])
    assert gsm.unpack_septets(packed, 1, fill_bits=1) == b"\x41"


@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)),
       st.integers(min_value=0, max_value=6))
def test_pack_unpack_round_trip(septets: bytes, fill: int) -> None:
    packed = gsm.pack_septets(septets, fill)
    assert len(packed) == (len(septets) * 7 + fill + 7) // 8 if septets else packed == b""
    assert gsm.unpack_septets(packed, len(septets), fill) == septets


def test_160_septets_pack_into_140_octets() -> None:
    assert len(gsm.pack_septets(b"a" * 160)) == 140


def test_unpack_refuses_more_septets_than_fit() -> None:
    with pytest.raises(ValueError):
        gsm.unpack_septets(b"\x00", 2)
    with pytest.raises(ValueError):
        gsm.pack_septets(b"a", fill_bits=7)


@settings(max_examples=50)
@given(st.text(max_size=50))
def test_is_gsm_agrees_with_encode(text: str) -> None:
    ok = all(c in gsm.GSM_CHARS for c in text)
    assert gsm.is_gsm(text) is ok
    if not ok:
        with pytest.raises(gsm.GsmEncodeError):
            gsm.encode(text)
