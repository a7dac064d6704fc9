"""Throttled and timed-out messages reach the carrier in the order they were accepted (issue 10).

Over real sockets: our ESME -> hub -> the simulator, which is scripted to
answer ESME_RTHROTTLED or nothing at all. The carrier's view is the order of
the submit_sm it receives (recorded by wrapping its submit handler).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest_twisted
from twisted.internet import reactor

from staffetta.conf.settings import SessionSettings
from staffetta.pdu.constants import Status
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.esme import connect_esme


def record_submits(carrier) -> list[tuple[bytes, bool]]:
    """(destination, accepted) of every submit_sm the carrier gets, in arrival order."""
    seen: list[tuple[bytes, bool]] = []
    original = carrier._submit

    def submit(proto, pdu):
        dest = pdu.fields["destination_addr"]
        rule = carrier.match(dest)
        seen.append((dest, rule is None or (rule.respond and not rule.submit_status and not rule.answer)))
        original(proto, pdu)

    carrier._submit = submit
    return seen


def restart_with(env, **upstream):
    """Stop the hub, change the (only) upstream's settings, start again."""
    up = replace(env.settings.upstreams[0], **upstream)
    env.settings = replace(env.settings, upstreams=(up,))


@pytest_twisted.inlineCallbacks
def test_throttled_messages_are_sent_again_in_the_order_they_were_accepted(data_dir, caplog):
    # The defect of issue 10: each ESME_RTHROTTLED answer put its message back at the
    # head on its own, so a round of throttled messages went out again reversed.
    caplog.set_level(logging.INFO, logger="staffetta.router.upstream")
    env = make_env(data_dir)
    try:
        yield env.stop_hub()
        restart_with(env, throttle_backoff=2.0)
        env.start_hub()
        seen = record_submits(env.carrier)
        env.carrier.script("39", submit_status=Status.ESME_RTHROTTLED)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        dests = [b"3933300000%02d" % i for i in range(7)]
        yield with_timeout(c.submit(destination=dests[0]))
        yield wait_until(lambda: len(seen) == 1)  # throttled: the connector pauses 2 s
        for d in dests[1:]:  # these queue up behind it during the pause
            r = yield with_timeout(c.submit(destination=d))
            assert r.status == Status.ESME_ROK
        assert len(seen) == 1
        # After the pause all seven go in one burst, in order, and are all throttled.
        yield wait_until(lambda: len(seen) == 8, timeout=5)
        assert [d for d, _ in seen[1:]] == dests
        env.carrier.clear_scripts()  # during the second pause
        yield wait_until(lambda: sum(ok for _, ok in seen) == 7, timeout=5)
        assert [d for d, ok in seen if ok] == dests
        assert "connector sim throttled by its carrier (0x00000058): pausing 2.0 s" in caplog.text
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_messages_that_time_out_during_a_throttle_go_again_in_their_order(data_dir):
    # 1 and 2 get no answer; 3 is throttled (the connector pauses 3 s); 1 and 2 time
    # out (1 s) during the pause. All three must go again as 1, 2, 3: today's main put
    # each one back at the head on its own and sent 2, 1, 3.
    env = make_env(data_dir, session=SessionSettings(response=1.0))
    try:
        yield env.stop_hub()
        restart_with(env, throttle_backoff=3.0)
        env.start_hub()
        seen = record_submits(env.carrier)
        env.carrier.script("3933310", respond=False)
        env.carrier.script("3933320", submit_status=Status.ESME_RTHROTTLED)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        dests = [b"393331000001", b"393331000002", b"393332000003"]
        for d in dests:
            r = yield with_timeout(c.submit(destination=d))
            assert r.status == Status.ESME_ROK
        yield wait_until(lambda: len(seen) >= 3)
        assert [d for d, _ in seen] == dests
        connector = env.hub.router.connectors["sim"]
        yield wait_until(lambda: connector.in_flight == 0, timeout=5)  # both timed out
        assert connector.throttled  # still in the pause
        env.carrier.clear_scripts()
        yield wait_until(lambda: sum(ok for _, ok in seen) >= 3, timeout=10)
        assert [d for d, ok in seen if ok] == dests
        assert len(seen) == 6  # each sent again exactly once
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_messages_that_time_out_are_sent_again_in_their_order(data_dir):
    env = make_env(data_dir, session=SessionSettings(response=1.0))
    try:
        seen = record_submits(env.carrier)
        env.carrier.script("39", respond=False)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        dests = [b"3933300000%02d" % i for i in range(5)]
        for d in dests:
            yield with_timeout(c.submit(destination=d))
        yield wait_until(lambda: len(seen) >= 5)
        env.carrier.clear_scripts()
        yield wait_until(lambda: sum(ok for _, ok in seen) >= 5, timeout=10)
        assert [d for d, ok in seen if ok] == dests
    finally:
        yield env.stop()
