"""Config errors are one line naming the field (DEVELOPERS.md "Bad input")."""

from __future__ import annotations

import pytest

from staffetta.conf.settings import ConfigError, Settings, from_dict, load

GOOD_UPSTREAM = {"name": "sim", "host": "127.0.0.1", "port": 2776, "system_id": "a", "password": "b"}


def test_example_config_loads():
    s = load("conf/staffetta.example.yaml")
    assert s.listen == "127.0.0.1:2775" and s.upstreams[0].port == 2776


def test_defaults():
    s = from_dict({"upstreams": [GOOD_UPSTREAM]})
    assert s.session.window == 10 and s.session.session_init == 10.0
    assert s.db_url.startswith("sqlite:///") and s.db_url.endswith("staffetta.db")
    assert Settings(database_url="postgresql://x/y").db_url == "postgresql://x/y"


@pytest.mark.parametrize(
    "data,message",
    [
        ({}, "upstreams: at least one upstream carrier is required"),
        ({"upstreams": [GOOD_UPSTREAM], "listn": "x"}, "listn: unknown setting"),
        ({"upstreams": [GOOD_UPSTREAM], "listen": "nowhere"}, "listen: expected HOST:PORT, got 'nowhere'"),
        ({"upstreams": [{**GOOD_UPSTREAM, "port": 70000}]}, "upstreams[0].port: expected a port 1-65535, got 70000"),
        ({"upstreams": [{**GOOD_UPSTREAM, "port": "x"}]}, "upstreams[0].port: expected a non-negative integer, got 'x'"),
        ({"upstreams": [{k: v for k, v in GOOD_UPSTREAM.items() if k != "host"}]}, "upstreams[0].host: required"),
        ({"upstreams": [{**GOOD_UPSTREAM, "password": "123456789"}]},
         "upstreams[0].password: SMPP passwords are at most 8 characters"),
        ({"upstreams": [{**GOOD_UPSTREAM, "id_format": "octal"}]},
         "upstreams[0].id_format: expected auto, decimal or hex, got 'octal'"),
        ({"upstreams": [GOOD_UPSTREAM, GOOD_UPSTREAM]}, "upstreams: upstream names must be unique"),
        ({"upstreams": [GOOD_UPSTREAM], "session": {"window": -1}},
         "session.window: expected a non-negative integer, got -1"),
        ({"upstreams": [GOOD_UPSTREAM], "session": {"response": "soon"}},
         "session.response: expected a non-negative number, got 'soon'"),
        ({"upstreams": "sim"}, "upstreams: expected a non-empty list"),
    ],
)
def test_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as exc:
        from_dict(data)
    assert str(exc.value) == message
    assert "\n" not in str(exc.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ not valid YAML"):
        load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def test_hlr_section_and_yaml_off(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "upstreams: [{name: a, host: h, port: 1, system_id: x, password: y}]\n"
        "hlr:\n  mode: off\n  failure_policy: fail-closed\n  provider: {type: simulator}\n"
        "redis_url: redis://127.0.0.1:6379/0\n"
    )
    s = load(cfg)
    assert (s.hlr.mode, s.hlr.failure_policy, s.hlr.provider) == ("off", "fail-closed", {"type": "simulator"})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    with pytest.raises(ConfigError, match=r"^hlr.failure_policy: expected fail-open or fail-closed, got 'maybe'$"):
        from_dict({"upstreams": [GOOD_UPSTREAM], "hlr": {"failure_policy": "maybe"}})
