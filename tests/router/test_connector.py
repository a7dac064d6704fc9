"""Connectors of one route, over real sockets: a lost link hands its messages to the next connector in order."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest_twisted
from twisted.internet import reactor

from staffetta.pdu.constants import MessageState, Tag
from staffetta.router.upstream import Connector, Forward
from staffetta.simulator.carrier import Carrier
from tests.e2e.harness import SIM_PASS, SIM_USER, make_env, wait_until, with_timeout
from tests.esme import connect_esme
from tests.router.test_order import record_submits


@pytest_twisted.inlineCallbacks
def test_a_lost_connector_hands_its_window_to_the_other_connector_of_the_route_in_order(data_dir, caplog):
    caplog.set_level(logging.INFO, logger="staffetta.router.upstream")
    env = make_env(data_dir)
    other = Carrier(reactor, dlr_delay=0.01, credentials={SIM_USER.encode(): SIM_PASS.encode()})
    other_port = other.listen(0)
    try:
        yield env.stop_hub()
        first = env.settings.upstreams[0]
        second = replace(first, name="sim2", port=other_port.getHost().port)
        env.settings = replace(env.settings, upstreams=(first, second))
        env.start_hub()
        router = env.hub.router
        # No routes: in the config: one rule, failover over every upstream in config order.
        rule = router.routing.table.rules[0]
        assert (rule.name, rule.strategy, rule.connectors) == ("default", "failover", ("sim", "sim2"))
        yield wait_until(lambda: all(c.up for c in router.connectors.values()))
        silent = record_submits(env.carrier)
        taken = record_submits(other)
        env.carrier.script("", respond=False)  # the first carrier takes submits and never answers
        c = yield connect_esme(reactor, env.port)
        yield c.bind("demo", "demo")
        dests = [b"3933300000%02d" % i for i in range(8)]
        ids = []
        for d in dests:
            r = yield with_timeout(c.submit(destination=d))
            ids.append(r.fields["message_id"])
        yield wait_until(lambda: len(silent) == 8)
        held = [d for d, _ in silent]
        assert held == dests and not taken  # failover: the first connector while it is up
        # The first carrier goes away: what it held goes to the next connector of
        # the route, which sends it in the order it was accepted.
        yield env.carrier_port.stopListening()
        yield env.carrier.stop_sessions()
        yield wait_until(lambda: len(taken) == 8)
        assert [d for d, _ in taken] == held
        states = []
        for _ in dests:
            dlr = yield with_timeout(c.delivered.get())
            states.append(dlr.tlvs[Tag.message_state])
        assert states == [bytes([MessageState.DELIVERED])] * 8
        logged = caplog.text
        assert "connector sim bound" in logged and "connector sim2 bound" in logged
        assert "connector sim lost" in logged
        assert env.hub.metrics.hot.failovers[("default", "sim", "sim2", "down")] == 8
    finally:
        yield env.stop_hub()
        yield other.close()
        yield env.carrier.close()


class _Listener:
    """A listener that records what a connector hands up."""

    def __init__(self) -> None:
        self.events: list = []

    def connector_state(self, connector, up, reason) -> None:
        self.events.append(("state", up, reason))


def test_a_connector_added_to_the_router_keeps_what_waited_on_it_in_order():
    from staffetta.conf.settings import UpstreamSettings
    from staffetta.router.router import Router

    c = Connector(UpstreamSettings("a", "h", 1, "s", "p"), _Listener(), reactor=None, max_queue=2)
    for i in range(3):
        c.line.put(Forward(i, b"", 1e18))
    router = Router(None, None, None, None, lambda: 0)
    router.add_connector(c)
    assert c.listener is router and router.connectors == {"a": c}
    assert [f.message_id for f in c.queue] == [0, 1, 2]
    assert c.line.full and not c.up
    assert [f.message_id for f in c.line.take(lambda f: f.message_id < 2)] == [0, 1]
