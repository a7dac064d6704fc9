"""The message path builds no reference cycles.

The hub collects its young generation rarely (smsc.cli.GC_THRESHOLDS): that is
only free while a message leaves no cyclic garbage behind. With the collector
off, N messages go end to end (submit, forward, receipt, delivery); what the
collector then finds unreachable must not grow with N.
"""

from __future__ import annotations

import gc

import pytest_twisted
from twisted.internet import defer, reactor

from staffetta.pdu.constants import Status
from tests.e2e.harness import make_env, with_timeout
from tests.esme import connect_esme

N = 300


@pytest_twisted.inlineCallbacks
def test_messages_leave_no_cyclic_garbage(data_dir):
    env = make_env(data_dir)
    try:
        esme = yield connect_esme(reactor, env.port)
        assert (yield with_timeout(esme.bind("demo", "demo"))).status == Status.ESME_ROK
        # Warm up: first-use caches, the connector, lazily built objects.
        yield with_timeout(esme.submit())
        yield with_timeout(esme.delivered.get())
        gc.collect()
        gc.disable()
        try:
            for _ in range(N // 50):  # within the hub's inbound window
                resps = yield with_timeout(defer.gatherResults([esme.submit() for _ in range(50)]))
                assert [r.status for r in resps] == [Status.ESME_ROK] * 50
            for _ in range(N):
                yield with_timeout(esme.delivered.get())
            found = gc.collect()
        finally:
            gc.enable()
        # A per-message cycle would leave at least N objects; what is left is the
        # test's own bookkeeping and the odd timer, independent of N.
        assert found < N // 3, f"{found} objects in cycles after {N} messages"
    finally:
        yield env.stop()
