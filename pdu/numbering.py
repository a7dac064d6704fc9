"""The numbering plan: phonenumbers' decisions at the cost of a few regex calls.

Why this module exists: ``phonenumbers.parse`` + ``is_valid_number`` +
``number_type`` cost ~80 µs for a number never seen before (objects, lazy
metadata, a dozen separately compiled patterns per number), and bulk traffic
goes to a new number almost every time.  The hub only ever asks three things
of a string of digits: which calling code and national significant number it
reads as, whether that is valid, and whether it is a mobile (or fixed-line-or-
mobile) number of which country.  So the metadata is compiled once (no
network, no build step): ``plan()`` builds the parsing tables on first use
(~0.1 s), and each calling code's classifier for a given length is compiled
the first time a number of that length arrives (milliseconds; ``compile_all``
does them all, ~0.5 s; a hub compiles its price plans' countries at start with
``compile_regions``).  What is compiled:

* per calling code, per national number length, **one** regular expression
  whose alternatives are phonenumbers' number types in the order
  ``_number_type_helper`` tries them (premium rate, toll free, shared cost,
  VoIP, personal, pager, UAN, voicemail, fixed line -> fixed-line-or-mobile,
  mobile), each behind a look-ahead for the general pattern; a desc whose
  possible lengths exclude that length is left out, as phonenumbers skips it.
  ``fullmatch`` takes the first alternative that matches the whole number, and
  ``lastindex`` names its type;
* for calling codes shared by several regions (+1 NANPA, +7, +44 with GG, IM
  and JE, ...), the same expression carries every region in phonenumbers'
  order: a region with ``leading_digits`` claims the number on a prefix match
  (even if invalid for it), one without claims it if it is any valid type
  there, exactly as ``region_code_for_number`` decides;
* the parsing steps (IDD, leading country code, national prefix and its
  transform rule, the possible-length test) with their patterns precompiled
  and length verdicts tabled.

:func:`read` mirrors ``phonenumbers.parse`` for strings of ASCII digits (the
only input the hub passes on: callers check ``isdigit`` first) and answers
with the region and type phonenumbers would give.  The equivalence is a
Hypothesis property in ``tests/pdu/test_numbering.py``; it needs re-running
after a ``phonenumbers`` upgrade, and nothing else does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberType
from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc

#: phonenumbers' limits (phonenumberutil: _MIN/_MAX_LENGTH_FOR_NSN, _MAX_INPUT_STRING_LENGTH).
MIN_NSN, MAX_NSN, MAX_INPUT = 2, 17, 250
UNKNOWN = PhoneNumberType.UNKNOWN
UNKNOWN_REGION = phonenumbers.UNKNOWN_REGION
MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})

#: The order of phonenumbers' ``_number_type_helper``, before fixed line and mobile.
_SPECIAL_TYPES = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)

# _test_number_length verdicts that matter here.
_KEEP, _DROP, _TOO_LONG = 0, 1, 2


class Reading(NamedTuple):
    """A number as phonenumbers reads it: calling code, national significant number, verdicts."""

    calling_code: int
    nsn: str
    #: ``region_code_for_number``: ISO region, "001" for non-geographic codes, None if none claims it.
    region: str | None
    #: ``number_type``: a ``phonenumbers.PhoneNumberType`` value (UNKNOWN = not valid).
    type: int
    #: E.164 digits without the '+' (a field, not a property: the submit path reads it every time).
    e164: str

    @property
    def valid(self) -> bool:
        return self.type != UNKNOWN

    @property
    def mobile(self) -> bool:
        """Mobile or fixed-line-or-mobile (a country that does not tell them apart, like the US)."""
        return self.type in MOBILE_TYPES


# ------------------------------------------------------------------- compiled form


@dataclass(frozen=True, slots=True)
class _Meta:
    """What parsing needs of one region's metadata, compiled."""

    cc: int
    cc_str: str
    general: re.Pattern[str]
    #: national_prefix_for_parsing and its transform rule ("" = none).
    npp: re.Pattern[str] | None
    transform: str
    idd: re.Pattern[str]
    #: _test_number_length verdict (_KEEP/_DROP/_TOO_LONG) by length; longer = _TOO_LONG.
    lengths: tuple[int, ...]

    def length_verdict(self, n: int) -> int:
        return self.lengths[n] if n < len(self.lengths) else _TOO_LONG

    def strip_national_prefix(self, number: str) -> str:
        """``_maybe_strip_national_prefix_carrier_code`` without the carrier code."""
        npp = self.npp
        if npp is None or not number:
            return number
        m = npp.match(number)
        if m is None:
            return number
        groups = m.groups()
        if not self.transform or groups[-1] is None:
            out = number[m.end():]
        else:
            out = npp.sub(self.transform, number, count=1)
        if self.general.fullmatch(out) is None and self.general.fullmatch(number) is not None:
            return number
        return out


