"""Two hubs on one PostgreSQL share the reply window (docs/two-way.md "Several hubs").

An MT accepted by one hub opens the window on the other within seconds: the
other hub gives the conversation's replies to its account, and does not hand
its pool number to another account writing to the same handset.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import reactor

from staffetta.billing.accounts import create_account, upgrade
from staffetta.billing.wallet import topup
from staffetta.conf.settings import Settings, UpstreamSettings
from staffetta.pdu.constants import Status
from staffetta.router import number_store as ns
from staffetta.simulator.carrier import Carrier
from staffetta.smsc.app import Hub
from staffetta.store.db import create_schema, make_engine
from tests.e2e.harness import PLENTY, SIM_PASS, SIM_USER, wait_until, with_timeout
from tests.e2e.test_pools import R1, R2, X, _submit
from tests.esme import connect_esme

pytestmark = pytest.mark.services


@pytest_twisted.inlineCallbacks
def test_an_mt_on_one_hub_opens_the_window_on_the_other(tmp_path, pg_schema_url):
    carrier = Carrier(reactor, dlr_delay=0.01, credentials={SIM_USER.encode(): SIM_PASS.encode()})
    port = carrier.listen(0)
    seen: list[tuple[str, str]] = []
    original = carrier._submit
    carrier._submit = lambda proto, pdu: (seen.append((pdu.fields["source_addr"].decode(),
                                                       pdu.fields["destination_addr"].decode())),
                                          original(proto, pdu))
    settings = Settings(listen="127.0.0.1:0", data_dir=str(tmp_path), database_url=pg_schema_url,
                        metrics_listen=None,
                        upstreams=(UpstreamSettings("sim", "127.0.0.1", port.getHost().port, SIM_USER, SIM_PASS,
                                                    reconnect_min=0.05, reconnect_max=0.5),))
    engine = make_engine(pg_schema_url)
    import staffetta.router.messages  # noqa: F401

    create_schema(engine)
    upgrade(engine)
    with engine.begin() as conn:
        for name in ("demo", "beta"):
            topup(conn, create_account(conn, name, name).id, PLENTY, method="test")
        for n in (R1, R2):
            ns.add_pool_number(conn, n, "REPLY", None, time.time())
    engine.dispose()
    hubs = [Hub(settings, reactor), Hub(settings, reactor)]
    clients = []
    try:
        for h in hubs:
            h.start()
        assert all(h.numbers.journaling for h in hubs)
        for h, name in zip(hubs, ("demo", "beta"), strict=True):
            c = yield connect_esme(reactor, h.smpp_port)
            clients.append(c)
            yield c.bind(name, name)
        demo, beta = clients

        assert (yield _submit(demo, b"REPLY", X, b"393331234567")).status == Status.ESME_ROK  # on hub 0
        yield wait_until(lambda: len(seen) >= 1)
        number = seen[0][0]
        other = hubs[1]
        # Hub 1 learns the conversation from the store within seconds...
        yield wait_until(lambda: other.numbers.owner_of(X.decode(), number, "yes", reactor.seconds()).account_id
                         == 1, timeout=5)
        # ...and a second account writing to X through hub 1 gets the other number.
        assert (yield with_timeout(_submit(beta, b"REPLY", X, b"393331234567"))).status == Status.ESME_ROK
        yield wait_until(lambda: len(seen) >= 2)
        assert {seen[0][0], seen[1][0]} == {R1, R2}
        # And hub 0 learns beta's in turn.
        yield wait_until(lambda: hubs[0].numbers.owner_of(X.decode(), seen[1][0], "ok",
                                                          reactor.seconds()).account_id == 2, timeout=5)
    finally:
        for c in clients:
            if c.transport is not None:
                c.transport.loseConnection()
        for h in hubs:
            yield h.stop()
        yield port.stopListening()
