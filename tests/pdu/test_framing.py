"""The stream framer: whole PDUs out of arbitrary TCP reads, bad lengths, memory."""

from __future__ import annotations

import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staffetta.pdu.codec import Pdu, encode
from staffetta.pdu.constants import Command
from staffetta.pdu.framing import DEFAULT_MAX_LENGTH, Framer, FramingError


def pdu_bytes(sequence: int, text: bytes = b"hi") -> bytes:
    return encode(Pdu(Command.SUBMIT_SM, sequence, 0, {"destination_addr": b"39333", "short_message": text}))


ENQUIRE = encode(Pdu(Command.ENQUIRE_LINK, 7))
STREAM = b"".join(pdu_bytes(i, b"x" * (i * 13 % 200)) for i in range(1, 6)) + ENQUIRE
WHOLE = Framer().feed(STREAM)


def feed_all(framer: Framer, chunks) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


def test_one_read_many_pdus() -> None:
    assert len(WHOLE) == 6 and b"".join(WHOLE) == STREAM
    assert all(int.from_bytes(f[:4], "big") == len(f) for f in WHOLE)
    assert WHOLE[-1] == ENQUIRE


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte_boundary(cut: int) -> None:
    framer = Framer()
    assert feed_all(framer, [STREAM[:cut], STREAM[cut:]]) == WHOLE
    assert framer.buffered == 0


def test_byte_by_byte() -> None:
    framer = Framer()
    out = []
    for i in range(len(STREAM)):
        got = framer.feed(STREAM[i : i + 1])
        out += got
        assert framer.buffered == sum(len(f) for f in WHOLE) - sum(len(f) for f in out) - (
            len(STREAM) - i - 1
        )
    assert out == WHOLE


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.binary(max_size=254), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_any_chunking_frames_identically(texts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pdu_bytes(i + 1, t) for i, t in enumerate(texts))
    expected = Framer().feed(stream)
    assert len(expected) == len(texts)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]
    framer = Framer()
    assert feed_all(framer, chunks) == expected
    assert framer.buffered == 0


def test_bytes_like_input() -> None:
    framer = Framer()
    assert framer.feed(bytearray(STREAM[:10])) == []
    frames = framer.feed(memoryview(STREAM[10:]))
    assert frames == WHOLE and all(type(f) is bytes for f in frames)
    assert Framer().feed(b"") == []


# ------------------------------------------------------------------ bad lengths


def bad_header(length: int, sequence: int = 0x0102) -> bytes:
    return struct.pack(">IIII", length, Command.SUBMIT_SM, 0, sequence)


@pytest.mark.parametrize("length", [0, 0x0F, 0xFFFFFFFF, DEFAULT_MAX_LENGTH + 1])
def test_impossible_length_raises_before_buffering(length: int) -> None:
    with pytest.raises(FramingError) as err:
        Framer().feed(bad_header(length)[:4])  # just the length field: no waiting for more
    assert err.value.length == length
    assert err.value.sequence == 0  # not yet readable
    assert err.value.frames == []


def test_command_length_0x0f_answers_with_sequence_0() -> None:
    # A PDU that says it is shorter than a header has no sequence_number of its own.
    with pytest.raises(FramingError) as err:
        Framer().feed(bad_header(0x0F) + ENQUIRE)
    assert (err.value.length, err.value.sequence) == (0x0F, 0)


def test_oversized_length_reports_the_sequence_when_the_header_is_in() -> None:
    with pytest.raises(FramingError) as err:
        Framer().feed(bad_header(0xFFFFFFFF, sequence=0x0102))
    assert (err.value.length, err.value.sequence) == (0xFFFFFFFF, 0x0102)
    assert "4294967295" in str(err.value)


def test_largest_legal_length_is_accepted() -> None:
    framer = Framer(max_length=100)
    wire = bad_header(100) + b"\x00" * 84
    assert framer.feed(wire) == [wire]
    with pytest.raises(FramingError):
        Framer(max_length=100).feed(bad_header(101))


def test_frames_before_a_bad_length_travel_on_the_error() -> None:
    framer = Framer()
    assert framer.feed(STREAM[:5]) == []
    with pytest.raises(FramingError) as err:
        framer.feed(STREAM[5:] + bad_header(0x0F) + ENQUIRE)
    assert err.value.frames == WHOLE
    assert framer.buffered == 0  # the rest of the stream is dropped


# ----------------------------------------------------------------------- memory


def held(framer: Framer) -> int:
    """Octets the framer keeps between reads, whatever its internals (capacity counted)."""
    total = 0
    for name in type(framer).__slots__:
        value = getattr(framer, name, None)
        if isinstance(value, bytes | bytearray | memoryview):
            total += sys.getsizeof(value)
        elif isinstance(value, list | tuple):
            total += sys.getsizeof(value) + sum(sys.getsizeof(v) for v in value)
    return total


def test_a_megabyte_of_small_pdus_stays_linear() -> None:
    """The framer never holds more than ~2x the largest chunk plus one PDU."""
    unit = b"".join(pdu_bytes(i, b"m" * (i % 40)) for i in range(1, 40)) + ENQUIRE
    stream = unit * (1_000_000 // len(unit) + 1)
    largest_pdu = max(len(f) for f in Framer().feed(unit))
    for chunk_size in (9, 100, 1460, 65536):
        framer = Framer()
        count = 0
        bound = 2 * chunk_size + largest_pdu + 256  # 256: object headers
        for i in range(0, len(stream), chunk_size):
            count += len(framer.feed(stream[i : i + chunk_size]))
            assert held(framer) <= bound, (chunk_size, i)
            assert framer.buffered < largest_pdu  # only ever one unfinished PDU
        assert count == 40 * (len(stream) // len(unit)) and framer.buffered == 0


def test_a_large_pdu_trickling_in_byte_by_byte() -> None:
    """64 KiB one octet per read: held memory tracks the octets, not the reads."""
    big = encode(Pdu(Command.SUBMIT_SM, 1, 0, {}, {0x0424: b"p" * 65000}))
    framer = Framer()
    for i in range(len(big) - 1):
        assert framer.feed(big[i : i + 1]) == []
        if i % 4096 == 0:
            assert held(framer) <= 2 * (i + 1) + 256
    assert framer.buffered == len(big) - 1
    assert framer.feed(big[-1:]) == [big]
    assert framer.buffered == 0 and held(framer) < 1024
