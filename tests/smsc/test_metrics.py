"""The hub's hand-kept metrics expose exactly what prometheus_client's own would."""

from __future__ import annotations

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from staffetta.smsc.metrics import _LATENCY_BUCKETS, HubMetrics

# Values around and on every bucket bound: a value equal to a bound counts in it (le).
latencies = st.lists(
    st.one_of(st.sampled_from(_LATENCY_BUCKETS), st.floats(min_value=0, max_value=10, allow_nan=False)),
    max_size=50,
)


def _lines(text: bytes, name: str) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if line.startswith(name))


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), latencies, max_size=3))
def test_submit_latency_histogram_matches_prometheus_client(observed: dict[str, list[float]]) -> None:
    ours = HubMetrics()
    ref_registry = CollectorRegistry()
    ref = Histogram("staffetta_submit_latency_seconds", "submit_sm received to submit_sm_resp sent",
                    ["account"], buckets=_LATENCY_BUCKETS, registry=ref_registry)
    for account, values in observed.items():
        ref.labels(account)  # a labelled child exists once touched, as ours does
        for v in values:
            ours.submitted(account, 0, v)
            ref.labels(account).observe(v)
    observed = {a: v for a, v in observed.items() if v}
    name = "staffetta_submit_latency_seconds_"
    want = [ln for ln in _lines(generate_latest(ref_registry), name)
            if any(f'account="{a}"' in ln for a in observed) and "_created" not in ln]
    got = _lines(ours.render(), name)
    assert [ln.rsplit(" ", 1)[0] for ln in got] == [ln.rsplit(" ", 1)[0] for ln in want]
    for g, w in zip(got, want, strict=True):
        assert float(g.rsplit(" ", 1)[1]) == float(w.rsplit(" ", 1)[1])


# ------------------------------------------------------- account labels (issue 11 item 6)


def _store_with(tmp_path, *names: str):
    import staffetta.billing.accounts as accounts
    from staffetta.store.db import create_schema, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'staffetta.db'}")
    create_schema(engine)
    with engine.begin() as c:
        ids = [accounts.create_account(c, n, "pw").id for n in names]
    return engine, ids


def test_labels_are_names_for_events_that_carry_only_the_id(tmp_path) -> None:
    """Receipts, refunds and balances know only an account id: the label is still the name."""
    import staffetta.billing.accounts as accounts

    engine, (acme, beta) = _store_with(tmp_path, "acme", "beta")
    m = HubMetrics()
    m.know_accounts(engine)  # what the hub does at start
    m.receipt_event("queued", acme)
    m.balances({beta: 500})
    with engine.begin() as c:  # created after start, never bound: found on the first miss
        late = accounts.create_account(c, "late", "pw").id
    m.refunded(late, 160)
    m.receipt_event("delivered", late)
    text = m.render().decode()
    assert m.count("receipts", "acme", "queued") == 1 and m.count("receipts", "late", "delivered") == 1
    assert 'staffetta_balance_centicredits{account="beta"} 500.0' in text
    assert 'staffetta_credits_refunded_total{account="late"} 160.0' in text
    assert f'account="{acme}"' not in text and f'account="{late}"' not in text
    engine.dispose()


@pytest_twisted.inlineCallbacks
def test_resumed_messages_are_labelled_by_name_after_a_restart(data_dir):
    """The reported case: a message accepted before a restart, sent after it, its receipt counted under 'acme'."""
    from twisted.internet import reactor

    from tests.e2e.harness import make_env, wait_until, with_timeout
    from tests.esme import connect_esme

    env = make_env(data_dir, accounts=(("acme", "pw"),))
    carrier_port = env.carrier_port.getHost().port
    try:
        env.carrier.stop_sessions()
        yield env.carrier_port.stopListening()
        yield wait_until(lambda: not env.hub.router.connectors["sim"].up)
        c = yield connect_esme(reactor, env.port)
        yield c.bind("acme", "pw")
        r = yield with_timeout(c.submit())
        assert r.status == 0
        c.transport.loseConnection()
        yield env.stop_hub()
        env.carrier_port = env.carrier.listen(carrier_port)
        env.start_hub()  # resumes the message; no client binds, so the receipt is "queued"
        yield wait_until(lambda: sum(env.hub.metrics.hot.receipts.values()) == 1)
        assert dict(env.hub.metrics.hot.receipts) == {("acme", "queued"): 1}
    finally:
        yield env.stop()


def test_two_way_metrics_reply_window_hits_and_opt_outs() -> None:
    from staffetta.router.numbers import Configured, Numbers

    m = HubMetrics()
    m.account_names.update({1: "acme", 2: "beta"})
    n = Numbers(configured=Configured(pools={"REPLY": {0: ("393400000001",)}}))
    m.watch_numbers(n)
    n.remember_mt(1, "393331", "393400000001", 0.0)
    n.owner_of("393331", "393400000001", "yes", 10.0)
    n.owner_of("393331", "393400000001", "stop", 20.0)
    n.apply_opt(1, "393331", True, 20.0)
    n.apply_opt(2, "393332", True, 20.0)
    n.apply_opt(2, "393332", False, 30.0)
    text = m.render()
    assert _lines(text, "staffetta_reply_window_hits_total") == ['staffetta_reply_window_hits_total{account="acme"} 2.0']
    assert _lines(text, "staffetta_opt_outs_total") == [
        'staffetta_opt_outs_total{account="acme",change="out"} 1.0',
        'staffetta_opt_outs_total{account="beta",change="in"} 1.0',
        'staffetta_opt_outs_total{account="beta",change="out"} 1.0',
    ]
    assert _lines(text, "staffetta_reply_window_conversations") == ["staffetta_reply_window_conversations 1.0"]
