"""Sender and destination rules (conformance §10; features A23, A24)."""

from __future__ import annotations

import pytest

from staffetta.pdu.addresses import (
    Destination,
    Sender,
    SenderRules,
    check_sender,
    normalize_destination,
)
from staffetta.pdu.constants import Status
from staffetta.pdu.errors import SubmitRejected


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


def test_results_and_refusals_are_cached() -> None:
    a = normalize_destination(b"393401112223", 1, 1, 39)
    assert normalize_destination(b"393401112223", 1, 1, 39) is a
    with pytest.raises(SubmitRejected) as e1:
        normalize_destination(b"390612345678", 1, 1, 39)
    with pytest.raises(SubmitRejected) as e2:
        normalize_destination(b"390612345678", 1, 1, 39)
    assert e1.value is not e2.value           # fresh exception, no growing traceback
    assert (e1.value.status, e1.value.reason) == (e2.value.status, e2.value.reason)


def test_error_names_the_field() -> None:
    with pytest.raises(SubmitRejected) as exc:
        normalize_destination(b"39abc", 1, 1, 39)
    assert str(exc.value).startswith("ESME_RINVDSTADR: destination_addr: ")
    assert "\n" not in str(exc.value)
