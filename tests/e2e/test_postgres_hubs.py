"""Two hub processes on one PostgreSQL: one account, concurrent clients, an exact balance."""

from __future__ import annotations

import json
import os
import subprocess
import threading

from staffetta.pdu.constants import Status
from tests.syncesme import CLI, SyncEsme, free_port, start

ADMIN_URL = os.environ.get("STAFFETTA_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def test_two_hubs_one_account_no_overdraft_and_books_balance(tmp_path, pg_schema_url):
    sim_port, hub_ports = free_port(), (free_port(), free_port())
    procs = [start("simulator", "--listen", f"127.0.0.1:{sim_port}", "--dlr-delay", "0.05", "--control", "off",
                   "--hlr", "off")]
    configs = []
    for i, port in enumerate(hub_ports):
        cfg = tmp_path / f"hub{i}.yaml"
        cfg.write_text(
            f"listen: 127.0.0.1:{port}\n"
            f"database_url: '{pg_schema_url}'\n"
            "metrics_listen: null\n"
            "upstreams:\n"
            f"  - {{name: sim, host: 127.0.0.1, port: {sim_port}, system_id: hub, password: hub}}\n"
        )
        configs.append(cfg)
    try:
        # 160 credits = exactly 100 PRO segments, shared by every session of both hubs.
        r = subprocess.run([*CLI, "account", "create", "demo", "--password", "demo", "--credits", "160",
                            "--config", str(configs[0])], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        procs += [start("run", "--config", str(cfg)) for cfg in configs]

        statuses: list[int] = []
        lock = threading.Lock()

        def client(port: int) -> None:
            c = SyncEsme(port)
            assert c.bind("demo", "demo").status == 0
            got = [p.status for p in c.submit_many(60)]
            c.close()
            with lock:
                statuses.extend(got)

        threads = [threading.Thread(target=client, args=(p,)) for p in hub_ports for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(statuses) == 240
        assert statuses.count(Status.ESME_ROK) == 100  # no overdraft, nothing left unspent
        assert statuses.count(Status.STAFFETTA_RNOCREDIT) == 140

        show = subprocess.run([*CLI, "account", "show", "demo", "--json", "--config", str(configs[1])],
                              capture_output=True, text=True, timeout=60)
        assert show.returncode == 0, show.stderr
        assert json.loads(show.stdout)["balance"] == "0.00"
        check = subprocess.run([*CLI, "account", "check", "--config", str(configs[0])],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
