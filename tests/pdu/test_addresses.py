"""Sender and destination rules (conformance §10; features A23, A24)."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from staffetta.pdu.addresses import (
    Destination,
    Sender,
    SenderRules,
    check_sender,
    normalize_destination,
)
from staffetta.pdu.constants import Status
from staffetta.pdu.errors import SubmitRejected
from tests.pdu.test_numbering import TOP_CODES, TOP_EXAMPLES


def _status(fn, *args) -> int:
    with pytest.raises(SubmitRejected) as exc:
        fn(*args)
    return exc.value.status


# -- senders -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [b"Shop", b"Staffetta", b"ACME 2024", b"Pizza Roma1", b"1234"])
def test_alphanumeric_sender_ok(name: bytes) -> None:
    assert check_sender(name, 5, 0) == Sender(name.decode(), 5, 0)


def test_alphanumeric_sender_npi_normalised() -> None:
    assert check_sender(b"Staffetta", 5, 1) == Sender("Staffetta", 5, 0)


@pytest.mark.parametrize(
    "name",
    [b"abc", b"TwelveCharsX", b"My-Shop", b"a/b/c", b"Shop*", b"Shop\xe2\x82\xac", b"Caf\xe9",
     b"    ", b"Shop_1"],
)
def test_alphanumeric_sender_refused(name: bytes) -> None:
    assert _status(check_sender, name, 5, 0) == Status.ESME_RINVSRCADR


def test_configurable_charset() -> None:
    rules = SenderRules(charset=frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"))
    assert check_sender(b"My-Shop", 5, 0, rules).addr == "My-Shop"
    assert _status(check_sender, b"Shop 1", 5, 0, rules) == Status.ESME_RINVSRCADR


@pytest.mark.parametrize(
    ("addr", "ton"),
    [(b"393481234567", 1), (b"+393481234567", 1), (b"393481234567", 0), (b"3481234567", 0),
     (b"3481234567", 2), (b"00393481234567", 0)],
)
def test_numeric_sender_normalised(addr: bytes, ton: int) -> None:
    assert check_sender(addr, ton, 1) == Sender("393481234567", 1, 1)


@pytest.mark.parametrize("ton", [0, 1, 2])
def test_letters_with_numeric_ton_is_invsrcton(ton: int) -> None:
    assert _status(check_sender, b"Staffetta", ton, 0) == Status.ESME_RINVSRCTON


@pytest.mark.parametrize(
    "addr",
    [b"390612345678",     # Italian landline: not a mobile
     b"39348",            # too short
     b"+39 3481234567",   # space
     b"39-348-1234567",   # dashes
     b"1234567890123456"],  # 16 digits
)
def test_numeric_sender_refused(addr: bytes) -> None:
    assert _status(check_sender, addr, 1, 1) == Status.ESME_RINVSRCADR


def test_numeric_sender_digit_limit() -> None:
    # feature A23's "at most 12 digits" is a policy setting
    rules = SenderRules(max_numeric_digits=11)
    assert _status(check_sender, b"393481234567", 1, 1, rules) == Status.ESME_RINVSRCADR
    assert check_sender(b"393481234567", 1, 1, SenderRules(max_numeric_digits=12)).ton == 1


@pytest.mark.parametrize(
    ("ton", "npi", "status"),
    [(7, 1, Status.ESME_RINVSRCTON), (255, 0, Status.ESME_RINVSRCTON),
     (3, 0, Status.ESME_RINVSRCTON), (6, 0, Status.ESME_RINVSRCTON),
     (1, 2, Status.ESME_RINVSRCNPI), (5, 19, Status.ESME_RINVSRCNPI)],
)
def test_sender_ton_npi(ton: int, npi: int, status: int) -> None:
    assert _status(check_sender, b"393481234567", ton, npi) == status


def test_sender_empty() -> None:
    assert _status(check_sender, b"", 5, 0) == Status.ESME_RINVSRCADR


# -- destinations --------------------------------------------------------------------------

IT_MOBILE = Destination("393481234567", "IT", 39)


@pytest.mark.parametrize(
    ("addr", "ton", "npi"),
    [(b"393481234567", 1, 1), (b"+393481234567", 1, 1), (b"3481234567", 2, 1),
     (b"3481234567", 0, 0), (b"393481234567", 0, 0), (b"00393481234567", 0, 1)],
)
def test_destination_italy(addr: bytes, ton: int, npi: int) -> None:
    assert normalize_destination(addr, ton, npi, 39) == IT_MOBILE


def test_destination_foreign_and_other_default_country() -> None:
    uk = normalize_destination(b"447400123456", 1, 1, 39)
    assert (uk.e164, uk.calling_code, uk.region) == ("447400123456", 44, "GB")
    assert normalize_destination(b"07400123456", 2, 1, 44) == uk
    assert normalize_destination(b"07400123456", 0, 1, 44) == uk
    assert normalize_destination(b"447400123456", 0, 1, 39) == uk
    us = normalize_destination(b"12015550123", 1, 1, 39)   # fixed-line-or-mobile
    assert (us.region, us.calling_code) == ("US", 1)


@pytest.mark.parametrize(
    ("addr", "ton"),
    [(b"3481234567", 1),      # national number sent as international (conformance §10)
     (b"390612345678", 1),    # landline
     (b"0612345678", 2),      # landline, national
     (b"39348123", 1),        # too short
     (b"39348abc4567", 1),    # letters
     (b"+", 1),
     (b"", 1)],
)
def test_destination_refused(addr: bytes, ton: int) -> None:
    assert _status(normalize_destination, addr, ton, 1, 39) == Status.ESME_RINVDSTADR


@pytest.mark.parametrize(
    ("ton", "npi", "status"),
    [(7, 1, Status.ESME_RINVDSTTON), (5, 0, Status.ESME_RINVDSTTON),
     (4, 1, Status.ESME_RINVDSTTON), (1, 2, Status.ESME_RINVDSTNPI),
     (1, 7, Status.ESME_RINVDSTNPI)],
)
def test_destination_ton_npi(ton: int, npi: int, status: int) -> None:
    assert _status(normalize_destination, b"393481234567", ton, npi, 39) == status


def test_senders_are_cached_destinations_are_not() -> None:
    """Senders repeat (a few per account): memoised.  Destinations rarely do: read every time."""
    s = check_sender(b"393481234567", 1, 1)
    assert check_sender(b"393481234567", 1, 1) is s
    a = normalize_destination(b"393401112223", 1, 1, 39)
    assert normalize_destination(b"393401112223", 1, 1, 39) == a
    with pytest.raises(SubmitRejected) as e1:
        check_sender(b"390612345678", 1, 1)
    with pytest.raises(SubmitRejected) as e2:
        check_sender(b"390612345678", 1, 1)
    assert e1.value is not e2.value           # fresh exception, no growing traceback
    assert (e1.value.status, e1.value.reason) == (e2.value.status, e2.value.reason)
    assert not hasattr(normalize_destination, "cache_info")


# -- the same decisions as phonenumbers (issue 15): the rule as it was, on phonenumbers ---------

_MOBILE = frozenset({phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE})


def _old_mobile(digits: str, ton: int, default_cc: int) -> phonenumbers.PhoneNumber | None:
    """``pdu.addresses._parse_mobile`` before the numbering plan, verbatim in substance."""
    region = phonenumbers.region_code_for_country_code(default_cc)
    if ton == 1:
        tries: tuple[tuple[str, str | None], ...] = (("+" + digits, None),)
    elif ton == 2:
        tries = ((digits, region),)
    elif digits.startswith("00"):
        tries = (("+" + digits[2:], None),)
    else:
        tries = ((digits, region), ("+" + digits, None))
    for text, reg in tries:
        if reg == phonenumbers.UNKNOWN_REGION:
            continue
        try:
            num = phonenumbers.parse(text, reg)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num) and phonenumbers.number_type(num) in _MOBILE:
            return num
    return None


def _old_destination(digits: str, ton: int, default_cc: int) -> Destination | None:
    num = _old_mobile(digits, ton, default_cc)
    if num is None:
        return None
    return Destination(phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)[1:],
                       phonenumbers.region_code_for_number(num) or "ZZ", num.country_code)


_DEFAULT_CCS = (*TOP_CODES, 800, 999)


@st.composite
def _written(draw: st.DrawFn) -> str:
    """A number as clients write it: international, national with or without trunk, '00', noise."""
    cc, nsn = draw(st.sampled_from(TOP_EXAMPLES))
    nsn = nsn[:draw(st.integers(max(0, len(nsn) - 4), len(nsn)))] + draw(st.text("0123456789", max_size=5))
    return draw(st.sampled_from([f"{cc}{nsn}", nsn, "0" + nsn, f"00{cc}{nsn}", f"011{cc}{nsn}"])) \
        if draw(st.integers(0, 9)) else draw(st.text("0123456789", max_size=16))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(digits=_written(), ton=st.sampled_from([0, 1, 2]), default_cc=st.sampled_from(_DEFAULT_CCS))
def test_destination_decisions_as_phonenumbers(digits: str, ton: int, default_cc: int) -> None:
    want = _old_destination(digits, ton, default_cc)
    if want is None:
        assert _status(normalize_destination, digits.encode(), ton, 1, default_cc) == Status.ESME_RINVDSTADR
    else:
        assert normalize_destination(digits.encode(), ton, 1, default_cc) == want


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(digits=_written(), ton=st.sampled_from([0, 1, 2]), default_cc=st.sampled_from(_DEFAULT_CCS))
def test_numeric_sender_decisions_as_phonenumbers(digits: str, ton: int, default_cc: int) -> None:
    rules = SenderRules(default_country_code=default_cc)
    want = _old_destination(digits, ton, default_cc)
    if want is None or len(want.e164) > 15:
        assert _status(check_sender, digits.encode(), ton, 1, rules) == Status.ESME_RINVSRCADR
    else:
        assert check_sender(digits.encode(), ton, 1, rules) == Sender(want.e164, 1, 1)


def test_error_names_the_field() -> None:
    with pytest.raises(SubmitRejected) as exc:
        normalize_destination(b"39abc", 1, 1, 39)
    assert str(exc.value).startswith("ESME_RINVDSTADR: destination_addr: ")
    assert "\n" not in str(exc.value)
