"""SMPP time fields: schedule_delivery_time, validity_period, final_date (3.4 §7.1.1).

Absolute ``YYMMDDhhmmsstnnp``: t tenths, nn quarter-hours from UTC, p '+'
(local ahead of UTC) or '-'.  Relative ``YYMMDDhhmmss000R``: an offset from
now in years, months, days, hours, minutes, seconds (fields are not range
checked beyond being digits, since "48 hours" is common; t and nn ignored).

Results are UTC: timezone-aware if ``now`` is aware, naive UTC otherwise.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

_DIGITS = frozenset(b"0123456789")


class SmppTimeError(ValueError):
    """The field is not a valid SMPP time; the caller maps it to its status."""


def _year(yy: int, pivot: int) -> int:
    return 2000 + yy if yy < pivot else 1900 + yy


def _add_months(dt: datetime, months: int) -> datetime:
    y, m = divmod(dt.month - 1 + months, 12)
    year = dt.year + y
    month = m + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day)


def parse_smpp_time(b: bytes, now: datetime, *, pivot: int = 38) -> datetime | None:
    """Parse a time field (without its NUL); empty -> None; bad -> SmppTimeError.

    ``pivot``: two-digit years below it are 20YY, others 19YY (3.4 Appendix C).
    """
    if not b:
        return None
    if len(b) != 16:
        raise SmppTimeError(f"{len(b)} characters, expected 16")
    p = b[15]
    if not _DIGITS.issuperset(b[:15]):
        raise SmppTimeError("non-digit in the first 15 characters")
    v = [int(b[i:i + 2]) for i in range(0, 12, 2)]
    aware = now.tzinfo is not None
    if p == 0x52:  # 'R'
        base = now.astimezone(UTC) if aware else now
        years, months, days, hours, minutes, seconds = v
        try:
            out = _add_months(base, years * 12 + months)
            return out + timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        except (OverflowError, ValueError) as exc:
            raise SmppTimeError(f"relative time out of range: {exc}") from None
    if p not in (0x2B, 0x2D):  # '+', '-'
        raise SmppTimeError(f"last character {chr(p)!r} is not '+', '-' or 'R'")
    yy, mo, dd, hh, mi, ss = v
    tenths = b[12] - 0x30
    nn = int(b[13:15])
    if nn > 48:
        raise SmppTimeError(f"UTC offset {nn} quarter-hours exceeds 48")
    try:
        local = datetime(_year(yy, pivot), mo, dd, hh, mi, ss, tenths * 100_000)
    except ValueError as exc:
        raise SmppTimeError(str(exc)) from None
    offset = timedelta(minutes=15 * nn)
    utc = local - offset if p == 0x2B else local + offset
    return utc.replace(tzinfo=UTC) if aware else utc


def format_smpp_time(dt: datetime) -> bytes:
    """A UTC absolute time in the 16-character form (``...000+``); naive means UTC."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return f"{dt:%y%m%d%H%M%S}{dt.microsecond // 100_000}00+".encode("ascii")
