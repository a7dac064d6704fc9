"""``staffetta number|keyword|optout …`` as an operator runs them: real processes, --json, one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.smsc.test_cli_operator import config, one_line_error, run


def _store_with_accounts(data: str) -> None:
    import os

    from staffetta.billing.accounts import create_account
    from staffetta.store.db import create_schema, make_engine

    os.makedirs(data, exist_ok=True)
    engine = make_engine(f"sqlite:///{data}/staffetta.db")
    create_schema(engine)
    with engine.begin() as conn:
        create_account(conn, "acme", "pw")
        create_account(conn, "beta", "pw")
    engine.dispose()


@pytest.fixture
def data(tmp_path) -> str:
    d = str(tmp_path / "data")
    _store_with_accounts(d)
    return d


@pytest.fixture
def cli(data):
    """A verb in its own process, on a store with accounts acme and beta."""

    def go(*args: str, expect: int = 0):
        r = run(*args, "--data-dir", data, "--json")
        assert r.returncode == expect, r.stderr
        return json.loads(r.stdout) if expect == 0 else r

    return go


@pytest.fixture
def inproc(data, capsys):
    """The same parser and verbs in this process (smsc.cli.main): (exit status, stdout, stderr)."""
    from staffetta.smsc.cli import main

    def go(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            rc = main([*args, "--data-dir", data])
        except SystemExit as exc:  # argparse's own mistakes
            rc = exc.code
        out, err = capsys.readouterr()
        return rc, out, err

    return go


@pytest.fixture
def js(inproc):
    """A verb in this process with --json: its document (every verb group also runs as a process)."""

    def go(*args: str):
        rc, out, err = inproc(*args, "--json")
        assert rc == 0, err
        return json.loads(out)

    return go


def test_pools_dedicated_shared_codes_aliases(cli, js) -> None:
    assert cli("number", "pool", "add", "+393400000001", "393400000002", "--type", "reply") == \
        {"added": ["393400000001", "393400000002"], "type": "REPLY", "account": None, "countries": None}
    assert js("number", "pool", "add", "393500000001", "--type", "SMART", "--account", "beta")["account"] == "beta"
    assert js("number", "pool", "add", "33612345", "--type", "SMART", "--countries", "fr")["countries"] == ["FR"]
    assert cli("number", "pool", "list", "--type", "REPLY")["numbers"] == [
        {"number": "393400000001", "role": "REPLY", "account": None, "countries": None},
        {"number": "393400000002", "role": "REPLY", "account": None, "countries": None}]
    assert cli("number", "dedicated", "assign", "393700000000", "--account", "acme") == \
        {"number": "393700000000", "account": "acme"}
    assert js("number", "dedicated", "list")["numbers"] == [
        {"number": "393700000000", "role": "dedicated", "account": "acme", "countries": None}]
    assert js("number", "shared", "add", "393600000000")["added"] == ["393600000000"]
    assert cli("number", "code", "assign", "acme") == {"account": "acme", "code": "10001", "new": True}
    assert cli("number", "alias", "add", "beta", "BetaShop") == {"account": "beta", "alias": "BETASHOP"}
    assert js("number", "alias", "list")["aliases"] == [{"alias": "BETASHOP", "account": "beta"}]
    assert js("number", "sender", "beta", "refuse") == {"account": "beta", "own_sender": "refuse"}
    assert js("number", "pool", "remove", "393400000002")["removed"][0]["number"] == "393400000002"
    assert js("number", "dedicated", "release", "393700000000")["removed"][0]["account"] == "acme"


def test_keywords_and_opt_outs(cli, js) -> None:
    assert cli("keyword", "add", "acme", "promo", "--text", "20% off today", "--type", "pro",
               "--sender", "ACME") == {"account": "acme", "word": "PROMO", "action": "reply",
                                       "text": "20% off today", "type": "PRO", "sender": "ACME"}
    js("keyword", "add", "acme", "aiuto", "--action", "help", "--text", "Scrivi STOP")
    assert [k["word"] for k in cli("keyword", "list", "acme")["keywords"]] == ["AIUTO", "PROMO"]
    js("keyword", "remove", "acme", "Promo")
    assert [k["word"] for k in js("keyword", "list")["keywords"]] == ["AIUTO"]
    assert cli("optout", "add", "acme", "+393481111111") == {
        "account": "acme", "handset": "393481111111", "opted_out": True, "changed": True}
    assert js("optout", "add", "acme", "393481111111")["changed"] is False
    assert [(o["account"], o["handset"], o["via"]) for o in cli("optout", "list")["opt_outs"]] == \
        [("acme", "393481111111", "cli")]
    assert cli("optout", "remove", "acme", "393481111111")["changed"] is True
    assert js("optout", "list", "acme")["opt_outs"] == []


MISTAKES = [
    (("number", "dedicated", "assign", "393700000000", "--account", "beta"),
     "staffetta: number: 393700000000 is already dedicated to account 'acme'"),
    (("number", "pool", "add", "393700000000", "--type", "SMART"),
     "staffetta: number: 393700000000 is already dedicated to account 'acme'"),
    (("number", "pool", "add", "Shop", "--type", "SMART"), "staffetta: number: expected 3-15 digits"),
    (("number", "pool", "add", "3935", "--type", "PRO"), "argument --type: invalid choice: 'PRO'"),
    (("number", "pool", "add", "3935", "--type", "SMART", "--countries", "Italy"),
     "staffetta: countries: expected ISO country codes like IT or FR, got 'ITALY'"),
    (("number", "alias", "add", "beta", "abc"), "staffetta: alias: at least 5 characters, got 'abc'"),
    (("number", "code", "assign", "nobody"), "staffetta: account: no account named 'nobody'"),
    (("keyword", "add", "acme", "info", "--action", "help"),
     "staffetta: --text: a help keyword needs the text it answers with"),
    (("keyword", "add", "acme", "promo", "--text", "x", "--sender", "ACME"),
     "staffetta: --sender: a SMART reply takes its sender from the pool"),
    (("keyword", "remove", "acme", "nothing"), "staffetta: keyword: no keyword NOTHING for this account"),
    (("optout", "add", "acme", "hello"), "staffetta: handset: expected 3-15 digits"),
    (("number", "sender", "acme", "maybe"), "argument policy: invalid choice: 'maybe'"),
]
def test_mistakes_are_one_line_exit_2(inproc) -> None:
    assert inproc("number", "dedicated", "assign", "393700000000", "--account", "acme")[0] == 0
    for args, needle in MISTAKES:
        rc, _, err = inproc(*args)
        assert rc == 2 and err.count("\n") == 1 and needle in err, (args, rc, err)


def test_a_mistake_in_its_own_process(cli, js) -> None:
    js("number", "dedicated", "assign", "393700000000", "--account", "acme")
    one_line_error(cli("number", "dedicated", "assign", "+393700000000", "--account", "beta", expect=2),
                   "staffetta: number: 393700000000 is already dedicated to account 'acme'")


def test_reply_window_below_48h_is_a_one_line_config_error(tmp_path) -> None:
    path = config(tmp_path, "numbers:\n  reply_window: 24h\n")
    one_line_error(run("run", "--config", path, "--data-dir", str(tmp_path / "d")),
                   "numbers.reply_window: at least 48h (the documented minimum), got 24h")
