"""The numbering plan decides exactly as phonenumbers does (issue 15, item 2).

The reference is phonenumbers itself: ``parse`` then ``region_code_for_number``
and ``number_type``.  Numbers come from random digits of plausible and
implausible lengths in the fifty-odd most-used calling codes (and, less
densely, every calling code), and from each region's example numbers of
every type with their trailing digits varied, so that the property reaches
valid mobiles, fixed lines, the NANPA and +7/+44 region splits, and the
national-prefix rules (transform rules included) and not only refusals.
"""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberType
from phonenumbers.phonemetadata import PhoneMetadata

from staffetta.pdu.numbering import _PENDING, MOBILE_TYPES, UNKNOWN, NumberingPlan, Reading, plan

#: The most-used calling codes by subscribers and A2P traffic: the property's dense set.
TOP_CODES = (
    1, 7, 20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49,
    51, 52, 54, 55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91,
    92, 93, 94, 95, 98, 212, 213, 216, 234, 254, 255, 256, 351, 353, 358, 380, 420,
    852, 880, 886, 966, 971, 972,
)
ALL_CODES = tuple(sorted(COUNTRY_CODE_TO_REGION_CODE))
TOP_REGIONS = tuple(r for cc in TOP_CODES for r in COUNTRY_CODE_TO_REGION_CODE[cc])
GEO_REGIONS = tuple(sorted(phonenumbers.SUPPORTED_REGIONS))
_DESCS = ("mobile", "fixed_line", "toll_free", "premium_rate", "shared_cost", "voip",
          "personal_number", "pager", "uan", "voicemail")


def _examples(codes: tuple[int, ...]) -> tuple[tuple[int, str], ...]:
    """(calling code, NSN) of every example number the metadata of these codes' regions carries."""
    out = set()
    for cc in codes:
        for region in COUNTRY_CODE_TO_REGION_CODE[cc]:
            md = PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
            for attr in _DESCS:
                desc = getattr(md, attr)
                if desc is not None and desc.example_number:
                    out.add((cc, desc.example_number))
    return tuple(sorted(out))


TOP_EXAMPLES = _examples(TOP_CODES)
ALL_EXAMPLES = _examples(ALL_CODES)


def _parse(digits: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(digits if region else "+" + digits, region)
    except phonenumbers.NumberParseException:
        return None


def reference(digits: str, region: str | None = None) -> Reading | None:
    """What phonenumbers says of ``'+'+digits`` (region None) or ``digits`` dialled in ``region``."""
    num = _parse(digits, region)
    if num is None:
        return None
    nsn = phonenumbers.national_significant_number(num)
    return Reading(num.country_code, nsn, phonenumbers.region_code_for_number(num),
                   phonenumbers.number_type(num), f"{num.country_code}{nsn}")


def _agree(digits: str, region: str | None = None) -> Reading | None:
    want = reference(digits, region)
    got = plan().read(digits, region)
    assert got == want, (digits, region)
    if got is not None:  # the verdicts the hub uses, spelled out
        num = _parse(digits, region)
        assert got.valid == phonenumbers.is_valid_number(num)
        assert got.mobile == (phonenumbers.number_type(num) in MOBILE_TYPES)
        assert got.e164 == phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)[1:]
    return want


def _varied(example: tuple[int, str], data: st.DataObject) -> str:
    """An example NSN with 0-4 trailing digits replaced, sometimes a digit more or less."""
    _, nsn = example
    keep = data.draw(st.integers(max(0, len(nsn) - 4), len(nsn)), label="keep")
    tail = data.draw(st.text("0123456789", min_size=max(0, len(nsn) - keep - 1), max_size=len(nsn) - keep + 1),
                     label="tail")
    return nsn[:keep] + tail


_SETTINGS = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(cc=st.sampled_from(TOP_CODES), national=st.text("0123456789", max_size=18))
def test_random_digits_international(cc: int, national: str) -> None:
    _agree(f"{cc}{national}")


@_SETTINGS
@given(example=st.sampled_from(TOP_EXAMPLES), data=st.data())
def test_examples_varied_international(example: tuple[int, str], data: st.DataObject) -> None:
    _agree(f"{example[0]}{_varied(example, data)}")


@_SETTINGS
@given(region=st.sampled_from(TOP_REGIONS), example=st.sampled_from(TOP_EXAMPLES), data=st.data(),
       form=st.sampled_from(["national", "trunk", "cc", "idd", "00", "random"]))
