"""The MO path's sans-IO parts: reading a carrier MO, the owner's deliver_sm, the webhook signature and schedule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, task

from staffetta.pdu.codec import Pdu, decode
from staffetta.pdu.constants import Command, Status, Tag
from staffetta.pdu.receipt import DELIVER_SM_NULL, mo_octets
from staffetta.pdu.segments import udh_concat
from staffetta.router.mo import MoRejected, read_inbound, text_of
from staffetta.router.mo_store import DEAD, WebhookJob
from staffetta.router.webhooks import Schedule, Webhooks, signature, verify


def deliver(sm: bytes = b"hi", esm: int = 0, tlvs=None, **fields) -> Pdu:
    f = {**DELIVER_SM_NULL, "source_addr": b"393331234567", "destination_addr": b"393400000001",
         "source_addr_ton": 1, "source_addr_npi": 1, "esm_class": esm, "short_message": sm, **fields}
    return Pdu(Command.DELIVER_SM, 1, 0, f, tlvs or {})


def test_a_data_sm_mo_reads_its_message_payload():
    f = {k: v for k, v in deliver().fields.items() if k not in ("short_message", "sm_default_msg_id",
                                                                  "replace_if_present_flag", "priority_flag",
                                                                  "schedule_delivery_time", "validity_period",
                                                                  "protocol_id")}
    inb = read_inbound("sim", Pdu(Command.DATA_SM, 1, 0, f, {Tag.message_payload: b"long text"}), 0)
    assert inb.data == b"long text" and inb.total == 1


def test_a_whole_mo_is_read_as_it_came():
    inb = read_inbound("sim", deliver(b"Ciao"), 5.0)
    assert (inb.source, inb.destination, inb.data, inb.total, inb.received_at) == (
        "393331234567", "393400000001", b"Ciao", 1, 5.0)


@pytest.mark.parametrize("ref16", [False, True])
def test_udh_parts_are_read_with_their_reference(ref16):
    inb = read_inbound("sim", deliver(udh_concat(300 if ref16 else 7, 3, 2, ref16) + b"xyz", 0x40), 0)
    assert (inb.ref, inb.total, inb.seq, inb.ref16, inb.data) == (300 if ref16 else 7, 3, 2, ref16, b"xyz")


def test_sar_parts_are_read():
    tlvs = {Tag.sar_msg_ref_num: b"\x01\x02", Tag.sar_total_segments: b"\x02", Tag.sar_segment_seqnum: b"\x01"}
    inb = read_inbound("sim", deliver(b"abc", tlvs=tlvs), 0)
    assert (inb.ref, inb.total, inb.seq) == (0x0102, 2, 1)


@pytest.mark.parametrize("pdu,status", [
    (deliver(b"\x05\x00\x03\x07\x03", 0x40), Status.ESME_RINVMSGLEN),  # UDH runs past the data
    (deliver(b"\x05\x00\x03\x07\x02\x03xx", 0x40), Status.ESME_RINVMSGLEN),  # part 3 of 2
    (deliver(source_addr=b""), Status.ESME_RINVSRCADR),
    (deliver(destination_addr=b""), Status.ESME_RINVDSTADR),
    (deliver(b"x", tlvs={Tag.message_payload: b"y"}), Status.ESME_RINVMSGLEN),
    (deliver(tlvs={Tag.sar_msg_ref_num: b"\x01", Tag.sar_total_segments: b"\x02",
                   Tag.sar_segment_seqnum: b"\x01"}), Status.ESME_RINVMSGLEN),
])
def test_a_malformed_mo_is_refused_with_its_status(pdu, status):
    with pytest.raises(MoRejected) as e:
        read_inbound("sim", pdu, 0)
    assert e.value.status == status


def test_the_owners_deliver_sm_carries_a_long_mo_in_message_payload():
    short = decode(mo_octets(b"39333", 1, 1, b"39340", 1, 1, 8, "ciao".encode("utf-16-be")))
    assert short.command_id == Command.DELIVER_SM and short.sequence == 0
    assert (short.fields["esm_class"], short.fields["data_coding"]) == (0, 8)
    assert text_of(short.fields["short_message"], 8) == "ciao"
    long = decode(mo_octets(b"39333", 1, 1, b"39340", 1, 1, 0, b"a" * 300))
    assert long.fields["short_message"] == b"" and long.tlvs[Tag.message_payload] == b"a" * 300
    part = decode(mo_octets(b"39333", 1, 1, b"39340", 1, 1, 0, b"p1", udh=udh_concat(9, 3, 1)))
    assert part.fields["esm_class"] == 0x40 and part.fields["short_message"] == udh_concat(9, 3, 1) + b"p1"


_addr = st.binary(min_size=1, max_size=21).filter(lambda b: 0 not in b)


@given(_addr, st.integers(0, 255), st.integers(0, 255), _addr, st.integers(0, 300), st.binary(max_size=400),
       st.booleans())
def test_the_fast_mo_octets_equal_the_general_encoder(handset, ton, dc, number, npi, data, udh):
    from staffetta.pdu.codec import encode
    from staffetta.pdu.receipt import mo_fields

    h = udh_concat(7, 3, 2) if udh else b""
    args = (handset, ton, 1, number, 1, npi, dc, data)
    try:
        want = encode(Pdu(Command.DELIVER_SM, 0, 0, *mo_fields(*args, udh=h)))
    except Exception as exc:  # the general encoder refuses it: so must the fast one
        with pytest.raises(type(exc)):
            mo_octets(*args, udh=h)
        return
    assert mo_octets(*args, udh=h) == want


@given(st.binary(max_size=2000), st.text(min_size=1, max_size=64), st.integers(0, 2**33))
def test_a_signature_verifies_over_exactly_the_body_and_secret(body, secret, t):
    header = signature(secret, t, body)
    assert verify(secret, header, body, now=t)
    assert not verify(secret, header, body + b"x", now=t)
    assert not verify(secret + "x", header, body, now=t)
    assert not verify(secret, header, body, now=t + 301)  # too old: a replay


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    want = hmac.new(b"whsec", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature("whsec", 1700000000, b"{}") == f"t=1700000000,v1={want}"


def test_the_schedule_doubles_caps_and_gives_up_after_retry_for():
    s = Schedule(first_retry=10, max_delay=3600, retry_for=86400)
    t, delays, attempts = 0.0, [], 0
    while True:
        attempts += 1
        due = s.next_at(0.0, attempts, t)
        if due is None:
            break
        delays.append(due - t)
        t = due
    assert delays[:4] == [10, 20, 40, 80] and max(delays) == 3600
    assert 86400 - 3600 <= t <= 86400  # retried for 24 hours, then dead


class Writer:
    """The group commit seen from the scheduler: what it enqueued (nothing here reads it back)."""

    def __init__(self) -> None:
        self.items: list[tuple] = []

    def enqueue(self, kind, item) -> None:
        self.items.append((kind, item))


def test_a_webhook_failing_for_24_hours_is_a_dead_letter_on_a_clock():
    clock = task.Clock()
    writer = Writer()
    calls = []
    events = []

    class Metrics:
        def webhook(self, account_id, event):
            events.append(event)

    def post(url, headers, body):
        calls.append(clock.seconds())
        return defer.succeed(500)

    hooks = Webhooks(writer, clock, lambda a: ("http://127.0.0.1:9/x", "k" * 16), post, metrics=Metrics())
    hooks.add(WebhookJob(1, 10, 1, b"{}", 0.0, 0, 0.0))
    clock.advance(0)
    for _ in range(200):
        clock.advance(3600)
    assert writer.items[-1][1][1] == DEAD and len(hooks) == 0
    assert events[-1] == "dead" and events.count("retried") == len(calls) - 1
    assert calls[-1] <= 86400 and 86400 - calls[-1] < 3600 * 2
