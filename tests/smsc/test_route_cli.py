"""``staffetta route explain|check|reload|status`` and ``connectors`` as an operator runs them (issue 13 items 1, 4, 5).

Real processes: the CLI, a real ``staffetta run`` hub (SIGHUP, addresses.json,
/status over HTTP) and, where a test needs connector states a hub cannot be
made to show (down, a low delivery ratio), a real Twisted server of the same
status resource (tests/smsc/status_server.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.polling import wait_for

CLI = [sys.executable, "-m", "staffetta.smsc.cli"]
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("STAFFETTA_CONFIG", "STAFFETTA_DATA_DIR")}
ROOT = Path(__file__).resolve().parents[2]


UPSTREAMS = """upstreams:
  - {name: a, host: 127.0.0.1, port: 1, system_id: x, password: y}
  - {name: b, host: 127.0.0.1, port: 1, system_id: x, password: y}
  - {name: c, host: 127.0.0.1, port: 1, system_id: x, password: y}
"""
#: Clean: every connector used, nothing shadowed, every connector known.
ROUTES = """routes:
  - {name: office, match: {country: IT, hours: "08:00-18:00", days: [mon, tue, wed, thu, fri]}, connectors: [c]}
  - {name: it, match: {country: IT}, connectors: [a, b], strategy: failover}
  - {name: cheap, match: {country: [FR, DE]}, connectors: [a, b], strategy: least-cost,
     prices: {a: {FR: 0.01, "*": 0.02}, b: {FR: 0.005}}, floor: 0.9}
  - {name: no-spam, match: {sender: SPAM}, strategy: refuse, status: ESME_RINVSRCADR}
"""


def run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**CLEAN_ENV, **(env or {})}, cwd=ROOT)


def one_line_error(r: subprocess.CompletedProcess, needle: str, status: int = 2) -> None:
    """The exit status, exactly one line on stderr naming the option or setting, no traceback."""
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr


def write_config(tmp_path: Path, routes: str = ROUTES, extra: str = "", name: str = "staffetta.yaml") -> str:
    p = tmp_path / name
    p.write_text(f"data_dir: {tmp_path / 'data'}\nlisten: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\n"
                 f"{extra}{UPSTREAMS}{routes}")
    return str(p)


@pytest.fixture
def cfg(tmp_path) -> str:
    """The clean config, with account acme (country 39) in its store."""
    import staffetta.billing.accounts as accounts
    from staffetta.store.db import create_schema, make_engine

    path = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'staffetta.db'}")
    create_schema(engine)
    with engine.begin() as c:
        accounts.create_account(c, "acme", "pw", default_type="PRO", default_country_code=39)
    engine.dispose()
    return path


# --------------------------------------------------------------------- check


def test_check_a_clean_table_exits_0(cfg):
    r = run("route", "check", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "4 rules over 3 connectors" in r.stdout and "no problems" in r.stdout
    r = run("route", "check", "--config", cfg, "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"config": cfg, "table": cfg, "rules": 4,
                                                          "connectors": ["a", "b", "c"], "problems": []}


def test_check_reports_shadowed_rules_unused_and_unknown_connectors_exit_1(tmp_path):
    cfg = write_config(tmp_path, """routes:
  - {name: italy, match: {prefix: "39"}, connectors: [a]}
  - {name: italy-mobile, match: {prefix: "393"}, connectors: [b]}
  - {name: ghost, match: {country: FR}, connectors: [zz]}
