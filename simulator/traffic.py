"""What ``staffetta bench`` sends: the realistic mix, or one destination as before.

The hub's costs depend on its input: a destination it has already seen is a
cache hit, a new one is parsed and classified (issue 15). So the default
traffic looks like a carrier's: a different valid mobile number almost every
time, over several countries, a mix of message shapes, several senders, and
receipts asked for most but not all messages. The exact mix is documented in
``docs/benchmarks.md``; change both together.

Everything is decided by a seed, so two runs with the same seed and ``n`` send
the same messages (only their spread over connections can differ). Building a
frame must cost the client little next to the hub's ~100 µs a message: the
shapes are encoded once into (before, after) halves around the destination,
so a message is a few bytes joins and one affine step of its country's
numbering.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from staffetta.pdu.codec import Pdu, encode
from staffetta.pdu.constants import ESM_UDHI, Command, Tag
from staffetta.pdu.gsm import encode as gsm_encode
from staffetta.simulator.faults import magic

REALISTIC = "realistic"
SINGLE_DESTINATION = "single-destination"
PROFILES = (REALISTIC, SINGLE_DESTINATION)


@dataclass(frozen=True)
class MobileRange:
    """National mobile prefixes of one country where every completion to
    ``national_length`` digits is a valid mobile number (checked against
    phonenumbers in tests/simulator/test_traffic.py)."""

    region: str
    calling_code: int
    prefixes: tuple[str, ...]
    national_length: int
    weight: int


#: The countries of the realistic mix, with their share of messages (percent).
#: ``bench/bench_spine.py``'s price plan prices every one of them.
MOBILE_RANGES: tuple[MobileRange, ...] = (
    MobileRange("IT", 39, ("320", "324", "327", "328", "329", "330", "331", "333", "334", "335", "336", "337",
                           "338", "339", "340", "342", "345", "346", "347", "348", "349", "366", "368", "380",
                           "388", "389", "391", "392", "393"), 10, 50),
    MobileRange("FR", 33, ("60", "61", "62", "64", "65", "66", "67", "68", "73", "74", "75", "76", "77", "78"),
                9, 12),
    MobileRange("DE", 49, ("151", "152", "157", "159", "160", "162", "163", "170", "171", "172", "173", "174",
                           "175", "176", "177", "178", "179"), 11, 12),
    MobileRange("ES", 34, ("60", "61", "62", "63", "64", "65", "66", "67", "68", "69", "71", "72", "73", "74"),
                9, 10),
    MobileRange("GB", 44, ("740", "741", "742", "743", "744", "746", "747", "748", "749", "751", "753", "754",
                           "771", "772", "773", "774", "775", "776", "777", "780", "781", "784", "785", "786",
                           "787", "788", "789", "790", "792", "794", "795", "796", "797", "798", "799"), 10, 10),
    MobileRange("PL", 48, ("50", "51", "53", "57", "60", "66", "69", "72", "73", "78", "79", "88"), 9, 6),
)


class _Numbering:
    """The k-th number of one country: prefix ``k mod P``, subscriber an affine
    permutation of ``k div P`` modulo 10^digits, so no number repeats before
    ``P * 10^digits`` (at least 10^8 here) and consecutive numbers look unrelated."""

    __slots__ = ("heads", "modulus", "mul", "add", "fmt", "count")

    def __init__(self, r: MobileRange, rng: random.Random) -> None:
        digits = r.national_length - len(r.prefixes[0])
        assert all(len(p) == len(r.prefixes[0]) for p in r.prefixes)
        self.heads = [f"{r.calling_code}{p}".encode() for p in r.prefixes]
        self.modulus = 10**digits
        mul = rng.randrange(self.modulus // 3, self.modulus)
        while mul % 2 == 0 or mul % 5 == 0:  # coprime with 10^digits: a permutation
            mul += 1
        self.mul = mul
        self.add = rng.randrange(self.modulus)
        self.fmt = b"%0" + str(digits).encode() + b"d"
        self.count = 0

    def next(self) -> bytes:
        k = self.count
        self.count = k + 1
        heads = self.heads
        p = len(heads)
        return heads[k % p] + self.fmt % ((self.mul * (k // p) + self.add) % self.modulus)


def ranges_for(regions: Sequence[str] | None) -> list[MobileRange]:
    """The mix's ranges of these regions (all when None); ValueError naming an unknown one."""
    if regions is None:
        return list(MOBILE_RANGES)
    known = {r.region: r for r in MOBILE_RANGES}
    for region in regions:
        if region not in known:
            raise ValueError(f"{region!r} is not one of the mix's countries ({', '.join(known)})")
    if not regions:
        raise ValueError("no country given")
    return [r for r in MOBILE_RANGES if r.region in regions]


