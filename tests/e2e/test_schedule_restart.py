"""Scheduled messages survive a kill -9 of the hub process: each is released on time, exactly once."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import Command, Status
from staffetta.pdu.smpptime import format_smpp_time
from staffetta.router.record import SCHEDULED
from tests.e2e.recording_carrier import RecordingCarrier
from tests.e2e.test_kill9 import HubProcess, _cli
from tests.syncesme import SyncEsme


@pytest.fixture
def restart_rig(tmp_path):
    carrier = RecordingCarrier()
    hub = HubProcess(tmp_path, carrier.port)
    yield carrier, hub
    hub.stop()
    carrier.close()


def _answer(c: SyncEsme, command_id: int) -> Pdu:
    while True:
        p = c.read()
        if p.command_id == command_id:
            return p


def _submit_at(c: SyncEsme, due: float, text: bytes) -> int:
    c.send(Command.SUBMIT_SM, {
        "source_addr_ton": 5, "source_addr": b"Staffetta", "dest_addr_ton": 1, "dest_addr_npi": 1,
        "destination_addr": b"393481234567", "registered_delivery": 1, "short_message": text,
        "schedule_delivery_time": format_smpp_time(datetime.fromtimestamp(due, UTC)),
    })
    r = _answer(c, Command.SUBMIT_SM_RESP)
    assert r.status == Status.ESME_ROK
    return int(r.fields["message_id"])


def test_scheduled_messages_are_released_on_time_after_a_kill9_exactly_once(restart_rig):
    carrier, hub = restart_rig
    _cli("account", "create", "demo", "--password", "demo", "--credits", "100", "--data-dir", str(hub.data))
    hub.start()
    c = SyncEsme(hub.port)
    assert c.bind("demo", "demo").status == 0
    now = time.time()
    # Whole tenths: the absolute form carries tenths of a second.
    early = int((now + 1.5) * 10) / 10  # its time passes while the hub is down
    late = int((now + 20.0) * 10) / 10  # its time comes after the restart (a slow start under load: 10 s+)
    mid_late = _submit_at(c, late, b"late")
    mid_early = _submit_at(c, early, b"early")
    assert hub.sql("SELECT id, phase, state, deliver_at FROM messages ORDER BY id") == [
        (mid_late, 0, SCHEDULED, late), (mid_early, 0, SCHEDULED, early)]
    c.send(Command.QUERY_SM, {"message_id": str(mid_late).encode(), "source_addr_ton": 5,
                              "source_addr": b"Staffetta"})
    assert _answer(c, Command.QUERY_SM_RESP).fields["message_state"] == SCHEDULED
    c.close()
    hub.kill9()
    assert carrier.submits == []

    time.sleep(max(0.0, early + 0.2 - time.time()))  # the early one is due while nobody holds it
    hub.start()
    carrier.wait(lambda: len(carrier.submits) >= 1)
    assert b"early" in carrier.submits[0][0]  # due already: sent as soon as the hub is back
    carrier.wait(lambda: len(carrier.submits) >= 2)
    sent = time.time()
    assert late <= sent <= late + 1.0, sent - late
    assert b"late" in carrier.submits[1][0]
    time.sleep(1.5)  # proving an absence: nothing is sent twice
    assert len(carrier.submits) == 2
    carrier.wait(lambda: hub.sql("SELECT phase, state FROM messages ORDER BY id") == [(1, 1), (1, 1)])
    assert hub.balance() == "96.80"  # two debits of 1.60, no more
