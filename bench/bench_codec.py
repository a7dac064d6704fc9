"""Codec throughput: ours (pdu.codec) against smpp.pdu, the reference.

Run from the repository root::

    python bench/bench_codec.py [--rounds N]

Each case is timed in many short rounds, interleaved between the contenders,
and the best round is kept: on a shared, noisy machine the minimum is the
figure that repeats, and the ratio between contenders measured side by side
matters more than the absolute numbers. ``smpp.pdu`` gets one encoder for
decoding and another for encoding (a single instance fails to encode
length-typed TLVs after a decode; see tests/pdu/test_codec_differential.py).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smpp.pdu import pdu_encoding  # noqa: E402

from staffetta.pdu.codec import Pdu, cstr, decode, encode, u8, u16  # noqa: E402
from staffetta.pdu.constants import Command, Tag  # noqa: E402

SUBMIT_FIELDS = {
    "service_type": b"",
    "source_addr_ton": 5,
    "source_addr_npi": 0,
    "source_addr": b"Staffetta",
    "dest_addr_ton": 1,
    "dest_addr_npi": 1,
    "destination_addr": b"393331234567",
    "esm_class": 0,
    "protocol_id": 0,
    "priority_flag": 0,
    "schedule_delivery_time": b"",
    "validity_period": b"",
    "registered_delivery": 1,
    "replace_if_present_flag": 0,
    "data_coding": 0,
    "sm_default_msg_id": 0,
    "short_message": b"Your verification code is 482913. It expires in 10 minutes.",
}
RECEIPT_TEXT = (
    b"id:1234567890 sub:001 dlvrd:001 submit date:2401021504 done date:2401021505 "
    b"stat:DELIVRD err:000 text:Your verification"
)

SUBMIT_PLAIN = encode(Pdu(Command.SUBMIT_SM, 7, 0, SUBMIT_FIELDS))
SUBMIT_2TLV = encode(
    Pdu(Command.SUBMIT_SM, 7, 0, SUBMIT_FIELDS, {Tag.user_message_reference: u16(42), Tag.source_port: u16(9200)})
)
RECEIPT = encode(
    Pdu(
        Command.DELIVER_SM,
        9,
        0,
        {**SUBMIT_FIELDS, "esm_class": 4, "registered_delivery": 0, "short_message": RECEIPT_TEXT},
        {Tag.receipted_message_id: cstr("1234567890"), Tag.message_state: u8(2)},
    )
)
SUBMIT_RESP = encode(Pdu(Command.SUBMIT_SM_RESP, 7, 0, {"message_id": b"1234567890"}))


def _theirs():
    dec = pdu_encoding.PDUEncoder()
    enc = pdu_encoding.PDUEncoder()

    def decode_(data: bytes):
        return dec.decode(io.BytesIO(data))

    return decode_, enc.encode


def cases() -> list[tuple[str, str, Callable[[], object], Callable[[], object]]]:
    """(case, note, ours, theirs) -- every callable does one operation."""
    t_decode, t_encode = _theirs()
    out = []
    for label, wire in (
        ("submit_sm (2 TLVs)", SUBMIT_2TLV),
        ("submit_sm (plain)", SUBMIT_PLAIN),
    ):
        ours_pdu, their_pdu = decode(wire), t_decode(wire)
        assert encode(ours_pdu) == wire == t_encode(their_pdu)
        out.append((f"{label} decode", "", lambda w=wire: decode(w), lambda w=wire: t_decode(w)))
        out.append((f"{label} encode", "", lambda p=ours_pdu: encode(p), lambda p=their_pdu: t_encode(p)))
        out.append(
            (
                f"{label} decode+encode",
                "",
                lambda w=wire: encode(decode(w)),
                lambda w=wire: t_encode(t_decode(w)),
            )
        )
    assert decode(RECEIPT).tlvs and encode(decode(RECEIPT)) == RECEIPT
    out.append(
        (
            "deliver_sm receipt decode+encode",
            "",
            lambda: encode(decode(RECEIPT)),
            lambda: t_encode(t_decode(RECEIPT)),
        )
    )
    assert encode(decode(SUBMIT_RESP)) == SUBMIT_RESP == t_encode(t_decode(SUBMIT_RESP))
    out.append(
        (
            "submit_sm_resp decode+encode",
            "",
            lambda: encode(decode(SUBMIT_RESP)),
            lambda: t_encode(t_decode(SUBMIT_RESP)),
        )
    )
    return out


def best_round(fn: Callable[[], object], n: int) -> float:
    """Seconds per operation in one round of ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def machine() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()} "
        f"{platform.python_implementation()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="rounds per case (best kept)")
    parser.add_argument("--ours-n", type=int, default=2000, help="operations per round, ours")
    parser.add_argument("--theirs-n", type=int, default=200, help="operations per round, smpp.pdu")
    args = parser.parse_args()

    print(machine())
    print(f"best of {args.rounds} interleaved rounds; figures are per single operation\n")
    head = f"{'case':36} {'ours µs':>9} {'ours ops/s':>11} {'smpp.pdu µs':>12} {'smpp.pdu ops/s':>15} {'ratio':>7}"
    print(head)
    print("-" * len(head))
    for name, _note, ours, theirs in cases():
        best_ours = best_theirs = float("inf")
        for _ in range(args.rounds):
            best_ours = min(best_ours, best_round(ours, args.ours_n))
            best_theirs = min(best_theirs, best_round(theirs, args.theirs_n))
        print(
            f"{name:36} {best_ours * 1e6:9.2f} {1 / best_ours:11,.0f} "
            f"{best_theirs * 1e6:12.2f} {1 / best_theirs:15,.0f} {best_theirs / best_ours:6.1f}x"
        )


if __name__ == "__main__":
    main()
