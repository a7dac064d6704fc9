"""The hub's hand-kept metrics expose exactly what prometheus_client's own would."""

from __future__ import annotations

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
