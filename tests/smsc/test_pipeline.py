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
from staffetta.router.record import decode_tlv_stream, validity_period
from staffetta.router.routes import Routing
from staffetta.router.table import RouteQuery, table_from_config
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


class _View:
    def __init__(self, up: bool) -> None:
        self.up = up
        self.delivery_ratio = None


class Routes:
    """The router's answers the pipeline asks for, from a real route table over two connectors."""

    def __init__(self, routes: list | None = None, room: bool = True, up: tuple[str, ...] = ("a", "b")) -> None:
        self.routing = Routing(table_from_config(routes, ["a", "b"]))
        self.views = {n: _View(n in up) for n in ("a", "b")}
        self.room = room
        self.asked: list[RouteQuery] = []

    def query(self, account, a, now, mccmnc=None) -> RouteQuery:
        return self.routing.query(account, a, now, mccmnc)

    def choose(self, q: RouteQuery):
        self.asked.append(q)
        return self.routing.choose(q, self.views)

    def can_accept(self, choice) -> bool:
        return self.room

    def needs_lookup(self, q: RouteQuery) -> bool:
        return self.routing.needs_lookup(q)


NOWHERE = [{"name": "fr", "match": {"country": "FR"}, "connectors": ["a"]}]


def make(routes: Routes | None = None) -> tuple[SubmitPipeline, list[int]]:
    routes = routes or Routes()
    issued: list[int] = []

    def ids() -> int:
        issued.append(100 + len(issued))
        return issued[-1]

    p = SubmitPipeline(routes=routes, message_ids=ids, default_validity=3 * DAY, max_validity=7 * DAY)
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
    [(Routes(NOWHERE), NO_ROUTE_STATUS), (Routes(room=False), Status.ESME_RMSGQFUL),
     (Routes([{"name": "closed", "strategy": "refuse", "status": "ESME_RINVDSTADR"}]), Status.ESME_RINVDSTADR)],
    ids=["no rule matches", "queue full", "refuse rule"],
)
def test_route_refusals_spend_no_tokens(routes, status):
    p, _ = make(routes)
    bucket = TokenBucket(1, NOW)
    got = p.accept(submit_fields(), {}, who(bucket=bucket), NOW)
    assert type(got) is Refused and got.status == status
    assert bucket.tokens == 1  # the route is decided before the throttle


def test_route_is_chosen_for_account_destination_and_type():
    routes = Routes([
        {"name": "pro", "match": {"type": "PRO"}, "connectors": ["b"]},
        {"name": "italy", "match": {"account": "acme", "prefix": "39348", "country": "IT"},
         "connectors": ["a", "b"], "strategy": "failover"},
    ], up=("b",))
    p, _ = make(routes)
    got = p.accept(submit_fields(service_type=b"SMART", destination_addr=b"+393481234567"), {}, who(), NOW)
    assert type(got) is Accepted
    q = routes.asked[0]
    assert (q.account, q.destination, q.msg_type, q.country) == ("acme", "393481234567", "SMART", "IT")
    assert got.route.route == got.record.route == "italy"
    assert got.route.order == ("b", "a")  # failover: the connector that is up first


def test_a_route_on_the_serving_network_asks_for_a_lookup_and_decides_with_its_answer():
    routes = Routes([
        {"name": "ported", "match": {"mccmnc": "22210"}, "connectors": ["b"]},
        {"name": "rest", "connectors": ["a"]},
    ])
    p, _ = make(routes)
    need = p.accept(submit_fields(), {}, who(), NOW)  # the account itself asks for no lookup
    assert type(need) is NeedsLookup and need.mode == "cached"
    ported = HlrResult(need.number, "valid", "222", "10", ported=True)
    got = p.looked_up(need, SEND, ported)
    assert type(got) is Accepted and got.route.route == "ported" and got.record.mccmnc == "22210"
    need = p.accept(submit_fields(), {}, who(), NOW)
    got = p.looked_up(need, SEND, HlrResult(need.number, "valid", "222", "01"))
    assert got.route.route == "rest"


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
        "submit refused for acme: 0x00000014 route default: queue of a full",
        "submit refused for acme: 0x00000401 no credit",
    ]
