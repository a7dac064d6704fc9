"""Appendix B receipts: exact output, liberal input (conformance §22)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from staffetta.pdu.constants import MessageState
from staffetta.pdu.receipt import (
    STAT_TO_STATE,
    STATE_TO_STAT,
    Receipt,
    _format_receipt_general,
    format_receipt,
    normalize_message_id,
    parse_receipt,
    stat_to_state,
)

SUB = datetime(2024, 3, 5, 9, 7, 31)
DONE = datetime(2024, 3, 5, 9, 8, 2)


def test_format_exact() -> None:
    got = format_receipt("1234567890", 1, 1, SUB, DONE, "DELIVRD", 0,
                         "Hello from Staffetta, a long text")
    assert got == (b"id:1234567890 sub:001 dlvrd:001 submit date:2403050907 "
                   b"done date:2403050908 stat:DELIVRD err:000 text:Hello from Staffetta")


def test_format_err_and_text_key() -> None:
    got = format_receipt("7", 1, 0, SUB, DONE, "UNDELIV", "1", "", text_key="Text")
    assert got.endswith(b"stat:UNDELIV err:001 Text:")
    assert b" err:0x0B " in format_receipt("7", 1, 0, SUB, DONE, "UNDELIV", "0x0B", "x")
    with pytest.raises(ValueError):
        format_receipt("7", 1, 0, SUB, DONE, "UNDELIV", -1, "x")


def test_format_text_alphabets() -> None:
    gsm = format_receipt("7", 1, 1, SUB, DONE, "DELIVRD", 0, "@€è`")
    assert gsm.endswith(b"text:\x00\x1b\x65\x04?")
    latin = format_receipt("7", 1, 1, SUB, DONE, "DELIVRD", 0, "@€è", alphabet="latin1")
    assert latin.endswith(b"text:@?\xe8")
    with pytest.raises(ValueError):
        format_receipt("7", 1, 1, SUB, DONE, "DELIVRD", 0, "x", alphabet="ebcdic")


def test_parse_strict_form() -> None:
    r = parse_receipt(b"id:1234567890 sub:001 dlvrd:001 submit date:2403050907 "
                      b"done date:2403050908 stat:DELIVRD err:000 text:Hello")
    assert r == Receipt("1234567890", 1, 1, datetime(2024, 3, 5, 9, 7),
                        datetime(2024, 3, 5, 9, 8), "DELIVRD", "000", "Hello")
    assert r.state == MessageState.DELIVERED


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # no sub / dlvrd / text, 12-digit dates, 2-digit err, hex id
        (b"id:0A1B2C3D submit date:240305090731 done date:240305090802 stat:UNDELIV err:21",
         Receipt("0A1B2C3D", None, None, SUB, DONE, "UNDELIV", "21", None)),
        # capitalised Text: and keys in upper case; text containing "stat:"
        (b"ID:42 SUB:001 DLVRD:000 SUBMIT DATE:2403050907 DONE DATE:2403050908 "
         b"STAT:REJECTD ERR:0001 Text:pay stat:OK now",
         Receipt("42", 1, 0, datetime(2024, 3, 5, 9, 7), datetime(2024, 3, 5, 9, 8),
                 "REJECTD", "0001", "pay stat:OK now")),
        # lower-case stat word, trailing NUL, 11-digit date is not a date
        (b"id:99 sub:1 dlvrd:1 submit date:24030509071 done date:2403050908 stat:delivrd "
         b"err:0 text:\x00",
         Receipt("99", 1, 1, None, datetime(2024, 3, 5, 9, 8), "DELIVRD", "0", "")),
        # underscores, no spaces inside keys
        (b"id:5 submit_date:2403050907 done_date:2403050908 stat:EXPIRED err:000",
         Receipt("5", None, None, datetime(2024, 3, 5, 9, 7), datetime(2024, 3, 5, 9, 8),
                 "EXPIRED", "000", None)),
    ],
)
def test_parse_real_world_variants(raw: bytes, expected: Receipt) -> None:
    assert parse_receipt(raw) == expected


def test_parse_gsm_text() -> None:
    r = parse_receipt(b"id:1 stat:DELIVRD err:000 text:\x00home\x1b\x65", alphabet="gsm")
    assert r.text == "@home€"


def test_parse_non_receipt() -> None:
    with pytest.raises(ValueError):
        parse_receipt(b"Hello, this is a normal MO message")


def test_stat_state_maps_are_inverse_and_complete() -> None:
    assert set(STATE_TO_STAT) == set(MessageState)
    for state, stat in STATE_TO_STAT.items():
        assert STAT_TO_STATE[stat] is state
        assert len(stat) == 7
    assert stat_to_state("delivered") is MessageState.DELIVERED
    assert stat_to_state(" undeliv ") is MessageState.UNDELIVERABLE
    assert stat_to_state("NOPE") is None


stat_words = st.sampled_from(sorted(STAT_TO_STATE))
minute_dates = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31)).map(
    lambda d: d.replace(second=0, microsecond=0))


@given(st.from_regex(r"[0-9]{1,10}", fullmatch=True), st.integers(0, 999), st.integers(0, 999),
       minute_dates, minute_dates, stat_words, st.integers(0, 999),
       st.text(alphabet="abcXYZ019 :.!", max_size=30), st.sampled_from(["text", "Text"]))
def test_format_then_parse(mid, sub, dlvrd, d1, d2, stat, err, text, key) -> None:
    r = parse_receipt(format_receipt(mid, sub, dlvrd, d1, d2, stat, err, text, text_key=key))
    assert r == Receipt(mid, sub, dlvrd, d1, d2, stat, f"{err:03d}", text[:20])
    assert r.state is STAT_TO_STATE[stat]


@pytest.mark.parametrize(
    ("raw", "style", "expected"),
    [("1F", "hex", "31"), ("0x1f", "hex", "31"), ("031", "decimal", "31"),
     ("0000", "decimal", "0"), (b"000ABC\x00", "auto", "abc"), (" 000 ", "auto", "0"),
     ("c0ffee-01", "auto", "c0ffee-01")],
)
def test_normalize_message_id(raw, style: str, expected: str) -> None:
    assert normalize_message_id(raw, style) == expected


def test_hex_resp_meets_decimal_receipt() -> None:
    assert normalize_message_id("00A1", "hex") == normalize_message_id("161", "decimal")


@pytest.mark.parametrize(("raw", "style"), [("", "auto"), ("xyz", "hex"), ("12a", "decimal"),
                                            ("1", "octal"), ("0x", "hex")])
def test_normalize_message_id_errors(raw: str, style: str) -> None:
    with pytest.raises(ValueError):
        normalize_message_id(raw, style)


@given(st.integers(0, 4_000_000_000), st.floats(0, 0.999))
def test_epoch_dates_format_as_their_utc_datetime(seconds, fraction) -> None:
    from datetime import UTC

    ts = seconds + fraction
    as_dt = datetime.fromtimestamp(ts, UTC)
    assert format_receipt("1", 1, 1, ts, ts, "DELIVRD", 0, "") == format_receipt(
        "1", 1, 1, as_dt, as_dt, "DELIVRD", 0, "")


_any_count = st.integers(-5, 1200) | st.booleans()
_any_date = st.floats(0, 4e9) | st.integers(0, 4_000_000_000) | st.datetimes(datetime(1971, 1, 1), datetime(2099, 1, 1))
_any_err = st.integers(-3, 70_000) | st.text(max_size=5) | st.booleans()
_any_word = st.text(max_size=12) | st.sampled_from(["DELIVRD", "UNDELIV", "1234567", "abcDEF09"])


@given(_any_word, _any_count, _any_count, _any_date, _any_date, _any_word, _any_err, st.text(max_size=30),
       st.sampled_from(["text", "Text", "tèxt"]), st.sampled_from(["gsm", "latin1", "ascii", "ebcdic"]))
def test_one_step_format_is_the_general_one(mid, sub, dlvrd, d1, d2, stat, err, text, key, alphabet) -> None:
    """The hub's one-step receipt text equals the field-by-field one, errors included."""
    args = (mid, sub, dlvrd, d1, d2, stat, err, text, key, alphabet)
    try:
        want = _format_receipt_general(*args)
    except Exception as exc:  # a negative err, a non-ASCII key or id...: both refuse alike
        with pytest.raises(type(exc)):
            format_receipt(*args)
        return
    assert format_receipt(*args) == want


@given(st.text(st.characters(min_codepoint=0x30, max_codepoint=0x7A), min_size=1, max_size=12),
       st.integers(0, 999), st.integers(0, 999), st.floats(0, 4e9), st.floats(0, 4e9),
       st.sampled_from(sorted(STAT_TO_STATE)), st.integers(0, 1500), st.text(max_size=30),
       st.sampled_from(["text", "Text"]))
def test_one_step_format_on_the_hubs_own_receipts(mid, sub, dlvrd, d1, d2, stat, err, text, key) -> None:
    """The domain the one-step form takes (what the hub sends), sampled densely."""
    args = (mid, sub, dlvrd, d1, d2, stat, err, text, key, "gsm")
    try:
        want = _format_receipt_general(*args)
    except Exception as exc:
        with pytest.raises(type(exc)):
            format_receipt(*args)
        return
    assert format_receipt(*args) == want
