"""``staffetta hlr`` as a user runs it: a separate process against the simulator's HLR over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import threads

import staffetta.billing.accounts as accounts
import staffetta.billing.wallet as wallet
from staffetta.hlr.jobs import list_jobs
from staffetta.smsc.hlr_cli import billing_charge_tx, register
from staffetta.store.db import create_schema, make_engine
from tests.hlr.conftest import balance, hlr_charges

ensure = pytest_twisted.ensureDeferred
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data / 'staffetta.db'}")
    create_schema(engine)
    with engine.begin() as c:
        a = accounts.create_account(c, "acme", "pw", default_country_code=39).id
        wallet.topup(c, a, 1_000_000)
    yield data, engine, a
    engine.dispose()


def hlr_cmd(*argv: str) -> list[str]:
    return [sys.executable, "-m", "staffetta.smsc.hlr_cli", "hlr", *argv]


async def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return await threads.deferToThread(
        subprocess.run, argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@ensure
async def test_verify_lookup_jobs_and_stale_after(tmp_path, store, sim) -> None:
    data, engine, acct = store
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("name,cellulare\nAda,+39 333 000 0001\nBob,3330000002\nEve,00393330000001\n"
                       "Rome,06 1234 5678\nHans,+49 151 12345678\n")
    common = ["--data-dir", str(data), "--provider-url", sim.url]
    out = tmp_path / "out.csv"
    p = await run(hlr_cmd("verify", str(numbers), "--account", "acme", "--out", str(out), "--json", *common))
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["total"] == 4 and summary["items"]["done"] == 3 and summary["items"]["invalid"] == 1
    assert summary["charged"] == "1.50" and summary["state"] == "done" and summary["resumed"] is False
    assert summary["price"] == "0.50"  # credits as decimal strings, as the account verbs give them
    assert "3/4" in p.stderr or "4/4" in p.stderr  # the progress line
    assert sim.calls == 3 and len(hlr_charges(engine, acct)) == 3
    assert out.read_text().splitlines()[0].startswith("number,status,mcc,mnc,network")

    # --stale-after 1m: everything was just looked up, nothing is asked or charged
    p = await run(hlr_cmd("verify", str(numbers), "--account", "acme", "--stale-after", "1m", "--json", *common))
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["items"]["fresh"] == 3 and summary["charged"] == "0.00" and summary["lookups_this_run"] == 0
    assert sim.calls == 3 and len(hlr_charges(engine, acct)) == 3

    # lookup: cached (free) and always (charged)
    p = await run(hlr_cmd("lookup", "3330000002", "--account", "acme", "--json", *common))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["number"] == "393330000002" and r["source"] == "cache" and r["charged"] == "0.00"
    p = await run(hlr_cmd("lookup", "+393330000002", "--account", "acme", "--mode", "always", *common))
    assert p.returncode == 0 and "393330000002: " in p.stdout and "charged 0.50 credits" in p.stdout
    assert sim.calls == 4 and balance(engine, acct) == 1_000_000 - 200

    p = await run(hlr_cmd("jobs", "--json", "--data-dir", str(data)))
    jobs = json.loads(p.stdout)
    assert [(j["id"], j["state"], j["charged"]) for j in jobs] == [(2, "done", "0.00"), (1, "done", "1.50")]
    p = await run(hlr_cmd("jobs", "--data-dir", str(data)))
    assert "acme" in p.stdout and "100%" in p.stdout


@pytest.mark.parametrize(("argv", "needle"), [
    (["verify", "NUMBERS", "--account", "nobody"], "--account: no account named 'nobody' in DATA"),
    (["verify", "NUMBERS", "--account", "acme", "--stale-after", "soon"], "--stale-after:"),
    (["verify", "missing.txt", "--account", "acme"], "FILE: cannot read missing.txt"),
    (["verify", "NUMBERS", "--account", "acme", "--column", "phone"], "--column:"),
    (["verify", "NUMBERS", "--account", "acme", "--provider-url", "ftp://x"], "--provider-url:"),
    (["lookup", "0612345678", "--account", "acme"], "NUMBER:"),
    (["resume", "99"], "JOB: no job 99 in DATA"),
    (["jobs", "--limit", "0"], "--limit: must be >= 1"),
    (["verify", "NUMBERS", "--account", "acme", "--out", "/proc/nope/r.csv"], "--out: cannot write /proc/nope/r.csv"),
    (["verify", "NUMBERS", "--account", "acme", "--config", "BADYAML"], "not valid YAML"),
])
def test_errors_are_one_line_exit_2(tmp_path, store, capsys, argv, needle) -> None:
    """Refused before any reactor or job: in-process, through the stand-alone entry point."""
    from staffetta.smsc.hlr_cli import main

    data, engine, _a = store
    numbers = tmp_path / "n.txt"
    numbers.write_text("+393331234567\n")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("hlr: [unclosed\n")
    argv = [{"NUMBERS": str(numbers), "BADYAML": str(bad_yaml)}.get(a, a) for a in argv]
    assert main(["hlr", *argv, "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle.replace("DATA", str(data)) in err, err
    with engine.connect() as c:
        assert list_jobs(c) == []


@ensure
async def test_ctrl_c_interrupts_and_the_same_command_resumes(tmp_path, store, sim) -> None:
    data, engine, acct = store
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("".join(f"+39340{i:07d}\n" for i in range(2000)))
    sim.configure(latency=0.02)
    argv = hlr_cmd("verify", str(numbers), "--account", "acme", "--concurrency", "10", "--json",
                   "--data-dir", str(data), "--provider-url", sim.url)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 30
    while sim.calls < 300 and time.monotonic() < deadline:  # let it get going
        await threads.deferToThread(time.sleep, 0.05)
    proc.send_signal(signal.SIGINT)
    out, err = await threads.deferToThread(proc.communicate, timeout=30)
    assert proc.returncode == 1, err
    first = json.loads(out)
    assert first["state"] == "interrupted" and 0 < first["items"]["done"] < 2000
    assert len(hlr_charges(engine, acct)) == first["items"]["done"]

    sim.configure(latency=0)
    p = await run(argv)
    assert p.returncode == 0, p.stderr
    second = json.loads(p.stdout)
    assert second["id"] == first["id"] and second["resumed"] is True and second["state"] == "done"
    assert second["lookups_this_run"] == 2000 - first["items"]["done"]
    assert second["charged"] == "1000.00" and len(hlr_charges(engine, acct)) == 2000


def test_register_adds_the_verbs_to_a_parent_parser() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="staffetta")
    sub = parser.add_subparsers(dest="verb", required=True)
    seen = []
    register(sub, lambda args: seen.append(args))
    args = parser.parse_args(["hlr", "verify", "f.txt", "--account", "a", "--stale-after", "3m",
                              "--out", "r.json", "--concurrency", "8", "--config", "c.yaml"])
    assert (args.verb, args.hlr_verb, args.stale_after, args.concurrency, args.config) == \
        ("hlr", "verify", "3m", 8, "c.yaml")
    for verb in (["jobs", "--json"], ["lookup", "393331234567", "--account", "a", "--json"],
                 ["resume", "3", "--data-dir", "d"]):
        assert callable(parser.parse_args(["hlr", *verb]).func)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: connections to it are refused


@ensure
async def test_an_unreachable_provider_is_named_with_its_url_and_error(engine, account, job_writer) -> None:
    """Issue 11 item 3: the progress line and the summary say where and why, not just "circuit open"."""
    from twisted.internet import reactor

    from staffetta.hlr.jobs import INTERRUPTED, JobRunner, format_progress
    from staffetta.hlr.providers import simulator_provider
    from tests.hlr.conftest import within
    from tests.hlr.test_jobs import new_job

    url = f"http://127.0.0.1:{_closed_port()}"
    provider = simulator_provider(reactor, url, retries=0, failures_to_open=2, reset_after=0.1)
    lines: list[str] = []
    runner = JobRunner(reactor, engine, provider, billing_charge_tx, job_writer, concurrency=2,
                       give_up_after=0.5, progress=lambda p: p.waiting and lines.append(format_progress(p)))
    info = await within(runner.run(new_job(engine, account, ["+393331234567", "+393331234568"])))
    await provider.close()
    assert lines, "no progress line while the provider was down"
    assert f"waiting: provider simulator ({url})" in lines[-1] and "Connection refused" in lines[-1], lines[-1]
    assert info.state == INTERRUPTED
    assert f"simulator ({url})" in info.detail and "Connection refused" in info.detail, info.detail


@ensure
async def test_lookup_names_the_unreachable_provider(tmp_path, store) -> None:
    data, _engine, _acct = store
    url = f"http://127.0.0.1:{_closed_port()}"
    p = await run(hlr_cmd("lookup", "3331234567", "--account", "acme", "--mode", "always",
                          "--data-dir", str(data), "--provider-url", url))
    assert p.returncode == 1
    assert f"error - simulator ({url}): unreachable (Connection refused)" in p.stdout, p.stdout
