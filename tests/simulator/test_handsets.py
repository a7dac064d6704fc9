"""The handsets: multipart MO out of order, MO at a rate, replies to MT, over real TCP on 127.0.0.1."""

from __future__ import annotations

import random
import subprocess

import phonenumbers
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from staffetta.pdu.codec import Pdu, encode, tlv_int
from staffetta.pdu.constants import ESM_UDHI, Command, Tag
from staffetta.pdu.segments import parse_udh
from staffetta.pdu.text import GSM, UCS2, decode
from staffetta.simulator import cli
from staffetta.simulator.fleet import CarrierSpec, SpecError, parse_carrier_flag
from staffetta.simulator.handsets import Conversations, MoLoad, multipart_mo, part_order
from tests.simulator.conftest import sleep, within
from tests.syncesme import CLI, SyncEsme, free_port

inline = pytest_twisted.inlineCallbacks

LONG = "Ciao! " + "This handset writes a long message that its network cuts in several parts. " * 5


@defer.inlineCallbacks
def collect(esme, n: int):
    out = []
    for _ in range(n):
        out.append((yield esme.next_request()))
    return out


def reassemble(pdus) -> tuple[list[int], str]:
    """(part numbers in arrival order, the text put back together) from UDH or SAR parts."""
    arrived: list[int] = []
    chunks: dict[int, bytes] = {}
    alphabet = GSM
    for p in pdus:
        sm = p.fields["short_message"]
        if p.fields["data_coding"] == 8:
            alphabet = UCS2
        if p.fields["esm_class"] & ESM_UDHI:
            udh = parse_udh(sm)
            seq, body = udh.seq, sm[udh.header_len:]
        else:
            seq, body = tlv_int(p.tlvs[Tag.sar_segment_seqnum]), sm
        arrived.append(seq)
        chunks[seq] = body
    return arrived, decode(b"".join(chunks[k] for k in sorted(chunks)), alphabet)


@pytest.mark.parametrize("form", ["udh8", "udh16", "sar"])
@pytest.mark.parametrize("text", [LONG, "Ciao ☺ " * 30], ids=["gsm", "ucs2"])
@inline
def test_multipart_mo_arrives_out_of_order_and_reassembles(fleet, esme_to, form, text):
    f = fleet(CarrierSpec("c"))
    esme = yield esme_to(f, "c")
    d = multipart_mo(f.carriers["c"], "393331234567", "4000", text, form=form, order="reverse", ref=0x1234 & (
        0xFF if form == "udh8" else 0xFFFF))
    first = yield esme.next_request()
    total = parse_udh(first.fields["short_message"]).total if form != "sar" else \
        tlv_int(first.tlvs[Tag.sar_total_segments])
    assert total >= 3
    rest = yield collect(esme, total - 1)
    arrived, back = reassemble([first, *rest])
    assert arrived == list(range(total, 0, -1))
    assert back == text
    statuses = yield within(d)
    assert statuses == [0] * total
    p = first.fields
    assert (p["source_addr"], p["destination_addr"]) == (b"393331234567", b"4000")
    assert p["data_coding"] == (8 if "☺" in text else 0)
    if form == "udh8":
        assert p["short_message"][:5] == bytes((5, 0, 3, 0x34, total))
    elif form == "udh16":
        assert p["short_message"][:6] == bytes((6, 8, 4, 0x12, 0x34, total))
    else:
        assert p["esm_class"] == 0
        assert first.tlvs[Tag.sar_msg_ref_num] == b"\x12\x34"


def test_part_orders():
    rng = random.Random(1)
    assert part_order(4, "in_order", rng) == [1, 2, 3, 4]
    assert part_order(4, "last_first", rng) == [4, 1, 2, 3]
    assert part_order(3, [2, 3, 1], rng) == [2, 3, 1]
    assert sorted(part_order(6, "shuffle", rng)) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="permutation"):
        part_order(3, [1, 1, 2], rng)
    with pytest.raises(ValueError, match="order"):
        part_order(3, "sideways", rng)


@inline
def test_mo_load_holds_its_rate_and_waits_for_a_bind(fleet, esme_to):
    f = fleet(CarrierSpec("c"))
    carrier = f.carriers["c"]
    load = MoLoad(carrier, rate=200, n=100, to=["4000", "4001"], seed=3)
    done = load.start()
    yield sleep(0.2)
    assert load.result.sent == 0  # nobody bound yet: nothing sent, no queue built
    esme = yield esme_to(f, "c")
    t0 = reactor.seconds()
    pdus = yield collect(esme, 100)
    result = yield within(done)
    elapsed = reactor.seconds() - t0
    assert result.sent == result.answered == 100 and result.statuses == {0: 100}
    assert 0.4 <= elapsed <= 1.5  # 100 at 200/s: half a second
    sources = {p.fields["source_addr"] for p in pdus}
    assert len(sources) == 100
    assert all(phonenumbers.is_valid_number(phonenumbers.parse("+" + s.decode())) for s in sources)
    assert {p.fields["destination_addr"] for p in pdus} == {b"4000", b"4001"}
    assert result.as_dict()["per_s"] > 0


