"""Unbind and rebind keep their promises (issue 10 item 7), over real SMPP.

The defect: a receipt that a client received and acknowledged just before
unbinding was delivered a second time on its next bind. Two suspects, one
test each:

* (a) the deliver_sm_resp came after the client's unbind and the hub's session,
  closed by that unbind, dropped it; the delivery then counted as unanswered
  and went out again. This was the cause: the first test fails on the main of
  issue 10.
* (b) the new bind's refill read the outbox row before the acknowledgement's
  delete was committed. The outbox already kept acknowledged ids until their
  delete commits; the second test holds the delete back with the writer
  stalled and shows that the refill does not resend it (it passes on that
  main too).
"""

from __future__ import annotations

import threading

import pytest_twisted
from twisted.internet import reactor, task, threads

from staffetta.pdu.codec import tlv_cstr
from staffetta.pdu.constants import Command, Status, Tag
from tests.e2e.harness import make_env, wait_until, with_timeout
from tests.esme import connect_esme


def _sleep(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_a_receipt_acknowledged_after_the_clients_unbind_is_not_delivered_again(data_dir):
    env = make_env(data_dir)
    try:
        env.hub.outbox.retry_delay = 0.2  # an unanswered delivery would be offered again at once
        c = yield connect_esme(reactor, env.port, auto_ack=None)
        yield c.bind("demo", "demo")
        r = yield with_timeout(c.submit())
        dlr = yield with_timeout(c.delivered.get())
        assert tlv_cstr(dlr.tlvs[Tag.receipted_message_id]) == r.fields["message_id"]
        # The client unbinds, and its deliver_sm_resp leaves after the unbind (same write).
        c.session.send_request(Command.UNBIND)
        c.session.respond(dlr, Status.ESME_ROK)
        c.flush_now()
        yield with_timeout(c.closed)
        again = yield connect_esme(reactor, env.port)
        yield again.bind("demo", "demo")
        yield _sleep(1.0)  # several retry periods
        assert again.delivered.pending == []
        yield wait_until(lambda: env.hub.outbox.queued(1) == 0)
    finally:
        yield env.stop()


@pytest_twisted.inlineCallbacks
def test_a_rebind_while_the_acknowledgements_delete_is_not_committed_does_not_resend_it(data_dir):
    env = make_env(data_dir)
    release = threading.Event()
    try:
        env.hub.outbox.retry_delay = 0.2
        c = yield connect_esme(reactor, env.port, auto_ack=None)
        yield c.bind("demo", "demo")
        yield with_timeout(c.submit())
        dlr = yield with_timeout(c.delivered.get())
        # Stall the group-commit writer: the acknowledgement's delete waits behind this.
        env.hub.writer.register("stall", lambda conn, items: release.wait(10) and None)
        env.hub.writer.enqueue("stall", None)
        c.session.respond(dlr, Status.ESME_ROK)
        c.flush_now()
        yield with_timeout(c.request(Command.UNBIND))
        again = yield connect_esme(reactor, env.port)
        yield again.bind("demo", "demo")  # its refill reads the outbox: the row is still there
        row = yield threads.deferToThread(lambda: _outbox_rows(env))
        assert row == 1  # the delete is indeed not committed yet
        yield _sleep(0.5)
        release.set()
        yield wait_until(lambda: _outbox_rows(env) == 0)
        yield _sleep(0.5)
        assert again.delivered.pending == []
    finally:
        release.set()
        yield env.stop()


def _outbox_rows(env) -> int:
    from sqlalchemy import text

    with env.hub.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM outbox")).scalar()
