"""Test data builders shared across packages' tests."""

from __future__ import annotations

from staffetta.pdu import gsm


def submit_fields(text: str | None = "Hello", **over) -> dict:
    """A valid submit_sm as the codec decodes it; ``text`` is GSM-encoded into short_message."""
    sm = gsm.encode(text) if text is not None else b""
    f = {
        "service_type": b"", "source_addr_ton": 5, "source_addr_npi": 0,
        "source_addr": b"Staffetta", "dest_addr_ton": 1, "dest_addr_npi": 1,
        "destination_addr": b"393481234567", "esm_class": 0, "protocol_id": 0,
        "priority_flag": 0, "schedule_delivery_time": b"", "validity_period": b"",
        "registered_delivery": 1, "replace_if_present_flag": 0, "data_coding": 0,
        "sm_default_msg_id": 0, "sm_length": len(sm), "short_message": sm,
    }
    f.update(over)
    if "short_message" in over and "sm_length" not in over:
        f["sm_length"] = len(f["short_message"])
    return f


def split_frames(data: bytes) -> list[bytes]:
    """Whole PDUs of a byte stream, each still encoded (lengths from the headers)."""
    out = []
    while data:
        n = int.from_bytes(data[:4], "big")
        out.append(data[:n])
        data = data[n:]
    return out
