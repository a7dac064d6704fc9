"""SMPP absolute and relative time fields (conformance §15)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from staffetta.pdu.smpptime import SmppTimeError, format_smpp_time, parse_smpp_time

NOW = datetime(2024, 1, 31, 12, 0, 0, tzinfo=UTC)


def test_empty_is_none() -> None:
    assert parse_smpp_time(b"", NOW) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"240512103015200+", datetime(2024, 5, 12, 10, 30, 15, 200_000, tzinfo=UTC)),
        (b"240512103015004+", datetime(2024, 5, 12, 9, 30, 15, tzinfo=UTC)),   # UTC+1h
        (b"240512103015008-", datetime(2024, 5, 12, 12, 30, 15, tzinfo=UTC)),  # UTC-2h
        (b"240512103015048+", datetime(2024, 5, 11, 22, 30, 15, tzinfo=UTC)),  # +12h
        (b"370101000000000+", datetime(2037, 1, 1, tzinfo=UTC)),
        (b"380101000000000+", datetime(1938, 1, 1, tzinfo=UTC)),
    ],
)
def test_absolute(raw: bytes, expected: datetime) -> None:
    assert parse_smpp_time(raw, NOW) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"000001000000000R", NOW + timedelta(days=1)),
        (b"000000480000000R", NOW + timedelta(hours=48)),
        (b"000000000090000R", NOW + timedelta(seconds=90)),
        # one month from 31 January is the last day of February
        (b"000100000000000R", datetime(2024, 2, 29, 12, tzinfo=UTC)),
        (b"020610233429000R", datetime(2026, 8, 10, 11, 34, 29, tzinfo=UTC) + timedelta(days=1)),
    ],
)
def test_relative(raw: bytes, expected: datetime) -> None:
    assert parse_smpp_time(raw, NOW) == expected


@pytest.mark.parametrize(
    "raw",
    [b"24051210301520+", b"2405121030152000+", b"24051210301520a+", b"241312103015000+",
     b"240532103015000+", b"240230103015000+", b"240512243015000+", b"240512106015000+",
     b"240512103015049+", b"240512103015000X", b"240512103015000 ", b"                ",
     b"\x00" * 16],
)
def test_bad_formats(raw: bytes) -> None:
    with pytest.raises(SmppTimeError):
        parse_smpp_time(raw, NOW)


def test_naive_now_gives_naive_utc() -> None:
    naive = datetime(2024, 1, 1)
    assert parse_smpp_time(b"000001000000000R", naive) == datetime(2024, 1, 2)
    assert parse_smpp_time(b"240101000000004+", naive) == datetime(2023, 12, 31, 23)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31)))
def test_format_parse_round_trip(dt: datetime) -> None:
    dt = dt.replace(microsecond=dt.microsecond // 100_000 * 100_000, tzinfo=UTC)
    assert parse_smpp_time(format_smpp_time(dt), NOW) == dt
