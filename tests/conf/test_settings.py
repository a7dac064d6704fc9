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
        ({"upstreams": [{**GOOD_UPSTREAM, "port": "x"}]}, "upstreams[0].port: expected a port 1-65535, got 'x'"),
        ({"upstreams": [{k: v for k, v in GOOD_UPSTREAM.items() if k != "host"}]}, "upstreams[0].host: required"),
        ({"upstreams": [{**GOOD_UPSTREAM, "password": "123456789"}]},
         "upstreams[0].password: SMPP passwords are at most 8 characters"),
        ({"upstreams": [{**GOOD_UPSTREAM, "id_format": "octal"}]},
         "upstreams[0].id_format: expected auto, decimal or hex, got 'octal'"),
        ({"upstreams": [GOOD_UPSTREAM, GOOD_UPSTREAM]}, "upstreams: upstream names must be unique"),
        ({"upstreams": [GOOD_UPSTREAM], "session": {"window": -1}},
         "session.window: expected an integer >= 1, got -1"),
        ({"upstreams": [GOOD_UPSTREAM], "session": {"response": "soon"}},
         "session.response: expected a number of seconds > 0, got 'soon'"),
        ({"upstreams": "sim"}, "upstreams: expected a non-empty list"),
        # issue 11: a window of 0 took messages (and money) it could never send
        ({"upstreams": [{**GOOD_UPSTREAM, "window": 0}]}, "upstreams[0].window: expected an integer >= 1, got 0"),
        ({"upstreams": [GOOD_UPSTREAM], "session": {"window": 0}},
         "session.window: expected an integer >= 1, got 0"),
        # the walk: zero where it has no meaning, non-finite numbers, lengths SMPP cannot carry, ...
        ({"upstreams": [GOOD_UPSTREAM], "session": {"inbound_window": 0}},
         "session.inbound_window: expected an integer >= 1, got 0"),
        ({"upstreams": [GOOD_UPSTREAM], "session": {"enquire_link": 0}},
         "session.enquire_link: expected a number of seconds > 0, got 0"),
        ({"upstreams": [GOOD_UPSTREAM], "session": {"inactivity": float("inf")}},
         "session.inactivity: expected a number of seconds > 0, got inf"),
        ({"upstreams": [GOOD_UPSTREAM], "writer_delay": float("nan")},
         "writer_delay: expected a number of seconds >= 0, got nan"),
        ({"upstreams": [GOOD_UPSTREAM], "writer_batch": 0}, "writer_batch: expected an integer >= 1, got 0"),
        ({"upstreams": [GOOD_UPSTREAM], "max_queue": 0}, "max_queue: expected an integer >= 1, got 0"),
        ({"upstreams": [GOOD_UPSTREAM], "outbox_ttl": 0}, "outbox_ttl: expected a number of seconds > 0, got 0"),
        ({"upstreams": [GOOD_UPSTREAM], "bind_limit": {"failures": 0}},
         "bind_limit.failures: expected an integer >= 1, got 0"),
        ({"upstreams": [GOOD_UPSTREAM], "bind_limit": {"per_seconds": -5}},
         "bind_limit.per_seconds: expected a number of seconds > 0, got -5"),
        ({"upstreams": [GOOD_UPSTREAM], "hlr": {"memory_size": -1}},
         "hlr.memory_size: expected an integer >= 0, got -1"),
        ({"upstreams": [{**GOOD_UPSTREAM, "reconnect_min": 0}]},
         "upstreams[0].reconnect_min: expected a number of seconds > 0, got 0"),
        ({"upstreams": [{**GOOD_UPSTREAM, "reconnect_min": 5, "reconnect_max": 1}]},
         "upstreams[0].reconnect_max: must be >= reconnect_min (5), got 1"),
        ({"upstreams": [{**GOOD_UPSTREAM, "throttle_backoff": -1}]},
         "upstreams[0].throttle_backoff: expected a number of seconds >= 0, got -1"),
        ({"upstreams": [{**GOOD_UPSTREAM, "port": 0}]}, "upstreams[0].port: expected a port 1-65535, got 0"),
        ({"upstreams": [{**GOOD_UPSTREAM, "host": " "}]}, "upstreams[0].host: must not be empty"),
        ({"upstreams": [{**GOOD_UPSTREAM, "system_id": "x" * 16}]},
         "upstreams[0].system_id: at most 15 characters in SMPP, got 16"),
        ({"upstreams": [{**GOOD_UPSTREAM, "system_type": "x" * 13}]},
         "upstreams[0].system_type: at most 12 characters in SMPP, got 13"),
        ({"upstreams": [GOOD_UPSTREAM], "system_id": "StaffettaHubItaly"},
         "system_id: at most 15 characters in SMPP, got 17"),
        ({"upstreams": [GOOD_UPSTREAM], "data_dir": ""}, "data_dir: must not be empty"),
        ({"upstreams": [GOOD_UPSTREAM], "metrics_listen": "9775x"},
         "metrics_listen: expected HOST:PORT, got '9775x'"),
        ({"upstreams": [GOOD_UPSTREAM], "listen": "127.0.0.1:70000"},
         "listen: expected HOST:PORT, got '127.0.0.1:70000'"),
        ({"upstreams": [GOOD_UPSTREAM], "database_url": "mysql://u@h/db"},
         "database_url: expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB, got 'mysql://u@h/db'"),
        ({"upstreams": [GOOD_UPSTREAM], "database_url": "not a url"},
         "database_url: expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB, got 'not a url'"),
        ({"upstreams": [GOOD_UPSTREAM], "redis_url": "127.0.0.1:6379"},
         "redis_url: expected redis://HOST:PORT/DB, got '127.0.0.1:6379'"),
        ({"upstreams": [GOOD_UPSTREAM], "session": {"windw": 3}}, "session.windw: unknown setting"),
        ({"upstreams": [GOOD_UPSTREAM], "hlr": {"mode": "sometimes"}},
         "hlr.mode: expected off, cached or always, got 'sometimes'"),
        ({"upstreams": [{**GOOD_UPSTREAM, "bind_mode": "tx"}]},
         "upstreams[0].bind_mode: expected transceiver or transmitter-receiver, got 'tx'"),
        ({"upstreams": [{**GOOD_UPSTREAM, "sessions": 0}]}, "upstreams[0].sessions: expected an integer >= 1, got 0"),
        ({"upstreams": [{**GOOD_UPSTREAM, "throughput": -5}]},
         "upstreams[0].throughput: expected messages per second >= 0, got -5"),
        ({"upstreams": [GOOD_UPSTREAM], "routes": {"it": "sim"}}, "routes: expected a list"),
        ({"upstreams": [{**GOOD_UPSTREAM, "enquire_link": 0}]},
         "upstreams[0].enquire_link: expected a number of seconds > 0, got 0"),
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


