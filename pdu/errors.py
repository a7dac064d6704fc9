"""The one exception the text layer raises for a submit the hub must refuse.

Every check in ``pdu/`` that can fail on client input raises
:class:`SubmitRejected` carrying the exact SMPP ``command_status`` to answer
with and the name of the offending field, so the session can reply with a
precise ``submit_sm_resp`` (never a traceback, never a silent drop) and the
log line names what was wrong.
"""

from __future__ import annotations

from staffetta.pdu.constants import Status, status_name


class SubmitRejected(Exception):
    """A submit the hub refuses: ``status`` goes in the response, ``field`` in the log."""

    __slots__ = ("status", "field", "reason")

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(status, field, reason)
        self.status = Status(status) if status in Status._value2member_map_ else status
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{status_name(self.status)}: {self.field}: {self.reason}"

    def __repr__(self) -> str:
        return f"SubmitRejected({status_name(self.status)}, {self.field!r}, {self.reason!r})"
