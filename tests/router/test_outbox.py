"""The outbox in isolation: bounded memory, no duplicate after an ack, retries."""

from __future__ import annotations

from twisted.internet import defer, task

from staffetta.pdu.constants import Status
from staffetta.router.messages import Delivery
from staffetta.router.outbox import Outbox


class Writer:
    """Commits when the test says so: the gap between ack and delete is visible."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, object, defer.Deferred]] = []
        self.table: dict[int, Delivery] = {}

    def submit(self, kind, item):
        d = defer.Deferred()
        self.pending.append((kind, item, d))
        return d

    def submit_then(self, kind, item, on_committed, on_failed):
        self.submit(kind, item).addCallbacks(on_committed, on_failed)

    def commit(self) -> None:
        pending, self.pending = self.pending, []
        for kind, item, d in pending:
            if kind == "delivered":
                self.table.pop(item, None)
            d.callback(None)


class Sink:
    """A receiver session: sequence numbers are positions in ``sent`` (1-based)."""

    def __init__(self, window: int = 10) -> None:
        self.window_size = window
        self.sent: list[Delivery] = []
        self.open = True

    def receiving(self) -> int:
        return self.window_size if self.open else 0

    def send_delivery(self, d: Delivery) -> int:
        self.sent.append(d)
        return len(self.sent)

    def flush(self) -> None:
        pass

    def seq(self, d: Delivery) -> int:
        return max(i for i, x in enumerate(self.sent, 1) if x is d)


def make(n_rows: int = 0, max_queued: int = 5000):
    clock = task.Clock()
    writer = Writer()
    for i in range(1, n_rows + 1):
        writer.table[i] = Delivery(i, 1, i, "dlr", b"pdu", 0.0, 1e9)

    def load(account_id, limit, after_id=0):
        rows = sorted((d for d in writer.table.values() if d.id > after_id), key=lambda d: d.id)[:limit]
        return defer.succeed([Delivery(d.id, d.account_id, d.message_id, d.kind, d.pdu, d.created_at, d.expires_at)
                              for d in rows])

    return clock, writer, Outbox(writer, clock, load, max_queued=max_queued, retry_delay=1.0)


def test_no_receiver_keeps_nothing_in_memory_and_bind_reads_the_table():
    clock, writer, box = make(n_rows=3)
    box.add(Delivery(4, 1, 4, "dlr", b"pdu", 0.0, 1e9))
    assert box.queued(1) == 0
    sink = Sink()
    writer.table[4] = Delivery(4, 1, 4, "dlr", b"pdu", 0.0, 1e9)
    box.attach(1, sink)
    assert [d.id for d in sink.sent] == [1, 2, 3, 4]


def test_an_acked_row_is_not_reloaded_before_its_delete_commits():
    clock, writer, box = make(n_rows=2, max_queued=1)
    sink = Sink(window=1)
    box.attach(1, sink)
    assert [d.id for d in sink.sent] == [1]
    box.answered(1, sink, 1, Status.ESME_ROK)  # delete queued, not committed
    ids = [d.id for d in sink.sent]
    assert ids.count(1) == 1, ids
    writer.commit()
    box.pump(1)
    ids = [d.id for d in sink.sent]
    assert ids.count(1) == 1 and 2 in ids


def test_temporary_refusal_retries_and_permanent_refusal_ends():
    clock, writer, box = make()
    sink = Sink()
    box.attach(1, sink)
    d1 = Delivery(1, 1, 1, "dlr", b"p", 0.0, 1e9)
    d2 = Delivery(2, 1, 2, "dlr", b"p", 0.0, 1e9)
    writer.table.update({1: d1, 2: d2})
    box.add(d1)
    box.add(d2)
    box.answered(1, sink, sink.seq(d1), Status.ESME_RX_T_APPN)  # this receiver pauses 1 s
    box.answered(1, sink, sink.seq(d2), Status.ESME_RX_P_APPN)
    writer.commit()
    assert 2 not in writer.table
    assert [d.id for d in sink.sent] == [1, 2]
    clock.advance(1.0)
    assert [d.id for d in sink.sent] == [1, 2, 1]
    assert d1.attempts == 1


def test_expired_delivery_is_dropped_not_sent():
    clock, writer, box = make()
    sink = Sink()
    box.attach(1, sink)
    clock.advance(100)
    box.add(Delivery(9, 1, 9, "dlr", b"p", 0.0, 50.0))
    assert sink.sent == []
    assert writer.pending[0][:2] == ("delivered", 9)


def test_a_row_deleted_while_a_load_is_in_flight_is_not_delivered_again():
    """The load's snapshot was taken before the delete committed: it must not resurrect the row."""
    clock = task.Clock()
    writer = Writer()
    pending_loads: list[tuple[defer.Deferred, list[Delivery]]] = []

    def load(account_id, limit, after_id=0):
        d = defer.Deferred()
        snapshot = [Delivery(x.id, x.account_id, x.message_id, x.kind, x.pdu, x.created_at, x.expires_at)
                    for x in sorted(writer.table.values(), key=lambda x: x.id)]
        pending_loads.append((d, snapshot))  # the read ran now; its answer comes later
        return d

    box = Outbox(writer, clock, load, max_queued=5000)
    sink = Sink()
    box.attach(1, sink)
    first_load, rows = pending_loads.pop()
    first_load.callback(rows)  # empty table
    d7 = Delivery(7, 1, 7, "dlr", b"p", 0.0, 1e9)
    writer.table[7] = d7
    box.add(d7)
    assert [d.id for d in sink.sent] == [7]
    box._acct(1).spilled = True
    box._refill(1)  # a read starts: its snapshot holds row 7
    load_d, snapshot = pending_loads.pop()
    box.answered(1, sink, 1, Status.ESME_ROK)
    writer.commit()  # the delete of 7 commits before the read's answer arrives
    load_d.callback(snapshot)
    assert [d.id for d in sink.sent] == [7]


