"""kill -9 of a hub process: a resumed message goes upstream as its first send would, and no refund is lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from staffetta.pdu.codec import Pdu, encode
from staffetta.pdu.constants import Command, Status, Tag
from staffetta.pdu.smpptime import format_smpp_time
from tests.e2e.recording_carrier import RecordingCarrier
from tests.syncesme import CLI, SyncEsme, free_port, start


def _cli(*args: str) -> str:
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


class HubProcess:
    """``staffetta run`` on a data dir, with a carrier; killed with SIGKILL, started again."""

    def __init__(self, tmp_path: Path, carrier_port: int) -> None:
        self.data = tmp_path / "data"
        self.port = free_port()
        self.config = tmp_path / "hub.yaml"
        self.config.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"data_dir: {self.data}\n"
            "metrics_listen: null\n"
            "upstreams:\n"
            f"  - {{name: rec, host: 127.0.0.1, port: {carrier_port}, system_id: hub, password: hub,"
            " reconnect_min: 0.05, reconnect_max: 0.2}\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start("run", "--config", str(self.config))

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def sql(self, query: str, *args) -> list[tuple]:
        with sqlite3.connect(self.data / "staffetta.db") as db:
            return db.execute(query, args).fetchall()

    def balance(self, name: str = "demo") -> str:
        return json.loads(_cli("account", "show", name, "--json", "--data-dir", str(self.data)))["balance"]


@pytest.fixture
def rig(tmp_path):
    carrier = RecordingCarrier()
    hub = HubProcess(tmp_path, carrier.port)
    yield carrier, hub
    hub.stop()
    carrier.close()


def _submit(c: SyncEsme, validity: bytes, text: bytes) -> object:
    c.send(Command.SUBMIT_SM, {
        "source_addr_ton": 5, "source_addr": b"Staffetta", "dest_addr_ton": 1, "dest_addr_npi": 1,
        "destination_addr": b"393481234567", "registered_delivery": 1, "validity_period": validity,
        "short_message": text,
    }, {Tag.user_message_reference: b"\x00\x07"})
    while True:
        p = c.read()
        if p.command_id == Command.SUBMIT_SM_RESP:
            return p


def test_a_resumed_message_reaches_the_carrier_as_the_first_send_did(rig):
    carrier, hub = rig
    _cli("account", "create", "demo", "--password", "demo", "--credits", "100", "--data-dir", str(hub.data))
    hub.start()
    c = SyncEsme(hub.port)
    assert c.bind("demo", "demo").status == 0
    # The client's own validity, absolute: the same deadline for both messages.
    validity = format_smpp_time(datetime.now(UTC).replace(microsecond=0) + timedelta(days=2))
    assert _submit(c, validity, b"same text").status == Status.ESME_ROK
    carrier.wait(lambda: len(carrier.submits) == 1)  # sent at once: the first-send path

    carrier.go_down()
    r = _submit(c, validity, b"same text")
    assert r.status == Status.ESME_ROK  # acknowledged, queued: the carrier is down
    mid = int(r.fields["message_id"])
    assert hub.sql("SELECT phase, route FROM messages WHERE id = ?", mid) == [(0, "default")]
    c.close()
    hub.kill9()

    carrier.come_up()
    hub.start()  # resumes the queued message
    carrier.wait(lambda: len(carrier.submits) == 2)
    (first, _), (resumed, _) = carrier.submits
    assert resumed[16:] == first[16:]  # the same submit_sm but for its sequence number
    assert b"same text" in resumed and validity in resumed


def test_kill9_between_submit_and_receipt_loses_no_refund(rig):
    carrier, hub = rig
    _cli("account", "create", "demo", "--password", "demo", "--credits", "10", "--data-dir", str(hub.data))
    _cli("account", "set", "demo", "--refund-network-failure", "yes", "--data-dir", str(hub.data))
    hub.start()
    c = SyncEsme(hub.port)
    assert c.bind("demo", "demo").status == 0
    r = _submit(c, b"", b"will fail in the network")
    assert r.status == Status.ESME_ROK
    mid = int(r.fields["message_id"])
    assert hub.balance() == "8.40"
    # The carrier has it, and its id is on the row: only the receipt is missing.
    carrier.wait(lambda: hub.sql("SELECT upstream_id FROM messages WHERE id = ?", mid) == [("c1",)])
    c.close()
    hub.kill9()

    # The carrier reports UNDELIV as soon as the restarted hub binds; the client has not bound again.
    carrier.pending_receipts.append(("c1", "UNDELIV", b"393481234567", b"Staffetta"))
    hub.start()
    carrier.wait(lambda: carrier.receipt_answers == [0])  # acknowledged only once recorded
    assert hub.sql("SELECT state FROM messages WHERE id = ?", mid) == [(5,)]  # UNDELIVERABLE
    assert hub.balance() == "10.00"


def test_kill9_after_the_acknowledgements_are_committed_redelivers_nothing(rig):
    """docs/operations.md: after a kill -9 a client sees again only receipts whose answer was not yet committed."""
    carrier, hub = rig
    _cli("account", "create", "demo", "--password", "demo", "--credits", "100", "--data-dir", str(hub.data))
    hub.start()
    c = SyncEsme(hub.port)
    assert c.bind("demo", "demo", Command.BIND_TRANSCEIVER).status == 0
    mids = [int(_submit(c, b"", b"m%d" % i).fields["message_id"]) for i in range(3)]
    carrier.wait(lambda: [r[0] for r in hub.sql("SELECT upstream_id FROM messages ORDER BY id")]
                 == ["c1", "c2", "c3"])
    # The carrier sends the three receipts at its next bind.
    carrier.pending_receipts += [(f"c{i}", "DELIVRD", b"393481234567", b"Staffetta") for i in (1, 2, 3)]
    carrier.go_down()
    carrier.come_up()
    got = []
    while len(got) < 3:
        p = c.read()
        if p.command_id == Command.DELIVER_SM:
            got.append(int(p.tlvs[Tag.receipted_message_id].rstrip(b"\0")))
            c.sock.sendall(encode(Pdu(Command.DELIVER_SM_RESP, p.sequence, 0, {"message_id": b""})))
    assert sorted(got) == mids
    carrier.wait(lambda: hub.sql("SELECT count(*) FROM outbox") == [(0,)])  # the answers are committed
    c.close()
    hub.kill9()

    # What a rebind can deliver again is what the table holds after the restart: nothing.
    assert hub.sql("SELECT count(*) FROM outbox") == [(0,)]
    hub.start()
    c = SyncEsme(hub.port)
    assert c.bind("demo", "demo", Command.BIND_TRANSCEIVER).status == 0
    c.send(Command.ENQUIRE_LINK)
    seen = []
    while True:
        p = c.read()
        seen.append(p.command_id)
        if p.command_id == Command.ENQUIRE_LINK_RESP:
            break
    assert Command.DELIVER_SM not in seen
    c.close()
