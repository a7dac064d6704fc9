"""Fixtures for the simulator tests: a carrier on a free port and a small inspectable ESME.

The ESME here is deliberately our own (on :class:`pdu.session.Session`) and
records the raw octets it receives, so fault fixtures can be checked byte for
byte; every wait is a Deferred with a timeout, never a sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from staffetta.pdu.codec import Pdu
from staffetta.pdu.constants import Command, Status
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.session import Outstanding, ProtocolViolation, Side, Timers
from staffetta.simulator.carrier import Carrier
from staffetta.simulator.fleet import CarrierSpec, start_fleet

TIMEOUT = 5.0


def within(d: defer.Deferred, seconds: float = TIMEOUT) -> defer.Deferred:
    """Fail the test instead of hanging when something never arrives."""
    return d.addTimeout(seconds, reactor)


class Esme(SessionProtocol):
    side = Side.ESME

    def __init__(self, *, ack_status: int | None = Status.ESME_ROK, window: int = 100) -> None:
        super().__init__(clock=reactor, timers=Timers(enquire_link=300, inactivity=3000), window=window)
        self.ack_status = ack_status
        self.requests: defer.DeferredQueue[Pdu] = defer.DeferredQueue()
        self.raw = bytearray()
        self.violations: list[ProtocolViolation] = []
        self.closed: defer.Deferred[str] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._raw_waiters: list[tuple[int, defer.Deferred]] = []

    # octets in, before the session sees them
    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.raw += data
        for item in list(self._raw_waiters):
            if len(self.raw) >= item[0]:
                self._raw_waiters.remove(item)
                item[1].callback(bytes(self.raw))
        super().dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        super().connectionLost(reason)
        if not self.lost.called:
            self.lost.callback(None)

    def wait_raw(self, n: int) -> defer.Deferred:
        """Fires with everything received once at least ``n`` octets have arrived."""
        if len(self.raw) >= n:
            return defer.succeed(bytes(self.raw))
        d: defer.Deferred = defer.Deferred()
        self._raw_waiters.append((n, d))
        return within(d)

    def request(self, command_id: int, fields: dict | None = None, tlvs: dict | None = None) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.session.send_request(command_id, fields, tlvs, d)
        self.flush()
        return d

    def bind(self, system_id: bytes = b"hub", password: bytes = b"secret",
             command_id: int = Command.BIND_TRANSCEIVER) -> defer.Deferred:
        return within(self.request(command_id, {"system_id": system_id, "password": password,
                                                "interface_version": 0x34}))

    def submit(self, destination: bytes = b"393331234567", text: bytes = b"hello world",
               registered_delivery: int = 1, tlvs: dict | None = None, **extra: Any) -> defer.Deferred:
        fields = {
            "source_addr_ton": 5,
            "source_addr_npi": 0,
            "source_addr": b"Staffetta",
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": destination,
            "registered_delivery": registered_delivery,
            "short_message": text,
            **extra,
        }
        return self.request(Command.SUBMIT_SM, fields, tlvs)

    def next_request(self) -> defer.Deferred:
        return within(self.requests.get())

    def on_request(self, pdu: Pdu) -> None:
        if self.ack_status is not None:
            self.session.respond(pdu, self.ack_status)
        self.requests.put(pdu)

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        if isinstance(request.context, defer.Deferred):
            request.context.callback(pdu)

    def on_violation(self, ev: ProtocolViolation) -> None:
        self.violations.append(ev)

    def on_closed(self, reason: str, pending: list[Outstanding]) -> None:
        if not self.closed.called:
            self.closed.callback(reason)


@pytest.fixture
def make_carrier() -> Callable[..., Carrier]:
    """make_carrier(**kw) -> a Carrier listening on a free 127.0.0.1 port; closed after the test."""
    made: list[Carrier] = []

    def make(**kw: Any) -> Carrier:
        carrier = Carrier(reactor, **kw)
        carrier.listen(0)
        made.append(carrier)
        return carrier

    yield make
    for carrier in made:
        pytest_twisted.blockon(carrier.close())


@pytest.fixture
def connect() -> Callable[..., defer.Deferred]:
    """connect(carrier, **esme_kw) -> Deferred[Esme] connected (not bound); dropped after the test."""
    made: list[Esme] = []

    def conn(carrier: Carrier, **kw: Any) -> defer.Deferred:
        port = carrier.ports[0].getHost().port
        esme = Esme(**kw)
        made.append(esme)
        return within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), esme))

    yield conn
    for esme in made:
        if esme.transport is not None and not esme.lost.called:
            esme.transport.abortConnection()
            pytest_twisted.blockon(esme.lost)


@pytest.fixture
def fleet():
    """fleet(*specs, **kw) -> a running Fleet on free ports; closed after the test."""
    made = []

    def make(*specs: CarrierSpec, **kw: Any):
        f = start_fleet(reactor, specs, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        pytest_twisted.blockon(f.close())


@pytest.fixture
def esme_to():
    """esme_to(fleet, name, **kw) -> Deferred[Esme] bound TRX to that carrier; dropped after the test."""
    made: list[Esme] = []

    @defer.inlineCallbacks
    def conn(f, name: str, **kw: Any):
        esme = Esme(**kw)
        made.append(esme)
        yield within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", f.port(name)), esme))
        resp = yield esme.bind()
        assert resp.status == 0
        return esme

    yield conn
    for esme in made:
        if esme.transport is not None and not esme.lost.called:
            esme.transport.abortConnection()
            pytest_twisted.blockon(esme.lost)


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


def answered_by(d: defer.Deferred) -> list:
    """A box that holds the response once ``d`` fires (to check "not answered yet")."""
    box: list = []
    d.addCallback(lambda r: box.append(r) or r)
    return box