""")
    r = run("route", "check", "--config", cfg, "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["rules"] == 3
    assert {(p["kind"], p["rule"]) for p in doc["problems"]} == {
        ("shadowed", "italy-mobile"), ("unused_connector", None), ("unknown_connector", "ghost")}
    assert all(p["detail"] for p in doc["problems"])
    assert "'c'" in next(p["detail"] for p in doc["problems"] if p["kind"] == "unused_connector")
    r = run("route", "check", "--config", cfg)
    assert r.returncode == 1
    assert "shadowed rule 'italy-mobile': rule 'italy' (earlier) matches every message it would" in r.stdout
    assert "unknown_connector rule 'ghost': routes[2].connectors: 'zz' is not a configured upstream" in r.stdout
    assert "3 problems" in r.stdout


def test_check_bad_config_and_bad_option_are_one_line_exit_2(tmp_path):
    cfg = write_config(tmp_path, "routes:\n  - {name: x, connectors: [a], strategy: fastest}\n")
    one_line_error(run("route", "check", "--config", cfg), "routes[0].strategy: 'fastest' is not one of")
    one_line_error(run("route", "check", "--config", write_config(tmp_path, "", "route_timezone: Mars/Base\n")),
                   "route_timezone: unknown time zone 'Mars/Base'")
    one_line_error(run("route", "check", "--config", str(tmp_path / "missing.yaml")), "missing.yaml: cannot read")
    one_line_error(run("route", "check", "--bogus"), "unrecognized arguments: --bogus")


# ------------------------------------------------------------------- explain


def test_explain_prints_the_rule_each_candidate_and_the_choice(cfg):
    at = "--at", "2026-11-28T10:00"  # a Saturday: not the office rule
    r = run("route", "explain", "--config", cfg, "--account", "acme", "--to", "3331234567", *at)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "account acme (groups: none) to +393331234567 (IT), type PRO" in out  # national number, account's 39
    assert "rule #1 'it' (failover)" in out and "choice: a" in out
    assert "connector state: unknown" in out  # no hub on this data dir
    doc = json.loads(run("route", "explain", "--config", cfg, "--account", "acme", "--to", "+33612345678",
                         "--json", *at).stdout)
    assert doc["rule"] == "cheap" and doc["strategy"] == "least-cost" and doc["choice"] == "b"
    assert [(c["connector"], c["price"], c["rank"], c["state"]) for c in doc["candidates"]] == [
        ("a", "0.01", 2, "unknown"), ("b", "0.005", 1, "unknown")]
    assert doc["query"] == {"account": "acme", "groups": [], "to": "33612345678", "country": "FR", "type": "PRO",
                            "sender": "", "mccmnc": None, "at": "2026-11-28T10:00:00+00:00", "timezone": "UTC"}
    assert doc["live"] is False and "no running hub" in doc["live_error"]


def test_explain_follows_time_sender_and_no_match(cfg):
    base = ("route", "explain", "--config", cfg, "--account", "acme", "--json")
    office = json.loads(run(*base, "--to", "+393331234567", "--at", "2026-11-30T09:30").stdout)  # Monday
    assert office["rule"] == "office" and office["choice"] == "c"
    evening = json.loads(run(*base, "--to", "+393331234567", "--at", "2026-11-30T19:00").stdout)
    assert evening["rule"] == "it"
    spam = run(*base[:-1], "--to", "+14155550123", "--sender", "SPAM")
    assert spam.returncode == 0 and "rule #3 'no-spam' (refuse)" in spam.stdout
    assert "refused: 0x0000000A (refuse rule)" in spam.stdout
    nowhere = run(*base[:-1], "--to", "+14155550123")
    assert nowhere.returncode == 0 and "no rule matches: refused at submit with 0x" in nowhere.stdout


def test_explain_sees_the_accounts_groups_and_the_sender_as_the_hub_does(tmp_path, cfg):
    text = Path(cfg).read_text().replace("routes:\n", "account_groups: {gold: [acme]}\nroutes:\n"
                                         "  - {name: gold, match: {group: gold, sender: '393331112222'}, connectors: [b]}\n")
    Path(cfg).write_text(text)
    base = ("route", "explain", "--config", cfg, "--account", "acme", "--to", "+393331234567", "--json")
    doc = json.loads(run(*base, "--sender", "+393331112222").stdout)  # normalised as at submit: no '+'
    assert doc["rule"] == "gold" and doc["query"]["groups"] == ["gold"] and doc["query"]["sender"] == "393331112222"
    assert json.loads(run(*base, "--sender", "Acme").stdout)["rule"] != "gold"


@pytest.mark.parametrize(("args", "needle"), [
    (("--account", "nobody", "--to", "+393331234567"), "--account: no account named 'nobody' in"),
    (("--account", "acme", "--to", "12"), "--to: 12 (TON 0) is not a valid mobile number"),
    (("--account", "acme", "--to", "+393331234567", "--sender", "x"), "--sender: alphanumeric sender of 1 character"),
    (("--account", "acme", "--to", "+393331234567", "--at", "yesterday"), "--at: expected an ISO time"),
    (("--account", "acme", "--to", "+393331234567", "--type", "BULK"), "argument --type: expected one of"),
    (("--account", "acme", "--to", "+393331234567", "--mccmnc", "2220"), "argument --mccmnc: expected an MCC-MNC"),
    (("--account", "acme", "--to", "+393331234567", "--metrics", "nowhere"), "--metrics: expected HOST:PORT"),
    (("--to", "+393331234567",), "the following arguments are required: --account"),
])
def test_explain_mistakes_are_one_line_exit_2(cfg, args, needle):
    one_line_error(run("route", "explain", "--config", cfg, *args), needle)


# ------------------------------------------------- live state from /status/connectors


def _state(name: str, up: bool, ratio: float | None = None, **kw) -> dict:
    return {"name": name, "host": "127.0.0.1", "port": 1, "bind_mode": "transceiver", "up": up, "sessions": int(up),
            "sessions_configured": 1, "window": 2 if up else 0, "window_size": 50, "queue": 7, "throughput": 0,
            "last_error": None if up else "connect failed: Connection refused", "delivery_ratio": ratio, **kw}


@pytest.fixture
def status_server(tmp_path, cfg):
    """A real Twisted server of smsc.status.StatusResource; write states with ``.set([...])``."""
    states = tmp_path / "states.json"
    states.write_text("[]")
    proc = subprocess.Popen([sys.executable, "-m", "tests.smsc.status_server", str(states), cfg], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env=CLEAN_ENV)
    address = proc.stdout.readline().strip()

    class Server:
        def set(self, value):
            states.write_text(json.dumps(value))

    server = Server()
    server.address = address
    yield server
    proc.terminate()
    proc.wait(10)


def test_explain_uses_live_state_failover_and_the_least_cost_floor(cfg, status_server):
    status_server.set([_state("a", False, 0.99), _state("b", True, 0.5), _state("c", True, None)])
    base = ("route", "explain", "--config", cfg, "--account", "acme", "--metrics", status_server.address,
            "--at", "2026-11-28T10:00")
    r = run(*base, "--to", "+393331234567")
    assert r.returncode == 0, r.stderr
    assert "connector state" not in r.stdout and "choice: b" in r.stdout  # a is down: failover takes b first
    lines = {ln.split()[0]: ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("  ") and "connector" not in ln}
    assert lines == {"a": "down", "b": "up"}
    doc = json.loads(run(*base, "--to", "+33612345678", "--json").stdout)
    assert doc["live"] is True and doc["choice"] == "a"  # b is cheaper but under the 0.9 floor
    b = next(c for c in doc["candidates"] if c["connector"] == "b")
    assert b["skipped"] == "delivery ratio 0.50 under the floor 0.90" and b["rank"] is None


def test_connectors_prints_each_connectors_live_state(cfg, status_server):
    states = [_state("a", True, 0.97, throughput=50), _state("b", False)]
    status_server.set(states)
    r = run("connectors", "--metrics", status_server.address)
    assert r.returncode == 0, r.stderr
    header, a, b = r.stdout.splitlines()
    assert header.split()[:3] == ["connector", "state", "address"]
    assert a.split()[:9] == ["a", "up", "127.0.0.1:1", "transceiver", "1/1", "2/50", "7", "50", "0.97"]
    assert b.split()[:2] == ["b", "down"] and b.endswith("connect failed: Connection refused")
    r = run("route", "status", "--metrics", status_server.address, "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == states


def test_connectors_without_a_hub_is_one_line_exit_1(tmp_path, cfg):
    one_line_error(run("connectors", "--config", cfg), "no running hub found on", status=1)
    one_line_error(run("connectors", "--metrics", "127.0.0.1:1"), "no hub answering at 127.0.0.1:1", status=1)
    one_line_error(run("connectors", "--metrics", "127.0.0.1"), "--metrics: expected HOST:PORT")


# ----------------------------------------------------- a real hub: addresses, SIGHUP, reload


class RunningHub:
    def __init__(self, cfg: str, data: Path) -> None:
        self.proc = subprocess.Popen([*CLI, "-v", "run", "--config", cfg], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1"})
        line = self.proc.stdout.readline()
        assert "Staffetta listening on" in line, self.proc.stderr.read() if self.proc.poll() is not None else line
        self.addresses_path = data / "addresses.json"
        self.addresses = json.loads(self.addresses_path.read_text())

    def get(self, path: str):
        with urllib.request.urlopen(f"http://{self.addresses['metrics']}{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return err


@pytest.fixture
def hub(tmp_path, cfg):
    h = RunningHub(cfg, tmp_path / "data")
    yield h
    if h.proc.poll() is None:
        h.stop()


def test_run_writes_its_addresses_and_the_verbs_find_its_config(tmp_path, cfg, hub):
    a = hub.addresses
    assert a["pid"] == hub.proc.pid and a["config"] == str(Path(cfg).resolve())
    assert a["smpp"].startswith("127.0.0.1:") and a["metrics"].startswith("127.0.0.1:")
    assert [r["name"] for r in hub.get("/status/routes")["rules"]] == ["office", "it", "cheap", "no-spam"]
    data = str(tmp_path / "data")
    r = run("route", "check", "--data-dir", data, "--json")  # no --config: the running hub's
    assert r.returncode == 0 and json.loads(r.stdout)["config"] == a["config"], r.stderr
    other = write_config(tmp_path, name="other.yaml")
    one_line_error(run("route", "check", "--data-dir", data, "--config", other),
                   f"--config: the hub on {data} (pid {a['pid']}) reads {a['config']}, not {other}")
    Path(cfg).write_text(Path(cfg).read_text().replace("{name: it,", "{name: italy,"))  # edited, not reloaded
    r = run("route", "explain", "--data-dir", data, "--account", "acme", "--to", "+393331234567",
            "--at", "2026-11-28T10:00", "--json")
    doc = json.loads(r.stdout)
    assert doc["table"] == "the running hub's table" and doc["rule"] == "it"  # what the hub would do now
    assert doc["live"] is True and [(c["connector"], c["state"]) for c in doc["candidates"]] == [
        ("a", "down"), ("b", "down")]  # port 1: nothing binds
    hub.stop()
    assert not hub.addresses_path.exists()  # removed on stop


def test_a_bad_config_is_refused_by_route_reload_and_by_sighup_and_the_table_stays(tmp_path, cfg, hub):
    data = str(tmp_path / "data")
    before = hub.get("/status/routes")
    Path(cfg).write_text(Path(cfg).read_text() + "  - {name: ghost, connectors: [zz]}\n")
    one_line_error(run("route", "reload", "--data-dir", data),
                   "routes[4].connectors: 'zz' is not a configured upstream")
    os.kill(hub.proc.pid, signal.SIGHUP)  # a signal from elsewhere: the hub checks the file itself
    addresses = tmp_path / "data" / "addresses.json"
    # The hub's own report of the SIGHUP:
    wait_for(lambda: "reload" in json.loads(addresses.read_text()), what="SIGHUP reported")
    report = json.loads(addresses.read_text())["reload"]
    assert report["seq"] == 1  # the first SIGHUP the hub saw: route reload sent none
    assert report["ok"] is False and "routes[4].connectors: 'zz'" in report["error"]
    assert hub.proc.poll() is None and hub.get("/status/routes") == before
    err = hub.stop()
    refused = [ln for ln in err.splitlines() if "reload refused" in ln]
    assert len(refused) == 1, err
    assert "the configuration in force stays: routes[4].connectors: 'zz' is not a configured upstream" in refused[0]
    assert "Traceback" not in err


def test_route_reload_without_a_hub_is_one_line_exit_1(tmp_path, cfg):
    data = tmp_path / "data"
    one_line_error(run("route", "reload", "--config", cfg), f"no running hub found on {data}", status=1)
    (data / "addresses.json").write_text(json.dumps({"pid": 2**22 + 12345, "metrics": None}))
    one_line_error(run("route", "reload", "--config", cfg), "is not running (stale addresses.json)", status=1)


def test_route_reload_applies_a_new_table_and_says_what_changed(tmp_path, cfg, hub):
    text = Path(cfg).read_text().replace("{name: it, match: {country: IT}, connectors: [a, b]",
                                         "{name: it, match: {country: IT}, connectors: [b, a]")
    Path(cfg).write_text(text + "  - {name: spain, match: {country: ES}, connectors: [c]}\n")
    r = run("route", "reload", "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    assert "reloaded: the hub" in r.stdout and "routes with 5 rules" in r.stdout
    assert "rules added: spain" in r.stdout and "rules changed: it" in r.stdout
    assert [x["name"] for x in hub.get("/status/routes")["rules"]][-1] == "spain"
    Path(cfg).write_text(text)  # a plain SIGHUP from elsewhere reloads too
    os.kill(hub.proc.pid, signal.SIGHUP)
    wait_for(lambda: [x["name"] for x in hub.get("/status/routes")["rules"]][-1] != "spain",
             what="SIGHUP reloaded the table")
    r = run("route", "reload", "--data-dir", str(tmp_path / "data"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"pid": hub.proc.pid, "rules": 4, "rules_added": [], "rules_removed": [],
                                    "rules_changed": [], "connectors_added": [], "connectors_removed": [],
                                    "connectors_changed": []}
    assert hub.stop().count("configuration reloaded") == 3


def test_the_demo_reloads_and_explains_with_its_own_table(tmp_path):
    data = tmp_path / "demo"
    proc = subprocess.Popen([*CLI, "demo", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--data-dir",
                             str(data)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1"})
    try:
        assert "Staffetta demo is up" in proc.stdout.readline()
        r = run("route", "reload", "--data-dir", str(data))
        assert r.returncode == 0 and "nothing changed" in r.stdout, (r.stdout, r.stderr)
        doc = json.loads(run("route", "explain", "--data-dir", str(data), "--account", "demo", "--to",
                             "+393331234567", "--json").stdout)
        assert doc["table"] == "the running hub's table" and doc["rule"] == "italy"
        assert [c["connector"] for c in doc["candidates"]] == ["alpha", "beta"]
        r = run("route", "check", "--data-dir", str(data))
        assert r.returncode == 0 and r.stdout.startswith("the running hub: 2 rules over 2 connectors"), r.stdout
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_connectors_shows_a_real_hubs_connectors(tmp_path, cfg, hub):
    r = run("connectors", "--data-dir", str(tmp_path / "data"), "--json")
    assert r.returncode == 0, r.stderr
    states = json.loads(r.stdout)
    assert [s["name"] for s in states] == ["a", "b", "c"]
    keys = {"name", "host", "port", "bind_mode", "up", "sessions", "sessions_configured", "window", "window_size",
            "queue", "throughput", "last_error", "delivery_ratio"}
    assert all(keys <= set(s) for s in states) and not any(s["up"] for s in states)
