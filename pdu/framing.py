"""Cut a TCP byte stream into whole SMPP PDUs.

Twisted's ``Int32StringReceiver`` is off by four for SMPP (its prefix does not
count itself), so we frame ourselves. The length is checked before anything is
buffered for the body: a peer announcing 4 GiB gets an answer, not our memory.
The buffer is consumed by offset and compacted only when most of it is read,
so a burst of small PDUs never costs quadratic copying.
"""

from __future__ import annotations

from pdu.codec import HEADER_LEN

#: Largest PDU we accept: header, the largest mandatory part (submit_multi with
#: 254 destinations is ~6 KiB) and a full 64 KiB message_payload.
DEFAULT_MAX_LENGTH = HEADER_LEN + 8 * 1024 + 65536


class FramingError(Exception):
    """The stream cannot be re-synchronised: answer generic_nack, then close."""

    def __init__(self, length: int, sequence: int, frames: list[bytes]) -> None:
        super().__init__(f"command_length {length} outside 16-{DEFAULT_MAX_LENGTH}")
        self.length = length
        self.sequence = sequence
        #: Whole PDUs that arrived before the bad one: still to be handled.
        self.frames = frames


class Framer:
    __slots__ = ("_buf", "_pos", "max_length")

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_length = max_length

    def feed(self, data: bytes) -> list[bytes]:
        """Add received octets; return every PDU now complete, in order.

        Raises :class:`FramingError` at the first impossible length; the PDUs
        that came before it in the same read travel on the error as ``frames``.
        """
        buf = self._buf
        if self._pos == len(buf):
            # Fast path: nothing pending, the common case of whole PDUs per read.
            buf.clear()
            self._pos = 0
        buf += data
        frames: list[bytes] = []
        pos = self._pos
        end = len(buf)
        max_length = self.max_length
        while end - pos >= 4:
            length = int.from_bytes(buf[pos : pos + 4], "big")
            if length < HEADER_LEN or length > max_length:
                sequence = int.from_bytes(buf[pos + 12 : pos + 16], "big") if end - pos >= 16 else 0
                self._pos = end  # drop the rest: the stream is lost
                raise FramingError(length, sequence, frames)
            if end - pos < length:
                break
            frames.append(bytes(buf[pos : pos + length]))
            pos += length
        if pos > 65536 and pos * 2 > end:
            del buf[:pos]
            pos = 0
        self._pos = pos
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos
