"""The submit pipeline's rules, table-driven, without a reactor (smsc/pipeline.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from staffetta.billing.accounts import Account
from staffetta.billing.plans import PricePlan, plan_from_dict, quote
from staffetta.hlr.model import HlrResult
from staffetta.hlr.service import REFUSE_DEST, REFUSE_SYSERR, SEND
from staffetta.pdu.constants import MessageState, Status, Tag
from staffetta.pdu.message import AccountPolicy, assess_submit
from staffetta.pdu.smpptime import format_smpp_time
from staffetta.router.messages import QUEUED
from staffetta.router.numbers import Configured, Numbers
from staffetta.router.record import decode_tlv_stream, validity_period
from staffetta.smsc.pipeline import (
    NO_ROUTE_STATUS,
    Accepted,
    NeedsLookup,
    Refused,
    SubmitPipeline,
    Submitter,
)
from staffetta.smsc.throttle import TokenBucket
from tests.builders import submit_fields

NOW = 1_800_000_000.0
DAY = 86400.0
ACCOUNT = Account(7, "acme", True, "PRO", 39, None, nocredit_status=int(Status.ESME_RSUBMITFAIL))


class Routes:
    """The router's two answers the pipeline asks for, as plain data."""

    def __init__(self, route: str | None = "default", room: bool = True) -> None:
        self.route = route
        self.room = room
        self.asked: list[tuple] = []

    def choose(self, account_id: int, destination: str, msg_type: str) -> str | None:
        self.asked.append((account_id, destination, msg_type))
        return self.route

    def can_accept(self, route: str) -> bool:
        return self.room


def make(routes: Routes | None = None) -> tuple[SubmitPipeline, list[int]]:
    routes = routes or Routes()
    issued: list[int] = []

    def ids() -> int:
        issued.append(100 + len(issued))
        return issued[-1]

    p = SubmitPipeline(choose_route=routes.choose, can_accept=routes.can_accept, message_ids=ids,
                       default_validity=3 * DAY, max_validity=7 * DAY)
    return p, issued


def who(*, bucket: TokenBucket | None = None, plan: PricePlan | None = None, hlr: str = "off",
        policy: AccountPolicy | None = None) -> Submitter:
    return Submitter(ACCOUNT, policy or AccountPolicy(), plan or PricePlan(), bucket, hlr)


# ------------------------------------------------------------------ refusals

REFUSALS = [
    # (what, fields over submit_fields(), expected status)
    ("unknown service_type", {"service_type": b"BULK"}, Status.ESME_RINVSERTYP),
    ("destination not a mobile", {"destination_addr": b"12"}, Status.ESME_RINVDSTADR),
    ("letters with TON 1", {"source_addr_ton": 1, "source_addr": b"Shop"}, Status.ESME_RINVSRCTON),
    ("alphanumeric sender too long", {"source_addr": b"WayTooLongSender"}, Status.ESME_RINVSRCADR),
    ("SMART over one segment", {"service_type": b"SMART", "short_message": b"x" * 161}, Status.ESME_RINVMSGLEN),
    ("bad validity", {"validity_period": b"garbage"}, Status.ESME_RINVEXPIRY),
]


