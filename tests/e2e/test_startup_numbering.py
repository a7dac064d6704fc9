"""A hub compiles the numbering plan of its price plans' countries before it takes its first submit."""

from __future__ import annotations

import pytest_twisted

from staffetta.pdu.numbering import _PENDING, plan
from tests.e2e.harness import make_env

#: Niue (+683) and Tokelau (+690): codes no other test reads every length of.
BILLING = {"plans": {"default": {"home_regions": ["NU"], "countries": {"TK": {"PRO": 5, "SMART": 5}}}}}


def _pending(cc: int) -> int:
    return sum(e is _PENDING for e in plan().codes[cc].by_length)


@pytest_twisted.inlineCallbacks
def test_the_price_plans_countries_are_compiled_at_start(data_dir):
    assert _pending(683) and _pending(690), "precondition: another test compiled every length of +683 or +690"
    env = make_env(data_dir, billing=BILLING)
    try:
        # Every length of the home region's and the priced country's calling codes:
        # the first numbers of the traffic pay no compile on the submit path.
        assert _pending(683) == 0
        assert _pending(690) == 0
    finally:
        yield env.stop()
