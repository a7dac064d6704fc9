"""Sender (source_addr) and destination rules (conformance §10, features A23-A25).

Senders are either alphanumeric (4-11 characters of the account's charset,
sent as TON 5 / NPI 0) or an international mobile number (digits only, sent
as TON 1 / NPI 1).  Destinations must be valid mobile numbers by
``phonenumbers`` metadata; they are returned in E.164 digits with the region
and calling code pricing needs.  Both read numbers through the compiled
:mod:`pdu.numbering` plan (a few microseconds for any number, seen or not).

Destinations are not memoised: bulk traffic rarely repeats a number, and at
a steady 100,000 entries an LRU miss cost more (eviction, the collector
walking the entries) than the plan's whole reading.  Senders are: an account
uses a handful, so the LRU keyed on the raw inputs nearly always hits.
Refusals are memoised as plain tuples, never as exception instances, whose
tracebacks would grow on every re-raise.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import attrs

from staffetta.pdu.constants import Npi, Status, Ton
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.numbering import MOBILE_TYPES, UNKNOWN_REGION, Reading, plan

DEFAULT_SENDER_CHARSET: frozenset[str] = frozenset(string.ascii_letters + string.digits + " ")
#: E.164 allows at most 15 digits including the country code.
E164_MAX_DIGITS = 15
_NPIS = frozenset(int(n) for n in Npi)
# Plain ints on the per-message path: an Enum attribute lookup costs ~0.3 µs on Python 3.11.
_INTERNATIONAL, _NATIONAL = int(Ton.INTERNATIONAL), int(Ton.NATIONAL)
_NUMBER_TONS = frozenset({int(Ton.UNKNOWN), _INTERNATIONAL, _NATIONAL})
# A Sender holds plain ints too: the group commit binds them, and sqlite3 sends an
# IntEnum through its adaptation lookup (~1.2k instructions a value in the writer).
_ALPHANUMERIC, _NPI_UNKNOWN, _NPI_ISDN = int(Ton.ALPHANUMERIC), int(Npi.UNKNOWN), int(Npi.ISDN)
#: Built when the hub imports this module (~0.1 s), not at its first submit: a client's first
#: window should not wait for it (under valgrind it outlasted the bench client's 30 s timeout).
_PLAN = plan()
_SENDER_CACHE_SIZE = 100_000


@attrs.frozen(cache_hash=True)
class SenderRules:
    """Per-account sender policy.  Hash is cached: it keys the sender LRU on every submit."""

    charset: frozenset[str] = DEFAULT_SENDER_CHARSET
    min_alpha: int = 4
    max_alpha: int = 11
    max_numeric_digits: int = E164_MAX_DIGITS
    default_country_code: int = 39


DEFAULT_SENDER_RULES = SenderRules()


@dataclass(frozen=True, slots=True)
class Sender:
    """A sender as it goes upstream: alphanumeric (TON 5/NPI 0) or E.164 digits (TON 1/NPI 1)."""

    addr: str
    ton: int
    npi: int


class Destination(NamedTuple):
    """A destination in E.164 digits (no '+'), with ISO region and calling code for pricing.

    A named tuple rather than a frozen dataclass: one is built per submit, at half the cost.
    """

    e164: str
    region: str
    calling_code: int


_Refusal = tuple[int, str, str]


def _read_mobile(digits: str, ton: int, default_cc: int) -> Reading | None:
    """The first reading of ``digits`` under ``ton`` that is a valid mobile number.

    TON 1: international as given.  TON 2: national in the default country.
    TON 0: '00'-prefixed -> international; else national in the default
    country first, then as international (a number that already starts with
    its country code).
    """
    p = _PLAN
    if ton == _INTERNATIONAL:
        got = p.read_international(digits)
    elif ton == _NATIONAL:
        got = p.read(digits, p.main_region(default_cc))
    elif digits.startswith("00"):
        got = p.read(digits[2:])
    else:
        got = p.read(digits, p.main_region(default_cc))
        if got is None or got.type not in MOBILE_TYPES:
            got = p.read(digits)
    return got if got is not None and got.type in MOBILE_TYPES else None


@lru_cache(maxsize=_SENDER_CACHE_SIZE)
def _sender(addr: bytes, ton: int, npi: int, rules: SenderRules) -> Sender | _Refusal:
    if not 0 <= ton <= 6:
        return (Status.ESME_RINVSRCTON, "source_addr_ton", f"reserved TON {ton}")
    if npi not in _NPIS:
        return (Status.ESME_RINVSRCNPI, "source_addr_npi", f"reserved NPI {npi}")
    if not addr:
        return (Status.ESME_RINVSRCADR, "source_addr", "empty and no default sender")
    if not addr.isascii():
        return (Status.ESME_RINVSRCADR, "source_addr", "non-ASCII character")
    s = addr.decode("ascii")
    if ton == Ton.ALPHANUMERIC:
        if not rules.min_alpha <= len(s) <= rules.max_alpha:
            return (Status.ESME_RINVSRCADR, "source_addr",
                    f"alphanumeric sender of {len(s)} characters "
                    f"(allowed {rules.min_alpha}-{rules.max_alpha})")
        for ch in s:
            if ch not in rules.charset:
                return (Status.ESME_RINVSRCADR, "source_addr",
                        f"character {ch!r} not allowed in an alphanumeric sender")
        if not s.strip():
            return (Status.ESME_RINVSRCADR, "source_addr", "blank sender")
        return Sender(s, _ALPHANUMERIC, _NPI_UNKNOWN)
    if ton not in (Ton.UNKNOWN, Ton.INTERNATIONAL, Ton.NATIONAL):
        return (Status.ESME_RINVSRCTON, "source_addr_ton",
                f"TON {ton} not accepted for a sender (use 5 alphanumeric or 1 international)")
    digits = s[1:] if s.startswith("+") else s
    if not digits.isdigit():
        if any(c.isalpha() for c in s):
            return (Status.ESME_RINVSRCTON, "source_addr_ton",
                    f"sender {s!r} has letters but TON {ton}; alphanumeric senders use TON 5")
        return (Status.ESME_RINVSRCADR, "source_addr", f"numeric sender {s!r} is not all digits")
    limit = min(E164_MAX_DIGITS, rules.max_numeric_digits)
    num = _read_mobile(digits, ton, rules.default_country_code)
    if num is None:
        return (Status.ESME_RINVSRCADR, "source_addr",
                f"numeric sender {digits} is not an international mobile number")
    e164 = num.e164
    if len(e164) > limit:
        return (Status.ESME_RINVSRCADR, "source_addr",
                f"numeric sender {e164} longer than {limit} digits")
    return Sender(e164, _INTERNATIONAL, _NPI_ISDN)


def check_sender(addr: bytes, ton: int, npi: int,
                 rules: SenderRules = DEFAULT_SENDER_RULES) -> Sender:
    """Validate and normalise a source address; refusals raise :class:`SubmitRejected`.

    Letters with TON 0/1/2 -> ESME_RINVSRCTON (conformance §10 DECIDE); TON
    3/4/6 -> ESME_RINVSRCTON; reserved TON/NPI -> ESME_RINVSRCTON/RINVSRCNPI;
    everything else wrong -> ESME_RINVSRCADR.  A leading '+' is stripped.
    """
    got = _sender(addr, ton, npi, rules)
    if type(got) is tuple:
        raise SubmitRejected(*got)
    return got  # type: ignore[return-value]


def normalize_destination(addr: bytes, ton: int, npi: int, default_cc: int = 39) -> Destination:
    """Validate a destination and return it in E.164; refusals raise :class:`SubmitRejected`.

    TON 1 is taken as international; TON 2, and TON 0 that does not read as
    a national number, get ``default_cc``; TON 0 already starting with a
    country code (or '00') is accepted.  It must be a valid mobile (or
    fixed-line-or-mobile) number, else ESME_RINVDSTADR.
    """
    if not 0 <= ton <= 6:
        raise SubmitRejected(Status.ESME_RINVDSTTON, "dest_addr_ton", f"reserved TON {ton}")
    if npi not in _NPIS:
        raise SubmitRejected(Status.ESME_RINVDSTNPI, "dest_addr_npi", f"reserved NPI {npi}")
    if ton not in _NUMBER_TONS:
        raise SubmitRejected(Status.ESME_RINVDSTTON, "dest_addr_ton",
                             f"TON {ton} not accepted for a destination (use 1, 2 or 0)")
    if not addr:
        raise SubmitRejected(Status.ESME_RINVDSTADR, "destination_addr", "empty")
    digits = addr[1:] if addr[:1] == b"+" else addr
    if not (digits.isdigit() and digits.isascii()):
        raise SubmitRejected(Status.ESME_RINVDSTADR, "destination_addr",
                             f"{addr.decode('latin-1')!r} is not all digits")
    text = digits.decode("ascii")
    num = _read_mobile(text, ton, default_cc)
    if num is None:
        raise SubmitRejected(Status.ESME_RINVDSTADR, "destination_addr",
                             f"{text} (TON {ton}) is not a valid mobile number")
    return Destination(num.e164, num.region or UNKNOWN_REGION, num.calling_code)


def clear_caches() -> None:
    """Forget memoised senders (after a ``phonenumbers`` metadata upgrade, or in tests)."""
    _sender.cache_clear()
