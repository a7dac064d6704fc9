"""Automatic replies (keywords, HELP, a STOP's confirmation) as MT through the submit pipeline.

A keyword's reply is a message like any other: the same
:class:`smsc.pipeline.SubmitPipeline` judges it (type, sender, text, route,
price) for the owning account, and its debit and row are committed in the
MO's own transaction (``mo_in``, router/mo_store.py), so the carrier's MO is
acknowledged only when the reply is paid and stored, or known unpaid. Two
differences from a client's submit, both because the reply goes to a handset
that has just written: no HLR lookup, and no per-credential throttle (no
credential sent it).
"""

from __future__ import annotations

import logging
from typing import Any

from staffetta.pdu.codec import Pdu, decode, encode
from staffetta.pdu.constants import Command, Tag
from staffetta.pdu.segments import choose_encoding
from staffetta.pdu.text import data_coding_for
from staffetta.smsc.pipeline import Accepted, Submitter

log = logging.getLogger(__name__)


def reply_submit(sender: str, handset: str, text: str, msg_type: str) -> Pdu:
    """The submit_sm an automatic reply would be, decoded as a client's would be."""
    alphabet, octets = choose_encoding(text)
    fields = {
        "service_type": msg_type.encode(),
        "source_addr_ton": 1 if sender.isdigit() else 5,
        "source_addr_npi": 1 if sender.isdigit() else 0,
        "source_addr": sender.encode(),
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": handset.encode(),
        "data_coding": data_coding_for(alphabet),
    }
    tlvs = {}
    if len(octets) > 254:
        tlvs[Tag.message_payload] = octets
    else:
        fields["short_message"] = octets
    return decode(encode(Pdu(Command.SUBMIT_SM, 1, 0, fields, tlvs)))


class AutoReplies:
    """What :class:`router.mo.MoRouter` calls to make and send a reply (its ``Replies``)."""

    def __init__(self, hub) -> None:
        self.hub = hub

    def make(self, account_id: int, sender: str, handset: str, text: str, msg_type: str,
             now: float) -> tuple[Any, int] | None:
        hub = self.hub
        account = hub.accounts.get(account_id)
        if account is None:
            return None
        pdu = reply_submit(sender, handset, text, msg_type)
        who = Submitter(account, hub._policy(account), hub.plan_for(account), None, "off")
        outcome = hub.pipeline.accept(pdu.fields, pdu.tlvs, who, now)
        if type(outcome) is not Accepted:
            log.warning("automatic reply of %s to %s refused: %r", account.name, handset, outcome)
            return None
        return outcome.record, outcome.price

    def paid(self, record, price: int) -> None:
        hub = self.hub
        name = hub.metrics.account_name(record.account_id)
        hub.metrics.debited(name, record.msg_type, price)
        hub.pipeline.stored(record, hub.reactor.seconds())  # a pool sender opens the reply window
        hub.router.forward(record)
