"""The numbers' tables on SQLite and PostgreSQL (router/number_store.py): rules the store enforces, the snapshot."""

from __future__ import annotations

import pytest

from staffetta.billing.accounts import create_account, current_settings_version
from staffetta.router import number_store as ns
from staffetta.router.numbers import Keyword, Numbers
from staffetta.router.record import messages
from staffetta.store.db import create_schema, make_engine

T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'n.db'}"
    else:
        url = request.getfixturevalue("pg_schema_url")
    e = make_engine(url)
    create_schema(e)
    with e.begin() as conn:
        create_account(conn, "acme", "pw")
        create_account(conn, "beta", "pw")
    yield e
    e.dispose()


def test_one_number_is_one_thing_and_dedicated_twice_fails(engine) -> None:
    with engine.begin() as conn:
        ns.add_pool_number(conn, "+393400000001", "REPLY", None, T0)
        ns.assign_dedicated(conn, "393700000000", 1, T0)
    for attempt, message in [
        (lambda c: ns.assign_dedicated(c, "393700000000", 2, T0),
         "number: 393700000000 is already dedicated to account 'acme'"),
        (lambda c: ns.assign_dedicated(c, "393400000001", 2, T0),
         "number: 393400000001 is already a REPLY pool number (shared pool)"),
        (lambda c: ns.add_pool_number(c, "393700000000", "SMART", None, T0),
         "number: 393700000000 is already dedicated to account 'acme'"),
        (lambda c: ns.remove_number(c, "393700000000", ("SMART", "REPLY")),
         "number: 393700000000 is not a SMART pool or REPLY pool number (it is dedicated to account 'acme')"),
        (lambda c: ns.add_pool_number(c, "ACME", "SMART", None, T0),
         "number: expected 3-15 digits (E.164 without '+'), got 'ACME'; an alphanumeric sender cannot take replies"),
    ]:
        with engine.begin() as conn, pytest.raises(ns.NumberError) as exc:
            attempt(conn)
        assert str(exc.value) == message


def test_codes_are_given_out_and_aliases_unique_case_insensitive(engine) -> None:
    with engine.begin() as conn:
        assert ns.assign_code(conn, 1, T0) == ("10001", True)
        assert ns.assign_code(conn, 2, T0) == ("10002", True)
        assert ns.assign_code(conn, 1, T0) == ("10001", False)
        assert ns.add_alias(conn, 2, "Pizza", T0) == "PIZZA"
    for alias, message in [("pizza", "alias: PIZZA is already the alias of account 'beta'"),
                           ("PIZ", "alias: at least 5 characters, got 'PIZ'"),
                           ("12345", "alias: '12345' is all digits (numeric codes are given out by "
                                     "'number code assign')"),
                           ("two words", "alias: expected one word of letters and digits (at most 32), "
                                         "got 'two words'")]:
        with engine.begin() as conn, pytest.raises(ns.NumberError) as exc:
            ns.add_alias(conn, 1, alias, T0)
        assert str(exc.value) == message


