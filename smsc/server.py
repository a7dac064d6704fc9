"""The ESME-facing SMPP server: bind, submit, query, and receipts to clients.

Rules of the protocol are in :class:`pdu.session.Session`; this module holds
the business of each request. The submit path is: assess (pdu.message) ->
message row into the group commit -> submit_sm_resp with our id -> router.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from twisted.internet import protocol

from staffetta.billing.accounts import Credential
from staffetta.billing.plans import quote
from staffetta.hlr.service import REFUSE_DEST, REFUSE_SYSERR, ChargeRefused
from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import FINAL_STATES, Command, Status, Tag
from staffetta.pdu.errors import SubmitRejected
from staffetta.pdu.message import AccountPolicy, assess_submit
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.session import Outstanding, Side
from staffetta.router import messages as store
from staffetta.router.messages import Delivery
from staffetta.router.router import Tracked, encode_tlv_stream
from staffetta.smsc.binds import BindHandling

log = logging.getLogger(__name__)

# Enum members read per message, as globals (an Enum class attribute costs ~120 ns
# on Python 3.11: see pdu/session.py).
_SUBMIT_SM = Command.SUBMIT_SM
_DELIVER_SM = Command.DELIVER_SM
_ROK = Status.ESME_ROK
_USER_MESSAGE_REFERENCE = Tag.user_message_reference

class HubProtocol(BindHandling, SessionProtocol):
    side = Side.SMSC

    def __init__(self, hub, **kw) -> None:
        super().__init__(**kw)
        self.hub = hub
        self.credential: Credential | None = None
        self.policy: AccountPolicy | None = None
        self.bucket = None  # the credential's TokenBucket when it has a max_rate
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
        hub.outbox.detach(c.account.id, self)  # a no-op for a session that never received
        for p in pending:
            if p.command_id == Command.DELIVER_SM and isinstance(p.context, Delivery):
                hub.outbox.failed(p.context)
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
        hub = self.hub
        started = time.perf_counter()
        account = self.credential.account
        if not hub.router.can_accept():
            self._answer_submit(pdu, Status.ESME_RMSGQFUL, started)
            return
        try:
            a = assess_submit(pdu.fields, pdu.tlvs, self.policy)
        except SubmitRejected as exc:
            log.debug("submit refused for %s: %s", account.name, exc)
            self._answer_submit(pdu, exc.status, started)
            return
        bucket = self.bucket
        if bucket is not None and not bucket.take(a.segments, hub.reactor.seconds()):
            self._answer_submit(pdu, Status.ESME_RTHROTTLED, started)
            return
        # The quote is the debit: the same Assessment priced by the account's plan.
        price = quote(hub.plan_for(account), a)
        if price is None:
            hub.metrics.rejected_for_credit.labels(account.name, "no_rate").inc()
            self._answer_submit(pdu, Status.STAFFETTA_RNORATE, started)
            return
        mode = hub.hlr_mode(account)
        if mode == "off":
            self._store(pdu, a, price, started, None)
            return
        # The lookup runs while the session keeps serving other PDUs; this one
        # keeps its inbound window slot until it is answered.
        d = hub.hlr.check(a.destination.e164, account.id, mode=mode,
                          failure_policy=hub.settings.hlr.failure_policy)
        d.addCallbacks(lambda r: self._after_hlr(pdu, a, price, started, *r),
                       lambda f: self._hlr_failed(pdu, started, f))

    def _after_hlr(self, pdu: Pdu, a, price: int, started: float, decision: str, result) -> None:
        if decision == REFUSE_DEST:
            self._answer_submit(pdu, Status.ESME_RINVDSTADR, started)
        elif decision == REFUSE_SYSERR:
            self._answer_submit(pdu, Status.ESME_RSYSERR, started)
        else:
            mccmnc = result.mccmnc if result is not None and result.status == "valid" else None
            self._store(pdu, a, price, started, mccmnc)

    def _hlr_failed(self, pdu: Pdu, started: float, failure) -> None:
        if failure.check(ChargeRefused):
            self._answer_submit(pdu, self.credential.account.nocredit_status, started)
            return
        log.error("HLR lookup failed: %s", failure.getErrorMessage())
        self._answer_submit(pdu, Status.ESME_RSYSERR, started)

    def _store(self, pdu: Pdu, a, price: int, started: float, mccmnc: str | None) -> None:
        """Debit and store in one group commit; answer only after it."""
        hub = self.hub
        account = self.credential.account
        f = pdu.fields
        mid = hub.message_ids()
        now = hub.reactor.seconds()
        # NULL validity: the hub's default; a longer one is clamped, not refused.
        validity = min(a.validity.timestamp(), now + hub.max_validity) if a.validity else now + hub.default_validity
        sender = a.sender
        dest = a.destination.e164
        tlvs = pdu.tlvs
        tlv_blob = encode_tlv_stream(tlvs) if tlvs else b""
        row = {
            "id": mid,
            "account_id": account.id,
            "source_addr": sender.addr,
            "source_ton": sender.ton,
            "source_npi": sender.npi,
            "destination": dest,
            "service_type": f["service_type"].decode("ascii", "replace"),
            "msg_type": a.msg_type,
            "esm_class": f["esm_class"],
            "protocol_id": f["protocol_id"],
            "priority": f["priority_flag"],
            "registered_delivery": f["registered_delivery"],
            "data_coding": f["data_coding"],
            "short_message": f["short_message"],
            "tlvs": tlv_blob,
            "segments": a.segments,
            "submitted_at": now,
            "expires_at": validity,
            "phase": store.QUEUED,
            "state": 1,  # ENROUTE
            "err": 0,
            "done_at": None,
            "connector": None,
            "upstream_id": None,
            "mccmnc": mccmnc,
        }
        up_fields = {
            "service_type": b"",
            "source_addr_ton": sender.ton,
            "source_addr_npi": sender.npi,
            "source_addr": sender.addr.encode(),
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": dest.encode(),
            "esm_class": f["esm_class"],
            "protocol_id": f["protocol_id"],
            "priority_flag": f["priority_flag"],
            "validity_period": f["validity_period"],
            "registered_delivery": 1,  # we always need the outcome
            "data_coding": f["data_coding"],
            "short_message": f["short_message"],
        }
        text20 = (a.text or "")[:20]
        tracked = Tracked(
            mid, account.id, sender.addr, sender.ton, sender.npi, dest,
            f["registered_delivery"], now, text20, tlvs.get(_USER_MESSAGE_REFERENCE),
        )

        def committed(result):
            paid, report = result
            if report is not None:
                hub.billing_report(report)
            if not paid:
                # Nothing was stored and nothing will be sent.
                hub.metrics.rejected_for_credit.labels(account.name, "no_credit").inc()
                self._answer_submit(pdu, account.nocredit_status, started)
                return
            self._answer_submit(pdu, _ROK, started, {"message_id": str(mid).encode()})
            hub.metrics.debited(account.name, a.msg_type, price)
            hub.router.forward(tracked, up_fields, tlvs, validity)

        def failed(exc):
            log.error("storing message failed: %s", exc)
            self._answer_submit(pdu, Status.ESME_RSYSERR, started)

        hub.writer.submit_then("paid_messages", (row, price), committed, failed)

    def _answer_submit(self, pdu: Pdu, status: int, started: float, fields=None) -> None:
        self.session.respond(pdu, status, fields)
        self.flush()
        self.hub.metrics.submitted(self.credential.account.name, status, time.perf_counter() - started)

    # cancel ------------------------------------------------------------------

    def _cancel(self, pdu: Pdu) -> None:
        """Withdraw messages still waiting for the carrier (3.4 §4.9); sent ones cannot be."""
        f = pdu.fields
        raw = f["message_id"]
        source = f["source_addr"].lstrip(b"+").decode("ascii", "replace")
        if raw:
            if not raw.isdigit() or len(raw) > 18:
                self.session.respond(pdu, Status.ESME_RCANCELFAIL)
                return
            n = self.hub.router.cancel(self.credential.account.id, int(raw), source, None)
        else:
            if not source:
                self.session.respond(pdu, Status.ESME_RCANCELFAIL)
                return
            dest = f["destination_addr"].lstrip(b"+").decode("ascii", "replace") or None
            n = self.hub.router.cancel(self.credential.account.id, None, source, dest)
        self.session.respond(pdu, Status.ESME_ROK if n else Status.ESME_RCANCELFAIL)

    # query -------------------------------------------------------------------

    def _query(self, pdu: Pdu) -> None:
        raw = pdu.fields["message_id"]
        if not raw.isdigit() or len(raw) > 18:
            self.session.respond(pdu, Status.ESME_RQUERYFAIL)
            return
        account_id = self.credential.account.id
        src = pdu.fields["source_addr"].lstrip(b"+").decode("ascii", "replace")

        def answer(row):
            if row is None or (src and row["source_addr"] != src):
                self.session.respond(pdu, Status.ESME_RQUERYFAIL)
            else:
                final = b""
                if row["state"] in FINAL_STATES and row["done_at"]:
                    final = smpp_absolute(row["done_at"])
                self.session.respond(
                    pdu,
                    Status.ESME_ROK,
                    {
                        "message_id": raw,
                        "final_date": final,
                        "message_state": row["state"],
                        "error_code": row["err"] & 0xFF,
                    },
                )
            self.flush()

        def failed(f):
            log.error("query_sm failed: %s", f.getErrorMessage())
            self.session.respond(pdu, Status.ESME_RSYSERR)
            self.flush()

        self.hub.read(store.message_for_account, int(raw), account_id).addCallbacks(answer, failed)

    # --------------------------------------------------------- outbox sink

    @property
    def window_free(self) -> int:
        s = self.session
        return s.window_free if s.can_receive and not self._closed else 0

    def send_delivery(self, delivery: Delivery) -> None:
        self.session.send_encoded(delivery.pdu, delivery)
        self.flush()

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        if request.command_id == _DELIVER_SM and isinstance(request.context, Delivery):
            self.hub.outbox.acknowledged(request.context, pdu.status)

    def on_timeout(self, request: Outstanding) -> None:
        if isinstance(request.context, Delivery):
            self.hub.outbox.failed(request.context)


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
