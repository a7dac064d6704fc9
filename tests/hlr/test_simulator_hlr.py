"""The simulator's HLR endpoint over real HTTP: deterministic answers, CSV, faults, counters, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers

from staffetta.hlr.providers import _read_body as readBody
from staffetta.simulator.hlr import ABSENT, DELIVERED, NOT_MOBILE, UNKNOWN, HlrSimulator
from tests.hlr.conftest import within

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def http():
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, pool=pool)

    async def call(method: bytes, url: str, body: bytes | None = None, headers: dict | None = None):
        from io import BytesIO

        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        resp = await within(agent.request(method, url.encode(), Headers(headers or {}), producer))
        data = await within(readBody(resp))
        return resp.code, json.loads(data)

    yield call
    pytest_twisted.blockon(pool.closeCachedConnections())


def test_answers_are_deterministic_per_seed_and_look_like_a_network() -> None:
    a, b, c = HlrSimulator(None, seed=3), HlrSimulator(None, seed=3), HlrSimulator(None, seed=4)
    numbers = [f"39333{i:07d}" for i in range(3000)]
    ans_a = [a.answer(n) for n in numbers]
    assert ans_a == [b.answer(n) for n in reversed(numbers)][::-1]  # order does not matter
    assert ans_a != [c.answer(n) for n in numbers]
    mix = Counter(x["result"] for x in ans_a)
    assert mix[DELIVERED] > 2600 and 50 < mix[ABSENT] < 200 and 30 < mix[UNKNOWN] < 160
    ported = [x for x in ans_a if x["ported"]]
    assert 200 < len(ported) < 550
    for x in ported:
        assert x["serving"] is None or x["serving"]["mccmnc"] != x["home"]["mccmnc"]
        assert x["home"]["mccmnc"].startswith("222")
    for x in ans_a:
        if x["result"] == DELIVERED and not x["ported"]:
            assert x["serving"] == x["home"]
        if x["roaming"]:
            assert x["result"] == DELIVERED and x["roaming"]["country"] != "IT"


def test_prefix_network_and_non_mobile_numbers() -> None:
    s = HlrSimulator(None, seed=0, p_absent=0, p_unknown=0, p_ported=0, p_roaming=0)
    assert s.answer("393331234567")["home"] == {"mccmnc": "22201", "name": "TIM"}
    assert s.answer("393471234567")["home"]["name"] == "Vodafone"
    assert s.answer("4915112345678")["home"] == {"mccmnc": "26201", "name": "Telekom"}
    assert s.answer("390612345678")["result"] == NOT_MOBILE  # a Rome landline
    assert s.answer("999999999")["result"] == NOT_MOBILE


def test_csv_fixed_answers(tmp_path) -> None:
    path = tmp_path / "fixed.csv"
    path.write_text(
        "number,status,mcc,mnc,network,ported,original_mcc,original_mnc,original_network,roaming_country\n"
        "+393331111111,valid,222,50,Iliad,yes,222,01,TIM,\n"
        "393332222222,unknown,,,,,,,,\n"
        "393333333333,valid,222,10,Vodafone,,,,,CH\n"
    )
    s = HlrSimulator(None, csv_path=str(path))
    assert s.answer("393331111111") == {
        "msisdn": "393331111111", "result": DELIVERED, "serving": {"mccmnc": "22250", "name": "Iliad"},
        "home": {"mccmnc": "22201", "name": "TIM"}, "ported": True, "roaming": None}
    assert s.answer("393332222222")["result"] == UNKNOWN
    assert s.answer("393333333333")["roaming"] == {"country": "CH"}
    bad = tmp_path / "bad.csv"
    bad.write_text("number,status\n393331111111,happy\n")
    with pytest.raises(ValueError, match="bad.csv:2: status"):
        HlrSimulator(None, csv_path=str(bad))


@ensure
async def test_http_lookup_stats_config_and_faults(sim, http) -> None:
    code, body = await http(b"GET", sim.url + "/lookup?msisdn=393331234567")
    assert code == 200 and body == sim.answer("393331234567")
    code, body = await http(b"GET", sim.url + "/lookup?msisdn=39x")
    assert code == 400 and "msisdn" in body["error"]
    code, body = await http(b"POST", sim.url + "/config", json.dumps({"error_rate": 1.0}).encode())
    assert code == 200 and body["error_rate"] == 1.0
    code, body = await http(b"GET", sim.url + "/lookup?msisdn=393331234567")
    assert code == 500
    await http(b"POST", sim.url + "/config", json.dumps({"error_rate": 0, "down": True}).encode())
    code, _ = await http(b"GET", sim.url + "/lookup?msisdn=393331234567")
    assert code == 503
    code, body = await http(b"POST", sim.url + "/config", json.dumps({"latency": "slow"}).encode())
    assert code == 400 and body["error"].startswith("latency")
    code, stats = await http(b"GET", sim.url + "/stats")
    assert stats["calls"] == 3 and stats["errors"] == 2 and stats["rejected"] == 1
    assert sim.calls_for("393331234567") == 3
    code, _ = await http(b"DELETE", sim.url + "/stats")
    assert sim.calls == 0


@ensure
async def test_token_and_latency(http) -> None:
    s = HlrSimulator(reactor, token="t0k", latency=0.2)
    s.listen(0)
    try:
        code, _ = await http(b"GET", s.url + "/lookup?msisdn=393331234567")
        assert code == 401
        started = reactor.seconds()
        code, body = await http(b"GET", s.url + "/lookup?msisdn=393331234567",
                                headers={b"authorization": [b"Bearer t0k"]})
        assert code == 200 and reactor.seconds() - started >= 0.19
        assert s.max_in_flight == 1 and s.in_flight == 0
    finally:
        await s.close()


@ensure
async def test_staffetta_simulator_serves_the_hlr(tmp_path) -> None:
    """`staffetta simulator --hlr HOST:PORT` (simulator/cli.py) starts the endpoint with the seed."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "staffetta.simulator.cli", "simulator", "--listen", "127.0.0.1:0", "--control", "off",
         "--hlr", f"127.0.0.1:{port}", "--seed", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = await threads.deferToThread(proc.stdout.readline)
        assert f"hlr http://127.0.0.1:{port}/lookup" in banner
        pool = HTTPConnectionPool(reactor, persistent=False)
        resp = await within(Agent(reactor, pool=pool).request(
            b"GET", f"http://127.0.0.1:{port}/lookup?msisdn=393331234567".encode()))
        body = json.loads(await within(readBody(resp)))
        assert body == HlrSimulator(None, seed=5).answer("393331234567")
    finally:
        proc.terminate()
        await threads.deferToThread(proc.wait, 10)
        proc.stdout.close()
        proc.stderr.close()


def test_simulator_cli_bad_hlr_option(capsys) -> None:
    import argparse

    from staffetta.simulator import cli

    parser = argparse.ArgumentParser()
    cli.add_simulator_arguments(parser)
    args = parser.parse_args(["--hlr", "x:y"])
    assert cli.start_hlr(args, reactor=object())[0] == 2
    assert "--hlr:" in capsys.readouterr().err
    args = parser.parse_args(["--hlr", "off"])
    assert cli.start_hlr(args, reactor=object()) == (0, "")
