"""The account's MO settings on the command line: channel, webhook URL and secret (live, like every setting)."""

from __future__ import annotations

import json

from staffetta.smsc.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors (one line, status 2: OneLineParser)
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_mo_url_secret_and_channel(tmp_path, capsys):
    d = str(tmp_path / "data")
    assert _run(capsys, "account", "create", "acme", "--password", "acme", "--data-dir", d)[0] == 0
    code, out, _ = _run(capsys, "account", "set", "acme", "--mo-url", "https://example.invalid/mo",
                        "--mo-secret", "0123456789abcdef", "--json", "--data-dir", d)
    doc = json.loads(out)
    assert code == 0 and (doc["mo_channel"], doc["mo_url"], doc["mo_secret_set"]) == (
        "http", "https://example.invalid/mo", True)  # a URL alone means: deliver there
    code, out, _ = _run(capsys, "account", "set", "acme", "--mo-channel", "both", "--json", "--data-dir", d)
    assert json.loads(out)["mo_channel"] == "both"
    code, out, _ = _run(capsys, "account", "show", "acme", "--data-dir", d)
    assert "MO         both -> https://example.invalid/mo (secret set)" in out
    code, out, _ = _run(capsys, "account", "set", "acme", "--mo-url", "none", "--json", "--data-dir", d)
    assert json.loads(out)["mo_url"] is None


def test_mistakes_are_one_line_exit_2(tmp_path, capsys):
    d = str(tmp_path / "data")
    _run(capsys, "account", "create", "acme", "--password", "acme", "--data-dir", d)
    for args, needle in ((("--mo-url", "ftp://x"), "mo_url"), (("--mo-secret", "short"), "mo_secret"),
                         (("--mo-channel", "fax"), "--mo-channel")):
        code, _, err = _run(capsys, "account", "set", "acme", *args, "--data-dir", d)
        assert code == 2 and needle in err and err.count("\n") == 1, err
