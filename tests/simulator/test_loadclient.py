"""The load-generating ESME, run against the simulated carrier over real TCP."""

from __future__ import annotations

import argparse
import math

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError

from staffetta.pdu.constants import Command, Status
from staffetta.simulator import cli
from staffetta.simulator.loadclient import BindError, LoadResult, run_load
from staffetta.simulator.traffic import SINGLE_DESTINATION as SINGLE
from tests.simulator.conftest import within

inline = pytest_twisted.inlineCallbacks


def _port(carrier) -> int:
    return carrier.ports[0].getHost().port


@inline
def test_load_all_accepted_and_receipts_matched(make_carrier):
    mix = {"DELIVRD": 0.8, "UNDELIV": 0.15, "REJECTD": 0.05}
    carrier = make_carrier(dlr_delay=0.01, outcomes=mix, seed=3)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=2000, window=50,
                              profile=SINGLE), 20)
    assert (r.sent, r.accepted, r.rejected, r.lost) == (2000, 2000, {}, 0)
    assert (r.receipts, r.receipts_expected, r.receipts_foreign) == (2000, 2000, 0)
    assert 0 < r.p50_ms <= r.p99_ms
    assert r.accepted_per_s > 0 and r.receipts_per_s > 0 and r.duration_s > 0
    assert carrier.stats["submits"] == 2000 and carrier.stats["receipts_acked"] == 2000
    # The outcome mix, within 4.5 standard deviations of a binomial draw.
    for stat, p in mix.items():
        got = carrier.stats["outcomes"].get(stat, 0)
        assert abs(got - 2000 * p) < 4.5 * math.sqrt(2000 * p * (1 - p)), (stat, got)
    # The run unbound cleanly.
    assert carrier.sessions == []


@inline
def test_load_over_several_connections(make_carrier):
    carrier = make_carrier(dlr_delay=0.0, id_format="hex")
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=999, window=7,
                              connections=3), 20)
    # The realistic mix: about 90% of the messages ask for a receipt.
    assert (r.sent, r.accepted, r.lost) == (999, 999, 0)
    assert 800 < r.receipts_expected < 999 and r.receipts == r.receipts_expected
    assert carrier.stats["receipts_scheduled"] == r.receipts_expected
    assert carrier.stats["binds"] == 3


@inline
def test_load_counts_rejections_and_does_not_wait_for_receipts(make_carrier):
    carrier = make_carrier(dlr_delay=0.01)
    carrier.script("3900", submit_status=Status.ESME_RTHROTTLED)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=300, window=20,
                              profile=SINGLE, destination="39001234567", receipt_timeout=60), 10)
    assert r.accepted == 0 and r.rejected == {Status.ESME_RTHROTTLED: 300}
    assert r.receipts == 0
    assert r.as_dict()["rejected"] == {"ESME_RTHROTTLED": 300}


@inline
def test_load_gives_up_on_missing_receipts(make_carrier):
    carrier = make_carrier(dlr_delay=60.0)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=50, window=10,
                              profile=SINGLE, receipt_timeout=0.2), 10)
    assert r.accepted == 50 and r.receipts == 0 and r.receipts_per_s == 0


@inline
def test_load_without_receipts(make_carrier):
    carrier = make_carrier(dlr_delay=0.0)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=100,
                              profile=SINGLE, registered_delivery=0), 10)
    assert r.accepted == 100 and r.receipts == r.receipts_expected == 0
    assert carrier.stats["receipts_scheduled"] == 0


@inline
def test_load_counts_unanswered_as_lost(make_carrier):
    carrier = make_carrier(dlr_delay=0.0)
    carrier.script("3900", respond=False)
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=30, window=10,
                              profile=SINGLE, destination="3900111", response_timeout=0.3), 10)
    assert r.sent == 10 and r.lost == 10 and r.accepted == 0