_Entry = tuple[re.Pattern[str], tuple[tuple[str | None, int], ...]] | None
#: A length whose classifier is not compiled yet (None is taken: "no number of this length is valid").
_PENDING: Any = object()


class _Code:
    """One calling code: its main region's metadata and its classifiers by NSN length.

    A classifier is compiled the first time a number of its length arrives
    (a few milliseconds; +1's with 25 regions is the largest), so starting a
    process costs ~0.1 s and a hub only compiles the lengths its traffic has.
    """

    __slots__ = ("by_length", "cc", "fallback", "mds", "meta", "regions")

    def __init__(self, cc: int, regions: tuple[str, ...]) -> None:
        self.cc, self.regions = cc, regions
        self.mds = tuple(_metadata(cc, r) for r in regions)
        self.meta = _compile_meta(self.mds[0])
        #: Index = NSN length (0..MAX_NSN): (pattern, lastindex -> (region, type)), None, or _PENDING.
        self.by_length: list[_Entry] = [_PENDING] * (MAX_NSN + 1)
        #: (region, type) when nothing matches: the only region (unknown type) or (None, UNKNOWN).
        self.fallback: tuple[str | None, int] = (regions[0], UNKNOWN) if len(regions) == 1 else (None, UNKNOWN)

    def compile(self, n: int) -> _Entry:
        """The classifier for NSNs of length ``n``, compiled and kept."""
        self.by_length[n] = entry = _compile_length(self.regions, self.mds, n)
        return entry

    def classify(self, nsn: str) -> tuple[str | None, int]:
        n = len(nsn)
        if n > MAX_NSN:
            return self.fallback
        entry = self.by_length[n]
        if entry is _PENDING:
            entry = self.compile(n)
        if entry is not None:
            m = entry[0].fullmatch(nsn)
            if m is not None:
                return entry[1][m.lastindex]  # type: ignore[index]
        return self.fallback


def _pattern(desc: PhoneNumberDesc | None, n: int) -> str | None:
    """The desc's pattern if a number of length ``n`` can match it (``_is_number_matching_desc``)."""
    if desc is None or not desc.national_number_pattern:
        return None
    if desc.possible_length and n not in desc.possible_length:
        return None
    return desc.national_number_pattern


def _type_alternatives(md: PhoneMetadata, n: int) -> list[tuple[str, int]]:
    """(regex, type) in ``_number_type_helper``'s order for NSNs of length ``n``."""
    if _pattern(md.general_desc, n) is None:
        return []
    alts = [(f"(?:{p})", t) for attr, t in _SPECIAL_TYPES
            if (p := _pattern(getattr(md, attr), n)) is not None]
    fixed, mobile = _pattern(md.fixed_line, n), _pattern(md.mobile, n)
    if fixed is not None:
        if md.same_mobile_and_fixed_line_pattern:
            alts.append((f"(?:{fixed})", PhoneNumberType.FIXED_LINE_OR_MOBILE))
        else:
            if mobile is not None:
                alts.append((f"(?=(?:{mobile})\\Z)(?:{fixed})", PhoneNumberType.FIXED_LINE_OR_MOBILE))
            alts.append((f"(?:{fixed})", PhoneNumberType.FIXED_LINE))
    if mobile is not None and not md.same_mobile_and_fixed_line_pattern:
        alts.append((f"(?:{mobile})", PhoneNumberType.MOBILE))
    return alts


def _typed_group(md: PhoneMetadata, n: int, region: str, names: list[tuple[str | None, int]]) -> str | None:
    """Named alternatives for one region's types at length ``n``, behind its general pattern."""
    alts = _type_alternatives(md, n)
    if not alts:
        return None
    parts = []
    for regex, t in alts:
        parts.append(f"(?P<g{len(names)}>{regex})")
        names.append((region, t))
    return f"(?=(?:{md.general_desc.national_number_pattern})\\Z)(?:{'|'.join(parts)})"


def _metadata(cc: int, region: str) -> PhoneMetadata:
    md = PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
    if md is None:  # pragma: no cover - the calling-code map only names regions with metadata
        raise LookupError(f"phonenumbers has no metadata for {region} (+{cc})")
    return md


