"""The benchmark's traffic: distinct valid mobile numbers, the documented mix, deterministic."""

from __future__ import annotations

import collections

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from staffetta.billing.plans import billing_from_dict, price
from staffetta.pdu.codec import decode
from staffetta.pdu.constants import Tag
from staffetta.pdu.message import AccountPolicy, assess_submit
from staffetta.simulator.traffic import (
    MOBILE_RANGES,
    SINGLE_DESTINATION,
    Destinations,
    Mix,
    Traffic,
    price_plan_section,
)

_MOBILE = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)


def _is_mobile_of(number: bytes, region: str) -> bool:
    n = phonenumbers.parse("+" + number.decode())
    return (phonenumbers.is_valid_number(n) and phonenumbers.number_type(n) in _MOBILE
            and phonenumbers.region_code_for_number(n) == region)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), skip=st.integers(0, 10**7), prefix=st.integers(0, 40))
def test_every_number_is_a_valid_mobile_of_its_country(seed, skip, prefix):
    """Any prefix of the ranges, any point of the permutation: phonenumbers agrees."""
    for r in MOBILE_RANGES:
        d = Destinations(seed, ranges=[r])
        numbering = d.numberings[0]
        numbering.count = skip * len(r.prefixes) + prefix % len(r.prefixes)
        for _ in range(3):
            number = d.next()
            assert len(number) == len(str(r.calling_code)) + r.national_length
            assert _is_mobile_of(number, r.region), (r.region, number)


def test_a_million_distinct_numbers_spread_by_weight():
    d = Destinations(7)
    seen = set()
    by_cc: collections.Counter[bytes] = collections.Counter()
    for _ in range(1_000_000):
        number = d.next()
        seen.add(number)
        by_cc[number[:2]] += 1
    assert len(seen) == 1_000_000
    for r in MOBILE_RANGES:
        assert by_cc[str(r.calling_code).encode()] == r.weight * 10_000


def test_deterministic_per_seed():
    def frames(seed: int) -> list[bytes]:
        t = Traffic(seed=seed)
        return [f for _ in range(300) for f, _rd in t.next_message(10)]

    assert frames(3) == frames(3)
    assert frames(3) != frames(4)


def test_the_mix_is_what_docs_benchmarks_md_says():
    """Shapes, senders, receipts; every frame passes the hub's own assessment and is priced."""
    mix = Mix()
    t = Traffic(seed=1)
    plan = billing_from_dict(price_plan_section()).plan(None)
    policy = AccountPolicy()
    shapes: collections.Counter[str] = collections.Counter()
    senders: collections.Counter[bytes] = collections.Counter()
    regions: collections.Counter[str] = collections.Counter()
    receipts = messages = 0
    parts_of_long: collections.Counter[int] = collections.Counter()
    for _ in range(4000):
        msg = t.next_message(10)
        messages += 1
        pdus = [decode(f) for f, _rd in msg]
        a = [assess_submit(p.fields, p.tlvs, policy) for p in pdus]
        first = a[0]
        assert all(price(plan, x.msg_type, x.segments, x.destination.region) for x in a)
        assert len({p.fields["destination_addr"] for p in pdus}) == 1
        if len(pdus) > 1:
            assert [x.part[1:] for x in a] == [(len(pdus), i + 1) for i in range(len(pdus))]
            assert len({x.part[0] for x in a}) == 1
            parts_of_long[len(pdus)] += 1
            shapes["long_udh"] += 1
        elif Tag.message_payload in pdus[0].tlvs:
            assert first.long_form == "payload" and 2 <= first.segments <= 4
            shapes["payload"] += 1
        elif first.encoding == "ucs2":
            shapes["ucs2"] += 1
        else:
            assert first.encoding == "gsm" and first.segments == 1
            shapes["short_gsm"] += 1
        rds = {rd for _f, rd in msg}
        assert rds == {p.fields["registered_delivery"] == 1 for p in pdus} and len(rds) == 1
        receipts += rds.pop()
        senders[pdus[0].fields["source_addr"]] += 1
        regions[first.destination.region] += 1
    for name in ("short_gsm", "long_udh", "ucs2", "payload"):
        share = getattr(mix, name) / 100
        assert abs(shapes[name] / messages - share) < 0.03, (name, shapes[name])
    assert abs(receipts / messages - mix.receipt_percent / 100) < 0.03
    assert set(senders) == set(mix.senders)
    assert set(parts_of_long) == {2, 3, 4}
    for r in MOBILE_RANGES:
        assert abs(regions[r.region] / messages - r.weight / 100) < 0.03


def test_a_long_message_is_cut_to_what_is_left():
    t = Traffic(seed=1)
    for _ in range(2000):
        assert len(t.next_message(1)) == 1
        assert len(t.next_message(2)) <= 2


def test_single_destination_is_todays_message():
    t = Traffic(SINGLE_DESTINATION)
    [(frame, rd)] = t.next_message(10)
    p = decode(frame)
    assert rd and p.sequence == 0
    assert (p.fields["source_addr"], p.fields["destination_addr"], p.fields["short_message"],
            p.fields["registered_delivery"], p.fields["source_addr_ton"]) == (
        b"Staffetta", b"393331234567", b"hello world", 1, 5)
    long = decode(Traffic(SINGLE_DESTINATION, text=b"x" * 300, registered_delivery=0).next_message(1)[0][0])
    assert long.fields["short_message"] == b"" and long.tlvs[Tag.message_payload] == b"x" * 300


def test_countries_restrict_the_mix():
    t = Traffic(seed=2, regions=["IT", "PL"])
    ccs = {decode(f).fields["destination_addr"][:2] for _ in range(500) for f, _rd in t.next_message(4)}
    assert ccs == {b"39", b"48"}


def test_the_mix_never_sends_a_magic_destination():
    """A bench against a fleet must not trigger faults (simulator/faults.py) by chance."""
    from staffetta.simulator.faults import magic

    d = Destinations(7)
    numbers = [d.next() for _ in range(200_000)]
    assert not [n for n in numbers if magic(n) is not None]
