"""Money: credits as integers in centi-credits (1.6 credits = 160).

Nothing in billing holds a float. Amounts typed by people (the command line,
``staffetta.yaml``) are decimal text with at most two decimals; they are parsed
here, digit by digit, and printed back with :func:`format_credits`.
"""

from __future__ import annotations

import re

#: Centi-credits per credit.
UNIT = 100

_AMOUNT = re.compile(r"([+-]?)(\d+)(?:\.(\d{1,2}))?\Z")
_MAX_DIGITS = 15  # 10**13 credits: far beyond any balance, far below a BIGINT


def parse_credits(value: object, *, field: str = "amount", signed: bool = False) -> int:
    """``"1.6"`` -> ``160``; ``"10"`` -> ``1000``; ``"0.05"`` -> ``5``.

    Accepts text or an ``int`` (whole credits). A YAML ``1.6`` arrives as a
    float: it is read through its shortest decimal spelling (``repr``), which
    is exact for any value written with two decimals, and refused otherwise.
    Raises ``ValueError`` with one line naming ``field`` and the value.
    """
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected credits like 1.6, got {value!r}")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f"{field}: expected credits like 1.6, got {value!r}")
    m = _AMOUNT.match(text)
    if m is None:
        raise ValueError(
            f"{field}: {value!r} is not an amount in credits with at most two decimals (e.g. 1.6)"
        )
    sign, whole, frac = m.groups()
    if len(whole.lstrip("0")) > _MAX_DIGITS - 2:
        raise ValueError(f"{field}: {value!r} is too large")
    if sign == "-" and not signed:
        raise ValueError(f"{field}: {value!r} must not be negative")
    cents = int(whole) * UNIT + int((frac or "").ljust(2, "0"))
    return -cents if sign == "-" else cents


def format_credits(cents: int) -> str:
    """``160`` -> ``"1.60"``; ``-5`` -> ``"-0.05"``."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"format_credits takes int centi-credits, not {type(cents).__name__}")
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), UNIT)
    return f"{sign}{whole}.{frac:02d}"