@inline
def test_load_bind_refused(make_carrier):
    carrier = make_carrier(credentials={b"hub": b"secret"})
    with pytest.raises(BindError) as info:
        yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "wrong", n=10), 10)
    assert info.value.status == Status.ESME_RINVPASWD
    assert "ESME_RINVPASWD" in str(info.value)


@inline
def test_load_target_down(make_carrier):
    carrier = make_carrier()
    port = _port(carrier)
    yield carrier.close()
    with pytest.raises(ConnectionRefusedError):
        yield within(run_load(reactor, "127.0.0.1", port, "hub", "pw", n=10), 10)


@inline
def test_leftover_receipt_is_reported_apart_and_never_counted(make_carrier, connect):
    """Issue 11.5: a receipt queued for the account before the run is not one of ours."""
    carrier = make_carrier(dlr_delay=0.0)
    # An earlier client, bound TX (it cannot take receipts), submits and goes away:
    # its receipt waits in the carrier's queue for the next receiver of "hub".
    old = yield connect(carrier)
    resp = yield old.bind(b"hub", b"pw", Command.BIND_TRANSMITTER)
    assert resp.status == 0
    resp = yield within(old.submit())
    assert resp.status == 0
    yield within(old.request(Command.UNBIND))
    assert carrier.queued == 1
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=20, window=5,
                              profile=SINGLE), 10)
    assert (r.accepted, r.receipts_expected, r.receipts) == (20, 20, 20)
    assert r.receipts_foreign == 1 and r.receipts_unrequested == 0
    assert carrier.stats["receipts_acked"] == 21  # and the leftover was acknowledged
    assert "1 not of this run, not counted" in cli.format_result(r)


@inline
def test_the_run_waits_for_its_own_receipts_not_for_a_count(make_carrier, connect):
    """A leftover receipt must not stand in for one of ours that is still to come."""
    carrier = make_carrier(dlr_delay=0.0)
    carrier.script("3933", delay=0.5)  # our receipts come late
    old = yield connect(carrier)
    yield old.bind(b"hub", b"pw", Command.BIND_TRANSMITTER)
    yield within(old.submit(destination=b"39001234567"))
    yield within(old.request(Command.UNBIND))
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=3, window=5,
                              profile=SINGLE, destination="393331234567"), 10)
    assert (r.receipts, r.receipts_expected, r.receipts_foreign) == (3, 3, 1)


@inline
def test_receipt_before_its_submit_resp_is_still_ours(make_carrier):
    """With several binds a receipt can overtake the response that names its id (another bind's read)."""
    carrier = make_carrier(dlr_delay=0.0, id_format="decimal")
    r = yield within(run_load(reactor, "127.0.0.1", _port(carrier), "hub", "pw", n=600, window=20,
                              connections=3, profile=SINGLE), 20)
    assert (r.receipts, r.receipts_expected, r.receipts_foreign) == (600, 600, 0)


def test_receipts_matched_in_any_order_and_counted_once():
    """The bookkeeping itself: early receipts, repeats, unrequested ones."""
    from staffetta.simulator.loadclient import _Run
    from staffetta.simulator.traffic import Traffic

    run = _Run(reactor, Traffic(SINGLE), 0, 1, 1, 30.0)
    run.receipt(b"b", 1.0)  # before its response
    run.accepted(b"a", True)
    run.accepted(b"b", True)
    run.accepted(b"c", False)
    run.receipt(b"a", 2.0)
    run.receipt(b"a", 2.0)  # a repeat
    run.receipt(b"c", 2.0)
    run.receipt(None, 2.0)  # no id at all
    r = run.result
    assert (r.receipts, r.receipts_expected, r.receipts_unrequested) == (2, 2, 1)
    assert sum(run.stray.values()) == 2 and not run.awaited


