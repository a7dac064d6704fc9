"""A blocking SMPP client on a plain socket, for tests that drive whole processes."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import tempfile

from staffetta.pdu.codec import Pdu, decode, encode
from staffetta.pdu.constants import Command, Tag

CLI = [sys.executable, "-m", "staffetta.smsc.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str) -> subprocess.Popen:
    """Start a `staffetta` verb and return once it says it listens (its first stdout line).

    Logs go to a temporary file, never to a pipe nobody reads (a full pipe
    would block the process).
    """
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=log, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    banner = proc.stdout.readline() if ready else ""
    if "listening" not in banner:
        proc.kill()
        log.seek(0)
        raise AssertionError(f"staffetta {args[0]} did not start: {banner!r} {log.read()[-2000:]}")
    proc.stdout.close()  # nothing more is printed there; no pipe left to fill
    return proc


class SyncEsme:
    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, command_id: int, fields: dict | None = None, tlvs: dict | None = None) -> int:
        self.seq += 1
        self.sock.sendall(encode(Pdu(command_id, self.seq, 0, fields, tlvs)))
        return self.seq

    def read(self) -> Pdu:
        while True:
            if len(self.buf) >= 4:
                n = int.from_bytes(self.buf[:4], "big")
                if len(self.buf) >= n:
                    pdu, self.buf = decode(self.buf[:n]), self.buf[n:]
                    return pdu
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by peer")
            self.buf += chunk

    def bind(self, system_id: str, password: str, command_id: int = Command.BIND_TRANSMITTER) -> Pdu:
        self.send(command_id, {"system_id": system_id.encode(), "password": password.encode(),
                               "interface_version": 0x34})
        return self.read()

    def submit_many(self, n: int, destination: bytes = b"393331234567") -> list[Pdu]:
        """Pipeline n submit_sm (within the hub's inbound window), return their responses."""
        for i in range(n):
            self.send(Command.SUBMIT_SM, {
                "source_addr_ton": 5, "source_addr": b"Test", "dest_addr_ton": 1, "dest_addr_npi": 1,
                "destination_addr": destination, "registered_delivery": 0, "short_message": b"m%d" % i,
            })
        out = []
        while len(out) < n:
            p = self.read()
            if p.command_id == Command.SUBMIT_SM_RESP:
                out.append(p)
        return out

    def delivered_texts(self, n: int) -> list[bytes]:
        """The user data of the next ``n`` deliver_sm (short_message, else message_payload), left unanswered."""
        got: list[bytes] = []
        while len(got) < n:
            p = self.read()
            if p.command_id == Command.DELIVER_SM:
                got.append(p.fields["short_message"] or p.tlvs.get(Tag.message_payload))
        return got
