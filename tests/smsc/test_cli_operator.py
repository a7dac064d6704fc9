"""Issue 11 as an operator meets it: real processes, one line per mistake, stores by flag or environment."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "staffetta.smsc.cli"]
UPSTREAM = "upstreams:\n  - {name: a, host: 127.0.0.1, port: 2776, system_id: x, password: y}\n"
#: The environment without the variables under test, so a developer's shell cannot steer a test.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("STAFFETTA_CONFIG", "STAFFETTA_DATA_DIR")}


def run(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 60):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**CLEAN_ENV, **(env or {})}, cwd=cwd)


def one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    """Exit 2, exactly one line on stderr naming the option or setting, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr


def config(tmp_path: Path, text: str) -> str:
    p = tmp_path / "staffetta.yaml"
    p.write_text(text + UPSTREAM)
    return str(p)


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# --------------------------------------------------------- item 2: the listed mistakes


def test_demo_data_dir_that_cannot_be_created(tmp_path):
    one_line_error(run("demo", "--data-dir", "/proc/staffetta", "--metrics", "off"),
                   "staffetta: --data-dir: cannot create or write /proc/staffetta")


def test_demo_data_dir_that_cannot_be_written(tmp_path):
    one_line_error(run("demo", "--data-dir", "/proc", "--metrics", "off"),
                   "staffetta: --data-dir: cannot create or write /proc (")


def test_run_data_dir_setting_that_cannot_be_created(tmp_path):
    cfg = config(tmp_path, "data_dir: /proc/nope\n")
    one_line_error(run("run", "--config", cfg), f"staffetta: data_dir in {cfg}: cannot create or write /proc/nope")


def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    one_line_error(run("demo", "--data-dir", str(f), "--metrics", "off"), f"--data-dir: {f} is a file")


def test_demo_negative_dlr_delay():
    one_line_error(run("demo", "--dlr-delay", "-1"), "argument --dlr-delay: expected seconds (a number >= 0)")


def test_busy_metrics_port_is_named_metrics(tmp_path, busy_port):
    r = run("demo", "--listen", "127.0.0.1:0", "--metrics", f"127.0.0.1:{busy_port}", "--data-dir",
            str(tmp_path / "d"))
    one_line_error(r, f"staffetta: --metrics: cannot listen on 127.0.0.1:{busy_port}")


def test_busy_metrics_port_from_the_config_is_named_metrics_listen(tmp_path, busy_port):
    cfg = config(tmp_path, f"listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:{busy_port}\n"
                           f"data_dir: {tmp_path / 'd'}\n")
    one_line_error(run("run", "--config", cfg), f"staffetta: metrics_listen: cannot listen on 127.0.0.1:{busy_port}")


