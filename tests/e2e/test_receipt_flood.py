"""A carrier that sends receipts faster than we commit is slowed by TCP, never refused (issue 12.2).

Many carriers treat a refused deliver_sm as final. Side by side with Jasmin,
2-6% of a carrier's receipts were answered ESME_RTHROTTLED because the
connector's inbound window (then fixed at 100) was full while the hub waited
for its group commit. Here the carrier keeps 1,000 receipts in flight and never
offers a refused one again within the test: every receipt must still reach the
client, and the carrier must never see a refusal.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, reactor

from staffetta.pdu.constants import Status
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.esme import connect_esme

N = 20_000
WINDOW = 50


@pytest_twisted.inlineCallbacks
def test_a_receipt_flood_is_slowed_not_refused(data_dir):
    # window: the carrier's deliver_sm in flight; retry_delay: a refused receipt comes back too late to count.
    env = make_env(data_dir, dlr_delay=0.0, window=1000, retry_delay=1e6)
    try:
        c = yield connect_esme(reactor, env.port, window=WINDOW)
        yield c.bind("demo", "demo")
        got = 0

        def count(_):
            nonlocal got
            got += 1

        # The client keeps WINDOW submits in flight, as a bulk sender does.
        sent = 0
        in_flight: list[defer.Deferred] = []
        while sent < N:
            while len(in_flight) < WINDOW and sent < N:
                d = c.submit(destination=b"3933312%05d" % sent)
                in_flight.append(d)
                sent += 1
            r = yield with_timeout(in_flight.pop(0), 30)
            assert r.status == Status.ESME_ROK
        for d in in_flight:
            r = yield with_timeout(d, 30)
            assert r.status == Status.ESME_ROK
        stats = env.carrier.stats
        yield wait_until(lambda: stats["receipts_acked"] + stats["receipts_refused"] + stats["receipts_retried"] >= N,
                         timeout=120)
        assert stats["receipts_retried"] == 0 and stats["receipts_refused"] == 0
        assert stats["receipts_acked"] == N
        while got < N:
            yield with_timeout(c.delivered.get(), 30).addCallback(count)
        assert got == N
    finally:
        yield env.stop()