def test_a_receiver_that_leaves_hands_its_deliveries_to_the_other_receiver_in_order():
    clock, writer, box = make(n_rows=5)
    a, b = Sink(window=3), Sink(window=1)
    box.attach(1, a)
    assert [d.id for d in a.sent] == [1, 2, 3]
    box.attach(1, b)
    assert [d.id for d in b.sent] == [4]
    box.detach(1, a)  # 1, 2, 3 unanswered: back to the head, ahead of 5
    box.answered(1, b, 1, Status.ESME_ROK)
    assert [d.id for d in b.sent] == [4, 1]
    for seq in (2, 3, 4, 5):
        box.answered(1, b, seq, Status.ESME_ROK)
    assert [d.id for d in b.sent] == [4, 1, 2, 3, 5]


def test_timed_out_deliveries_go_again_ahead_of_later_ones():
    clock, writer, box = make(n_rows=3)
    sink = Sink(window=2)
    box.attach(1, sink)
    box.timed_out(1, sink, 1)  # 1 goes again at once, ahead of 3
    box.timed_out(1, sink, 2)
    assert [d.id for d in sink.sent] == [1, 2, 1, 2]
    box.answered(1, sink, 3, Status.ESME_ROK)
    assert [d.id for d in sink.sent] == [1, 2, 1, 2, 3]


def test_a_receiver_that_is_unbinding_gets_nothing_new():
    clock, writer, box = make(n_rows=2)
    sink = Sink(window=1)
    box.attach(1, sink)
    sink.open = False  # the client unbound; its answer may still come
    box.answered(1, sink, 1, Status.ESME_ROK)
    assert [d.id for d in sink.sent] == [1]


def test_a_refill_reads_from_the_first_spilled_row_not_from_the_start():
    """Under sustained load a full line spills on every add; reading the oldest rows again each
    time (all already in memory) was most of a busy hub's reads (bench/bench_mo.py)."""
    clock = task.Clock()
    writer = Writer()
    reads: list[int] = []

    def load(account_id, limit, after_id=0):
        reads.append(after_id)
        rows = sorted((d for d in writer.table.values() if d.id > after_id), key=lambda d: d.id)[:limit]
        return defer.succeed([Delivery(d.id, d.account_id, d.message_id, d.kind, d.pdu, d.created_at,
                                       d.expires_at) for d in rows])

    box = Outbox(writer, clock, load, max_queued=3)
    sink = Sink(window=1)
    box.attach(1, sink)
    for i in range(1, 11):
        d = Delivery(i, 1, i, "mo", b"p", 0.0, 1e9)
        writer.table[i] = d
        box.add(d)
    while len({d.id for d in sink.sent}) < 10:
        box.answered(1, sink, len(sink.sent), Status.ESME_ROK)
        writer.commit()
        box.pump(1)
    assert [d.id for d in sink.sent] == list(range(1, 11))  # each once, in order
    assert reads[0] == 0 and all(r >= 3 for r in reads[1:]), reads  # never the oldest again