def test_every_change_bumps_the_settings_version_and_the_snapshot_has_it(engine) -> None:
    with engine.connect() as conn:
        v0 = current_settings_version(conn)
    with engine.begin() as conn:
        ns.add_pool_number(conn, "393500000001", "SMART", None, T0)
        ns.add_pool_number(conn, "393500000002", "SMART", 2, T0 + 1)
        ns.add_pool_number(conn, "36111", "REPLY", None, T0, countries=["fr", "FR"])
        ns.add_shared_number(conn, "393600000000", T0)
        ns.assign_dedicated(conn, "393700000000", 1, T0)
        ns.add_alias(conn, 1, "acmeshop", T0)
        ns.add_keyword(conn, Keyword(1, "promo", "reply", "20% off"))
        ns.set_own_sender(conn, 2, "refuse")
        assert ns.set_opt_out(conn, 1, "393481111111", True, T0, via="cli")
        assert not ns.set_opt_out(conn, 1, "393481111111", True, T0)  # already
    with engine.connect() as conn:
        assert current_settings_version(conn) >= v0 + 9
        c = ns.load_configured(conn)
    assert c.pools == {"SMART": {0: ("393500000001",), 2: ("393500000002",)}, "REPLY": {0: ("36111",)}}
    assert c.countries == {"36111": frozenset({"FR"})}
    assert c.shared == {"393500000001", "393500000002", "36111", "393600000000"}
    assert c.dedicated == {"393700000000": 1}
    assert c.codes == {"ACMESHOP": (1, "alias")}
    assert c.keywords == {(1, "PROMO"): Keyword(1, "PROMO", "reply", "20% off", "SMART", None)}
    assert c.opt_outs == {(1, "393481111111")} and c.own_sender == {2: "refuse"}
    n = Numbers(configured=c)
    assert n.owner_of("393331", "393600000000", "AcmeShop promo", T0).keyword.reply_text == "20% off"


def test_opt_out_writer_kind_and_the_window_read_back_from_messages(engine) -> None:
    with engine.connect() as conn:
        with conn.begin():  # the handler of writer kind "opt_out", as the group commit runs it
            results = ns.write_opt_outs(conn, [(1, "393482222222", True, T0), (1, "393482222222", True, T0),
                                               (2, "393482222222", True, T0)])
        with conn.begin():
            results += ns.write_opt_outs(conn, [(1, "393482222222", False, T0)])
        assert results == [True, False, True, True]
        assert ns.load_configured(conn).opt_outs == {(2, "393482222222")}
    row = dict.fromkeys((c.name for c in messages.columns), 0)
    row.update(short_message=b"", tlvs=b"", service_type="", connector=None, upstream_id=None, mccmnc=None,
               route=None, done_at=None)
    rows = [dict(row, id=i, account_id=a, source_addr=src, destination=dst, msg_type=t, submitted_at=at)
            for i, (a, src, dst, t, at) in enumerate([
                (1, "393400000001", "39333", "REPLY", T0 - 100 * 3600),  # before the window
                (1, "393400000001", "39334", "REPLY", T0 - 10),
                (2, "393500000001", "39334", "SMART", T0 - 5),
                (2, "ACME", "39334", "SMART", T0 - 5),  # not a pool number
                (2, "393400000001", "39335", "PRO", T0 - 5),  # PRO opens no window
            ], 1)]
    with engine.begin() as conn:
        conn.execute(messages.insert(), rows)
    with engine.connect() as conn:
        got = ns.recent_pool_mt(conn, T0 - 96 * 3600, {"393400000001", "393500000001"})
    assert got == [(1, "39334", "393400000001", "REPLY", T0 - 10), (2, "39334", "393500000001", "SMART", T0 - 5)]


def test_shared_conversations_keep_the_latest_mt_and_are_swept(engine) -> None:
    with engine.begin() as conn:
        ns.write_conversations(conn, [[("39334", "393400000001", 1, "REPLY", T0)],
                                      [("39334", "393400000001", 1, "REPLY", T0 + 5),
                                       ("39335", "393400000001", 2, "SMART", T0 + 1)]])
        ns.write_conversations(conn, [[("39334", "393400000001", 2, "REPLY", T0 + 2)]])  # older: ignored
    with engine.connect() as conn:
        assert sorted(ns.conversations_since(conn, T0)) == [("39334", "393400000001", 1, "REPLY", T0 + 5),
                                                           ("39335", "393400000001", 2, "SMART", T0 + 1)]
        assert ns.conversations_since(conn, T0 + 1) == [("39334", "393400000001", 1, "REPLY", T0 + 5)]
    with engine.begin() as conn:
        ns.forget_conversations(conn, [T0 + 3, T0 + 4])
    with engine.connect() as conn:
        assert ns.conversations_since(conn, 0) == [("39334", "393400000001", 1, "REPLY", T0 + 5)]