def _length_verdicts(md: PhoneMetadata) -> tuple[int, ...]:
    """``_test_number_length(number, md)`` by length, reduced to what ``parse`` does with it."""
    g = md.general_desc
    lengths, local = g.possible_length, tuple(g.possible_length_local_only or ())
    out = []
    for n in range(max((lengths[-1], *local)) + 1):
        if lengths[0] == -1 or n in local or n < lengths[0]:
            out.append(_DROP)  # INVALID_LENGTH, IS_POSSIBLE_LOCAL_ONLY, TOO_SHORT
        elif n > lengths[-1]:
            out.append(_TOO_LONG)
        else:
            out.append(_KEEP if n in lengths else _DROP)
    return tuple(out)


def _compile_meta(md: PhoneMetadata) -> _Meta:
    npp = md.national_prefix_for_parsing
    return _Meta(
        cc=md.country_code,
        cc_str=str(md.country_code),
        general=re.compile(md.general_desc.national_number_pattern),
        npp=re.compile(npp) if npp else None,
        transform=md.national_prefix_transform_rule or "",
        idd=re.compile(md.international_prefix or "NonMatch"),
        lengths=_length_verdicts(md),
    )


def _compile_length(regions: tuple[str, ...], mds: tuple[PhoneMetadata, ...], n: int) -> _Entry:
    """One regex for every (region, type) a calling code's NSN of length ``n`` can be."""
    names: list[tuple[str | None, int]] = []
    if len(regions) == 1:
        alt = _typed_group(mds[0], n, regions[0], names)
        alts = [alt] if alt else []
    else:
        alts = []
        for region, md in zip(regions, mds, strict=True):
            typed = _typed_group(md, n, region, names)
            if md.leading_digits is not None:
                claim = f"(?P<g{len(names)}>\\d*)"
                names.append((region, UNKNOWN))
                inner = f"{typed}|{claim}" if typed else claim
                alts.append(f"(?=(?:{md.leading_digits}))(?:{inner})")
            elif typed:
                alts.append(typed)
    if not alts:
        return None
    rx = re.compile("|".join(f"(?:{a})" for a in alts))
    table: list[tuple[str | None, int]] = [(None, UNKNOWN)] * (rx.groups + 1)
    for name, index in rx.groupindex.items():
        table[index] = names[int(name[1:])]
    return rx, tuple(table)


def _nsn(meta: _Meta, national: str) -> str | None:
    """The national significant number ``parse`` keeps: the national prefix stripped where the
    length it leaves is not dropped, within MIN_NSN..MAX_NSN (None where parse raises)."""
    if len(national) < MIN_NSN:
        return None
    if meta.npp is not None:  # strip_national_prefix returns the number itself without one
        shorter = meta.strip_national_prefix(national)
        if shorter is not national and meta.length_verdict(len(shorter)) != _DROP:
            national = shorter
    return national if MIN_NSN <= len(national) <= MAX_NSN else None


