"""A carrier SMSC on a plain socket that keeps the exact octets of every submit_sm it gets.

For tests that run the hub as a process and kill it: the carrier must outlive
the hub, can refuse binds (a carrier that is down), and sends the receipts a
test asks for as soon as the hub binds again.
"""

from __future__ import annotations

import socket
import threading
import time

from staffetta.pdu.codec import Pdu, decode, encode
from staffetta.pdu.constants import Command, Status
from staffetta.pdu.receipt import STAT_TO_STATE, format_receipt, receipt_fields
from tests.polling import wait_for


class RecordingCarrier:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepting = True
        #: Every submit_sm seen, as (raw PDU octets, carrier id given).
        self.submits: list[tuple[bytes, str]] = []
        #: Receipts to send at the next bind: (carrier id, stat word, destination, source).
        self.pending_receipts: list[tuple[str, str, bytes, bytes]] = []
        #: Whole deliver_sm PDUs (an MO, say) to send, in order, at the next bind.
        self.pending_pdus: list[Pdu] = []
        #: Status of every deliver_sm_resp received (receipts and the pending PDUs alike).
        self.receipt_answers: list[int] = []
        self.binds = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # ------------------------------------------------------------------ control

    def go_down(self) -> None:
        """Drop every session and refuse binds (the hub keeps retrying)."""
        self.accepting = False
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            _close(c)

    def come_up(self) -> None:
        self.accepting = True

    def close(self) -> None:
        self._closed = True
        self.go_down()
        _close(self.listener)

    def wait(self, predicate, timeout: float = 60.0) -> None:
        wait_for(predicate, timeout, "carrier", interval=0.02)

    # ------------------------------------------------------------------ sessions

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if not self.accepting:
                _close(conn)
                continue
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        seq = 1000
        try:
            while True:
                while len(buf) < 4 or len(buf) < int.from_bytes(buf[:4], "big"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                n = int.from_bytes(buf[:4], "big")
                raw, buf = buf[:n], buf[n:]
                pdu = decode(raw)
                cid = pdu.command_id
                if cid == Command.BIND_TRANSCEIVER:
                    if not self.accepting:
                        return
                    conn.sendall(encode(Pdu(cid | 0x80000000, pdu.sequence, 0, {"system_id": b"rec"})))
                    self.binds += 1
                    while self.pending_receipts:
                        uid, stat, dest, src = self.pending_receipts.pop(0)
                        seq += 1
                        text = format_receipt(uid, 1, 0, time.time(), time.time(), stat, 1, "")
                        fields, tlvs = receipt_fields(uid.encode(), dest, 1, 1, src, 5, 0,
                                                      STAT_TO_STATE[stat], text, 1)
                        conn.sendall(encode(Pdu(Command.DELIVER_SM, seq, 0, fields, tlvs)))
                    while self.pending_pdus:
                        p = self.pending_pdus.pop(0)
                        seq += 1
                        conn.sendall(encode(Pdu(p.command_id, seq, 0, p.fields, p.tlvs)))
                elif cid == Command.SUBMIT_SM:
                    uid = f"c{len(self.submits) + 1}"
                    self.submits.append((raw, uid))
                    conn.sendall(encode(Pdu(Command.SUBMIT_SM_RESP, pdu.sequence, 0, {"message_id": uid.encode()})))
                elif cid == Command.DELIVER_SM_RESP:
                    self.receipt_answers.append(pdu.status)
                elif cid == Command.ENQUIRE_LINK:
                    conn.sendall(encode(Pdu(Command.ENQUIRE_LINK_RESP, pdu.sequence, 0)))
                elif cid == Command.UNBIND:
                    conn.sendall(encode(Pdu(Command.UNBIND_RESP, pdu.sequence, 0)))
                    return
                elif not cid & 0x80000000:
                    conn.sendall(encode(Pdu(Command.GENERIC_NACK, pdu.sequence, Status.ESME_RINVCMDID)))
        except OSError:
            return
        finally:
            _close(conn)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
