"""pdu.window: the line and its windows, on task.Clock; the ordering promise under Hypothesis.

The promise, precisely: at every send, by any window of a line, the item sent
was accepted before every item still waiting in that line. Items are accepted
as 0, 1, 2, ... so "accepted before" is "smaller".
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from staffetta.pdu.window import Line, Window


class Peer:
    """A connection seen by a window: sequence numbers and a log of what it was sent."""

    def __init__(self, name: str, log: list, line: Line) -> None:
        self.name = name
        self.log = log
        self.line = line
        self.seq = 0
        self.flushes = 0

    def send(self, item: int) -> int:
        waiting = list(self.line)
        assert all(item < w for w in waiting), f"sent {item} while {waiting} wait"
        self.seq += 1
        self.log.append((self.name, item))
        return self.seq

    def flush(self) -> None:
        self.flushes += 1


def make(n: int = 1, size: int = 2, clock=None, **line_kw):
    clock = clock or task.Clock()
    line: Line[int] = Line(clock=clock, **line_kw)
    log: list = []
    peers = [Peer(f"w{i}", log, line) for i in range(n)]
    windows = [Window(line, size, p.send, flush=p.flush, clock=clock) for p in peers]
    return clock, line, log, peers, windows


def sent(log) -> list[int]:
    return [item for _, item in log]


def seq_of(w: Window, item: int) -> int:
    return next(s for s, (_, it) in w.outstanding.items() if it == item)


def test_a_window_takes_at_most_its_size_and_refills_on_answers():
    _, line, log, peers, (w,) = make(size=2)
    w.open()
    for i in range(5):
        line.put(i)
    assert sent(log) == [0, 1] and len(line) == 3
    assert w.done(seq_of(w, 1)) == 1
    assert sent(log) == [0, 1, 2]
    assert peers[0].flushes == 3  # one per pump that sent (two puts, one answer)
    w.close()
    w.open()  # 0 and 2 come back ahead of 3, 4 and go at once: one flush
    assert sent(log)[-2:] == [0, 2] and peers[0].flushes == 4


def test_nothing_is_sent_before_the_window_opens():
    _, line, log, _, (w,) = make()
    line.put(0)
    assert log == [] and w.free == 0
    w.open()
    assert sent(log) == [0]


def test_two_throttled_items_go_back_in_their_order_not_reversed():
    # The defect of issue 10: each throttled answer went to the head on its own, so 2 passed 1.
    clock, line, log, _, (w,) = make(size=3)
    w.open()
    for i in range(4):
        line.put(i)  # 0, 1, 2 in flight, 3 waits
    w.throttled(seq_of(w, 0), backoff=1.0)
    w.throttled(seq_of(w, 1), backoff=1.0)
    assert list(line) == [0, 1, 3] and w.free == 0
    w.done(seq_of(w, 2))
    clock.advance(1.0)
    assert sent(log) == [0, 1, 2, 0, 1, 3]


def test_a_later_throttle_extends_the_pause_and_one_timer_resumes():
    clock, line, log, _, (w,) = make(size=1)
    w.open()
    line.put(0)
    w.throttled(seq_of(w, 0), backoff=1.0)  # paused until 1.0
    clock.advance(0.5)
    w.pause(1.0)  # until 1.5
    clock.advance(0.5)
    assert sent(log) == [0]
    w.pause(0.1)  # shorter: changes nothing
    clock.advance(0.6)
    assert sent(log) == [0, 0]
    assert len(clock.getDelayedCalls()) == 0


def test_a_lost_link_hands_everything_back_to_the_head_in_order():
    _, line, log, _, (a, b) = make(n=2, size=2)
    a.open()
    for i in range(4):
        line.put(i)  # a has 0, 1; 2, 3 wait
    back = a.close()
    assert sorted(back) == [0, 1] and list(line) == [0, 1, 2, 3]
    b.open()
    assert sent(log)[-2:] == [0, 1]


def test_returns_from_two_windows_merge_by_place_whatever_the_order_they_come_back():
    _, line, log, _, (a, b) = make(n=2, size=2)
    a.open()
    b.open()
    for i in range(6):
        line.put(i)  # round robin: a 0,2  b 1,3 ; 4, 5 wait
    b.close()
    a.close()
    assert list(line) == [0, 1, 2, 3, 4, 5]


def test_time_out_goes_back_and_is_sent_again_at_once_when_there_is_room():
    _, line, log, _, (w,) = make(size=2)
    w.open()
    for i in range(3):
        line.put(i)
    w.retry(seq_of(w, 0))
    assert sent(log) == [0, 1, 0]  # 0 before 2: it was accepted first
    assert list(line) == [2]


def test_an_item_whose_validity_ran_out_while_waiting_is_handed_to_expired():
    clock = task.Clock()
    gone: list = []

    @dataclass
    class Item:
        n: int
        expires_at: float

    line: Line[Item] = Line(clock=clock, expired=gone.append)
    out: list = []
    w = Window(line, 5, lambda it: out.append(it.n) or len(out), clock=clock)
    line.put(Item(0, 10.0))
    line.put(Item(1, 1.0))
    clock.advance(2.0)
    w.open()
    assert out == [0] and [i.n for i in gone] == [1]


def test_take_removes_only_what_matches_and_keeps_the_rest_in_order():
    _, line, _, _, _ = make()
    for i in range(6):
        line.put(i)
    assert line.take(lambda i: i % 2 == 0) == [0, 2, 4]
    assert list(line) == [1, 3, 5]


def test_full_follows_the_limit():
    _, line, _, _, _ = make(limit=2)
    line.put(0)
    assert not line.full
    line.put(1)
    assert line.full


def test_a_window_needs_a_slot():
    with pytest.raises(ValueError):
        Window(Line(), 0, lambda item: 1)


# ------------------------------------------------------------------ the property

ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "put", "done", "retry", "throttle", "close", "open", "tick"]),
        st.integers(0, 2),  # which window
        st.integers(0, 7),  # which outstanding item
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 3), size=st.integers(1, 4), script=ops)
def test_every_send_takes_the_earliest_waiting_item_and_nothing_is_lost_or_doubled(n, size, script):
    clock, line, log, _, windows = make(n=n, size=size)
    windows[0].open()
    accepted = 0
    finished: list[int] = []
    for op, wi, k in script:
        w = windows[wi % n]
        seqs = sorted(w.outstanding)
        seq = seqs[k % len(seqs)] if seqs else None
        if op == "put":
            line.put(accepted)
            accepted += 1
        elif op == "done" and seq is not None:
            finished.append(w.done(seq))
        elif op == "retry" and seq is not None:
            w.retry(seq)
        elif op == "throttle" and seq is not None:
            w.throttled(seq, backoff=1.0)
        elif op == "close" and w.is_open:
            w.close()
        elif op == "open" and not w.is_open:
            w.open()
        elif op == "tick":
            clock.advance(1.0)
        # Conservation: every accepted item is in exactly one place.
        places = list(line) + [it for x in windows for _, it in x.outstanding.values()] + finished
        assert sorted(places) == list(range(accepted))
    # Drain: everything left is sent and answered, each item finished exactly once.
    for w in windows:
        if not w.is_open:
            w.open()
    for _ in range(accepted + 2):
        clock.advance(1.0)
        for w in windows:
            for seq in list(w.outstanding):
                finished.append(w.done(seq))
    assert sorted(finished) == list(range(accepted))
    # First sends are in acceptance order.
    firsts: list[int] = []
    for item in sent(log):
        if item not in firsts:
            firsts.append(item)
    assert firsts == sorted(firsts)
