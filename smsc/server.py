"""The ESME-facing SMPP server: bind, submit, query, and receipts to clients.

Rules of the protocol are in :class:`pdu.session.Session`; this module holds
the business of each request. The submit path is: the pipeline's rules
(smsc.pipeline, sans-IO) -> message record into the group commit ->
submit_sm_resp with our id -> router (the route the pipeline chose).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from twisted.internet import protocol

from staffetta.billing.accounts import Credential
from staffetta.hlr.service import ChargeRefused
from staffetta.pdu.addresses import check_sender, normalize_destination
from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import FINAL_STATES, Command, MessageState, Npi, Status, Ton
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.message import AccountPolicy
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.session import Outstanding, Side
from staffetta.router import messages as store
from staffetta.router.messages import Delivery
from staffetta.router.record import SCHEDULED
from staffetta.smsc.binds import BindHandling
from staffetta.smsc.pipeline import Accepted, NeedsLookup, Refused

log = logging.getLogger(__name__)

# Enum members read per message, as globals (an Enum class attribute costs ~120 ns
# on Python 3.11: see pdu/session.py).
_SUBMIT_SM = Command.SUBMIT_SM
_DELIVER_SM = Command.DELIVER_SM
_ROK = Status.ESME_ROK
_RNORATE = Status.STAFFETTA_RNORATE

class HubProtocol(BindHandling, SessionProtocol):
    side = Side.SMSC

    def __init__(self, hub, **kw) -> None:
        super().__init__(**kw)
        self.hub = hub
        self.credential: Credential | None = None
        self.peer = "?"
        self._bind_type: str | None = None

    # ---------------------------------------------------------------- life

    def on_connected(self) -> None:
        peer = self.transport.getPeer()
        self.peer = getattr(peer, "host", "?")

    def on_closed(self, reason: str, pending: list[Outstanding]) -> None:
        hub = self.hub
        hub.clients.discard(self)
        c = self.credential
        if c is None:
            return
        # A no-op for a session that never received; else what was in flight goes back in order.
        hub.outbox.detach(c.account.id, self)
        if self._bind_type:
            hub.metrics.session_bound(c.account.name, self._bind_type, -1)
            self._bind_type = None
        hub.sessions_by_account.get(c.account.id, set()).discard(self)

    # ------------------------------------------------------------- requests

    def on_request(self, pdu: Pdu) -> None:
        cid = pdu.command_id
        if cid == _SUBMIT_SM:
            self._submit(pdu)
        elif cid in (Command.BIND_TRANSCEIVER, Command.BIND_TRANSMITTER, Command.BIND_RECEIVER):
            self._bind(pdu)
        elif cid == Command.QUERY_SM:
            self._query(pdu)
        elif cid == Command.CANCEL_SM:
            self._cancel(pdu)
        else:  # replace_sm, submit_multi, data_sm: not offered in this version
            self.session.respond(pdu, Status.ESME_RINVCMDID)
        self.flush()

    # bind: smsc.binds.BindHandling

    # submit ------------------------------------------------------------------

    def _submit(self, pdu: Pdu) -> None:
        """Every rule is the pipeline's; this only runs the HLR lookup it asks for, writes, answers."""
        hub = self.hub
        started = time.perf_counter()
        pipeline = hub.pipeline
        outcome = pipeline.accept(pdu.fields, pdu.tlvs, hub.submitter(self.credential), hub.reactor.seconds())
        if type(outcome) is NeedsLookup:
            # The lookup runs while the session keeps serving other PDUs; this one
            # keeps its inbound window slot until it is answered.
            need = outcome
            d = hub.hlr.check(need.number, need.account_id, mode=need.mode,
                              failure_policy=hub.settings.hlr.failure_policy)
            d.addCallbacks(
                lambda r: self._decided(pdu, started, pipeline.looked_up(need, *r)),
                lambda f: self._decided(pdu, started, pipeline.lookup_failed(
                    need, f.check(ChargeRefused) is not None, f.getErrorMessage())),
            )
            return
        self._decided(pdu, started, outcome)

    def _decided(self, pdu: Pdu, started: float, outcome: Accepted | Refused) -> None:
        if type(outcome) is Accepted:
            self._store(pdu, outcome, started)
            return
        if outcome.status == _RNORATE:
            self.hub.metrics.rejected_for_credit.labels(self.credential.account.name, "no_rate").inc()
        self._answer_submit(pdu, outcome.status, started)

    def _store(self, pdu: Pdu, accepted: Accepted, started: float) -> None:
        """Debit and store in one group commit; answer only after it, then hand it to its route."""
        hub = self.hub
        record = accepted.record
        price = accepted.price
        name = self.credential.account.name

        def committed(result):
            paid, report = result
            if report is not None:
                hub.billing_report(report)
            if not paid:
                # Nothing was stored and nothing will be sent.
                hub.metrics.rejected_for_credit.labels(name, "no_credit").inc()
                account = hub.submitter(self.credential).account  # its status as set now
                hub.pipeline.refuse(account, account.nocredit_status, "no credit")
                self._answer_submit(pdu, account.nocredit_status, started)
                return
            self._answer_submit(pdu, _ROK, started, {"message_id": str(record.id).encode()})
            hub.pipeline.stored(record, hub.reactor.seconds())
            hub.metrics.debited(name, record.msg_type, price)
            hub.router.forward(record, accepted.route)

        def failed(exc):
            log.error("storing message failed: %s", exc)
            self._answer_submit(pdu, Status.ESME_RSYSERR, started)

        hub.writer.submit_then("paid_messages", (record, price), committed, failed)

    def _answer_submit(self, pdu: Pdu, status: int, started: float, fields=None) -> None:
        self.session.respond(pdu, status, fields)
        self.flush()
        self.hub.metrics.submitted(self.credential.account.name, status, time.perf_counter() - started)

    # cancel ------------------------------------------------------------------

    def _cancel(self, pdu: Pdu) -> None:
        """Withdraw messages still waiting for the carrier (3.4 §4.9); sent ones cannot be.

        Addresses are read as the submit read them (:func:`_sender_of`,
        :func:`_destination_of`), so a national or '+' form finds the message.
        """
        f = pdu.fields
        raw = f["message_id"]
        policy = self.hub.submitter(self.credential).policy
        source = _sender_of(f, policy)
        if source is None:
            self.session.respond(pdu, Status.ESME_RCANCELFAIL)
            return
        if raw:
            if not raw.isdigit() or len(raw) > 18:
                self.session.respond(pdu, Status.ESME_RCANCELFAIL)
                return
            n = self.hub.router.cancel(self.credential.account.id, int(raw), source, None)
        else:
            dest = _destination_of(f, policy)
            if not source or dest is None:
                self.session.respond(pdu, Status.ESME_RCANCELFAIL)
                return
            n = self.hub.router.cancel(self.credential.account.id, None, source, dest or None)
        self.session.respond(pdu, Status.ESME_ROK if n else Status.ESME_RCANCELFAIL)

    # query -------------------------------------------------------------------

    def _query(self, pdu: Pdu) -> None:
        raw = pdu.fields["message_id"]
        if not raw.isdigit() or len(raw) > 18:
            self.session.respond(pdu, Status.ESME_RQUERYFAIL)
            return
        account_id = self.credential.account.id
        src = _sender_of(pdu.fields, self.hub.submitter(self.credential).policy)
        if src is None:
            self.session.respond(pdu, Status.ESME_RQUERYFAIL)
            return

        def answer(record):
            if record is None or (src and record.source_addr != src):
                self.session.respond(pdu, Status.ESME_RQUERYFAIL)
            else:
                final = b""
                if record.state in FINAL_STATES and record.done_at:
                    final = smpp_absolute(record.done_at)
                self.session.respond(
                    pdu,
                    Status.ESME_ROK,
                    {
                        "message_id": raw,
                        "final_date": final,
                        "message_state": self._state_of(record),
                        "error_code": record.err & 0xFF,
                    },
                )
            self.flush()

        def failed(f):
            log.error("query_sm failed: %s", f.getErrorMessage())
            self.session.respond(pdu, Status.ESME_RSYSERR)
            self.flush()

        self.hub.read(store.message_for_account, int(raw), account_id).addCallbacks(answer, failed)

    def _state_of(self, record) -> int:
        """query_sm's message_state: a message held for its schedule is SCHEDULED on its row.

        SCHEDULED (0, SMPP 5.0) is the default answer; 3.4 has no such state and
        5.0 §4.7.15 says 3.4 MCs answer ENROUTE for a scheduled message, so
        ``query_scheduled_state: enroute`` answers that for clients whose
        library rejects a 0 (docs/conformance.md).
        """
        state = record.state
        if state != SCHEDULED:
            return state
        if (self.hub.settings.query_scheduled_state == "scheduled"
                and record.deliver_at is not None and record.deliver_at > self.hub.reactor.seconds()):
            return SCHEDULED
        return MessageState.ENROUTE

    # --------------------------------------------------------- outbox sink

    @property
    def window_size(self) -> int:
        """deliver_sm this session may have unanswered (``session.window`` in the config)."""
        return self.session.window

    def receiving(self) -> int:
        """Room for new deliver_sm: none once unbinding (either side) or closed; answers still count."""
        s = self.session
        return s.window_free if s.can_receive and not self._closed else 0

    def send_delivery(self, delivery: Delivery) -> int:
        """The outbox window's send; it flushes once per burst."""
        return self.session.send_encoded(delivery.pdu, delivery)

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        if request.command_id == _DELIVER_SM and isinstance(request.context, Delivery):
            self.hub.outbox.answered(self.credential.account.id, self, request.sequence, pdu.status)

    def on_timeout(self, request: Outstanding) -> None:
        if isinstance(request.context, Delivery):
            self.hub.outbox.timed_out(self.credential.account.id, self, request.sequence)