@inline
def test_realistic_mix_through_the_hub(data_dir):
    """The default traffic is accepted by a real hub whose plan is price_plan_section():
    every country priced, every shape valid, every receipt asked for comes back."""
    from staffetta.simulator.traffic import price_plan_section
    from tests.e2e.harness import make_env

    env = make_env(data_dir, accounts=(("acme", "pw1"), ("shop", "pw2"), ("bank", "pw3")),
                   billing=price_plan_section())
    try:
        r = yield within(run_load(reactor, "127.0.0.1", env.port,
                                  credentials=[(b"acme", b"pw1"), (b"shop", b"pw2"), (b"bank", b"pw3")],
                                  n=600, window=20), 30)
        assert r.rejected == {} and (r.sent, r.accepted, r.lost) == (600, 600, 0)
        assert r.connections == 3 and r.profile == "realistic"
        assert r.receipts == r.receipts_expected and 480 < r.receipts_expected < 600
        assert r.receipts_foreign == 0
    finally:
        yield env.stop()


@inline
def test_realistic_mix_to_italy_only_suits_a_hub_with_the_default_plan(data_dir):
    """What README's demo line does: the default plan prices only IT; --countries IT keeps the mix there."""
    from tests.e2e.harness import make_env

    env = make_env(data_dir)
    try:
        r = yield within(run_load(reactor, "127.0.0.1", env.port, "demo", "demo", n=200, window=20,
                                  regions=["IT"]), 30)
        assert r.rejected == {} and r.accepted == 200 and r.receipts == r.receipts_expected
    finally:
        yield env.stop()


def _bench_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_bench_arguments(parser)
    return parser.parse_args(["--target", "127.0.0.1:2775", *extra])


def test_bench_arguments_and_report(capsys):
    args = _bench_args("--system-id", "demo", "--password", "demo")
    assert (args.n, args.window, args.connections, args.json, args.profile, args.seed) == (
        10000, 50, None, False, "realistic", 1)
    several = _bench_args("--account", "a:1", "--account", "b:2", "--profile", "single-destination")
    assert several.account == [(b"a", b"1"), (b"b", b"2")]
    r = LoadResult(sent=10, accepted=9, rejected={0x58: 1}, duration_s=0.5, accepted_per_s=18.0, p50_ms=1.0,
                   p99_ms=2.0, receipts=8, receipts_expected=9, receipts_per_s=9.0, receipts_foreign=2,
                   window=50, profile="realistic")
    text = cli.format_result(r)
    assert "18 msg/s" in text and "ESME_RTHROTTLED 1" in text and "p99 2.00 ms" in text
    assert "8 of 9 expected" in text and "2 not of this run, not counted" in text


@pytest.mark.parametrize(("argv", "names"), [
    (["--target", "nowhere", "--system-id", "d", "--password", "d"], "--target"),
    (["--system-id", "d"], "--system-id and --password"),
    ([], "no credential"),
    (["--account", "a:b", "--destination", "39333"], "--destination: only with --profile single-destination"),
    (["--account", "a:b", "--registered-delivery", "0"], "--registered-delivery: only with"),
    (["--account", "a:b", "--connections", "0"], "--connections: must be >= 1"),
    (["--account", "a:b", "--countries", "IT,XX"], "--countries: 'XX' is not one of the mix's countries"),
    (["--account", "a:b", "--countries", ","], "--countries: no country given"),
    (["--account", "a:b", "--profile", "single-destination", "--countries", "IT"],
     "--countries: only with --profile realistic"),
    (["--account", "a:b", "--profile", "single-destination", "--text", "€€ ok ☃"], "--text: not GSM"),
])
def test_bench_mistakes_get_one_line_and_exit_2(capsys, argv, names):
    parser = argparse.ArgumentParser()
    cli.add_bench_arguments(parser)
    if argv and argv[0] == "--target":
        args = parser.parse_args(argv)
    else:
        args = parser.parse_args(["--target", "127.0.0.1:2775", *argv])
    assert cli.bench_main(args, reactor=object()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and names in err
