"""The handsets behind a simulated carrier: MO at a rate, multipart MO, replies to MT.

Two-way messaging (issue 14) needs a carrier whose subscribers write: at a
chosen rate for a load test, in long messages whose parts arrive in any order
(8-bit or 16-bit concatenation UDH, or the SAR TLVs), and back to whoever
wrote to them, after a while, so that a conversation runs end to end.

Everything goes through :meth:`simulator.carrier.Carrier.inject_mo` (the
carrier's durable-for-its-lifetime MO lines and windows) and its one timer
(:meth:`~simulator.carrier.Carrier.call_later`); splitting is
:mod:`pdu.segments`, the hub's own splitter, so a part here is exactly what a
network would send. Every draw (which MT gets a reply, which handset writes,
the concatenation references) comes from a seeded generator.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, task

from staffetta.pdu import segments
from staffetta.pdu.codec import Pdu, u8, u16
from staffetta.pdu.constants import ESM_UDHI, Tag
from staffetta.pdu.text import GSM, LATIN1, UCS2, parse_data_coding
from staffetta.pdu.text import decode as decode_text
from staffetta.simulator.carrier import Carrier, QueueFull
from staffetta.simulator.traffic import Destinations

#: How a long MO is cut: 8-bit or 16-bit reference concatenation UDH, or SAR TLVs.
MULTIPART_FORMS = ("udh8", "udh16", "sar")
#: The order its parts are sent in.
PART_ORDERS = ("in_order", "reverse", "shuffle", "last_first")
_DATA_CODING = {GSM: 0x00, LATIN1: 0x03, UCS2: 0x08}


def multipart_mo(
    carrier: Carrier,
    source: str,
    destination: str,
    text: str,
    *,
    form: str = "udh8",
    order: str | Sequence[int] = "reverse",
    ref: int | None = None,
    alphabet: str = GSM,
    system_id: str | bytes | None = None,
    rng: random.Random | None = None,
) -> defer.Deferred[list[int]]:
    """Send ``text`` as a long MO cut in parts, in ``order``; fires with each part's deliver_sm_resp status.

    ``order`` is one of :data:`PART_ORDERS` or an explicit list of 1-based
    part numbers (``[3, 1, 2]``). The text travels in GSM when it can
    (else UCS-2; ``alphabet`` as :func:`pdu.segments.choose_encoding`), and a
    text that fits in one message is still sent as one part of one, so that
    a test always exercises reassembly. The statuses come back in part-number order.
    """
    if form not in MULTIPART_FORMS:
        raise ValueError(f"form: {form!r} is not one of {', '.join(MULTIPART_FORMS)}")
    rng = rng or random.Random()
    ref16 = form == "udh16"
    if ref is None:
        ref = rng.randrange(1, 0x10000 if form != "udh8" else 0x100)
    encoding, payload = segments.choose_encoding(text, alphabet)
    dc = _DATA_CODING[encoding]
    if form == "sar":
        sar = segments.split_sar_bytes(payload, encoding, ref)
        total = len(sar)
        parts = [(p.payload, 0, {Tag.sar_msg_ref_num: u16(p.ref), Tag.sar_total_segments: u8(p.total),
                                 Tag.sar_segment_seqnum: u8(p.seq)}) for p in sar]
    else:
        chunks = segments.split_bytes(payload, encoding, ref, ref16)
        total = len(chunks)
        if total == 1:  # one part of one: still a concatenated message
            chunks = [segments.udh_concat(ref, 1, 1, ref16) + chunks[0]]
        parts = [(c, ESM_UDHI, None) for c in chunks]
    sequence = part_order(total, order, rng)
    waits: dict[int, defer.Deferred[int]] = {}
    for n in sequence:
        sm, esm, tlvs = parts[n - 1]
        waits[n] = carrier.inject_mo(source, destination, sm, data_coding=dc, esm_class=esm, tlvs=tlvs,
                                     system_id=system_id)
    return defer.gatherResults([waits[n] for n in range(1, total + 1)], consumeErrors=True)


def part_order(total: int, order: str | Sequence[int], rng: random.Random) -> list[int]:
    """1-based part numbers in the order they are sent."""
    if not isinstance(order, str):
        seq = [int(n) for n in order]
        if sorted(seq) != list(range(1, total + 1)):
            raise ValueError(f"order: {seq} is not a permutation of parts 1..{total}")
        return seq
    if order == "in_order":
        return list(range(1, total + 1))
    if order == "reverse":
        return list(range(total, 0, -1))
    if order == "last_first":
        return [total, *range(1, total)]
    if order == "shuffle":
        seq = list(range(1, total + 1))
        rng.shuffle(seq)
        return seq
    raise ValueError(f"order: {order!r} is not one of {', '.join(PART_ORDERS)}")


# ------------------------------------------------------------------ MO load


@dataclass
class MoLoadResult:
    """What an MO load did: counts, statuses, and inject -> deliver_sm_resp latency."""

    sent: int = 0
    answered: int = 0
    dropped: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    duration_s: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def per_s(self) -> float:
        return self.answered / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": self.answered, "dropped": self.dropped,
                "statuses": {f"0x{k:08x}": v for k, v in sorted(self.statuses.items())},
                "duration_s": round(self.duration_s, 3), "per_s": round(self.per_s, 1),
                "p50_ms": round(self.percentile(50) * 1000, 2), "p99_ms": round(self.percentile(99) * 1000, 2)}


class MoLoad:
    """Handsets writing to ``to`` at ``rate`` MO/s, from distinct valid mobile numbers (seeded).

    It sends only while a receiving session is bound (an MO load against a
    hub that is not there would only fill the carrier's queue), ``n`` MO in
    all (None: until :meth:`stop`). ``long_share`` of them are multipart MO
    (``long_text``, forms in turn, parts reversed). :meth:`start` returns a
    Deferred that fires with the :class:`MoLoadResult` once every MO sent is
    answered (or dropped) after the last one.
    """

    tick = 0.01
    #: MO waiting in the carrier's lines above which the load holds back: a receiver slower than
    #: ``rate`` sets the pace (and the result says so) instead of a backlog growing without end.
    max_backlog = 2000

    def __init__(self, carrier: Carrier, *, rate: float, n: int | None = None, to: Sequence[str] = ("4000",),
                 text: str = "Hello", long_share: float = 0.0, long_text: str | None = None,
                 seed: int | None = None, system_id: str | bytes | None = None,
                 regions: Sequence[str] | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"rate: {rate!r} is not a number of MO per second > 0")
        if n is not None and n < 0:
            raise ValueError(f"n: {n!r} is negative")
        if not to:
            raise ValueError("to: no destination")
        if not 0 <= long_share <= 1:
            raise ValueError(f"long_share: {long_share!r} is not a share between 0 and 1")
        from staffetta.simulator.traffic import ranges_for

        self.carrier = carrier
        self.rate = rate
        self.n = n
        self.to = [str(t) for t in to]
        self.text = text
        self.long_share = long_share
        self.long_text = long_text or ("This is a long message from a handset, cut in parts by its network. " * 4)
        self.system_id = system_id
        self.rng = random.Random(None if seed is None else f"mo:{seed}")
        self.sources = Destinations(0 if seed is None else seed, ranges_for(regions))
        self.result = MoLoadResult()
        self._outstanding = 0
        self._loop: task.LoopingCall | None = None
        self._t0: float | None = None
        self._sent_at_t0 = 0
        self._started: float | None = None
        self._done: defer.Deferred[MoLoadResult] | None = None
        self._stopping = False

    def start(self) -> defer.Deferred[MoLoadResult]:
        self._done = defer.Deferred()
        loop = self._loop = task.LoopingCall(self._tick)
        loop.clock = self.carrier.reactor
        loop.start(min(self.tick, 1 / self.rate), now=True)
        return self._done

    def stop(self) -> None:
        """Send no more; the result comes once the MO already sent are answered."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._maybe_done()

    def _receiving(self) -> bool:
        sid = None if self.system_id is None else (
            self.system_id.encode("latin-1") if isinstance(self.system_id, str) else self.system_id)
        return any(p.session.can_receive and (sid is None or p.key == sid) for p in self.carrier.sessions)

    def _tick(self) -> None:
        now = self.carrier.reactor.seconds()
        if not self._receiving():
            self._t0 = None  # the rate counts from the next bind, not through the gap
            return
        if self._t0 is None:
            self._t0 = now
            self._sent_at_t0 = self.result.sent
        if self._started is None:
            self._started = now
        due = int(self.rate * (now - self._t0)) + 1 - (self.result.sent - self._sent_at_t0)
        room = self.max_backlog - self.carrier.queued
        if due > room:  # the receiver is behind: never more than max_backlog waiting, and no catch-up burst
            self._sent_at_t0 += due - max(0, room)
            due = room
        for _ in range(max(0, due)):
            if self.n is not None and self.result.sent >= self.n:
                self.stop()
                return
            self._send_one(now)

    def _send_one(self, now: float) -> None:
        r = self.result
        source = self.sources.next().decode("ascii")
        dest = self.to[r.sent % len(self.to)]
        r.sent += 1
        if self.long_share and self.rng.random() < self.long_share:
            form = MULTIPART_FORMS[r.sent % len(MULTIPART_FORMS)]
            d: defer.Deferred[Any] = multipart_mo(self.carrier, source, dest, self.long_text, form=form,
                                                  order="reverse", rng=self.rng, system_id=self.system_id)
            d.addCallback(lambda statuses: statuses[-1])  # one MO, answered when its last part is
        else:
            d = self.carrier.inject_mo(source, dest, self.text, system_id=self.system_id)
        self._outstanding += 1
        d.addCallbacks(self._answered, self._failed, callbackArgs=(now,))

    def _answered(self, status: int, sent_at: float) -> None:
        r = self.result
        r.answered += 1
        r.statuses[status] = r.statuses.get(status, 0) + 1
        r.latencies.append(self.carrier.reactor.seconds() - sent_at)
        self._outstanding -= 1
        self._maybe_done()

    def _failed(self, f: Any) -> None:
        if not f.check(QueueFull, defer.FirstError):
            f.raiseException()
        self.result.dropped += 1
        self._outstanding -= 1
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._stopping and not self._outstanding and self._done is not None and not self._done.called:
            r = self.result
            if self._started is not None:
                r.duration_s = self.carrier.reactor.seconds() - self._started
            self._done.callback(r)


# ------------------------------------------------------------- conversations


class Conversations:
    """Replies from a share of the recipients of MT, to the MT's sender, after a delay.

    Hooked on :attr:`Carrier.on_accept`: for each MT the carrier accepts, a
    seeded draw decides whether its recipient answers; the reply is an MO
    from the MT's destination to its source, sent ``delay`` seconds later to
    the same system_id that sent the MT. ``text`` may name ``{text}`` (the
    MT's first 40 characters) and ``{n}`` (a counter). An alphanumeric sender
    cannot be answered from a handset: such MT are counted and skipped.
    """

    def __init__(self, carrier: Carrier, *, share: float, delay: float = 2.0, text: str = "Re: {text}",
                 seed: int | None = None) -> None:
        if not 0 <= share <= 1:
            raise ValueError(f"reply_share: {share!r} is not a share between 0 and 1")
        if not 0 <= delay < float("inf"):
            raise ValueError(f"reply_delay: {delay!r} is not a number of seconds >= 0")
        self.carrier = carrier
        self.share = share
        self.delay = delay
        self.text = text
        self.rng = random.Random(None if seed is None else f"replies:{seed}")
        self.stats = {"scheduled": 0, "sent": 0, "acked": 0, "refused": 0, "dropped": 0,
                      "skipped_alphanumeric": 0}
        #: (from, to, text, deliver_sm_resp status) of every reply answered, in order.
        self.replies: list[tuple[str, str, str, int]] = []
        carrier.on_accept = self.on_mt

    def close(self) -> None:
        if self.carrier.on_accept == self.on_mt:
            self.carrier.on_accept = None

    def on_mt(self, system_id: bytes | None, pdu: Pdu) -> None:
        if self.rng.random() >= self.share:
            return
        f = pdu.fields
        sender = f.get("source_addr", b"")
        if not sender.isdigit():
            self.stats["skipped_alphanumeric"] += 1
            return
        recipient = f.get("destination_addr", b"")
        sm = f.get("short_message") or (pdu.tlvs or {}).get(Tag.message_payload, b"")
        try:
            coding = parse_data_coding(f.get("data_coding", 0))
            original = decode_text(sm, coding.alphabet, strict=False) or ""
        except Exception:  # a binary or unknown coding: the reply just does not quote it
            original = ""
        if f.get("esm_class", 0) & ESM_UDHI:
            original = ""  # a part of a long MT: quoting a UDH makes no sense
        self.stats["scheduled"] += 1
        text = self.text.format(text=original[:40], n=self.stats["scheduled"])
        src, dst = recipient.decode("latin-1"), sender.decode("latin-1")
        self.carrier.call_later(self.delay, lambda: self._reply(src, dst, text, system_id))

    def _reply(self, src: str, dst: str, text: str, system_id: bytes | None) -> None:
        self.stats["sent"] += 1
        dc = _DATA_CODING[segments.choose_encoding(text, GSM)[0]]  # GSM when it can, else UCS-2
        d = self.carrier.inject_mo(src, dst, text, data_coding=dc, system_id=system_id)

        def done(status: int) -> None:
            self.stats["acked" if status == 0 else "refused"] += 1
            self.replies.append((src, dst, text, status))

        def failed(f: Any) -> None:
            f.trap(QueueFull)
            self.stats["dropped"] += 1

        d.addCallbacks(done, failed)


__all__ = [
    "MULTIPART_FORMS",
    "PART_ORDERS",
    "Conversations",
    "MoLoad",
    "MoLoadResult",
    "multipart_mo",
    "part_order",
]
