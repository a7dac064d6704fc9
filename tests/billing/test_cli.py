"""``staffetta account ...`` verbs through argparse, as smsc/cli.py wires them (A3, A11, A16, A58, A62, A63)."""

from __future__ import annotations

import argparse
import json

import pytest
from sqlalchemy import text

from staffetta.billing.cli import register
from staffetta.store.db import make_engine


@pytest.fixture
def run(tmp_path, capsys):
    default_dir = str(tmp_path / "data")

    def engine_factory(args):
        return make_engine(f"sqlite:///{args.data_dir or default_dir}/staffetta.db")

    parser = argparse.ArgumentParser(prog="staffetta")
    sub = parser.add_subparsers(dest="verb", required=True)
    register(sub, engine_factory)

    def go(*argv: str, expect: int = 0):
        capsys.readouterr()
        args = parser.parse_args(list(argv))
        rc = args.func(args)
        out, err = capsys.readouterr()
        assert rc == expect, (rc, out, err)
        if "--json" in argv and rc != 2:
            return json.loads(out)
        return out if rc != 2 else err

    go.engine = lambda: make_engine(f"sqlite:///{default_dir}/staffetta.db")
    return go


def test_create_show_and_remaining_segments(run) -> None:
    doc = run("account", "create", "acme", "--password", "pw", "--credits", "100", "--trial",
              "--threshold", "20", "--json")
    assert doc["name"] == "acme" and doc["balance"] == "180.00" and doc["threshold"] == "20.00"
    assert sorted(lot["method"] for lot in doc["lots"]) == ["initial", "trial"]
    trial = next(lot for lot in doc["lots"] if lot["method"] == "trial")
    assert trial["amount"] == "80.00" and trial["expires_at"] is not None  # 50 PRO segments, 1 month
    show = run("account", "show", "acme", "--json")
    assert show["remaining_segments"] == {"SMART": 180, "PRO": 112, "REPLY": 112}
    assert show["credentials"] == [{"system_id": "acme", "revoked": False, "allowed_networks": None,
                                    "max_rate": None}]
    assert "password" not in json.dumps(show)
    assert "balance    180.00 credits" in run("account", "show", "acme")


def test_topup_idempotent_by_reference(run) -> None:
    run("account", "create", "acme", "--password", "pw")
    first = run("account", "topup", "acme", "1.6", "--method", "bank", "--reference", "CRO-77",
                "--expires", "6m", "--json")
    assert first["credited"] is True and first["balance"] == "1.60" and first["expires_at"]
    again = run("account", "topup", "acme", "1.6", "--method", "bank", "--reference", "CRO-77", "--json")
    assert again["credited"] is False and again["balance"] == "1.60"
    assert "already credited" in run("account", "topup", "acme", "1.6", "--reference", "CRO-77")
    hist = run("account", "history", "acme", "--json")["entries"]
    assert [(e["kind"], e["amount"], e["method"], e["reference"]) for e in hist] == \
        [("topup", "1.60", "bank", "CRO-77")]
    none = run("account", "topup", "acme", "2", "--expires", "none", "--json")
    assert none["expires_at"] is None and none["balance"] == "3.60"


def test_transfer_and_history(run) -> None:
    run("account", "create", "a", "--password", "pw", "--credits", "10")
    run("account", "create", "b", "--password", "pw")
    doc = run("account", "transfer", "a", "b", "2.5", "--json")
    assert (doc["from_balance"], doc["to_balance"], doc["amount"]) == ("7.50", "2.50", "2.50")
    err = run("account", "transfer", "a", "b", "7.51", expect=2)
    assert err == "staffetta: amount: a has 7.50 spendable credits, the transfer needs 7.51\n"
    hist = run("account", "history", "b", "--json")["entries"]
    assert hist[0]["kind"] == "transfer_in" and hist[0]["transfer_id"] == doc["transfer_id"]
    assert "transfer_out" in run("account", "history", "a")


