"""``--log-format json``: one JSON object a line, with the structured fields a log call passes."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from staffetta.smsc.logs import JsonFormatter, TextFormatter, fields, setup_logging

CLI = [sys.executable, "-m", "staffetta.smsc.cli"]


def _record(msg: str, *args, level: int = logging.INFO, extra: dict | None = None, exc_info=None):
    logger = logging.getLogger("staffetta.test")
    return logger.makeRecord(logger.name, level, __file__, 1, msg, args, exc_info, extra=extra)


def test_json_line_has_time_level_logger_message_and_the_fields() -> None:
    line = JsonFormatter().format(_record("bind %s", "acme", extra=fields(account="acme", bind_type="trx",
                                                                          peer="127.0.0.1:5000", result="ok")))
    doc = json.loads(line)
    assert "\n" not in line
    assert doc["level"] == "INFO" and doc["logger"] == "staffetta.test" and doc["message"] == "bind acme"
    assert doc["time"].endswith("Z") and doc["time"][10] == "T"
    assert (doc["account"], doc["bind_type"], doc["peer"], doc["result"]) == ("acme", "trx", "127.0.0.1:5000", "ok")


def test_a_field_named_like_a_key_does_not_overwrite_it_and_odd_values_are_text() -> None:
    doc = json.loads(JsonFormatter().format(_record("x", extra=fields(message="mine", at=object, n=1))))
    assert doc["message"] == "x" and doc["fields"] == {"message": "mine"} and doc["n"] == 1
    assert doc["at"] == str(object)


def test_an_exception_stays_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        line = JsonFormatter().format(_record("failed", level=logging.ERROR, exc_info=sys.exc_info()))
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


@given(st.text(), st.dictionaries(st.text(min_size=1), st.one_of(st.text(), st.integers(), st.none())))
def test_any_message_and_fields_make_one_parseable_line(message: str, values: dict) -> None:
    line = JsonFormatter().format(_record("%s", message, extra={"fields": values}))
    doc = json.loads(line)
    assert "\n" not in line and "\r" not in line and doc["message"] == message


def test_text_format_appends_key_value() -> None:
    line = TextFormatter().format(_record("connector up", extra=fields(connector="sim", state="bound")))
    assert line.endswith("staffetta.test: connector up connector=sim state=bound")


def test_setup_logging_levels_and_format() -> None:
    out = io.StringIO()
    setup_logging(False, "json", out)
    try:
        logging.getLogger("staffetta.x").info("hidden")
        logging.getLogger("staffetta.x").warning("shown", extra=fields(k=1))
        setup_logging(True, "json", out)  # a second call replaces the first handler, not adds one
        logging.getLogger("staffetta.x").info("now shown")
    finally:
        setup_logging(False, "text")
    docs = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(d["level"], d["message"]) for d in docs] == [("WARNING", "shown"), ("INFO", "now shown")]
    assert docs[0]["k"] == 1


def test_run_with_json_logs_writes_only_json_on_stderr(tmp_path) -> None:
    """The process as a log shipper reads it: every stderr line an object, the start line with its fields."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\ndata_dir: {tmp_path / 'd'}\n"
                   "upstreams:\n  - {name: sim, host: 127.0.0.1, port: 1, system_id: x, password: y}\n")
    proc = subprocess.Popen([*CLI, "-v", "--log-format", "json", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Staffetta listening" in proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    docs = [json.loads(line) for line in err.splitlines()]  # raises if any line is not JSON
    started = [d for d in docs if d["message"] == "hub started"]
    assert started and started[0]["upstreams"] == ["sim"] and started[0]["smpp"].startswith("127.0.0.1:")