@inline
def test_mo_load_with_long_messages_sends_every_part(fleet, esme_to):
    f = fleet(CarrierSpec("c"))
    esme = yield esme_to(f, "c")
    load = MoLoad(f.carriers["c"], rate=100, n=6, long_share=1.0, seed=1)
    result = yield within(load.start())
    assert result.answered == 6
    pdus = yield collect(esme, len(esme.requests.pending))
    udh = [p for p in pdus if p.fields["esm_class"] & ESM_UDHI]
    sar = [p for p in pdus if Tag.sar_msg_ref_num in (p.tlvs or {})]
    assert udh and sar and len(udh) + len(sar) == len(pdus) >= 12  # two forms of UDH and SAR, 2+ parts each


@inline
def test_conversation_replies_to_the_mt_sender_after_the_delay(fleet, esme_to):
    f = fleet(CarrierSpec("c"))
    conv = Conversations(f.carriers["c"], share=1.0, delay=0.3, seed=1)
    esme = yield esme_to(f, "c")
    t0 = reactor.seconds()
    yield within(esme.submit(b"393331234567", b"Ciao Anna", registered_delivery=0, source_addr=b"393401112222",
                             source_addr_ton=1, source_addr_npi=1))
    yield within(esme.submit(b"393331234568", b"from a brand", registered_delivery=0))  # alphanumeric sender
    reply = yield esme.next_request()
    assert reactor.seconds() - t0 >= 0.29
    fl = reply.fields
    assert (fl["source_addr"], fl["destination_addr"]) == (b"393331234567", b"393401112222")
    assert fl["short_message"] == b"Re: Ciao Anna" and fl["esm_class"] == 0
    yield sleep(0.1)
    assert conv.stats["skipped_alphanumeric"] == 1 and conv.stats["acked"] == 1
    assert conv.replies == [("393331234567", "393401112222", "Re: Ciao Anna", 0)]


@inline
def test_a_share_of_recipients_reply_seeded(fleet, esme_to):
    picked = []
    for _ in range(2):
        f = fleet(CarrierSpec("c"))
        conv = Conversations(f.carriers["c"], share=0.3, delay=0.0, text="ok {n}", seed=9)
        esme = yield esme_to(f, "c")
        for i in range(100):
            esme.submit(b"3933300%05d" % i, b"hi", registered_delivery=0, source_addr=b"393401112222",
                        source_addr_ton=1, source_addr_npi=1)
        yield sleep(0.5)
        picked.append(sorted(r[0] for r in conv.replies))
        yield f.close()
    assert 15 <= len(picked[0]) <= 45
    assert picked[0] == picked[1]


# ------------------------------------------------- from a spec, flags, HTTP


@inline
def test_fleet_specs_start_handsets(fleet, esme_to):
    spec_mo = parse_carrier_flag("name=a,mo_rate=100,mo_count=5,mo_to=4000,mo_to=4001,mo_text=Hi there")
    spec_reply = parse_carrier_flag("name=b,reply_share=1,reply_delay=0.05,reply_text=got {text}")
    f = fleet(spec_mo, spec_reply, seed=4)
    a = yield esme_to(f, "a")
    mos = yield collect(a, 5)
    assert [p.fields["destination_addr"] for p in mos] == [b"4000", b"4001"] * 2 + [b"4000"]
    assert {p.fields["short_message"] for p in mos} == {b"Hi there"}
    result = yield within(f.mo_results["a"])
    assert result.answered == 5
    b = yield esme_to(f, "b")
    yield within(b.submit(b"393331234567", b"ping", registered_delivery=0, source_addr=b"393401112222",
                          source_addr_ton=1, source_addr_npi=1))
    reply = yield b.next_request()
    assert reply.fields["short_message"] == b"got ping"
    yield sleep(0.1)  # our deliver_sm_resp reaches the carrier
    assert f.conversations["b"].stats["acked"] == 1


