"""Counting == splitting, UDH parsing, reassembly (conformance §24, features A27, A28)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staffetta.pdu import gsm
from staffetta.pdu.constants import Status
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.segments import (
    Reassembler,
    SegmentCount,
    Udh,
    choose_encoding,
    count,
    count_bytes,
    parse_udh,
    split,
    split_bytes,
    split_sar,
    udh_concat,
)
from staffetta.pdu.text import BINARY, GSM, LATIN1, UCS2, decode

GSM_ALPHABET = "".join(sorted(gsm.GSM_CHARS))
# Texts biased towards the interesting characters: extension pairs and emoji.
gsm_text = st.text(alphabet=GSM_ALPHABET, max_size=700)
ext_heavy = st.text(alphabet="a€^{}[]~\\|@", min_size=140, max_size=700)
any_text = st.text(
    alphabet=st.sampled_from("aé€@😀漢\n ") | st.characters(exclude_categories=("Cs",)),
    max_size=400)


@pytest.mark.parametrize(
    ("text", "alphabet", "ref16", "expected"),
    [
        ("a" * 160, GSM, False, SegmentCount(GSM, 160, 1, 160)),
        ("a" * 161, GSM, False, SegmentCount(GSM, 161, 2, 153)),
        ("a" * 306, GSM, False, SegmentCount(GSM, 306, 2, 153)),
        ("a" * 307, GSM, False, SegmentCount(GSM, 307, 3, 153)),
        ("a" * 612, GSM, False, SegmentCount(GSM, 612, 4, 153)),
        ("a" * 613, GSM, False, SegmentCount(GSM, 613, 5, 153)),
        ("a" * 608, GSM, True, SegmentCount(GSM, 608, 4, 152)),
        ("a" * 609, GSM, True, SegmentCount(GSM, 609, 5, 152)),
        ("è" * 70, GSM, False, SegmentCount(GSM, 70, 1, 160)),
        ("È" * 70, GSM, False, SegmentCount(UCS2, 70, 1, 70)),
        ("È" * 71, GSM, False, SegmentCount(UCS2, 71, 2, 67)),
        ("È" * 134, GSM, False, SegmentCount(UCS2, 134, 2, 67)),
        ("È" * 135, GSM, False, SegmentCount(UCS2, 135, 3, 67)),
        ("È" * 268, GSM, False, SegmentCount(UCS2, 268, 4, 67)),
        ("È" * 269, GSM, False, SegmentCount(UCS2, 269, 5, 67)),
        ("È" * 264, GSM, True, SegmentCount(UCS2, 264, 4, 66)),
        ("È" * 265, GSM, True, SegmentCount(UCS2, 265, 5, 66)),
        ("è" * 140, LATIN1, False, SegmentCount(LATIN1, 140, 1, 140)),
        ("è" * 141, LATIN1, False, SegmentCount(LATIN1, 141, 2, 134)),
        ("€" * 10, LATIN1, False, SegmentCount(UCS2, 10, 1, 70)),
        ("a" * 70, UCS2, False, SegmentCount(UCS2, 70, 1, 70)),
        ("", GSM, False, SegmentCount(GSM, 0, 1, 160)),
    ],
)
def test_count_table(text: str, alphabet: str, ref16: bool, expected: SegmentCount) -> None:
    assert count(text, alphabet=alphabet, ref16=ref16) == expected


def test_extension_characters_count_two() -> None:
    assert count("€" * 80).units == 160
    assert count("€" * 80).segments == 1
    assert count("a" * 159 + "€").segments == 2   # 160 characters with a € are 2 SMS
    assert count("£$@" * 50).units == 150          # £ $ @ are single septets


def test_emoji_is_two_units() -> None:
    assert count("😀" * 35) == SegmentCount(UCS2, 70, 1, 70)
    assert count("😀" * 35 + "a").segments == 2


def test_forced_encoding() -> None:
    assert count("hello", encoding=UCS2) == SegmentCount(UCS2, 5, 1, 70)
    with pytest.raises(ValueError):
        count("È", encoding=GSM)


def test_euro_at_position_153_moves_to_next_part() -> None:
    text = "a" * 152 + "€" + "b" * 20
    parts = split(text, GSM, ref=7)
    assert len(parts) == 2 == count(text).segments
    assert parts[0] == udh_concat(7, 2, 1) + b"a" * 152
    assert parts[1] == udh_concat(7, 2, 2) + b"\x1b\x65" + b"b" * 20


def test_emoji_straddling_a_boundary_moves_to_next_part() -> None:
    text = "x" * 66 + "😀" + "y" * 10
    parts = split(text, UCS2, ref=1)
    assert len(parts) == 2 == count(text).segments
    assert parts[0][6:] == ("x" * 66).encode("utf-16-be")
    assert parts[1][6:8] == b"\xd8\x3d"


def test_escapes_can_add_a_segment() -> None:
    # 612 septets of pure text fit in 4 parts, but 306 € (612 septets) close
    # each part one septet early (152 + 152 + 152 + 152 = 608) and need a 5th.
    assert count("a" * 612).segments == 4
    assert count("€" * 306).segments == 5
    assert len(split("€" * 306, GSM, ref=1)) == 5


def test_single_part_has_no_udh() -> None:
    assert split("hello", GSM, ref=1) == [b"hello"]
    assert split_sar("hello", GSM, ref=9)[0].total == 1


def test_udh_forms() -> None:
    assert udh_concat(0x1234, 3, 2) == bytes.fromhex("050003340302")
    assert udh_concat(0x1234, 3, 2, ref16=True) == bytes.fromhex("06080412340302")
    parts = split("a" * 400, GSM, ref=0xABCD, ref16=True)
    assert [p[:7] for p in parts] == [bytes.fromhex(f"060804abcd030{i}") for i in (1, 2, 3)]


def _packed_len(part: bytes, header_len: int, encoding: str) -> int:
    """TP-UD octets of a part as the handset receives it (UDH + packed or raw text)."""
    if encoding != GSM:
        return len(part)
    fill = (7 - (header_len * 8) % 7) % 7
    return header_len + len(gsm.pack_septets(part[header_len:], fill))


def _check_split(text: str, alphabet: str, ref16: bool) -> None:
    encoding, payload = choose_encoding(text, alphabet)
    c = count(text, alphabet=alphabet, ref16=ref16)
    assert c.encoding == encoding
    parts = split(text, encoding, ref=0x1FF, ref16=ref16)
    assert len(parts) == c.segments
    if len(parts) == 1:
        assert parts[0] == payload
        return
    user_data = b""
    for seq, part in enumerate(parts, 1):
        udh = parse_udh(part)
        assert (udh.ref, udh.total, udh.seq) == ((0x1FF if ref16 else 0xFF), len(parts), seq)
        ud = part[udh.header_len:]
        assert _packed_len(part, udh.header_len, encoding) <= 140
        assert len(ud) // (2 if encoding == UCS2 else 1) <= c.per_segment
        if encoding == GSM:
            assert not ud.endswith(b"\x1b")
        if encoding == UCS2:
            assert len(ud) % 2 == 0
            assert not 0xD8 <= ud[-2] <= 0xDB
        user_data += ud
    assert user_data == payload
    assert decode(user_data, encoding) == text


@settings(max_examples=150)
@given(gsm_text, st.booleans())
def test_split_rejoins_gsm(text: str, ref16: bool) -> None:
    _check_split(text, GSM, ref16)


@settings(max_examples=150)
@given(ext_heavy, st.booleans())
def test_split_rejoins_extension_heavy(text: str, ref16: bool) -> None:
    _check_split(text, GSM, ref16)


@settings(max_examples=150)
@given(any_text, st.sampled_from([GSM, LATIN1]), st.booleans())
def test_split_rejoins_any_text(text: str, alphabet: str, ref16: bool) -> None:
    _check_split(text, alphabet, ref16)


@settings(max_examples=50)
@given(st.text(alphabet="a😀", min_size=60, max_size=300))
def test_split_never_cuts_a_surrogate_pair(text: str) -> None:
    _check_split(text, GSM, False)


@settings(max_examples=50)
@given(st.binary(max_size=700), st.booleans())
def test_binary_split(data: bytes, ref16: bool) -> None:
    parts = split_bytes(data, BINARY, ref=3, ref16=ref16)
    assert len(parts) == count_bytes(data, BINARY, ref16=ref16).segments
    if len(parts) > 1:
        assert all(len(p) <= 140 for p in parts)
        assert b"".join(p[parse_udh(p).header_len:] for p in parts) == data


@settings(max_examples=50)
@given(gsm_text)
def test_split_sar_matches_count(text: str) -> None:
    parts = split_sar(text, GSM, ref=0x1234)
    assert len(parts) == count(text).segments
    assert all(p.total == len(parts) and p.ref == 0x1234 for p in parts)
    assert [p.seq for p in parts] == list(range(1, len(parts) + 1))
    assert all(len(p.payload) <= (160 if len(parts) == 1 else 153) for p in parts)
    assert b"".join(p.payload for p in parts) == gsm.encode(text)
    assert [tuple(p) for p in parts] == [(p.payload, p.ref, p.total, p.seq) for p in parts]


def test_too_many_parts() -> None:
    with pytest.raises(ValueError):
        split("a" * (153 * 256), GSM, ref=1)


# -- parse_udh -----------------------------------------------------------------------------


def test_parse_udh_8_and_16_bit() -> None:
    assert parse_udh(bytes.fromhex("050003AA0201") + b"hi") == Udh(0xAA, 2, 1, 6, False)
    assert parse_udh(bytes.fromhex("06080412340302") + b"hi") == Udh(0x1234, 3, 2, 7, True)


def test_parse_udh_skips_other_elements() -> None:
    # application port IE (0x05) before the concatenation IE
    data = bytes.fromhex("0B05040B8423F0000309 0302".replace(" ", "")) + b"x"
    assert parse_udh(data) == Udh(0x09, 3, 2, 12, False)
    assert parse_udh(bytes.fromhex("0605040B8423F0") + b"x") == Udh(None, None, None, 7)


@pytest.mark.parametrize(
    "data",
    [
        "050003AA0001",   # total 0
        "050003AA0200",   # seq 0
        "050003AA0203",   # seq > total
        "050003AA02",     # UDHL runs past the data
        "0300040102AA",   # IE runs past the header
        "0400020102",     # 0x00 with length 2
        "0700040101020101",  # 0x00 with length 4
        "0608030102 0301".replace(" ", ""),  # 0x08 with length 3
        "0100",           # truncated IE
        "",               # UDHI but nothing
    ],
)
def test_parse_udh_invalid(data: str) -> None:
    with pytest.raises(SubmitRejected) as exc:
        parse_udh(bytes.fromhex(data))
    assert exc.value.status == Status.ESME_RINVMSGLEN


# -- Reassembler ---------------------------------------------------------------------------


def test_reassembly_out_of_order() -> None:
    r = Reassembler(timeout=60)
    assert r.add("k", 5, 3, 3, b"C", now=0.0) is None
    assert r.add("k", 5, 3, 1, b"A", now=1.0) is None
    assert r.add("k", 5, 3, 1, b"A", now=1.5) is None  # duplicate replaces
    assert len(r) == 1
    assert r.add("k", 5, 3, 2, b"B", now=2.0) == b"ABC"
    assert len(r) == 0
    assert r.expire(1000.0) == []


def test_reassembly_keys_do_not_mix() -> None:
    r = Reassembler(timeout=60)
    assert r.add("a", 1, 2, 1, b"a1", 0) is None
    assert r.add("b", 1, 2, 1, b"b1", 0) is None
    assert r.add("a", 2, 2, 1, b"x", 0) is None
    assert r.add("b", 1, 2, 2, b"b2", 0) == b"b1b2"
    assert r.add("a", 1, 2, 2, b"a2", 0) == b"a1a2"


def test_reassembly_timeout() -> None:
    r = Reassembler(timeout=30)
    r.add("k", 1, 2, 1, b"A", now=0.0)
    r.add("j", 1, 2, 2, b"Z", now=10.0)
    assert r.expire(29.9) == []
    assert r.expire(30.0) == [("k", 1, 2, {1: b"A"})]
    assert r.expire(40.0) == [("j", 1, 2, {2: b"Z"})]
    assert len(r) == 0
    # a late part starts a fresh message rather than completing the expired one
    assert r.add("k", 1, 2, 2, b"B", now=41.0) is None


def test_reassembly_is_bounded() -> None:
    r = Reassembler(timeout=30, max_pending=2)
    for i in range(5):
        r.add(i, 1, 2, 1, b"x", now=float(i))
    assert len(r) == 2
    evicted = r.expire(0.0)
    assert [e[0] for e in evicted] == [0, 1, 2]


def test_reassembly_single_and_bad_seq() -> None:
    r = Reassembler(timeout=30)
    assert r.add("k", 1, 1, 1, b"only", 0) == b"only"
    with pytest.raises(ValueError):
        r.add("k", 1, 2, 3, b"x", 0)


@settings(max_examples=50)
@given(gsm_text.filter(lambda t: len(t) > 160), st.randoms(use_true_random=False))
def test_reassemble_what_split_made(text: str, rnd) -> None:
    parts = split(text, GSM, ref=42)
    rnd.shuffle(parts)
    r = Reassembler(timeout=30)
    out = None
    for p in parts:
        udh = parse_udh(p)
        out = r.add("conv", udh.ref, udh.total, udh.seq, p[udh.header_len:], now=0.0)
    assert out is not None and gsm.decode(out) == text
