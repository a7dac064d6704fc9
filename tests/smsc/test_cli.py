"""The command line as an operator runs it: real processes, real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import Command, Status
from tests.syncesme import SyncEsme

CLI = [sys.executable, "-m", "staffetta.smsc.cli"]


def run(*args, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_account_create_then_duplicate_is_a_one_line_error(tmp_path):
    d = str(tmp_path / "data")
    r = run("account", "create", "acme", "--password", "pw", "--data-dir", d, "--json")
    assert r.returncode == 0, r.stderr
    r = run("account", "create", "acme", "--password", "pw", "--data-dir", d)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "acme" in r.stderr


def test_bad_config_is_a_one_line_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("upstreams:\n  - {name: a, host: h, port: 99999, system_id: x, password: y}\n")
    r = run("run", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.strip() == "staffetta: upstreams[0].port: expected a port 1-65535, got 99999"


def test_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("demo", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"), "--metrics", "off")
    assert r.returncode == 2
    assert r.stderr.startswith("staffetta: --listen: cannot listen on 127.0.0.1:") and r.stderr.count("\n") == 1


def test_demo_serves_a_client_end_to_end(tmp_path):
    """The README's first command: bind demo/demo, submit, get the receipt."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*CLI, "demo", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"), "--dlr-delay", "0.05",
         "--metrics", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,  # no unread pipe for logs
    )
    try:
        banner = proc.stdout.readline()  # printed once the hub listens
        assert "Staffetta demo is up" in banner, banner
        submit = Pdu(Command.SUBMIT_SM, 2, 0, {
            "source_addr_ton": 5, "source_addr": b"Demo", "dest_addr_ton": 1, "dest_addr_npi": 1,
            "destination_addr": b"393331234567", "registered_delivery": 1, "short_message": b"hello",
        })
        c = SyncEsme(port)
        got = [c.bind("demo", "demo", Command.BIND_TRANSCEIVER)]
        c.send(Command.SUBMIT_SM, submit.fields)
        got += [c.read(), c.read()]
        # A SMART message leaves from the demo's SMART pool: its receipt says which number.
        c.send(Command.SUBMIT_SM, {**submit.fields, "service_type": b"SMART"})
        smart = [c.read(), c.read()]
        c.close()
        assert [p.command_id for p in got[:2]] == [Command.BIND_TRANSCEIVER_RESP, Command.SUBMIT_SM_RESP]
        assert got[1].status == Status.ESME_ROK
        mid = got[1].fields["message_id"]
        assert got[2].command_id == Command.DELIVER_SM
        assert f"id:{mid.decode()} ".encode() in got[2].fields["short_message"]
        assert smart[0].status == Status.ESME_ROK and smart[1].command_id == Command.DELIVER_SM
        assert smart[1].fields["destination_addr"] == b"393500000001"  # the first of DEMO_POOLS["SMART"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