def test_national_readings(region: str, example: tuple[int, str], data: st.DataObject, form: str) -> None:
    """Dialled in a region: as written nationally, with a trunk 0/1, with the code, after an IDD."""
    if data.draw(st.booleans(), label="same code"):
        cc = phonenumbers.country_code_for_region(region)
        same = [e for e in TOP_EXAMPLES if e[0] == cc]
        example = data.draw(st.sampled_from(same), label="example") if same else example
    cc, nsn = example[0], _varied(example, data)
    idd = {"US": "011", "CA": "011", "RU": "810", "KZ": "810", "JP": "010", "AU": "0011"}.get(region, "00")
    digits = {
        "national": nsn, "trunk": ("1" if cc == 1 else "0") + nsn, "cc": f"{cc}{nsn}",
        "idd": f"{idd}{cc}{nsn}", "00": f"00{cc}{nsn}",
        "random": data.draw(st.text("0123456789", max_size=20), label="random"),
    }[form]
    _agree(digits, region)


@settings(max_examples=800, deadline=None)
@given(cc=st.sampled_from(ALL_CODES), national=st.text("0123456789", max_size=18))
def test_random_digits_every_code(cc: int, national: str) -> None:
    _agree(f"{cc}{national}")


@settings(max_examples=800, deadline=None)
@given(example=st.sampled_from(ALL_EXAMPLES), data=st.data())
def test_examples_varied_every_region(example: tuple[int, str], data: st.DataObject) -> None:
    _agree(f"{example[0]}{_varied(example, data)}")


@settings(max_examples=800, deadline=None)
@given(region=st.sampled_from(GEO_REGIONS), digits=st.text("0123456789", max_size=20))
def test_random_national_every_region(region: str, digits: str) -> None:
    _agree(digits, region)


def test_every_example_number_reads_the_same() -> None:
    """Each example number itself, as given: every region, every type (valid readings, each kind)."""
    kinds = set()
    for cc, nsn in ALL_EXAMPLES:
        got = _agree(f"{cc}{nsn}")
        assert got is not None
        kinds.add(got.type)
    assert {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE,
            PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.TOLL_FREE} <= kinds


@pytest.mark.parametrize(
    ("digits", "region", "e164", "where", "kind"),
    [
        ("393481234567", None, "393481234567", "IT", PhoneNumberType.MOBILE),
        ("3481234567", "IT", "393481234567", "IT", PhoneNumberType.MOBILE),
        ("393481234567", "IT", "393481234567", "IT", PhoneNumberType.MOBILE),   # code, no '+'
        ("00393481234567", "IT", "393481234567", "IT", PhoneNumberType.MOBILE),  # IDD
        ("390612345678", None, "390612345678", "IT", PhoneNumberType.FIXED_LINE),  # leading 0 kept
        ("07400123456", "GB", "447400123456", "GB", PhoneNumberType.MOBILE),  # trunk 0 stripped
        ("447624123456", None, "447624123456", "IM", PhoneNumberType.MOBILE),  # +44, leading digits
        ("447781123456", None, "447781123456", "GG", PhoneNumberType.MOBILE),  # +44, no leading digits
        ("12015550123", None, "12015550123", "US", PhoneNumberType.FIXED_LINE_OR_MOBILE),
        ("16135550123", None, "16135550123", "CA", PhoneNumberType.FIXED_LINE_OR_MOBILE),
        ("12684641234", None, "12684641234", "AG", PhoneNumberType.MOBILE),
        ("4641234", "AG", "12684641234", "AG", PhoneNumberType.MOBILE),  # transform rule adds 268
        ("77012345678", None, "77012345678", "KZ", PhoneNumberType.MOBILE),
        ("79123456789", None, "79123456789", "RU", PhoneNumberType.MOBILE),
        ("5491123456789", None, "5491123456789", "AR", PhoneNumberType.MOBILE),
        ("80012345678", None, "80012345678", "001", PhoneNumberType.TOLL_FREE),  # non-geographic
    ],
)
def test_known_numbers(digits: str, region: str | None, e164: str, where: str, kind: int) -> None:
    got = _agree(digits, region)
    assert got is not None
    assert (got.e164, got.region, got.type) == (e164, where, kind)


@pytest.mark.parametrize(
    ("digits", "region"),
    [("", None), ("3", None), ("39", None), ("0393481234567", None), ("999123", None),
     ("1", "IT"), ("", "IT"), ("3481234567", "ZZ"), ("3481234567", "001"), ("00", "IT"),
     ("0039", "IT"), ("9" * 251, "IT"), ("39" + "3" * 20, None)],
)
def test_unreadable(digits: str, region: str | None) -> None:
    assert _agree(digits, region) is None