@pytest.mark.parametrize(("text", "needle"), [
    ("name=a,mo_rate=-1", "mo_rate: -1.0 is not a number of MO per second"),
    ("name=a,mo_count=x", "mo_count: 'x' is not a whole number"),
    ("name=a,mo_long_share=2", "mo_long_share: 2.0 is not a share"),
    ("name=a,reply_share=1.5", "reply_share: 1.5 is not a share"),
    ("name=a,reply_delay=-3", "reply_delay: -3.0 is not a number of seconds"),
    ("name=a,reply_text={who}", "reply_text: '{who}' may name only {text} and {n}"),
    ("name=a,mo_to=123456789012345678901", "mo_to:"),
])
def test_bad_handset_fields(text, needle):
    with pytest.raises(SpecError) as exc:
        parse_carrier_flag(text)
    assert needle in str(exc.value)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--mo-rate", "-5"], "--mo-rate: -5.0 is not a number of MO per second >= 0"),
    (["--reply-share", "2"], "--reply-share: 2.0 is not a share between 0 and 1"),
    (["--reply-text", "{oops}"], "--reply-text: '{oops}' may name only"),
    (["--carrier", "name=a", "--mo-rate", "5"], "--mo-rate: not with --carrier/--fleet"),
])
def test_simulator_cli_handset_mistakes_exit_2(capsys, argv, needle):
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_simulator_arguments(parser)
    assert cli.simulator_main(parser.parse_args(argv), reactor=object()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_cli_single_carrier_mo_load_and_replies():
    port = free_port()
    proc = subprocess.Popen([*CLI, "simulator", "--listen", f"127.0.0.1:{port}", "--control", "off", "--hlr", "off",
                             "--mo-rate", "50", "--mo-count", "3", "--mo-to", "4000,4001", "--reply-share", "1",
                             "--reply-delay", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        banner = proc.stdout.readline()
        assert "MO 50/s to 4000,4001" in banner and "replies 100%" in banner, banner
        s = SyncEsme(port)
        assert s.bind("hub", "x", Command.BIND_TRANSCEIVER).status == 0
        got = []
        while len(got) < 3:
            p = s.read()
            if p.command_id == Command.DELIVER_SM:
                s.sock.sendall(encode(Pdu(Command.DELIVER_SM_RESP, p.sequence, 0, {"message_id": b""})))
                got.append(p.fields["destination_addr"])
        assert got == [b"4000", b"4001", b"4000"]
        s.send(Command.SUBMIT_SM, {"source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"393401112222",
                                   "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": b"393331234567",
                                   "short_message": b"yo"})
        kinds = {}
        while len(kinds) < 2:
            p = s.read()
            kinds[p.command_id] = p
        reply = kinds[Command.DELIVER_SM]
        assert (reply.fields["source_addr"], reply.fields["short_message"]) == (b"393331234567", b"Re: yo")
        s.close()
    finally:
        proc.terminate()
        proc.wait(10)


@inline
def test_http_control_sends_a_multipart_mo(fleet, esme_to):
    import json
    import urllib.request

    from twisted.internet import threads

    from staffetta.simulator.control import listen_fleet_control

    f = fleet(CarrierSpec("c"))
    lp = listen_fleet_control(f, 0)
    try:
        esme = yield esme_to(f, "c")
        url = f"http://127.0.0.1:{lp.getHost().port}/c/mo"
        body = json.dumps({"source": "393331234567", "destination": "4000", "text": LONG, "multipart": "udh16",
                           "order": [2, 3, 1], "wait": True}).encode()
        answer = threads.deferToThread(
            lambda: json.loads(urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5).read()))
        pdus = yield collect(esme, 3)
        assert reassemble(pdus) == ([2, 3, 1], LONG)
        assert (yield answer) == {"statuses": [0, 0, 0], "status_names": ["ESME_ROK"] * 3}
        bad = json.dumps({"source": "1", "destination": "2", "text": "x", "multipart": "udh7"}).encode()
        try:
            yield threads.deferToThread(lambda: urllib.request.urlopen(urllib.request.Request(url, data=bad),
                                                                       timeout=5))
        except urllib.error.HTTPError as exc:
            assert exc.code == 400 and b"udh7" in exc.read()
        else:
            raise AssertionError("a bad multipart form was accepted")
    finally:
        yield lp.stopListening()


@inline
def test_mo_load_holds_back_behind_a_slow_receiver(fleet, esme_to):
    f = fleet(CarrierSpec("c", window=10))
    esme = yield esme_to(f, "c", ack_status=None)  # never answers: the window fills, MO wait in the line
    carrier = f.carriers["c"]
    load = MoLoad(carrier, rate=2000, seed=1)
    load.max_backlog = 50
    load.start()
    yield sleep(0.5)
    assert carrier.queued <= 50 and load.result.sent <= 10 + 50
    load.stop()
    assert esme.requests.pending  # the first ten did go out
