"""The submit pipeline: every rule a submit_sm passes before its durable write, without I/O.

The model is h11's ``Connection``: :meth:`SubmitPipeline.accept` takes a
decoded submit_sm, who sent it (:class:`Submitter`, the live settings of its
account and credential) and the time, and returns what to do:

* :class:`Refused` ``(status, reason)``: answer with that status, store nothing;
* :class:`NeedsLookup`: the account wants an HLR lookup; the caller runs it
  (asynchronously) and feeds the answer back with :meth:`SubmitPipeline.looked_up`
  or :meth:`SubmitPipeline.lookup_failed`, which return one of the other two;
* :class:`Accepted` ``(record, route, price, hlr)``: write ``record`` (debit
  ``price``) in the group commit, then answer and hand it to ``route``.

The rules, in order: validation, message type and sender policy
(:func:`pdu.message.assess_submit`), the route (the route table's first
matching rule and its candidates, then room in the chosen connector's queue),
the credential's throughput (its token bucket), the price
(:func:`billing.plans.quote`), the HLR decision. The route comes before the
throttle and the lookup so that a message the hub cannot route spends neither
tokens nor a charged lookup. A rule that routes on the serving network
(MCC-MNC) asks for a lookup even when the account has none, and the route is
decided again with its answer (a ported number goes to the network that
serves it). The Twisted protocol (:mod:`smsc.server`) moves
PDUs and calls this; every rule is tested here without a reactor
(tests/smsc/test_pipeline.py). Every refusal is logged at INFO with its status
and reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from staffetta.billing.accounts import Account
from staffetta.billing.plans import PricePlan, quote
from staffetta.hlr.service import REFUSE_DEST, REFUSE_SYSERR
from staffetta.pdu.constants import Status
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.message import AccountPolicy, Assessment, assess_submit
from staffetta.router.record import MessageRecord
from staffetta.router.routes import Choice
from staffetta.router.schedule import lifetime
from staffetta.router.table import RouteQuery
from staffetta.smsc.throttle import TokenBucket

log = logging.getLogger(__name__)

#: A message no route takes is refused, never accepted and stranded (docs/configuration.md).
NO_ROUTE_STATUS = int(Status.STAFFETTA_RNOROUTE)  # 0x403, vendor range: docs/conformance.md

_RMSGQFUL = int(Status.ESME_RMSGQFUL)
_RTHROTTLED = int(Status.ESME_RTHROTTLED)
_RNORATE = int(Status.STAFFETTA_RNORATE)
_RINVDSTADR = int(Status.ESME_RINVDSTADR)
_RSYSERR = int(Status.ESME_RSYSERR)


class Submitter:
    """Who submits, as the pipeline reads them: the live settings of one credential and its account.

    The hub builds one per credential and builds it again when a setting of
    the account or credential changes (``billing.accounts`` settings version),
    so a session bound before the change obeys it at its next message.
    """

    __slots__ = ("account", "policy", "plan", "bucket", "hlr_mode")

    def __init__(self, account: Account, policy: AccountPolicy, plan: PricePlan,
                 bucket: TokenBucket | None, hlr_mode: str) -> None:
        self.account = account
        self.policy = policy
        self.plan = plan
        self.bucket = bucket  # None: no throughput limit
        self.hlr_mode = hlr_mode  # off | cached | always


class Refused:
    """Answer the submit with ``status``; nothing is stored or charged (but a lookup already made)."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"Refused(0x{self.status:08X}, {self.reason!r})"


class Accepted:
    """Every rule passed: ``record`` is to be written with a debit of ``price``, then sent on ``route``.

    ``route`` is the routing decision (:class:`router.routes.Choice`: the rule
    and the connectors to try); ``hlr`` is the serving MCC-MNC when a lookup
    found one (also on the record).
    """

    __slots__ = ("record", "route", "price", "hlr")

    def __init__(self, record: MessageRecord, route: Choice, price: int, hlr: str | None) -> None:
        self.record = record
        self.route = route
        self.price = price
        self.hlr = hlr


class NeedsLookup:
    """The account wants an HLR lookup of ``number`` before the message is accepted.

    Run ``HlrService.check(number, account_id, mode=mode, ...)`` and give its
    answer to :meth:`SubmitPipeline.looked_up` (or the failure to
    :meth:`SubmitPipeline.lookup_failed`) with this object.
    """

    __slots__ = ("number", "account_id", "mode", "_fields", "_tlvs", "_assessment", "_who",
                 "_route", "_price", "_now", "_query")

    def __init__(self, number: str, account_id: int, mode: str, fields: dict, tlvs: dict,
                 assessment: Assessment, who: Submitter, route: Choice | None, price: int, now: float,
                 query: RouteQuery | None = None) -> None:
        self.number = number
        self.account_id = account_id
        self.mode = mode
        self._fields = fields
        self._tlvs = tlvs
        self._assessment = assessment
        self._who = who
        self._route = route
        self._price = price
        self._now = now
        #: Set when the route depends on the serving network: decided again after the lookup.
        self._query = query


Outcome = Accepted | Refused | NeedsLookup


class Routes(Protocol):
    """What the pipeline asks of the router (router.router.Router provides it)."""

    def query(self, account: str, a: Assessment, now: float, mccmnc: str | None = None) -> RouteQuery: ...

    def choose(self, q: RouteQuery) -> Choice | None: ...

    def can_accept(self, choice: Choice) -> bool: ...

    def needs_lookup(self, q: RouteQuery) -> bool: ...