def _sender_of(fields: dict, policy: AccountPolicy) -> str | None:
    """A query/cancel source_addr as the submit path normalised it ('' if empty; None if unreadable)."""
    addr = fields["source_addr"]
    if not addr:
        return ""
    digits = addr[1:] if addr[:1] == b"+" else addr
    # A lookup, not a submit: a name is read as alphanumeric whatever TON the
    # client put in (many send 0/0 in query_sm); a number keeps its TON.
    ton, npi = ((fields["source_addr_ton"], fields["source_addr_npi"]) if digits.isdigit()
                else (Ton.ALPHANUMERIC, Npi.UNKNOWN))
    try:
        return check_sender(addr, ton, npi, policy.sender_rules).addr
    except SubmitRejected:
        return None


def _destination_of(fields: dict, policy: AccountPolicy) -> str | None:
    """A cancel_sm destination_addr as the submit path normalised it ('' if empty; None if unreadable)."""
    addr = fields["destination_addr"]
    if not addr:
        return ""
    try:
        return normalize_destination(addr, fields["dest_addr_ton"], fields["dest_addr_npi"],
                                     policy.default_country_code).e164
    except SubmitRejected:
        return None


def smpp_absolute(ts: float) -> bytes:
    """A UTC time in the 16-character absolute form (YYMMDDhhmmss000+)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%y%m%d%H%M%S000+").encode()


class HubFactory(protocol.ServerFactory):
    def __init__(self, hub) -> None:
        self.hub = hub

    def buildProtocol(self, addr):  # noqa: N802
        hub = self.hub
        s = hub.settings.session
        p = HubProtocol(
            hub,
            clock=hub.reactor,
            timers=hub.timers,
            window=s.window,
            inbound_window=s.inbound_window,
            pdu_counts=hub.metrics.pdu_counts,
        )
        hub.clients.add(p)
        return p
