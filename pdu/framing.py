"""Cut a TCP byte stream into whole SMPP PDUs.

Twisted's ``Int32StringReceiver`` is off by four for SMPP (its prefix does not
count itself), so we frame ourselves. The length is checked as soon as its four
octets are in, before anything is buffered for the body: a peer announcing
4 GiB gets an answer, not our memory.

Memory and time stay linear in what is received, however the stream is cut.
Whole PDUs are sliced straight out of the read that brought them; only the
octets of the one PDU still incomplete are kept, appended to a bytearray
(amortised O(1) per octet) and turned into a frame once it is complete. So the
framer never holds more than the unfinished PDU plus the chunk being fed, each
octet is copied a bounded number of times, and a megabyte of small PDUs
arriving a few bytes at a time costs no quadratic re-copying -- nor does a
64 KiB PDU trickling in byte by byte.
"""

from __future__ import annotations

import struct

from staffetta.pdu.codec import HEADER_LEN

#: Largest PDU we accept: header, the largest mandatory part (submit_multi with
#: 254 destinations is ~6 KiB) and a full 64 KiB message_payload.
DEFAULT_MAX_LENGTH = HEADER_LEN + 8 * 1024 + 65536

#: command_length at an offset, without slicing it out first (a third of the cost).
_unpack_length = struct.Struct(">I").unpack_from


class FramingError(Exception):
    """The stream cannot be re-synchronised: answer generic_nack, then close."""

    def __init__(self, length: int, sequence: int, frames: list[bytes],
                 max_length: int = DEFAULT_MAX_LENGTH) -> None:
        super().__init__(f"command_length {length} outside {HEADER_LEN}-{max_length}")
        self.length = length
        #: The bad PDU's sequence_number when its header was readable, else 0.
        self.sequence = sequence
        #: Whole PDUs that arrived before the bad one: still to be handled.
        self.frames = frames


class Framer:
    __slots__ = ("_pending", "_need", "max_length")

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        #: Octets of the PDU not complete yet (never any octet of a returned one).
        self._pending = bytearray()
        #: Octets needed before framing can make progress: 4 for the length
        #: field, then the whole PDU once its length is known.
        self._need = 4
        self.max_length = max_length

    def feed(self, data: bytes) -> list[bytes]:
        """Add received octets; return every PDU now complete, in order.

        Raises :class:`FramingError` at the first impossible length; the PDUs
        that came before it in the same read travel on the error as ``frames``.
        After the error the framer holds nothing: the rest of the stream is lost.
        """
        if not data:
            return []
        pending = self._pending
        if pending:
            pending += data
            if len(pending) < self._need:
                return []  # still short of the next PDU (or of its length): collect only
            buf = bytes(pending)
            pending.clear()
        else:
            buf = data if type(data) is bytes else bytes(data)
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        max_length = self.max_length
        while end - pos >= 4:
            (length,) = _unpack_length(buf, pos)
            if length < HEADER_LEN or length > max_length:
                if length >= HEADER_LEN and end - pos >= HEADER_LEN:
                    sequence = int.from_bytes(buf[pos + 12 : pos + 16], "big")
                else:
                    # Shorter than a header, or the header has not arrived:
                    # the sequence number cannot be read (3.4 §4.3.1: NULL).
                    sequence = 0
                self._need = 4
                raise FramingError(length, sequence, frames, max_length)
            if end - pos < length:
                self._need = length
                break
            if length == end:
                frames.append(buf)  # the common case: one whole PDU per read, no copy
            else:
                frames.append(buf[pos : pos + length])
            pos += length
        else:
            self._need = 4
        if pos < end:
            pending += memoryview(buf)[pos:]
        return frames

    @property
    def buffered(self) -> int:
        """Octets held for a PDU not yet complete."""
        return len(self._pending)