def test_upstream_window_zero(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("upstreams:\n  - {name: a, host: h, port: 2776, system_id: x, password: y, window: 0}\n")
    one_line_error(run("run", "--config", str(cfg)), "staffetta: upstreams[0].window: expected an integer >= 1, got 0")


def test_session_window_zero(tmp_path):
    one_line_error(run("run", "--config", config(tmp_path, "session: {window: 0}\n")),
                   "staffetta: session.window: expected an integer >= 1, got 0")


def test_metrics_listen_off_in_the_config_runs_without_metrics(tmp_path):
    cfg = config(tmp_path, f"listen: 127.0.0.1:0\nmetrics_listen: off\ndata_dir: {tmp_path / 'd'}\n")
    proc = subprocess.Popen([*CLI, "-v", "--log-format", "json", "run", "--config", cfg], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1"})
    try:
        assert "Staffetta listening on" in proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    started = [json.loads(line) for line in err.splitlines() if '"hub started"' in line]
    assert started and started[0]["metrics"] is None, err


# ------------------------------------------------------------- item 2: the walk


def test_run_without_a_config():
    one_line_error(run("run"), "staffetta: --config: required (or set STAFFETTA_CONFIG)")


def test_a_config_that_is_a_directory(tmp_path):
    one_line_error(run("run", "--config", str(tmp_path)), f"staffetta: {tmp_path}: cannot read (Is a directory)")


def test_hlr_max_age_is_checked_at_start(tmp_path):
    cfg = config(tmp_path, f"data_dir: {tmp_path / 'd'}\nhlr: {{max_age: soon}}\n")
    one_line_error(run("run", "--config", cfg), "staffetta: hlr.max_age: 'soon' is not an age")


def test_hlr_provider_is_checked_at_start(tmp_path):
    cfg = config(tmp_path, f"data_dir: {tmp_path / 'd'}\nhlr: {{provider: {{type: http}}}}\n")
    one_line_error(run("run", "--config", cfg), "staffetta: hlr.provider.url: required")


def test_billing_section_is_checked_at_start(tmp_path):
    cfg = config(tmp_path, f"data_dir: {tmp_path / 'd'}\nbilling: {{plans: {{default: {{prices: {{PRO: -1}}}}}}}}\n")
    one_line_error(run("run", "--config", cfg), "staffetta: billing.plans.default.prices.PRO")


def test_listen_out_of_range():
    one_line_error(run("demo", "--listen", "127.0.0.1:70000"), "staffetta: --listen: expected HOST:PORT")


def test_metrics_unparsable():
    one_line_error(run("demo", "--metrics", "everywhere"), "staffetta: --metrics: expected HOST:PORT or off, got 'everywhere'")


def test_unknown_option_and_bad_choice_are_one_line():
    one_line_error(run("demo", "--dlr-dealy", "1"), "unrecognized arguments: --dlr-dealy 1")
    one_line_error(run("--log-format", "xml", "demo"), "argument --log-format: invalid choice: 'xml'")


def test_account_verbs_check_the_data_dir(tmp_path):
    one_line_error(run("account", "show", "acme", "--data-dir", "/proc/nope"),
                   "staffetta: --data-dir: cannot create or write /proc/nope")


def test_account_country_code(tmp_path):
    one_line_error(run("account", "create", "acme", "--password", "pw", "--country", "0",
                       "--data-dir", str(tmp_path)), "argument --country: expected a country calling code 1-999")


def test_data_dir_from_the_environment_is_named_by_its_variable():
    one_line_error(run("account", "check", env={"STAFFETTA_DATA_DIR": "/proc/nope"}),
                   "staffetta: STAFFETTA_DATA_DIR: cannot create or write /proc/nope")


# ---------------------------------------------------------------- item 4: which store


def test_nothing_found_names_the_store(tmp_path):
    d = tmp_path / "somewhere"
    one_line_error(run("account", "show", "acme", "--data-dir", str(d)),
                   f"staffetta: name: no account named 'acme' in {d}")
    r = run("hlr", "jobs", "--data-dir", str(d))
    assert r.returncode == 0 and r.stdout.strip() == f"no HLR jobs in {d}"


def test_environment_chooses_the_store_and_flags_win(tmp_path):
    env_dir, flag_dir, cfg_dir = tmp_path / "env", tmp_path / "flag", tmp_path / "cfg"
    env = {"STAFFETTA_DATA_DIR": str(env_dir)}
    assert run("account", "create", "acme", "--password", "pw", env=env).returncode == 0
    assert (env_dir / "staffetta.db").exists()
    assert json.loads(run("account", "show", "acme", "--json", env=env).stdout)["name"] == "acme"
    # a flag beats the environment
    one_line_error(run("account", "show", "acme", "--data-dir", str(flag_dir), env=env),
                   f"no account named 'acme' in {flag_dir}")
    cfg = tmp_path / "staffetta.yaml"
    cfg.write_text(f"data_dir: {cfg_dir}\n" + UPSTREAM)
    # STAFFETTA_CONFIG alone: the config's data dir
    assert run("account", "create", "beta", "--password", "pw", env={"STAFFETTA_CONFIG": str(cfg)}).returncode == 0
    assert (cfg_dir / "staffetta.db").exists()
    # both variables: the data dir wins over the config's, as the two flags do
    both = {"STAFFETTA_CONFIG": str(cfg), "STAFFETTA_DATA_DIR": str(env_dir)}
    assert run("account", "show", "acme", env=both).returncode == 0
    # --config on the command line: the environment is not read at all
    one_line_error(run("account", "show", "acme", "--config", str(cfg), env=env),
                   f"no account named 'acme' in {cfg_dir}")


def test_run_takes_its_config_from_the_environment(tmp_path):
    cfg = config(tmp_path, "session: {window: 0}\n")
    one_line_error(run("run", env={"STAFFETTA_CONFIG": cfg}), "staffetta: session.window:")


# ------------------------------------------------- item 3: the demo's parts find each other


def test_demo_then_hlr_verify_in_another_terminal(tmp_path):
    """`staffetta demo`, then `staffetta hlr verify numbers.txt --account demo` in the same folder: no flags."""
    (tmp_path / "numbers.txt").write_text("+393331234567\n3331234568\n+393401234569\n")
    demo = subprocess.Popen([*CLI, "demo", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1"})
    addresses_file = tmp_path / "staffetta-data" / "addresses.json"
    try:
        banner = [demo.stdout.readline() for _ in range(8)]
        assert "Staffetta demo is up" in banner[0], banner
        addresses = json.loads(addresses_file.read_text())
        assert addresses["pid"] == demo.pid
        assert any(f"SMPP:    {addresses['smpp']} " in line for line in banner), (banner, addresses)
        assert any(f"at {addresses['hlr']} " in line for line in banner), (banner, addresses)
        assert any(f"http://{addresses['metrics']}/metrics" in line for line in banner), (banner, addresses)

        r = run("hlr", "verify", "numbers.txt", "--account", "demo", "--no-progress", "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert summary["state"] == "done" and summary["items"]["done"] == 3 and summary["charged"] == "1.50"
        r = run("hlr", "lookup", "3331234567", "--account", "demo", "--mode", "always", cwd=tmp_path)
        assert r.returncode == 0 and "source    simulator" in r.stdout, r.stdout + r.stderr
    finally:
        demo.terminate()
        demo.wait(timeout=20)
    assert not addresses_file.exists()  # a stopped demo leaves no addresses behind


def test_a_database_that_cannot_be_reached_is_named_without_its_password(tmp_path):
    cfg = config(tmp_path, "database_url: postgresql://ops:s3cret@127.0.0.1:1/staffetta\n")
    r = run("run", "--config", cfg)
    one_line_error(r, "staffetta: database_url: cannot open the store postgresql://ops:***@127.0.0.1:1/staffetta (")
    assert "s3cret" not in r.stderr


def test_a_data_dir_whose_database_is_not_one(tmp_path):
    (tmp_path / "staffetta.db").write_bytes(b"not a database, not at all, " * 10)
    one_line_error(run("account", "check", "--data-dir", str(tmp_path)),
                   f"staffetta: --data-dir: cannot open the store {tmp_path} (file is not a database)")


def test_demo_with_a_config_binds_its_own_simulator(tmp_path):
    """The config's first upstream lends its options to the demo's connectors, aimed at the demo's carriers
    with their credentials (it was refused, forever)."""
    import time
    import urllib.request

    cfg = config(tmp_path, f"data_dir: {tmp_path / 'd'}\n")  # upstream credentials x / y
    demo = subprocess.Popen([*CLI, "demo", "--config", cfg, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1"})
    try:
        assert "Staffetta demo is up" in demo.stdout.readline()
        metrics = json.loads((tmp_path / "d" / "addresses.json").read_text())["metrics"]
        deadline, text = time.monotonic() + 30, ""
        up = ['staffetta_upstream_up{connector="alpha"} 1.0', 'staffetta_upstream_up{connector="beta"} 1.0']
        while not all(u in text for u in up) and time.monotonic() < deadline:
            time.sleep(0.2)
            text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
        assert all(u in text for u in up)
    finally:
        demo.terminate()
        demo.wait(timeout=20)


def test_the_demo_shows_a_failover_in_its_metrics(tmp_path):
    """Issue 13's done-when: a new user runs the demo and the bench, and watches a failover in /metrics."""
    import re
    import urllib.request

    demo = subprocess.Popen([*CLI, "demo", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1"})
    try:
        banner = [demo.stdout.readline() for _ in range(8)]
        assert "Staffetta demo is up" in banner[0], banner
        addresses = json.loads((tmp_path / "staffetta-data" / "addresses.json").read_text())
        assert set(addresses["carriers"]) == {"alpha", "beta"}
        r = run("bench", "--target", addresses["smpp"], "--system-id", "demo", "--password", "demo", "-n", "300",
                "--countries", "IT", "--json", cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["accepted"] == result["sent"] and not result["lost"], result
        text = urllib.request.urlopen(f"http://{addresses['metrics']}/metrics", timeout=10).read().decode()
        moved = re.search(r'staffetta_route_failovers_total\{from_connector="alpha",reason="0x00000008",'
                          r'route="italy",to_connector="beta"\} (\d+)', text)
        assert moved and int(moved.group(1)) > 0, [line for line in text.splitlines() if "route" in line]
        assert 'staffetta_route_messages_total{route="italy"}' in text
    finally:
        demo.terminate()
        demo.wait(timeout=20)


def test_the_demo_runs_a_conversation_end_to_end(tmp_path):
    """Issue 14 item 8: REPLY messages from the demo's pool; a share of handsets answer; the answers come
    back to the demo account on its own bind (the reply window), as deliver_sm with esm_class 0."""
    from staffetta.pdu.constants import Command
    from staffetta.smsc.cli import DEMO_POOLS
    from tests.syncesme import SyncEsme

    demo = subprocess.Popen([*CLI, "demo", "--listen", "127.0.0.1:0", "--metrics", "off", "--dlr-delay", "0.1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1"})
    try:
        assert "Staffetta demo is up" in demo.stdout.readline()
        addresses = json.loads((tmp_path / "staffetta-data" / "addresses.json").read_text())
        c = SyncEsme(int(addresses["smpp"].rsplit(":", 1)[1]), timeout=30)
        c.send(Command.BIND_TRANSCEIVER, {"system_id": b"demo", "password": b"demo", "system_type": b"",
                                          "interface_version": 0x34, "addr_ton": 0, "addr_npi": 0,
                                          "address_range": b""})
        assert c.read().status == 0
        sent = 40
        for i in range(sent):
            c.send(Command.SUBMIT_SM, {
                "service_type": b"REPLY", "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"",
                "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": b"3934712%05d" % i, "esm_class": 0,
                "protocol_id": 0, "priority_flag": 0, "schedule_delivery_time": b"", "validity_period": b"",
                "registered_delivery": 0, "replace_if_present_flag": 0, "data_coding": 0, "sm_default_msg_id": 0,
                "short_message": b"Shall we meet?"})
        answered, replies = 0, []
        while not replies:
            pdu = c.read()  # submit_sm_resp, then the handsets' answers (the 30 s timeout fails the test)
            if pdu.command_id == Command.SUBMIT_SM_RESP:
                assert pdu.status == 0, hex(pdu.status)
                answered += 1
            elif pdu.command_id == Command.DELIVER_SM:
                replies.append(pdu)
        assert replies[0].fields["esm_class"] & 0x3C == 0  # an MO, not a receipt
        assert replies[0].fields["destination_addr"].decode() in DEMO_POOLS["REPLY"]  # the pool number it wrote to
        c.close()
    finally:
        demo.terminate()
        demo.wait(timeout=20)