def test_set_and_disabled_account(run) -> None:
    run("account", "create", "acme", "--password", "pw", "--credits", "5")
    doc = run("account", "set", "acme", "--threshold", "10", "--alert-url", "http://127.0.0.1:9/x",
              "--enabled", "no", "--nocredit-status", "submitfail", "--refund-network-failure", "yes", "--json")
    assert doc["enabled"] is False and doc["threshold"] == "10.00" and doc["alert_armed"] is False
    assert doc["nocredit_status"] == "0x00000045" and doc["refund_on_network_failure"] is True
    assert doc["alert_url"] == "http://127.0.0.1:9/x"
    err = run("account", "topup", "acme", "1", expect=2)
    assert err.startswith("staffetta: account: ") and "disabled" in err and err.count("\n") == 1
    doc = run("account", "set", "acme", "--enabled", "yes", "--threshold", "none", "--alert-url", "none", "--json")
    assert doc["enabled"] is True and doc["threshold"] is None and doc["alert_url"] is None
    assert run("account", "set", "acme", "--plan", "gold", expect=2) == "staffetta: price_plan: no plan named 'gold'\n"
    with pytest.raises(SystemExit) as exc:
        run("account", "set", "acme", "--enabled", "maybe")
    assert exc.value.code == 2


def test_check_exits_non_zero_on_difference(run) -> None:
    run("account", "create", "acme", "--password", "pw", "--credits", "5")
    assert run("account", "check", "--json") == {"ok": True, "accounts": 1, "mismatches": []}
    engine = run.engine()
    with engine.begin() as c:
        c.execute(text("UPDATE balances SET balance = balance + 1"))
    engine.dispose()
    doc = run("account", "check", "--json", expect=1)
    assert doc["mismatches"] == [{"account": "acme", "balance": "5.01", "ledger_sum": "5.00",
                                  "lots_remaining": "5.00"}]
    assert "MISMATCH acme" in run("account", "check", expect=1)


@pytest.mark.parametrize(("argv", "message"), [
    (("account", "topup", "acme", "1.234"), "staffetta: amount: '1.234' is not an amount in credits"),
    (("account", "topup", "acme", "0"), "staffetta: amount: must be more than 0"),
    (("account", "topup", "acme", "1", "--expires", "6w"), "staffetta: --expires: '6w' is not a validity"),
    (("account", "topup", "ghost", "1"), "staffetta: name: no account named 'ghost'"),
    (("account", "create", "acme", "--password", "toolongpw"), "staffetta: password: "),
    (("account", "create", "acme", "--password", "pw"), "staffetta: name: account 'acme' exists"),
    (("account", "create", "x", "--password", "pw", "--credits", "-1"), "staffetta: --credits: "),
    (("account", "set", "acme", "--alert-url", "mailto:x"), "staffetta: alert_url: "),
    (("account", "set", "acme", "--threshold", "lots"), "staffetta: --threshold: "),
    (("account", "history", "acme", "--limit", "0"), "staffetta: --limit: "),
])
def test_errors_are_one_line_exit_2(run, argv, message) -> None:
    run("account", "create", "acme", "--password", "pw")
    err = run(*argv, expect=2)
    assert err.startswith(message) and err.count("\n") == 1


def test_price_plan_from_config(run, tmp_path) -> None:
    cfg = tmp_path / "staffetta.yaml"
    cfg.write_text("billing:\n  plans:\n    default:\n      prices: {PRO: 2, SMART: 0.5}\n"
                   "      trial: {segments: 10, validity: 30d}\n")
    doc = run("account", "create", "acme", "--password", "pw", "--trial", "--config", str(cfg), "--json")
    assert doc["balance"] == "20.00"  # 10 PRO segments at 2 credits
    assert doc["remaining_segments"] == {"SMART": 40, "PRO": 10, "REPLY": 12}
    bad = tmp_path / "bad.yaml"
    bad.write_text("billing:\n  plans:\n    default:\n      prices: {PRO: 1.234}\n")
    err = run("account", "show", "acme", "--config", str(bad), expect=2)
    assert err.startswith("staffetta: billing.plans.default.prices.PRO: ")


def test_expire_verb_and_data_dir(run, tmp_path) -> None:
    d = str(tmp_path / "other")
    run("account", "create", "acme", "--password", "pw", "--credits", "3", "--data-dir", d)
    assert run("account", "expire", "--data-dir", d, "--json") == {"expired": []}
    assert run("account", "show", "acme", "--data-dir", d, "--json")["balance"] == "3.00"
    run("account", "show", "acme", expect=2)  # not in the default data dir
