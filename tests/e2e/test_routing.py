"""Routing over a fleet of simulated carriers, over real sockets (issue 13).

Our ESME -> the hub -> several simulator carriers, each its own listening
port. Every test counts what each carrier received (in arrival order) and
what the client got back: zero loss, order kept per destination.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

import pytest_twisted
from twisted.internet import defer, reactor

from staffetta.conf.settings import HlrSettings, from_dict
from staffetta.pdu.constants import MessageState, Status, Tag
from staffetta.simulator.carrier import Carrier
from staffetta.simulator.hlr import listen_hlr
from tests.e2e.harness import SIM_PASS, SIM_USER, make_env, wait_until, with_timeout
from tests.esme import connect_esme
from tests.router.test_order import record_submits


def carrier(**kw) -> tuple[Carrier, object]:
    c = Carrier(reactor, dlr_delay=kw.pop("dlr_delay", 0.01), credentials={SIM_USER.encode(): SIM_PASS.encode()},
                **kw)
    return c, c.listen(0)


@defer.inlineCallbacks
def fleet(data_dir, routes, names=("a", "b"), *, hlr=None, upstream=None, **env_kw):
    """A hub whose upstreams are one simulator carrier per name, with ``routes`` in force.

    Returns (env, {name: carrier}); the first carrier is the harness's own.
    """
    env = make_env(data_dir, **env_kw)
    yield env.stop_hub()
    carriers = {names[0]: env.carrier}
    ports = {names[0]: env.carrier_port}
    for n in names[1:]:
        carriers[n], ports[n] = carrier()
    base = env.settings.upstreams[0]
    ups = tuple(replace(base, name=n, port=ports[n].getHost().port, **(upstream or {}).get(n, {}))
                for n in names)
    env.settings = replace(env.settings, upstreams=ups, routes=routes, hlr=hlr or env.settings.hlr)
    env.extra = [(carriers[n], ports[n]) for n in names[1:]]
    env.start_hub()
    return env, carriers


@defer.inlineCallbacks
def close(env):
    yield env.stop_hub()
    for c, p in getattr(env, "extra", []):
        yield p.stopListening()
        yield c.close()
    yield env.carrier.close()


@defer.inlineCallbacks
def client(env):
    c = yield connect_esme(reactor, env.port)
    yield c.bind("demo", "demo")
    return c


@defer.inlineCallbacks
def send(c, dests):
    ids = []
    for d in dests:
        r = yield with_timeout(c.submit(destination=d))
        assert r.status == 0, hex(r.status)
        ids.append(r.fields["message_id"])
    return ids


@defer.inlineCallbacks
def receipts(c, n):
    got = []
    for _ in range(n):
        dlr = yield with_timeout(c.delivered.get(), 20)
        got.append(dlr.tlvs[Tag.message_state])
    return got


DESTS = [b"3933300000%02d" % i for i in range(20)]
FAILOVER = [{"name": "it", "match": {"prefix": "39"}, "connectors": ["a", "b"], "strategy": "failover",
             "timeout": 1}]


@pytest_twisted.inlineCallbacks
def test_failover_on_a_dead_carrier_loses_nothing_and_keeps_order(data_dir):
    env, fl = yield fleet(data_dir, FAILOVER)
    try:
        yield wait_until(lambda: env.hub.router.connectors["a"].up and env.hub.router.connectors["b"].up)
        at_a, at_b = record_submits(fl["a"]), record_submits(fl["b"])
        c = yield client(env)
        yield send(c, DESTS[:5])
        yield wait_until(lambda: len(at_a) == 5)
        first = yield receipts(c, 5)  # (a dead carrier's pending receipts die with it)
        # Carrier a dies: it stops listening and drops its sessions.
        yield env.carrier_port.stopListening()
        yield fl["a"].stop_sessions()
        yield wait_until(lambda: not env.hub.router.connectors["a"].up)
        yield send(c, DESTS[5:])
        yield wait_until(lambda: len(at_b) == 15)
        assert [d for d, _ in at_a] == DESTS[:5] and [d for d, _ in at_b] == DESTS[5:]
        states = yield receipts(c, 15)
        assert first + states == [bytes([MessageState.DELIVERED])] * 20
    finally:
        yield close(env)


@pytest_twisted.inlineCallbacks
def test_failover_on_a_refusing_carrier_moves_each_message_in_order(data_dir):
    env, fl = yield fleet(data_dir, FAILOVER)
    try:
        yield wait_until(lambda: env.hub.router.connectors["b"].up and env.hub.router.connectors["a"].up)
        fl["a"].script("", submit_status=Status.ESME_RSYSERR)  # a refuses everything, with a status we fail over on
        fl["a"].script("393330000009", submit_status=Status.ESME_RINVDSTADR)  # ...and this one for good
        at_a, at_b = record_submits(fl["a"]), record_submits(fl["b"])
        c = yield client(env)
        yield send(c, DESTS[:12])
        yield wait_until(lambda: len(at_b) == 11)
        assert [d for d, _ in at_a] == DESTS[:12]
        assert [d for d, _ in at_b] == [d for d in DESTS[:12] if d != b"393330000009"]
        states = yield receipts(c, 12)
        assert Counter(states) == {bytes([MessageState.DELIVERED]): 11, bytes([MessageState.REJECTED]): 1}
        moved = env.hub.metrics.hot.failovers[("it", "a", "b", "0x00000008")]
        assert moved == 11
        with env.hub.engine.connect() as conn:  # route and connector on every row, refused or carried
            rows = dict(((d, (r, c)) for d, r, c in conn.exec_driver_sql(
                "SELECT destination, route, connector FROM messages")))
        assert rows["393330000009"] == ("it", "a")
        assert {v for k, v in rows.items() if k != "393330000009"} == {("it", "b")}
    finally:
        yield close(env)


@pytest_twisted.inlineCallbacks
def test_failover_on_a_silent_carrier_after_the_rules_timeout(data_dir):
    env, fl = yield fleet(data_dir, FAILOVER)
    try:
        yield wait_until(lambda: env.hub.router.connectors["b"].up and env.hub.router.connectors["a"].up)
        fl["a"].script("", respond=False)
        at_a, at_b = record_submits(fl["a"]), record_submits(fl["b"])
        c = yield client(env)
        yield send(c, DESTS[:6])
        yield wait_until(lambda: len(at_b) == 6, timeout=5)  # the rule's timeout is 1 s (session ticks: ≤ 2 s)
        assert [d for d, _ in at_a] == DESTS[:6] and [d for d, _ in at_b] == DESTS[:6]
        states = yield receipts(c, 6)
        assert states == [bytes([MessageState.DELIVERED])] * 6
        assert env.hub.metrics.hot.failovers[("it", "a", "b", "timeout")] == 6
    finally:
        yield close(env)


@pytest_twisted.inlineCallbacks
def test_weighted_split_within_five_percent_over_ten_thousand_messages(data_dir):
    routes = [{"name": "w", "connectors": ["a", "b"], "strategy": "weighted", "weights": {"a": 3, "b": 1}}]
    env, fl = yield fleet(data_dir, routes)
    try:
        yield wait_until(lambda: env.hub.router.connectors["b"].up and env.hub.router.connectors["a"].up)
        at_a, at_b = record_submits(fl["a"]), record_submits(fl["b"])
        c = yield client(env)
        n = 10_000
        pending = []
        for i in range(n):
            pending.append(c.submit(destination=b"39333%07d" % i, registered_delivery=0))
            if len(pending) >= 50:
                yield defer.gatherResults(pending)
                pending = []
        yield defer.gatherResults(pending)
        yield wait_until(lambda: len(at_a) + len(at_b) == n, timeout=60)
        assert abs(len(at_a) / n - 0.75) <= 0.05 and abs(len(at_b) / n - 0.25) <= 0.05
        assert len(at_a) == 7500  # smooth weighted round-robin is exact over whole cycles
    finally:
        yield close(env)


@pytest_twisted.inlineCallbacks
def test_least_cost_picks_the_cheapest_and_leaves_it_under_the_floor(data_dir):
    routes = [{"name": "lc", "connectors": ["a", "b"], "strategy": "least-cost", "floor": 0.8,
               "prices": {"a": {"IT": 0.004}, "b": {"IT": 0.006, "*": 0.01}}}]
    env, fl = yield fleet(data_dir, routes)
    try:
        yield wait_until(lambda: env.hub.router.connectors["b"].up and env.hub.router.connectors["a"].up)
        at_a, at_b = record_submits(fl["a"]), record_submits(fl["b"])
        c = yield client(env)
        yield send(c, DESTS[:5])
        yield wait_until(lambda: len(at_a) == 5)
        assert not at_b  # a is cheaper for Italy
        yield receipts(c, 5)
        fl["a"].set_outcomes({"UNDELIV": 1.0})  # a starts failing: its delivery ratio falls
        dests = [b"39334%07d" % i for i in range(40)]
        yield send(c, dests)
        states = yield receipts(c, 40)
        ratio = env.hub.router.connectors["a"].delivery_ratio
        assert ratio is not None and ratio < 0.8
        before = len(at_b)
        yield send(c, DESTS[5:10])
        yield wait_until(lambda: len(at_b) == before + 5)
        assert [d for d, _ in at_b][-5:] == DESTS[5:10]  # under the floor: the dearer carrier takes them
        assert states.count(bytes([MessageState.UNDELIVERABLE])) >= 15  # a judged on 20 outcomes at least
    finally:
        yield close(env)


@pytest_twisted.inlineCallbacks
def test_a_ported_number_follows_its_hlr_network(data_dir):
    sim = listen_hlr(reactor, 0, p_absent=0, p_unknown=0, p_ported=0, p_roaming=0)
    sim.fix("393331110001", mcc="222", mnc="10", network="Vodafone IT", ported=True,
            original_mcc="222", original_mnc="01", original_network="TIM")
    sim.fix("393331110002", mcc="222", mnc="01", network="TIM")
    routes = [{"name": "vodafone", "match": {"mccmnc": "22210"}, "connectors": ["b"]},
              {"name": "rest", "connectors": ["a"]}]
    env, fl = yield fleet(data_dir, routes, hlr=HlrSettings(provider={"type": "simulator", "url": sim.url}))
    try:
        yield wait_until(lambda: env.hub.router.connectors["b"].up and env.hub.router.connectors["a"].up)
        at_a, at_b = record_submits(fl["a"]), record_submits(fl["b"])
        c = yield client(env)
        yield send(c, [b"393331110001", b"393331110002"])
        yield wait_until(lambda: len(at_a) + len(at_b) == 2)
        assert [d for d, _ in at_b] == [b"393331110001"]  # ported to 222-10: the carrier of that network
        assert [d for d, _ in at_a] == [b"393331110002"]
    finally:
        yield close(env)
        yield sim.close()


@pytest_twisted.inlineCallbacks
def test_a_route_reload_under_load_loses_nothing_and_sends_nothing_twice(data_dir, caplog):
    caplog.set_level(logging.INFO, logger="staffetta")
    env, fl = yield fleet(data_dir, FAILOVER, names=("a", "b", "c"))
    try:
        router = env.hub.router
        yield wait_until(lambda: all(x.up for x in router.connectors.values()))
        seen = {n: record_submits(fl[n]) for n in fl}
        c = yield client(env)
        n = 600
        pending = []
        reloaded = None
        for i in range(n):
            pending.append(c.submit(destination=b"39335%07d" % i))
            if i == 200:
                # a leaves the configuration; c takes its place in the rule.
                cfg = {"data_dir": data_dir, "listen": "127.0.0.1:0",
                       "upstreams": [{"name": u.name, "host": u.host, "port": u.port, "system_id": u.system_id,
                                      "password": u.password, "reconnect_min": u.reconnect_min,
                                      "reconnect_max": u.reconnect_max} for u in env.settings.upstreams if u.name != "a"],
                       "routes": [{"name": "it", "connectors": ["c", "b"], "strategy": "failover"}]}
                reloaded = env.hub.reload_config(from_dict(cfg))
            if len(pending) >= 40:
                yield defer.gatherResults(pending)
                pending = []
        yield defer.gatherResults(pending)
        assert reloaded == {"rules": 1, "added": [], "removed": ["a"], "changed": []}
        yield wait_until(lambda: sum(len(s) for s in seen.values()) >= n, timeout=30)
        states = yield receipts(c, n)
        assert states == [bytes([MessageState.DELIVERED])] * n
        sent = Counter(d for s in seen.values() for d, _ in s)
        assert len(sent) == n and set(sent.values()) == {1}  # each message reached one carrier once
        assert seen["c"]  # the new connector took its share
        yield wait_until(lambda: "a" not in router.connectors and not fl["a"].sessions and not router.retiring,
                         timeout=15)  # a drained, unbound and forgotten
    finally:
        yield close(env)


@pytest_twisted.inlineCallbacks
def test_connector_sessions_bind_modes_and_a_throughput_limit_that_keeps_order(data_dir):
    routes = [{"name": "all", "connectors": ["a", "b"], "strategy": "round-robin"}]
    upstream = {"a": {"sessions": 2}, "b": {"bind_mode": "transmitter-receiver", "throughput": 20.0}}
    env, fl = yield fleet(data_dir, routes, upstream=upstream)
    try:
        router = env.hub.router
        a, b = router.connectors["a"], router.connectors["b"]
        yield wait_until(lambda: len(a.links) == 2 and len(b.links) == 2)
        binds = Counter(p.session.state.name for p in fl["b"].sessions)
        assert binds == {"BOUND_TX": 1, "BOUND_RX": 1}
        assert Counter(p.session.state.name for p in fl["a"].sessions) == {"BOUND_TRX": 2}
        state = {s["name"]: s for s in env.hub.connector_states()}
        assert (state["a"]["sessions"], state["a"]["window_size"], state["b"]["bind_mode"]) == (
            2, 100, "transmitter-receiver")
        at_b = record_submits(fl["b"])
        c = yield client(env)
        dests = [b"39336%07d" % i for i in range(60)]
        started = reactor.seconds()
        yield send(c, dests)
        yield wait_until(lambda: len(at_b) == 30, timeout=10)
        took = reactor.seconds() - started
        assert [d for d, _ in at_b] == dests[1::2]  # round-robin: every other message, in order
        assert took >= 0.45  # 30 at 20/s with a one-second burst: at least half a second held back
        states = yield receipts(c, 60)  # b's receipts come on its receiver session
        assert states == [bytes([MessageState.DELIVERED])] * 60
    finally:
        yield close(env)


@pytest_twisted.inlineCallbacks
def test_a_connectors_own_enquire_link_interval(data_dir):
    from staffetta.pdu.constants import Command

    env, fl = yield fleet(data_dir, None, upstream={"b": {"enquire_link": 0.5}})
    try:
        router = env.hub.router
        yield wait_until(lambda: router.connectors["a"].up and router.connectors["b"].up)
        counts = env.hub.metrics.pdu_counts
        sent = lambda: counts[(False, Command.ENQUIRE_LINK, 0)]  # noqa: E731
        before = sent()
        yield wait_until(lambda: sent() >= before + 2, timeout=5)  # b's, every half second of silence
        assert router.connectors["a"].timers.enquire_link == 30.0  # a keeps the session setting
    finally:
        yield close(env)
