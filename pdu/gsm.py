"""GSM 03.38 default alphabet (3GPP TS 23.038 §6.2.1) and its extension table.

SMPP carries GSM-7 *unpacked*: one septet per octet, so the encoded form here is
``bytes`` whose every octet is < 0x80 and whose length is the septet count
(an extension character is ESC 0x1B + code: two octets, two septets).  Packed
septets exist only for the places that need them (a UDH-bearing TP-UD, the
simulator's handset view), see :func:`pack_septets`.

Why the tables are precomputed ``str.translate`` / ``codecs.charmap_decode``
maps: encoding and decoding run for every message on the submit path, and a C
loop over a table is an order of magnitude faster than a Python loop.

'@' is 0x00.  Nothing here treats 0x00 as a terminator; it is data.
"""

from __future__ import annotations

import codecs

#: The basic table, indexed by septet.  0x1B is the escape and holds a space,
#: which is also how a lone or unknown escape decodes (23.038: an entity that
#: does not understand an escape displays it as a space).
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ ÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(BASIC) == 128

ESC = 0x1B

#: Extension table: code after ESC -> character.  Exactly these count two septets.
EXTENSION: dict[int, str] = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

#: Every character GSM-7 can carry (basic table without the escape, plus extension).
GSM_CHARS: frozenset[str] = frozenset(
    [c for i, c in enumerate(BASIC) if i != ESC] + list(EXTENSION.values())
)
EXTENSION_CHARS: frozenset[str] = frozenset(EXTENSION.values())

# Encoding map for str.translate: every GSM character maps to its unpacked
# septet string (one or two code points < 0x80).  Every other ASCII code point
# maps to a non-ASCII sentinel, so "translated text is ASCII" <=> "text is GSM".
_SENTINEL = "\x80"
_ENCODE: dict[int, str] = {i: _SENTINEL for i in range(128)}
for _i, _c in enumerate(BASIC):
    if _i != ESC:
        _ENCODE[ord(_c)] = chr(_i)
for _i, _c in EXTENSION.items():
    _ENCODE[ord(_c)] = chr(ESC) + chr(_i)

# Decoding table for codecs.charmap_decode (256 entries): octets with the top
# bit set are not septets; they decode as '?' rather than raising.
_DECODE_TABLE = "".join(BASIC) + "?" * 128
_DECODE_EXT = {code: ch for code, ch in EXTENSION.items()}


class GsmEncodeError(ValueError):
    """A character outside both tables; ``position`` is its index in the text."""

    def __init__(self, char: str, position: int) -> None:
        super().__init__(f"character {char!r} (U+{ord(char):04X}) at position {position} "
                         "is not in the GSM 03.38 alphabet")
        self.char = char
        self.position = position


def _first_bad(text: str) -> int:
    for i, ch in enumerate(text):
        if ch not in GSM_CHARS:
            return i
    return -1  # pragma: no cover - only called when one exists


def encode(text: str, errors: str = "strict") -> bytes:
    """Text -> unpacked septets.  ``errors='replace'`` puts '?' for unknown characters."""
    out = text.translate(_ENCODE)
    if out.isascii():
        return out.encode("ascii")
    if errors == "replace":
        return "".join(
            _ENCODE[ord(ch)] if ch in GSM_CHARS else "?" for ch in text
        ).encode("ascii")
    pos = _first_bad(text)
    raise GsmEncodeError(text[pos], pos)


def is_gsm(text: str) -> bool:
    """True when every character of ``text`` is in the basic or extension table."""
    return text.translate(_ENCODE).isascii()


def septets(text: str) -> int:
    """Septets ``text`` needs, extension characters counting two; ValueError if not GSM."""
    out = text.translate(_ENCODE)
    if out.isascii():
        return len(out)
    pos = _first_bad(text)
    raise GsmEncodeError(text[pos], pos)


def decode(data: bytes) -> str:
    """Unpacked septets -> text; never raises.

    An escape that is last, or followed by a code the extension table does not
    define, decodes as a space and decoding resumes at the next octet (so
    ``ESC ESC 0x65`` is ``' €'``).  Octets >= 0x80 decode as '?'.
    """
    if ESC not in data:
        return codecs.charmap_decode(data, "strict", _DECODE_TABLE)[0]
    out: list[str] = []
    i = 0
    n = len(data)
    while i < n:
        j = data.find(ESC, i)
        if j < 0:
            out.append(codecs.charmap_decode(data[i:], "strict", _DECODE_TABLE)[0])
            break
        if j > i:
            out.append(codecs.charmap_decode(data[i:j], "strict", _DECODE_TABLE)[0])
        ext = _DECODE_EXT.get(data[j + 1]) if j + 1 < n else None
        if ext is None:
            out.append(" ")
            i = j + 1
        else:
            out.append(ext)
            i = j + 2
    return "".join(out)


def pack_septets(data: bytes, fill_bits: int = 0) -> bytes:
    """Pack unpacked septets into octets (LSB first, 23.038 §6.1.2.1.1).

    ``fill_bits`` (0-6) zero bits precede the first septet, as when a UDH ends
    off a septet boundary (TS 23.040 §9.2.3.24).
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be 0..6")
    if not data:
        return b""
    acc = 0
    for i, s in enumerate(data):
        acc |= (s & 0x7F) << (7 * i)
    nbits = 7 * len(data) + fill_bits
    return (acc << fill_bits).to_bytes((nbits + 7) // 8, "little")


def unpack_septets(data: bytes, count: int | None = None, fill_bits: int = 0) -> bytes:
    """Inverse of :func:`pack_septets`.

    ``count`` is the number of septets (TP-UDL); without it every whole septet
    in ``data`` is returned, which for 7 octets holding 7 septets yields an
    extra trailing 0x00 - give ``count`` whenever it is known.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be 0..6")
    avail = (len(data) * 8 - fill_bits) // 7 if data else 0
    if count is None:
        count = avail
    elif count > avail:
        raise ValueError(f"{count} septets do not fit in {len(data)} octets")
    acc = int.from_bytes(data, "little") >> fill_bits
    return bytes((acc >> (7 * i)) & 0x7F for i in range(count))