class NumberingPlan:
    """Every calling code of phonenumbers' metadata, compiled; see the module docstring."""

    def __init__(self) -> None:
        self.codes: dict[int, _Code] = {
            cc: _Code(cc, tuple(regions)) for cc, regions in COUNTRY_CODE_TO_REGION_CODE.items()
        }
        #: Country-code prefixes as strings, for ``_extract_country_code`` without int().
        self._prefixes: dict[str, _Meta] = {str(cc): code.meta for cc, code in self.codes.items()}
        #: Every geographic region -> its metadata (the regions ``parse`` accepts as default).
        self._regions: dict[str, _Meta] = {
            r: (self.codes[cc].meta if i == 0 else _compile_meta(_metadata(cc, r)))
            for cc, regions in COUNTRY_CODE_TO_REGION_CODE.items()
            for i, r in enumerate(regions) if r != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
        }
        self.regions: frozenset[str] = frozenset(self._regions)

    def _split_cc(self, digits: str) -> tuple[_Meta, str] | None:
        """``_extract_country_code``: the shortest known 1-3 digit prefix (none starts with 0).

        ``digits`` has more than MIN_NSN (2) digits: both callers check it first.
        Unrolled: every destination is read through here."""
        p = self._prefixes
        meta = p.get(digits[:1])
        if meta is not None:
            return meta, digits[1:]
        meta = p.get(digits[:2])
        if meta is not None:
            return meta, digits[2:]
        meta = p.get(digits[:3])
        return None if meta is None else (meta, digits[3:])

    def parse(self, digits: str, region: str | None = None) -> tuple[int, str] | None:
        """(calling code, NSN) as ``phonenumbers.parse`` reads ``'+'+digits`` (``region`` None)
        or ``digits`` dialled in ``region``; None where it raises.  ``digits``: ASCII digits only."""
        if region is None:
            got = self._international(digits)
            return None if got is None else (got[0].cc, got[1])
        home = self._regions.get(region)
        if home is None or not MIN_NSN <= len(digits) <= MAX_INPUT:
            return None
        m = home.idd.match(digits)
        if m is not None and digits[m.end():m.end() + 1] != "0":  # _parse_prefix_as_idd
            rest = digits[m.end():]
            split = self._split_cc(rest) if len(rest) > MIN_NSN else None
            if split is None:
                return None
            meta, national = split  # the code's main region (parse: "number_region != region")
        else:
            meta, national = home, digits
            if digits.startswith(home.cc_str):  # a national number that starts with its code
                shorter = home.strip_national_prefix(digits[len(home.cc_str):])
                if ((home.general.fullmatch(digits) is None and home.general.fullmatch(shorter) is not None)
                        or home.length_verdict(len(digits)) == _TOO_LONG):
                    national = shorter
        nsn = _nsn(meta, national)
        return None if nsn is None else (meta.cc, nsn)

    def _international(self, digits: str) -> tuple[_Meta, str] | None:
        """``'+'+digits`` split into its calling code's metadata and NSN (None where parse raises)."""
        if not MIN_NSN < len(digits) < MAX_INPUT:
            return None
        split = self._split_cc(digits)
        if split is None:
            return None
        meta = split[0]
        nsn = _nsn(meta, split[1])
        return None if nsn is None else (meta, nsn)

    def classify(self, cc: int, nsn: str) -> tuple[str | None, int]:
        """(``region_code_for_number``, ``number_type``) of a parsed number."""
        code = self.codes.get(cc)
        return (None, UNKNOWN) if code is None else code.classify(nsn)

    def read(self, digits: str, region: str | None = None) -> Reading | None:
        """:meth:`parse` and :meth:`classify` in one: what phonenumbers would say of the number."""
        if region is None:
            return self.read_international(digits)
        got = self.parse(digits, region)
        if got is None:
            return None
        cc, nsn = got
        code = self.codes[cc]
        region_of, kind = code.classify(nsn)
        return Reading(cc, nsn, region_of, kind, code.meta.cc_str + nsn)

    def compile_all(self) -> None:
        """Compile every classifier now (benchmarks; a process that wants no first-use pauses)."""
        for code in self.codes.values():
            for n in range(MAX_NSN + 1):
                if code.by_length[n] is _PENDING:
                    code.compile(n)

    def read_international(self, digits: str) -> Reading | None:
        """:meth:`read` of ``'+'+digits`` (the submit path reads every destination so):
        the split and the classifier without :meth:`parse`'s region branch and tuple."""
        got = self._international(digits)
        if got is None:
            return None
        meta, nsn = got
        region_of, kind = self.codes[meta.cc].classify(nsn)
        return Reading(meta.cc, nsn, region_of, kind, meta.cc_str + nsn)

    def compile_regions(self, regions: Iterable[str]) -> int:
        """Compile now every classifier of the calling codes of ``regions``; how many were pending.

        A hub calls it at start with the countries its price plans serve: the
        first numbers of each length would otherwise pay the compile (a few
        milliseconds each, ~1,400 regex parses for the realistic mix's six
        countries) on the submit path, in the first seconds of traffic.
        Unknown regions are skipped (the plan's checks name them elsewhere).
        """
        done = 0
        for region in regions:
            meta = self._regions.get(region)
            if meta is None:
                continue
            code = self.codes[meta.cc]
            for n in range(MAX_NSN + 1):
                if code.by_length[n] is _PENDING:
                    code.compile(n)
                    done += 1
        return done

    def main_region(self, cc: int) -> str:
        """``region_code_for_country_code``: the main region, "001" if non-geographic, "ZZ" if unknown.

        Only a geographic region reads national numbers (:meth:`parse` refuses the other two)."""
        regions = COUNTRY_CODE_TO_REGION_CODE.get(cc)
        return regions[0] if regions else phonenumbers.UNKNOWN_REGION


@cache
def plan() -> NumberingPlan:
    """The process's plan, built on first use (once; ~0.1 s, classifiers then compile per length)."""
    return NumberingPlan()
