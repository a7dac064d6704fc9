"""The wire and the text: codec, framing, session core, GSM/UCS-2 text, segments, receipts."""