@pytest.mark.parametrize("text", ["off", "no", "null", "~", "''", "'off'", "'none'"])
def test_metrics_listen_off_in_the_config(tmp_path, text):
    """issue 11: ``metrics_listen: off`` was refused though ``--metrics off`` worked (YAML reads off as false)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"metrics_listen: {text}\nupstreams:\n  - {{name: a, host: h, port: 1, system_id: x, password: y}}\n")
    assert load(cfg).metrics_listen is None


def test_positive_and_lengths_accept_the_good_values():
    s = from_dict({"upstreams": [{**GOOD_UPSTREAM, "window": 1, "system_id": "x" * 15, "system_type": "y" * 12,
                                  "reconnect_min": 1, "reconnect_max": 1, "throttle_backoff": 0}],
                   "hlr": {"memory_size": 0}, "writer_delay": 0, "metrics_listen": "127.0.0.1:0",
                   "database_url": "postgresql://u@127.0.0.1:5432/test", "redis_url": "redis://127.0.0.1:6379/0"})
    assert s.upstreams[0].window == 1 and s.hlr.memory_size == 0 and s.writer_delay == 0.0


def test_a_binary_file_is_a_one_line_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"c.yaml: not a text file"):
        load(f)


def test_store_choice_flags_beat_the_environment_as_a_pair():
    from staffetta.conf.settings import store_choice

    env = {"STAFFETTA_CONFIG": "env.yaml", "STAFFETTA_DATA_DIR": "env-data"}
    assert store_choice(None, None, env) == ("env.yaml", "env-data")
    assert store_choice(None, None, {"STAFFETTA_DATA_DIR": "env-data"}) == (None, "env-data")
    assert store_choice("flag.yaml", None, env) == ("flag.yaml", None)  # the env's data dir is not mixed in
    assert store_choice(None, "flag-data", env) == (None, "flag-data")
    assert store_choice(None, None, {}) == (None, None)  # the default: ./staffetta-data


def test_describe_store_names_the_data_dir_or_the_url_without_password(tmp_path):
    from staffetta.conf.settings import describe_store

    assert describe_store(f"sqlite:///{tmp_path / 'staffetta.db'}") == str(tmp_path)
    assert describe_store("postgresql://ops:s3cret@db:5432/hub") == "postgresql://ops:***@db:5432/hub"


def test_addresses_round_trip_and_absent(tmp_path):
    from staffetta.conf.settings import ADDRESSES_FILE, read_addresses, write_addresses

    assert read_addresses(tmp_path) == {}
    write_addresses(tmp_path, {"hlr": "http://127.0.0.1:1234", "metrics": None})
    assert read_addresses(tmp_path) == {"hlr": "http://127.0.0.1:1234", "metrics": None}
    (tmp_path / ADDRESSES_FILE).write_text("{not json")
    assert read_addresses(tmp_path) == {}
