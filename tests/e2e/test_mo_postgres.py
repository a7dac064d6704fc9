"""The MO path on PostgreSQL: a hub process, a recording carrier, whole and multipart MO, mo list."""

from __future__ import annotations

import json
import subprocess

from staffetta.pdu.constants import Command
from staffetta.pdu.segments import udh_concat
from tests.e2e.recording_carrier import RecordingCarrier
from tests.e2e.test_mo_kill9 import NUMBER, _mo
from tests.syncesme import CLI, SyncEsme, free_port, start


def _cli(*args: str) -> str:
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_mo_on_postgresql(tmp_path, pg_schema_url):
    carrier = RecordingCarrier()
    port = free_port()
    cfg = tmp_path / "hub.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"database_url: '{pg_schema_url}'\n"
        "metrics_listen: null\n"
        "upstreams:\n"
        f"  - {{name: rec, host: 127.0.0.1, port: {carrier.port}, system_id: hub, password: hub}}\n"
    )
    hub = None
    try:
        _cli("account", "create", "demo", "--password", "demo", "--config", str(cfg))
        _cli("number", "dedicated", "assign", NUMBER, "--account", "demo", "--config", str(cfg))
        carrier.pending_pdus += [_mo(b"whole one"), _mo(udh_concat(300, 2, 2, True) + b"two", 0x40),
                                 _mo(udh_concat(300, 2, 1, True) + b"one ", 0x40)]
        hub = start("run", "--config", str(cfg))
        carrier.wait(lambda: carrier.receipt_answers == [0, 0, 0])
        c = SyncEsme(port)
        assert c.bind("demo", "demo", Command.BIND_RECEIVER).status == 0
        got = c.delivered_texts(2)
        c.close()
        assert got == [b"whole one", b"one two"]
        docs = json.loads(_cli("mo", "list", "--json", "--config", str(cfg)))
        assert [(d["text"], d["account"], d["parts"]["total"]) for d in docs] == [
            ("one two", "demo", 2), ("whole one", "demo", 1)]
    finally:
        if hub is not None:
            hub.terminate()
            hub.wait(10)
        carrier.close()