class Destinations:
    """Distinct international mobile numbers (E.164 digits, no '+'), deterministic per seed."""

    def __init__(self, seed: int, ranges: Sequence[MobileRange] = MOBILE_RANGES) -> None:
        rng = random.Random(f"destinations-{seed}")
        self.numberings = [_Numbering(r, rng) for r in ranges]
        # A shuffled table of 100 slots, each country in proportion to its weight.
        table = [i for i, r in enumerate(ranges) for _ in range(r.weight)]
        rng.shuffle(table)
        self._table = [self.numberings[i] for i in table]
        self._i = 0

    def next(self) -> bytes:
        table = self._table
        n = table[self._i % len(table)]
        self._i += 1
        number = n.next()
        while magic(number) is not None:
            number = n.next()  # never a magic destination (simulator/faults.py): a bench is not a fault test
        return number


# --------------------------------------------------------------------- shapes


class _Template:
    """A submit_sm encoded once with an empty destination, cut around it."""

    __slots__ = ("before", "after")

    def __init__(self, fields: dict, tlvs: dict[int, bytes] | None = None) -> None:
        frame = encode(Pdu(Command.SUBMIT_SM, 0, 0, {**fields, "destination_addr": b""}, tlvs))
        st = fields.get("service_type", b"")
        at = 16 + len(st) + 1 + 2 + len(fields["source_addr"]) + 1 + 2  # the destination's NUL
        assert frame[at] == 0
        self.before = frame[4:at]  # command_id .. dest_addr_npi (status and sequence 0)
        self.after = frame[at:]

    def frame(self, destination: bytes) -> bytes:
        before, after = self.before, self.after
        n = 4 + len(before) + len(destination) + len(after)
        return n.to_bytes(4, "big") + before + destination + after


_WORDS = ("ciao", "your", "code", "is", "order", "shipped", "today", "meeting", "at", "reminder", "the",
          "appointment", "confirmed", "for", "tomorrow", "thanks", "balance", "credit", "Staffetta", "offer",
          "valid", "until", "Friday", "call", "us", "on", "delivery", "window", "9-12", "pin", "4821", "OK")
_UCS2_WORDS = ("Привет", "заказ", "готов", "こんにちは", "ご注文", "発送", "مرحبا", "طلبك", "Καλημέρα",
               "παραγγελία", "€", "✓", "😀", "confirmé", "Grüße", "ok")


def _sentence(rng: random.Random, words: Sequence[str], length: int) -> str:
    out = ""
    while len(out) < length:
        out += rng.choice(words) + " "
    return out[:length].rstrip() + "."


@dataclass(frozen=True)
class Mix:
    """Shares of the realistic mix, in percent of messages (not of submit_sm)."""

    short_gsm: int = 55
    long_udh: int = 15  # 2-4 parts, one submit_sm each, 8-bit concatenation UDH
    ucs2: int = 15
    payload: int = 15  # 161-612 GSM characters in message_payload: 2-4 segments, split by the hub
    receipt_percent: int = 90  # registered_delivery 1, else 0
    senders: tuple[bytes, ...] = (b"Staffetta", b"ACME", b"Shop24", b"393471234567")


VARIANTS = 16  # texts per shape


