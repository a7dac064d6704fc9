"""Counting, splitting and reassembling long messages - one implementation.

The segment count the hub bills is computed by the same boundary walk that
splits the message (:func:`_boundaries`), so the quote, the debit and the
number of parts sent upstream cannot disagree (conformance §24, feature A27).

Limits, in the encoding's counting units (GSM septets, octets, UCS-2 units):

============ ====== ================= ==================
encoding     single multi, 8-bit ref  multi, 16-bit ref
============ ====== ================= ==================
gsm          160    153               152
latin1/binary 140   134               133
ucs2         70     67                66
============ ====== ================= ==================

A part never ends between ESC and its extension code, nor between the two
halves of a UTF-16 surrogate pair: such a part closes one unit early.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from staffetta.pdu.constants import Status
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.gsm import ESC
from staffetta.pdu.gsm import encode as _gsm_encode_strict
from staffetta.pdu.text import BINARY, GSM, LATIN1, UCS2

_SINGLE = {GSM: 160, LATIN1: 140, BINARY: 140, UCS2: 70}
_MULTI8 = {GSM: 153, LATIN1: 134, BINARY: 134, UCS2: 67}
_MULTI16 = {GSM: 152, LATIN1: 133, BINARY: 133, UCS2: 66}
#: Octets per counting unit.
_WIDTH = {GSM: 1, LATIN1: 1, BINARY: 1, UCS2: 2}
MAX_PARTS = 255


@dataclass(frozen=True, slots=True)
class SegmentCount:
    """``units`` used, ``segments`` needed, and the per-segment limit that applied."""

    encoding: str
    units: int
    segments: int
    per_segment: int


@dataclass(frozen=True, slots=True)
class SarPart:
    """One part for the sar_* TLV form: user data plus the three TLV values."""

    payload: bytes
    ref: int
    total: int
    seq: int

    def __iter__(self) -> Iterator[bytes | int]:
        """Unpacks as ``payload, ref, total, seq``."""
        return iter((self.payload, self.ref, self.total, self.seq))


@dataclass(frozen=True, slots=True)
class Udh:
    """A parsed User Data Header.  ref/total/seq are None when it has no concatenation IE."""

    ref: int | None
    total: int | None
    seq: int | None
    header_len: int
    ref16: bool = False


def limits(encoding: str, ref16: bool = False) -> tuple[int, int]:
    """(single-message limit, per-part limit when concatenated) in counting units."""
    return _SINGLE[encoding], (_MULTI16 if ref16 else _MULTI8)[encoding]


def choose_encoding(text: str, alphabet: str = GSM) -> tuple[str, bytes]:
    """Pick the encoding a text will travel in and encode it.

    ``alphabet`` is the account default: 'gsm' -> GSM-7 if every character is
    in the tables, else UCS-2; 'latin1' -> Latin-1 if representable, else
    UCS-2; 'ucs2' forces UCS-2.
    """
    if alphabet == GSM:
        try:
            return GSM, _gsm_encode_strict(text)
        except ValueError:
            return UCS2, text.encode("utf-16-be")
    if alphabet == LATIN1:
        try:
            return LATIN1, text.encode("latin-1")
        except UnicodeEncodeError:
            return UCS2, text.encode("utf-16-be")
    if alphabet == UCS2:
        return UCS2, text.encode("utf-16-be")
    raise ValueError(f"unknown alphabet {alphabet!r}")


def _encode(text: str, encoding: str) -> bytes:
    if encoding == GSM:
        return _gsm_encode_strict(text)
    if encoding == UCS2:
        return text.encode("utf-16-be")
    if encoding == LATIN1:
        return text.encode("latin-1")
    raise ValueError(f"cannot encode text as {encoding!r}")


def _boundaries(payload: bytes, encoding: str, per_part: int) -> list[int]:
    """Octet offsets where each part ends (the last is ``len(payload)``)."""
    n = len(payload)
    width = _WIDTH[encoding]
    step = per_part * width
    if encoding == GSM:
        if ESC not in payload:
            return list(range(step, n, step)) + [n]
        ends: list[int] = []
        pos = 0
        while pos < n:
            end = pos + step
            if end >= n:
                end = n
            elif payload[end - 1] == ESC:
                end -= 1  # keep the escape with its extension code
            ends.append(end)
            pos = end
        return ends
    if encoding == UCS2:
        ends = []
        pos = 0
        while pos < n:
            end = pos + step
            if end >= n:
                end = n
            elif 0xD8 <= payload[end - 2] <= 0xDB:
                end -= 2  # a high surrogate stays with its low half
            ends.append(end)
            pos = end
        return ends
    return list(range(step, n, step)) + [n]


def measure_bytes(payload: bytes, encoding: str, ref16: bool = False) -> tuple[int, int, int]:
    """(units, segments, per_segment) for encoded user data - the counter itself.

    A plain tuple because the submit path calls it for every message;
    :func:`count_bytes` wraps it in a :class:`SegmentCount`.
    """
    n = len(payload) >> 1 if encoding == UCS2 else len(payload)
    single = _SINGLE[encoding]
    if n <= single:
        return n, 1, single
    multi = (_MULTI16 if ref16 else _MULTI8)[encoding]
    return n, len(_boundaries(payload, encoding, multi)), multi


def count_bytes(payload: bytes, encoding: str, *, ref16: bool = False) -> SegmentCount:
    """Segments for already-encoded user data (GSM unpacked, Latin-1, UCS-2, binary)."""
    return SegmentCount(encoding, *measure_bytes(payload, encoding, ref16))


def count(text: str, *, alphabet: str = GSM, ref16: bool = False,
          encoding: str | None = None) -> SegmentCount:
    """THE counter: encoding, units, segments and per-segment limit for ``text``.

    The encoding is chosen by :func:`choose_encoding` from ``alphabet``, unless
    ``encoding`` forces one (an SMPP client keeps the data_coding it chose).
    """
    if encoding is None:
        encoding, payload = choose_encoding(text, alphabet)
    else:
        payload = _encode(text, encoding)
    return count_bytes(payload, encoding, ref16=ref16)


def udh_concat(ref: int, total: int, seq: int, ref16: bool = False) -> bytes:
    """The concatenation UDH (with UDHL): 05 00 03 ref total seq, or 06 08 04 rH rL total seq."""
    if ref16:
        return bytes((6, 8, 4, (ref >> 8) & 0xFF, ref & 0xFF, total, seq))
    return bytes((5, 0, 3, ref & 0xFF, total, seq))


def _chunks(payload: bytes, encoding: str, ref16: bool) -> list[bytes]:
    single, multi = limits(encoding, ref16)
    if len(payload) // _WIDTH[encoding] <= single:
        return [payload]
    chunks = []
    start = 0
    for end in _boundaries(payload, encoding, multi):
        chunks.append(payload[start:end])
        start = end
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"{len(chunks)} parts exceed the {MAX_PARTS} a UDH can number")
    return chunks


def split_bytes(payload: bytes, encoding: str, ref: int, ref16: bool = False) -> list[bytes]:
    """Encoded user data -> short_message values.

    One part comes back unchanged (no UDH; do not set UDHI).  Several parts
    each start with a concatenation UDH; set esm_class UDHI (0x40) on each.
    """
    chunks = _chunks(payload, encoding, ref16)
    if len(chunks) == 1:
        return chunks
    total = len(chunks)
    return [udh_concat(ref, total, i, ref16) + c for i, c in enumerate(chunks, 1)]


def split(text: str, encoding: str, ref: int, ref16: bool = False) -> list[bytes]:
    """Text -> short_message values in ``encoding`` (see :func:`split_bytes`)."""
    return split_bytes(_encode(text, encoding), encoding, ref, ref16)


def split_sar_bytes(payload: bytes, encoding: str, ref: int,
                    ref16: bool = False) -> list[SarPart]:
    """Encoded user data -> parts for sar_msg_ref_num / sar_total_segments / sar_segment_seqnum.

    Part sizes are those of the UDH form (the SMSC adds the UDH); a message
    that fits in one comes back as one part with total 1 (send it without TLVs).
    """
    chunks = _chunks(payload, encoding, ref16)
    total = len(chunks)
    return [SarPart(c, ref & 0xFFFF, total, i) for i, c in enumerate(chunks, 1)]


def split_sar(text: str, encoding: str, ref: int, ref16: bool = False) -> list[SarPart]:
    """Text -> SAR parts in ``encoding`` (see :func:`split_sar_bytes`)."""
    return split_sar_bytes(_encode(text, encoding), encoding, ref, ref16)


def _bad_udh(field: str, why: str) -> SubmitRejected:
    return SubmitRejected(Status.ESME_RINVMSGLEN, field, f"invalid UDH: {why}")


def parse_udh(short_message: bytes, field: str = "short_message") -> Udh:
    """Parse the UDH at the start of user data (UDHI set); invalid -> ESME_RINVMSGLEN.

    Finds IEI 0x00 (8-bit ref) or 0x08 (16-bit ref); other IEs (ports, ...)
    are skipped.  Total 0, seq 0, seq > total, a wrong IE length or a header
    running past the data are invalid.
    """
    n = len(short_message)
    if n == 0:
        raise _bad_udh(field, "UDHI set but no user data")
    end = short_message[0] + 1
    if end > n:
        raise _bad_udh(field, f"UDHL {end - 1} runs past {n} octets")
    pos = 1
    found: Udh | None = None
    while pos < end:
        if pos + 2 > end:
            raise _bad_udh(field, "truncated information element")
        iei = short_message[pos]
        ln = short_message[pos + 1]
        body = pos + 2
        if body + ln > end:
            raise _bad_udh(field, f"IE 0x{iei:02X} runs past the header")
        if found is None and iei in (0x00, 0x08):
            if iei == 0x00:
                if ln != 3:
                    raise _bad_udh(field, "IE 0x00 length is not 3")
                ref = short_message[body]
                total, seq = short_message[body + 1], short_message[body + 2]
            else:
                if ln != 4:
                    raise _bad_udh(field, "IE 0x08 length is not 4")
                ref = (short_message[body] << 8) | short_message[body + 1]
                total, seq = short_message[body + 2], short_message[body + 3]
            if total == 0 or seq == 0 or seq > total:
                raise _bad_udh(field, f"part {seq} of {total}")
            found = Udh(ref, total, seq, end, iei == 0x08)
        pos = body + ln
    return found if found is not None else Udh(None, None, None, end)


class Reassembler:
    """Collects the parts of incoming long messages until complete or timed out.

    Sans-IO: time is whatever float ``now`` the caller passes (a reactor's
    ``seconds()``).  Bounded: at most ``max_pending`` unfinished messages; the
    oldest is evicted beyond that and handed back by the next :meth:`expire`
    together with the timed-out ones, so a caller can still deliver the parts
    it has one by one.  The deadline runs from the first part received.
    """

    def __init__(self, timeout: float, max_pending: int = 10_000) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        # (key, ref, total) -> (deadline, {seq: data}); insertion order = deadline order.
        # An OrderedDict: a dict's first item costs a scan of its deleted slots.
        self._pending: OrderedDict[tuple, tuple[float, dict[int, bytes]]] = OrderedDict()
        self._evicted: list[tuple[Hashable, int, int, dict[int, bytes]]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key: Hashable, ref: int, total: int, seq: int, data: bytes,
            now: float) -> bytes | None:
        """Store one part; return the joined user data when this completes the message.

        ``key`` names the conversation (e.g. source, destination); a repeated
        ``seq`` replaces the earlier copy.
        """
        if total == 1:
            return data
        if not 1 <= seq <= total:
            raise ValueError(f"part {seq} of {total}")
        k = (key, ref, total)
        entry = self._pending.get(k)
        if entry is None:
            if len(self._pending) >= self.max_pending:
                old, (_, old_parts) = self._pending.popitem(last=False)
                self._evicted.append((*old, old_parts))
            entry = (now + self.timeout, {})
            self._pending[k] = entry
        parts = entry[1]
        parts[seq] = data
        if len(parts) < total:
            return None
        del self._pending[k]
        return b"".join(parts[i] for i in range(1, total + 1))

    def expire(self, now: float) -> list[tuple[Hashable, int, int, dict[int, bytes]]]:
        """Drop and return (key, ref, total, {seq: data}) of messages past their deadline."""
        out = self._evicted
        self._evicted = []
        while self._pending:
            k, (deadline, parts) = next(iter(self._pending.items()))
            if deadline > now:
                break
            del self._pending[k]
            out.append((*k, parts))
        return out
