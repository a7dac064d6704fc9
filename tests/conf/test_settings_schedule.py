"""The scheduled-delivery settings: defaults, and a bad value is one line naming it (exit status 2)."""

from __future__ import annotations

import subprocess

import pytest

from staffetta.conf.settings import ConfigError, from_dict
from tests.conf.test_settings import GOOD_UPSTREAM
from tests.syncesme import CLI


def test_defaults_answer_enroute_and_hold_200000():
    s = from_dict({"upstreams": [GOOD_UPSTREAM]})
    assert (s.query_scheduled_state, s.max_scheduled) == ("scheduled", 200_000)
    s = from_dict({"upstreams": [GOOD_UPSTREAM], "query_scheduled_state": "enroute", "max_scheduled": 5})
    assert (s.query_scheduled_state, s.max_scheduled) == ("enroute", 5)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"query_scheduled_state": "pending"}, "query_scheduled_state: expected enroute or scheduled, got 'pending'"),
        ({"max_scheduled": 0}, "max_scheduled: expected an integer >= 1, got 0"),
    ],
)
def test_errors_name_the_setting(over, message):
    with pytest.raises(ConfigError) as exc:
        from_dict({"upstreams": [GOOD_UPSTREAM], **over})
    assert str(exc.value) == message


def test_the_command_line_says_one_line_and_exits_2(tmp_path):
    config = tmp_path / "hub.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nquery_scheduled_state: 0\n"
        "upstreams:\n  - {name: sim, host: 127.0.0.1, port: 2776, system_id: a, password: b}\n"
    )
    r = subprocess.run([*CLI, "run", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["staffetta: query_scheduled_state: expected enroute or scheduled, got '0'"]