@pytest.mark.parametrize(("what", "over", "status"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_validation_and_policy_refusals(what, over, status, caplog):
    p, issued = make()
    with caplog.at_level(logging.INFO, logger="staffetta.smsc.pipeline"):
        got = p.accept(submit_fields(**over), {}, who(), NOW)
    assert type(got) is Refused and got.status == status, (what, got)
    assert issued == []  # a refused message takes no id
    assert f"0x{int(status):08X}" in caplog.text and "acme" in caplog.text


@pytest.mark.parametrize(
    ("routes", "status"),
    [(Routes(route=None), NO_ROUTE_STATUS), (Routes(room=False), Status.ESME_RMSGQFUL)],
    ids=["no route", "route queue full"],
)
def test_route_refusals_spend_no_tokens(routes, status):
    p, _ = make(routes)
    bucket = TokenBucket(1, NOW)
    got = p.accept(submit_fields(), {}, who(bucket=bucket), NOW)
    assert type(got) is Refused and got.status == status
    assert bucket.tokens == 1  # the route is decided before the throttle


def test_route_is_chosen_for_account_destination_and_type():
    routes = Routes(route="italy")
    p, _ = make(routes)
    got = p.accept(submit_fields(service_type=b"SMART", destination_addr=b"+393481234567"), {}, who(), NOW)
    assert type(got) is Accepted
    assert routes.asked == [(7, "393481234567", "SMART")]
    assert got.route == got.record.route == "italy"


def test_throttle_counts_segments_per_credential_bucket():
    p, _ = make()
    bucket = TokenBucket(2, NOW)
    s = who(bucket=bucket)
    long_text = "y" * 300  # two segments
    assert type(p.accept(submit_fields(long_text), {}, s, NOW)) is Accepted
    got = p.accept(submit_fields(), {}, s, NOW)
    assert type(got) is Refused and got.status == Status.ESME_RTHROTTLED
    assert type(p.accept(submit_fields(), {}, s, NOW + 0.5)) is Accepted


def test_no_rate_for_the_destination_region():
    p, _ = make()
    plan = plan_from_dict({"home_regions": ["FR"]}, name="fr-only")
    got = p.accept(submit_fields(), {}, who(plan=plan), NOW)
    assert type(got) is Refused and got.status == Status.STAFFETTA_RNORATE
    assert "fr-only" in got.reason


# ------------------------------------------------------------------ acceptance


def test_accepted_record_is_the_row_to_write():
    p, issued = make()
    fields = submit_fields("Hello there, a receipt shows twenty", registered_delivery=1)
    tlvs = {int(Tag.user_message_reference): b"\x00\x2a"}
    got = p.accept(fields, tlvs, who(), NOW)
    assert type(got) is Accepted
    r = got.record
    a = assess_submit(fields, tlvs, AccountPolicy())
    assert got.price == quote(PricePlan(), a) and got.hlr is None
    assert (r.id, r.account_id, r.source_addr, r.source_ton, r.destination) == (100, 7, "Staffetta", 5, "393481234567")
    assert (r.msg_type, r.segments, r.phase, r.state, r.err, r.route) == ("PRO", 1, QUEUED, MessageState.ENROUTE, 0, "default")
    assert (r.submitted_at, r.expires_at) == (NOW, NOW + 3 * DAY)
    assert decode_tlv_stream(r.tlvs) == tlvs and r.umr == b"\x00\x2a"
    assert r.text20 == "Hello there, a recei"
    assert issued == [100]


@pytest.mark.parametrize(
    ("validity", "expires"),
    [(b"", NOW + 3 * DAY), (b"000001000000000R", NOW + DAY), (b"000030000000000R", NOW + 7 * DAY)],
    ids=["hub default", "client's own", "clamped to the maximum"],
)
def test_validity(validity, expires):
    p, _ = make()
    # assess_submit reads a relative validity against the wall clock: give an absolute one instead.
    if validity.endswith(b"R"):
        days = int(validity[4:6])
        validity = format_smpp_time(datetime.fromtimestamp(NOW + days * DAY, UTC))
    got = p.accept(submit_fields(validity_period=validity), {}, who(), NOW)
    assert type(got) is Accepted
    assert got.record.expires_at == pytest.approx(expires, abs=0.1)
    assert got.record.forward().fields["validity_period"] == validity_period(got.record.expires_at)


# ------------------------------------------------------------------ the HLR step

HLR_CASES = [
    # (decision, result, outcome type, status, mccmnc)
    (SEND, HlrResult("393481234567", "valid", mcc="222", mnc="10"), Accepted, None, "22210"),
    (SEND, None, Accepted, None, None),  # fail-open on an outage
    (REFUSE_DEST, HlrResult("393481234567", "invalid"), Refused, Status.ESME_RINVDSTADR, None),
    (REFUSE_SYSERR, None, Refused, Status.ESME_RSYSERR, None),
]


@pytest.mark.parametrize(("decision", "result", "kind", "status", "mccmnc"), HLR_CASES,
                         ids=["valid", "outage open", "invalid", "outage closed"])
def test_hlr_decision_is_fed_back(decision, result, kind, status, mccmnc):
    p, issued = make()
    need = p.accept(submit_fields(), {}, who(hlr="cached"), NOW)
    assert type(need) is NeedsLookup
    assert (need.number, need.account_id, need.mode) == ("393481234567", 7, "cached")
    assert issued == []  # no id before the decision
    got = p.looked_up(need, decision, result)
    assert type(got) is kind
    if kind is Refused:
        assert got.status == status
    else:
        assert got.hlr == got.record.mccmnc == mccmnc


def test_hlr_charge_refused_answers_the_accounts_nocredit_status():
    p, _ = make()
    need = p.accept(submit_fields(), {}, who(hlr="always"), NOW)
    got = p.lookup_failed(need, True, "no credit")
    assert type(got) is Refused and got.status == Status.ESME_RSUBMITFAIL
    got = p.lookup_failed(need, False, "boom")
    assert type(got) is Refused and got.status == Status.ESME_RSYSERR and "boom" in got.reason


def test_every_refusal_is_logged_at_info(caplog):
    p, _ = make(Routes(room=False))
    with caplog.at_level(logging.INFO, logger="staffetta.smsc.pipeline"):
        p.accept(submit_fields(), {}, who(), NOW)
        p.refuse(ACCOUNT, 0x401, "no credit")
    lines = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage() for r in lines] == [
        "submit refused for acme: 0x00000014 route default: queue full",
        "submit refused for acme: 0x00000401 no credit",
    ]


# ------------------------------------------------------ two-way: pools, opt-outs (router/numbers.py)

POOLS = Configured(pools={"SMART": {0: ("393500000001", "393500000002")}, "REPLY": {0: ("393400000001",)}},
                   opt_outs=frozenset({(7, "393489999999")}))


def with_numbers(configured: Configured = POOLS) -> tuple[SubmitPipeline, Numbers]:
    numbers = Numbers(configured=configured)
    issued: list[int] = []
    routes = Routes()
    p = SubmitPipeline(choose_route=routes.choose, can_accept=routes.can_accept,
                       message_ids=lambda: issued.append(1) or 100 + len(issued),
                       default_validity=3 * DAY, max_validity=7 * DAY, numbers=numbers)
    return p, numbers


TWO_WAY = [
    # (what, fields over submit_fields(), configured, expected status or source_addr of the record)
    ("PRO keeps the client's sender", {}, POOLS, "Staffetta"),
    ("SMART takes the pool's, the client's ignored", {"service_type": b"SMART"}, POOLS, "393500000001"),
    ("REPLY takes the pool's", {"service_type": b"REPLY", "source_addr_ton": 1, "source_addr_npi": 1,
                                "source_addr": b"393331234567"}, POOLS, "393400000001"),
    ("REPLY refuses an alphanumeric sender", {"service_type": b"REPLY"}, POOLS, Status.ESME_RINVSRCADR),
    ("SMART with no sender at all takes the pool's", {"service_type": b"SMART", "source_addr": b""},
     POOLS, "393500000001"),
    ("SMART with no sender and no pool", {"service_type": b"SMART", "source_addr": b""}, Configured(),
     Status.ESME_RINVSRCADR),
    ("SMART without a pool keeps the client's sender", {"service_type": b"SMART"}, Configured(), "Staffetta"),
    ("own sender refused by the account's policy", {"service_type": b"SMART"},
     Configured(pools=POOLS.pools, own_sender={7: "refuse"}), Status.ESME_RINVSRCADR),
    ("a French-only number is not used for Italy", {"service_type": b"SMART"},
     Configured(pools={"SMART": {0: ("36111", "393500000009")}}, countries={"36111": frozenset({"FR"})}),
     "393500000009"),
    ("opted-out handset, any type", {"destination_addr": b"393489999999"}, POOLS, Status.STAFFETTA_ROPTEDOUT),
    ("opted out of another account only", {"destination_addr": b"393489999999"},
     Configured(opt_outs=frozenset({(8, "393489999999")})), "Staffetta"),
]


@pytest.mark.parametrize(("what", "over", "configured", "expect"), TWO_WAY, ids=[t[0] for t in TWO_WAY])
def test_two_way_sender_and_opt_out(what, over, configured, expect):
    p, _ = with_numbers(configured)
    got = p.accept(submit_fields(**over), {}, who(), NOW)
    if isinstance(expect, str):
        assert type(got) is Accepted, (what, got)
        assert got.record.source_addr == expect
        assert (got.record.source_ton, got.record.source_npi) == ((5, 0) if expect == "Staffetta" else (1, 1))
        assert got.record.forward().fields["source_addr"] == expect.encode()
    else:
        assert type(got) is Refused and got.status == expect, (what, got)


def test_reply_exhaustion_is_refused_and_the_window_opens_after_the_commit():
    p, numbers = with_numbers()
    reply = {"service_type": b"REPLY", "source_addr": b""}
    first = p.accept(submit_fields(**reply), {}, who(), NOW)
    assert first.record.source_addr == "393400000001"
    p.stored(first.record, NOW)  # the commit: the window is open
    assert numbers.owner_of("393481234567", "393400000001", "ok", NOW + 60).account_id == 7
    other = Submitter(Account(8, "beta", True, "PRO", 39, None), AccountPolicy(), PricePlan(), None, "off")
    got = p.accept(submit_fields(**reply), {}, other, NOW + 1)
    assert type(got) is Refused and got.status == Status.STAFFETTA_RPOOLEXHAUSTED
    # The same account again: the same number (sticky), not exhaustion.
    assert p.accept(submit_fields(**reply), {}, who(), NOW + 2).record.source_addr == "393400000001"


def test_smart_rotation_through_the_pipeline():
    p, _ = with_numbers()
    got = [p.accept(submit_fields(service_type=b"SMART"), {}, who(), NOW).record.source_addr for _ in range(4)]
    assert got == ["393500000001", "393500000002"] * 2
