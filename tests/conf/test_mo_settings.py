"""The mo: section: defaults, and every mistake one line naming the setting."""

from __future__ import annotations

import pytest

from staffetta.conf.settings import ConfigError, MoSettings, from_dict

UP = {"upstreams": [{"name": "sim", "host": "127.0.0.1", "port": 2776, "system_id": "a", "password": "b"}]}


def test_defaults_are_the_documented_ones():
    m = from_dict(UP).mo
    assert m == MoSettings()
    assert (m.reassembly_timeout, m.webhook_first_retry, m.webhook_retry_for) == (600.0, 10.0, 86400.0)


def test_a_setting_is_read():
    assert from_dict({**UP, "mo": {"webhook_retry_for": 3600, "reassembly_timeout": 30}}).mo.reassembly_timeout == 30


@pytest.mark.parametrize("mo,message", [
    ({"reassembly_timeout": 0}, "mo.reassembly_timeout: expected a number of seconds > 0"),
    ({"webhook_concurrency": 0}, "mo.webhook_concurrency: expected an integer >= 1"),
    ({"webhook_timeout": "soon"}, "mo.webhook_timeout: expected a number of seconds"),
    ({"webhok_timeout": 1}, "mo.webhok_timeout: unknown setting"),
    ("yes", "mo: expected a mapping"),
])
def test_a_bad_setting_is_one_line_naming_it(mo, message):
    with pytest.raises(ConfigError) as e:
        from_dict({**UP, "mo": mo})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
