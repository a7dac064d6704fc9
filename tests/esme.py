"""A small ESME for tests, on our own session core (deterministic, inspectable).

The independent check against a foreign implementation lives in
tests/e2e/test_foreign_client.py (smpp.twisted).
"""

from __future__ import annotations

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from staffetta.pdu.codec import Pdu, decode
from staffetta.pdu.constants import Command, Status
from staffetta.pdu.framing import Framer
from staffetta.pdu.protocol import SessionProtocol
from staffetta.pdu.session import Outstanding, Side, Timers


class TestEsme(SessionProtocol):
    side = Side.ESME

    def __init__(self, reactor, *, auto_ack: int | None = Status.ESME_ROK, window: int = 100) -> None:
        super().__init__(clock=reactor, timers=Timers(enquire_link=300, inactivity=3000), window=window)
        self.delivered: defer.DeferredQueue = defer.DeferredQueue()
        self.auto_ack = auto_ack
        self.closed = defer.Deferred()

    def request(self, command_id: int, fields: dict | None = None, tlvs: dict | None = None) -> defer.Deferred:
        d = defer.Deferred()
        self.session.send_request(command_id, fields, tlvs, d)
        self.flush()
        return d

    def bind(self, system_id: str, password: str, command_id: int = Command.BIND_TRANSCEIVER) -> defer.Deferred:
        return self.request(
            command_id,
            {"system_id": system_id.encode(), "password": password.encode(), "interface_version": 0x34},
        )

    def submit(self, text: bytes = b"hello", destination: bytes = b"393331234567", **fields) -> defer.Deferred:
        f = {
            "source_addr_ton": 5,
            "source_addr_npi": 0,
            "source_addr": b"Staffetta",
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": destination,
            "registered_delivery": 1,
            "short_message": text,
        }
        tlvs = fields.pop("tlvs", None)
        f.update(fields)
        return self.request(Command.SUBMIT_SM, f, tlvs)

    def on_response(self, pdu: Pdu, request: Outstanding) -> None:
        if isinstance(request.context, defer.Deferred):
            request.context.callback(pdu)

    def on_request(self, pdu: Pdu) -> None:
        self.delivered.put(pdu)
        if self.auto_ack is not None:
            self.session.respond(pdu, self.auto_ack)

    def on_closed(self, reason: str, pending) -> None:
        if not self.closed.called:
            self.closed.callback(reason)


def connect_esme(reactor, port: int, **kw) -> defer.Deferred:
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), TestEsme(reactor, **kw))


class RawPeer(protocol.Protocol):
    """Speaks bytes, not SMPP: for malformed input tests. Collects whole PDUs."""

    def __init__(self) -> None:
        self.framer = Framer()
        self.frames: list[Pdu] = []
        self._waiters: list[tuple[int, defer.Deferred]] = []
        self.lost = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for f in self.framer.feed(data):
            self.frames.append(decode(f))
        self._wake()

    def _wake(self) -> None:
        for n, d in list(self._waiters):
            if len(self.frames) >= n:
                self._waiters.remove((n, d))
                d.callback(self.frames[:n])

    def wait_frames(self, n: int) -> defer.Deferred:
        d = defer.Deferred()
        self._waiters.append((n, d))
        self._wake()
        return d

    def connectionLost(self, reason=None) -> None:  # noqa: N802
        if not self.lost.called:
            self.lost.callback(None)


def connect_raw(reactor, port: int) -> defer.Deferred:
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawPeer())
