"""data_coding -> alphabet and message class, and text <-> octets per alphabet.

The hub never guesses an alphabet from the bytes (SMPP 3.4 §5.2.19 note c):
the client's ``data_coding`` decides, interpreted as follows (conformance §14):

=========== ==============================================================
0x00        the account's / connector's default alphabet ('gsm' or 'latin1')
0x01        IA5 - treated as GSM 03.38 (an ASCII text is the same septets)
0x02, 0x04  8-bit binary
0x03        Latin-1 (ISO-8859-1)
0x08        UCS-2, carried as UTF-16BE (an emoji is a surrogate pair, 2 units)
0x10-0x1F   GSM general group with class: bits 3-2 alphabet (00 GSM, 01 8-bit,
            10 UCS-2, 11 reserved), bits 1-0 message class
0xF0-0xFF   message class group: bit 2 0 = GSM-7, 1 = 8-bit; bits 1-0 class
other       unsupported -> ESME_RSUBMITFAIL (3.4 has no better code)
=========== ==============================================================

Class 0 is "flash", class 2 "SIM-stored"; the class is reported so it can be
preserved and the value passed upstream unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from staffetta.pdu import gsm
from staffetta.pdu.constants import Status
from staffetta.pdu.errors import SubmitRejected

GSM = "gsm"
LATIN1 = "latin1"
UCS2 = "ucs2"
BINARY = "binary"
ALPHABETS = (GSM, LATIN1, UCS2, BINARY)
DEFAULT_ALPHABETS = (GSM, LATIN1)


@dataclass(frozen=True, slots=True)
class Coding:
    """What a data_coding value means: the alphabet and the class (None = no class)."""

    alphabet: str
    message_class: int | None = None


def _interpret(dc: int, default: str) -> Coding | str:
    """One data_coding value -> Coding, or the reason it is refused."""
    if dc == 0x00:
        return Coding(default)
    if dc == 0x01:
        return Coding(GSM)
    if dc in (0x02, 0x04):
        return Coding(BINARY)
    if dc == 0x03:
        return Coding(LATIN1)
    if dc == 0x08:
        return Coding(UCS2)
    if 0x10 <= dc <= 0x1F:
        alpha = (dc >> 2) & 0x03
        if alpha == 0x03:
            return "general data coding group with reserved alphabet bits 11"
        return Coding((GSM, BINARY, UCS2)[alpha], dc & 0x03)
    if dc >= 0xF0:
        return Coding(BINARY if dc & 0x04 else GSM, dc & 0x03)
    if dc in (0x05, 0x06, 0x07, 0x09, 0x0A, 0x0D, 0x0E):
        return "alphabet not supported by this hub"
    if 0xC0 <= dc <= 0xEF:
        return "message waiting indication groups are not supported"
    return "reserved value"


def _table(default: str) -> tuple[Coding | str, ...]:
    return tuple(_interpret(dc, default) for dc in range(256))


_TABLES: dict[str, tuple[Coding | str, ...]] = {d: _table(d) for d in DEFAULT_ALPHABETS}


def parse_data_coding(dc: int, default_alphabet: str = GSM) -> Coding:
    """Interpret ``data_coding``; unsupported or reserved -> ESME_RSUBMITFAIL.

    ``default_alphabet`` is what 0x00 means for this account/connector.
    """
    try:
        got = _TABLES[default_alphabet][dc]
    except (KeyError, IndexError, TypeError):
        if default_alphabet not in _TABLES:
            raise ValueError(f"default alphabet must be one of {DEFAULT_ALPHABETS}") from None
        got = "not an octet"
    if type(got) is str:
        raise SubmitRejected(Status.ESME_RSUBMITFAIL, "data_coding", f"0x{dc:02X}: {got}")
    return got  # type: ignore[return-value]


def data_coding_for(alphabet: str, message_class: int | None = None,
                    default_alphabet: str = GSM) -> int:
    """The data_coding the hub puts on a message it builds itself.

    Without a class: 0x00 when ``alphabet`` is the default, else 0x01 (GSM),
    0x03 (Latin-1), 0x08 (UCS-2), 0x04 (binary).  With a class: 0xF0|class
    (GSM), 0xF4|class (binary), 0x18|class (UCS-2); Latin-1 has no class form.
    """
    if message_class is None:
        if alphabet == default_alphabet:
            return 0x00
        return {GSM: 0x01, LATIN1: 0x03, UCS2: 0x08, BINARY: 0x04}[alphabet]
    if not 0 <= message_class <= 3:
        raise ValueError("message class must be 0..3")
    if alphabet == GSM:
        return 0xF0 | message_class
    if alphabet == BINARY:
        return 0xF4 | message_class
    if alphabet == UCS2:
        return 0x18 | message_class
    raise ValueError("Latin-1 cannot carry a message class")


def decode(payload: bytes, alphabet: str, *, strict: bool = True,
           field: str = "short_message") -> str | None:
    """Octets -> text (None for binary).

    ``strict`` (the submit path) refuses octets the alphabet cannot hold with
    ESME_RSUBMITFAIL naming ``field``: a GSM octet >= 0x80, an odd UCS-2 length,
    a lone surrogate.  ``strict=False`` (MO, receipts from carriers) never
    raises and puts U+FFFD / '?' instead.
    """
    if alphabet == GSM:
        if strict and not payload.isascii():
            i = next(i for i, b in enumerate(payload) if b >= 0x80)
            raise SubmitRejected(Status.ESME_RSUBMITFAIL, field,
                                 f"octet 0x{payload[i]:02X} at {i} is not a GSM 03.38 septet")
        return gsm.decode(payload)
    if alphabet == UCS2:
        if len(payload) & 1:
            if strict:
                raise SubmitRejected(Status.ESME_RSUBMITFAIL, field,
                                     f"UCS-2 text has an odd number of octets ({len(payload)})")
            return payload[:-1].decode("utf-16-be", "replace") + "\ufffd"
        try:
            return payload.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            if strict:
                raise SubmitRejected(Status.ESME_RSUBMITFAIL, field,
                                     f"invalid UTF-16 at octet {exc.start}") from None
            return payload.decode("utf-16-be", "replace")
    if alphabet == LATIN1:
        return payload.decode("latin-1")
    if alphabet == BINARY:
        return None
    raise ValueError(f"unknown alphabet {alphabet!r}")


def encode(text: str, alphabet: str) -> bytes:
    """Text -> octets as SMPP carries them (GSM unpacked).  ValueError if not representable."""
    if alphabet == GSM:
        return gsm.encode(text)
    if alphabet == UCS2:
        return text.encode("utf-16-be")
    if alphabet == LATIN1:
        return text.encode("latin-1")
    raise ValueError(f"cannot encode text as {alphabet!r}")


def units(payload: bytes, alphabet: str) -> int:
    """Counting units of encoded octets: septets (GSM), octets (Latin-1, binary), UCS-2 units."""
    return len(payload) >> 1 if alphabet == UCS2 else len(payload)