class Traffic:
    """The frames of a run, message by message: ``next_message(limit)`` -> frames (sequence 0).

    A message is 1 submit_sm, or 2-4 for a long one sent as UDH parts; each
    frame comes with whether it asks for a receipt. ``limit`` caps the parts
    (the run's last message is cut to what is left of ``n``).
    """

    def __init__(self, profile: str = REALISTIC, *, seed: int = 1, mix: Mix | None = None,
                 regions: Sequence[str] | None = None,
                 destination: bytes = b"393331234567", source: bytes = b"Staffetta", text: bytes = b"hello world",
                 registered_delivery: int = 1, data_coding: int = 0) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
        self.profile = profile
        self._rng = random.Random(f"traffic-{seed}")
        if profile == SINGLE_DESTINATION:
            t = _Template(_fields(source, registered_delivery, data_coding, text) if len(text) <= 254 else
                          _fields(source, registered_delivery, data_coding, b""),
                          None if len(text) <= 254 else {Tag.message_payload: text})
            self._single = [(t.frame(destination), (registered_delivery & 3) == 1)]
            return
        self.mix = mix or Mix()
        self.destinations = Destinations(seed, ranges_for(regions))
        self._build(self.mix)

    def _build(self, mix: Mix) -> None:
        rng = random.Random(f"texts-{mix}")
        # shape -> [per sender [per variant [(rd 0 templates, rd 1 templates)]]]
        self._shapes: list[tuple[int, list]] = []
        texts_short = [gsm_encode(_sentence(rng, _WORDS, rng.randint(20, 160))) for _ in range(VARIANTS)]
        texts_ucs2 = [_sentence(rng, _UCS2_WORDS, rng.randint(10, 70)).encode("utf-16-be") for _ in range(VARIANTS)]
        texts_payload = [gsm_encode(_sentence(rng, _WORDS, rng.randint(161, 611))) for _ in range(VARIANTS)]
        long_parts = []
        for v in range(VARIANTS):
            parts = 2 + v % 3
            long_parts.append([gsm_encode(_sentence(rng, _WORDS, rng.randint(100, 152) if i == parts - 1 else 152))
                               for i in range(parts)])

        def per_sender(make) -> list:
            return [[(make(s, 0, v), make(s, 1, v)) for v in range(VARIANTS)] for s in mix.senders]

        short = per_sender(lambda s, rd, v: [_Template(_fields(s, rd, 0, texts_short[v]))])
        ucs2 = per_sender(lambda s, rd, v: [_Template(_fields(s, rd, 8, texts_ucs2[v]))])
        payload = per_sender(lambda s, rd, v: [_Template(_fields(s, rd, 0, b""),
                                                         {Tag.message_payload: texts_payload[v]})])
        # UDH parts: the reference byte is patched per message (template ref 0).
        longs = per_sender(lambda s, rd, v: [
            _Template({**_fields(s, rd, 0, b"\x05\x00\x03\x00" + bytes((len(long_parts[v]), i + 1)) + part),
                       "esm_class": ESM_UDHI})
            for i, part in enumerate(long_parts[v])])
        self._shapes = [(mix.short_gsm, short), (mix.long_udh, longs), (mix.ucs2, ucs2), (mix.payload, payload)]
        self._shape_table = [shape for weight, shape in self._shapes for _ in range(weight)]
        self._receipt_p = mix.receipt_percent / 100.0
        self._ref = 0

    def next_message(self, limit: int) -> list[tuple[bytes, bool]]:
        """The next message's frames (at most ``limit``), each with "expects a receipt"."""
        if self.profile == SINGLE_DESTINATION:
            return self._single
        rng = self._rng
        rand = rng.random
        shape = self._shape_table[int(rand() * len(self._shape_table))]
        senders = shape[int(rand() * len(shape))]
        rd = 1 if rand() < self._receipt_p else 0
        templates = senders[int(rand() * VARIANTS)][rd]
        dest = self.destinations.next()
        if len(templates) == 1:
            return [(templates[0].frame(dest), rd == 1)]
        if limit < 2:  # no room for a long message at the end of the run: a short one instead
            return [(self._shapes[0][1][0][0][rd][0].frame(dest), rd == 1)]
        self._ref = ref = (self._ref + 1) & 0xFF
        out = []
        for t in templates[:limit]:
            f = t.frame(dest)
            at = len(f) - len(t.after) + _UDH_REF_OFFSET
            out.append((f[:at] + bytes((ref,)) + f[at + 1 :], rd == 1))
        return out


# In ``after``: NUL, esm_class, protocol_id, priority_flag, schedule NUL, validity NUL,
# registered_delivery, replace_if_present, data_coding, sm_default_msg_id, sm_length,
# then the UDH 05 00 03 REF.
_UDH_REF_OFFSET = 11 + 3


def _fields(source: bytes, registered_delivery: int, data_coding: int, short_message: bytes) -> dict:
    numeric = source.isdigit()
    return {
        "source_addr_ton": 1 if numeric else 5,
        "source_addr_npi": 1 if numeric else 0,
        "source_addr": source,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "registered_delivery": registered_delivery,
        "data_coding": data_coding,
        "short_message": short_message,
    }





def price_plan_section(home: str = "IT", rate: float = 6.5) -> dict:
    """A ``billing:`` config section whose plan prices every country of the realistic mix.

    The default plan prices only the home region (IT): without this, the mix's
    foreign numbers are refused with no rate (0x00000402). ``bench/bench_spine.py``,
    ``bench/instructions.py`` and the tests configure their hub with it.
    """
    countries = {r.region: {"PRO": rate, "SMART": rate} for r in MOBILE_RANGES if r.region != home}
    return {"plans": {"bench": {"home_regions": [home], "countries": countries}}}


__all__ = ["MOBILE_RANGES", "PROFILES", "REALISTIC", "SINGLE_DESTINATION", "Destinations", "Mix", "MobileRange",
           "Traffic", "price_plan_section", "ranges_for"]