def test_invalid_number_keeps_its_region_and_unknown_type() -> None:
    """Region is decided even for invalid numbers, as region_code_for_number does."""
    got = _agree("7712")           # +7 712: KZ claims leading 7 at any length
    assert got is not None and got.type == UNKNOWN and got.region == "KZ"
    got = _agree("391234")         # IT and VA share +39: neither claims it
    assert got is not None and got.type == UNKNOWN and got.region is None
    got = _agree("491234")         # single-region code: the region, type unknown
    assert got is not None and got.type == UNKNOWN and got.region == "DE"


def test_plan_covers_every_region_and_is_built_once() -> None:
    assert plan() is plan()
    assert plan().regions == frozenset(phonenumbers.SUPPORTED_REGIONS)
    assert set(plan().codes) == set(COUNTRY_CODE_TO_REGION_CODE)
    assert plan().main_region(44) == "GB" and plan().main_region(800) == "001"
    assert plan().main_region(999) == "ZZ"


def test_classifiers_compile_on_first_use_and_all_at_once() -> None:
    """A length's classifier is compiled when a number of that length first arrives; compile_all does the rest."""
    fresh = NumberingPlan()
    code = fresh.codes[44]
    assert code.by_length[10] is _PENDING
    assert fresh.read("447400123456") == plan().read("447400123456")
    assert code.by_length[10] is not _PENDING and code.by_length[9] is _PENDING
    fresh.compile_all()
    assert all(e is not _PENDING for c in fresh.codes.values() for e in c.by_length)
    for cc, nsn in TOP_EXAMPLES:
        assert fresh.read(f"{cc}{nsn}") == plan().read(f"{cc}{nsn}")


def test_hub_paths_never_call_phonenumbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sender, destination, pricing by country and HLR job input all read numbers through the plan.

    phonenumbers' per-number functions are made to fail: the old path called
    them for every new number (~80 µs), the plan never does once built.
    """
    from staffetta.billing.plans import plan_from_dict, quote
    from staffetta.hlr.jobs import normalize_number, prepare_items
    from staffetta.pdu.addresses import check_sender, normalize_destination
    from staffetta.pdu.message import AccountPolicy, assess_submit
    from tests.builders import submit_fields

    plan()

    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("phonenumbers called on the hub path")

    for name in ("parse", "is_valid_number", "is_valid_number_for_region", "number_type",
                 "region_code_for_number", "region_code_for_country_code", "format_number",
                 "national_significant_number"):
        monkeypatch.setattr(phonenumbers, name, tripwire)

    prices = plan_from_dict({"countries": {"GB": {"PRO": 2}, "US": {"PRO": 3}, "IM": {"PRO": 4}}})
    for addr, ton, region, cost in [(b"447400123456", 1, "GB", 200), (b"12015550123", 1, "US", 300),
                                    (b"447624123456", 1, "IM", 400), (b"3481234567", 2, "IT", 160)]:
        a = assess_submit(submit_fields(destination_addr=addr, dest_addr_ton=ton, service_type=b"PRO"),
                          {}, AccountPolicy())
        assert a.destination.region == region
        assert quote(prices, a) == cost
    assert check_sender(b"+447400123457", 1, 1).addr == "447400123457"
    assert normalize_destination(b"07400123458", 0, 1, 44).e164 == "447400123458"
    assert normalize_number("+44 7400 123459") == ("447400123459", "")
    assert [s for _, s, _ in prepare_items(["3481234567", "+390612345678", "x"], 39)] == \
        ["pending", "invalid", "invalid"]


def test_compile_regions_compiles_every_length_of_those_codes_only() -> None:
    """What a hub runs at start for its price plans' countries (``Hub._compile_numbering``)."""
    fresh = NumberingPlan()
    done = fresh.compile_regions(["IT", "GG", "XX"])  # GG shares +44; XX is no region: skipped
    assert all(e is not _PENDING for cc in (39, 44) for e in fresh.codes[cc].by_length)
    assert done == 2 * len(fresh.codes[39].by_length)
    assert all(e is _PENDING for e in fresh.codes[33].by_length)
    assert fresh.compile_regions(["IT"]) == 0  # nothing left to do
    for cc, nsn in TOP_EXAMPLES:
        if cc in (39, 44):
            assert fresh.read(f"{cc}{nsn}") == plan().read(f"{cc}{nsn}")