class SubmitPipeline:
    """The rules of the submit path; one per hub, shared by its sessions, holding no per-message state.

    ``routes`` is the router (the table in force and the connectors' queues);
    ``message_ids()`` gives the next message id (only an accepted message
    takes one). Validity: a submit without one gets ``default_validity``
    seconds; a longer one is clamped to ``max_validity`` (conformance §11),
    not refused.
    """

    def __init__(self, *, routes: Routes, message_ids: Callable[[], int],
                 default_validity: float, max_validity: float,
                 check_schedule: Callable[[float, float], tuple[int, str] | None] | None = None) -> None:
        self.routes = routes
        #: ``(deliver_at, now)`` -> ``(status, reason)`` when a schedule cannot be held (Schedule.admit).
        self.check_schedule = check_schedule
        self.message_ids = message_ids
        self.default_validity = default_validity
        self.max_validity = max_validity

    def accept(self, fields: dict, tlvs: dict[int, bytes], who: Submitter, now: float) -> Outcome:
        """Judge one decoded submit_sm (``fields``, ``tlvs`` as the codec gives them) at ``now``."""
        account = who.account
        try:
            a = assess_submit(fields, tlvs, who.policy)
        except SubmitRejected as exc:
            return self.refuse(account, exc.status, f"{exc.field}: {exc.reason}")
        if a.schedule is not None and self.check_schedule is not None:
            held = self.check_schedule(a.schedule.timestamp(), now)
            if held is not None:
                return self.refuse(account, *held)
        routes = self.routes
        q = routes.query(account.name, a, now)
        route = routes.choose(q)
        by_network = routes.needs_lookup(q)
        if not by_network:
            refused = self._unroutable(account, a, route)
            if refused is not None:
                return refused
        bucket = who.bucket
        if bucket is not None and not bucket.take(a.segments, now):
            return self.refuse(account, _RTHROTTLED, f"over {bucket.rate:g} segments/s")
        # The quote is the debit: the same Assessment priced by the account's plan.
        price = quote(who.plan, a)
        if price is None:
            return self.refuse(account, _RNORATE,
                               f"plan {who.plan.name!r} has no {a.msg_type} rate for {a.destination.region}")
        if who.hlr_mode != "off" or by_network:
            mode = who.hlr_mode if who.hlr_mode != "off" else "cached"
            return NeedsLookup(a.destination.e164, account.id, mode, fields, tlvs, a, who,
                               route, price, now, q if by_network else None)
        return self._accepted(fields, tlvs, a, who, route, price, now, None)

    def _unroutable(self, account: Account, a: Assessment, route: Choice | None) -> Refused | None:
        """The refusal for a message the route table does not send anywhere now (None: it does)."""
        if route is None:
            return self.refuse(account, NO_ROUTE_STATUS, f"no route for {a.msg_type} to {a.destination.e164}")
        if not route.order:
            why = "refuse rule" if route.rule.strategy == "refuse" else "no connector can take it"
            return self.refuse(account, route.status, f"route {route.route}: {why}")
        if not self.routes.can_accept(route):
            return self.refuse(account, _RMSGQFUL, f"route {route.route}: queue of {route.order[0]} full")
        return None

    def looked_up(self, need: NeedsLookup, decision: str, result: Any) -> Accepted | Refused:
        """The HLR service's ``(decision, result)`` for ``need``."""
        account = need._who.account
        if decision == REFUSE_DEST:
            return self.refuse(account, _RINVDSTADR, f"HLR: {need.number} is not reachable")
        if decision == REFUSE_SYSERR:
            return self.refuse(account, _RSYSERR, "HLR unavailable and failure_policy is closed")
        mccmnc = result.mccmnc if result is not None and result.status == "valid" else None
        route = need._route
        if need._query is not None:  # the route depends on the serving network: decide it now
            routes = self.routes
            route = routes.choose(routes.query(account.name, need._assessment, need._now, mccmnc))
            refused = self._unroutable(account, need._assessment, route)
            if refused is not None:
                return refused
        return self._accepted(need._fields, need._tlvs, need._assessment, need._who, route,
                              need._price, need._now, mccmnc)

    def lookup_failed(self, need: NeedsLookup, charge_refused: bool, error: str) -> Refused:
        """The lookup raised: its charge was refused (no credit), or it failed outright."""
        account = need._who.account
        if charge_refused:
            return self.refuse(account, account.nocredit_status, "no credit for the HLR lookup")
        log.error("HLR lookup failed: %s", error)  # not the client's doing: said louder than a refusal
        return self.refuse(account, _RSYSERR, f"HLR lookup failed: {error}")

    def refuse(self, account: Account, status: int, reason: str) -> Refused:
        """A refusal, logged at INFO (``-v`` shows every one); also for the ones decided at commit."""
        log.info("submit refused for %s: 0x%08X %s", account.name, status, reason)
        return Refused(status, reason)

    def _accepted(self, fields: dict, tlvs: dict[int, bytes], a: Assessment, who: Submitter,
                  route: Choice, price: int, now: float, mccmnc: str | None) -> Accepted:
        deliver_at, expires_at = lifetime(a.schedule, a.validity, now, self.default_validity, self.max_validity)
        record = MessageRecord.from_submit(self.message_ids(), who.account.id, fields, tlvs, a, now,
                                           expires_at, route.rule.name, mccmnc, deliver_at)
        return Accepted(record, route, price, mccmnc)
