"""The two-way ledger's decisions, without I/O (router/numbers.py): ownership order, pools, window, keywords."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staffetta.conf.settings import ConfigError
from staffetta.pdu.constants import Status
from staffetta.router.numbers import (
    DEFAULT_WINDOW,
    OPT_OVERLAY,
    RESERVE_HOLD,
    Configured,
    Keyword,
    MtRefused,
    Numbers,
    Owner,
    PoolExhausted,
    two_way_from_dict,
)

H = 3600.0
T0 = 1_800_000_000.0
X, Y = "393331110001", "393331110002"
REPLY1, REPLY2, REPLY3 = "393400000001", "393400000002", "393400000003"
SMART1, SMART2, SMART3 = "393500000001", "393500000002", "393500000003"
SHARED_NO, DEDICATED_NO = "393600000000", "393700000000"
ACME, BETA, GAMMA = 1, 2, 3


def ledger(**kw) -> Numbers:
    c = Configured(
        pools={"REPLY": {0: (REPLY1, REPLY2)}, "SMART": {0: (SMART1, SMART2, SMART3)}},
        shared=frozenset({REPLY1, REPLY2, SMART1, SMART2, SMART3, SHARED_NO}),
        dedicated={DEDICATED_NO: GAMMA},
        codes={"10001": (ACME, "code"), "BETAINFO": (BETA, "alias")},
        keywords={(ACME, "PROMO"): Keyword(ACME, "PROMO", "reply", "20% off", "SMART"),
                  (BETA, "PROMO"): Keyword(BETA, "PROMO", "reply", "beta promo", "PRO", "BETA"),
                  (GAMMA, "AIUTO"): Keyword(GAMMA, "AIUTO", "help", "gamma help")},
        **kw,
    )
    return Numbers(two_way_from_dict({"help_text": {"en": "Reply STOP to stop"}}), c)


# ------------------------------------------------------------------ ownership


def test_reply_window_first_and_free_for_a_reply_message() -> None:
    n = ledger()
    n.remember_mt(BETA, X, REPLY1, T0)
    assert n.owner_of(X, REPLY1, "yes please", T0 + H) == Owner(BETA, "reply_window", free=True)
    assert n.window_hits == {BETA: 1}
    # The window beats a code on the same (pool) number: the conversation is BETA's.
    assert n.owner_of(X, REPLY1, "10001 hi", T0 + H).account_id == BETA
    # Another handset writing to the same pool number is not in BETA's window.
    assert n.owner_of(Y, REPLY1, "10001 hi", T0 + H) == Owner(ACME, "code")


def test_after_the_window_the_mo_falls_to_codes_then_dead_letter() -> None:
    n = ledger()
    n.remember_mt(BETA, X, REPLY1, T0)
    late = T0 + DEFAULT_WINDOW + 1
    assert n.owner_of(X, REPLY1, "betainfo hello", late) == Owner(BETA, "alias")
    assert n.owner_of(X, REPLY1, "hello", late) == Owner(None, "dead_letter", cause="no_code")
    assert n.owner_of(X, REPLY1, "hello", T0 + DEFAULT_WINDOW - 1).how == "reply_window"


def test_smart_replies_are_owned_but_not_free() -> None:
    n = ledger()
    n.remember_mt(ACME, X, SMART2, T0, "SMART")
    assert n.owner_of(X, SMART2, "ok", T0 + 10) == Owner(ACME, "reply_window", free=False)


def test_dedicated_then_code_then_alias_case_insensitive() -> None:
    n = ledger()
    assert n.owner_of("+" + X, "+" + DEDICATED_NO, "hi", T0) == Owner(GAMMA, "dedicated")  # '+' forms too
    assert n.owner_of(X, DEDICATED_NO, "anything at all", T0) == Owner(GAMMA, "dedicated")
    assert n.owner_of(X, SHARED_NO, "10001", T0) == Owner(ACME, "code")
    assert n.owner_of(X, SHARED_NO, "BetaInfo where is my order", T0) == Owner(BETA, "alias")


@pytest.mark.parametrize(("number", "text", "cause"), [
    (SHARED_NO, "hello", "no_code"),
    (SHARED_NO, "", "no_code"),
    (SHARED_NO, None, "no_code"),
    ("393999999999", "10001 hi", "unknown_number"),
    ("Staffetta", "10001 hi", "alphanumeric"),
])
def test_dead_letters_carry_their_cause(number, text, cause) -> None:
    assert ledger().owner_of(X, number, text, T0) == Owner(None, "dead_letter", cause=cause)


def test_alphanumeric_number_never_matches_a_window() -> None:
    n = ledger()
    n.remember_mt(ACME, X, "ACMESHOP", T0)  # not a pool number: opens nothing
    assert n.owner_of(X, "ACMESHOP", "hi", T0 + 1).cause == "alphanumeric"
    assert n.conversations() == 0


# ------------------------------------------------------------------ keywords


@pytest.mark.parametrize(("number", "text", "account", "word", "action"), [
    (SHARED_NO, "10001 promo", ACME, "PROMO", "reply"),  # the word after the code
    (SHARED_NO, "betainfo PROMO now", BETA, "PROMO", "reply"),
    (SHARED_NO, "10001 stop", ACME, "STOP", "stop"),
    (SHARED_NO, "10001 annulla", ACME, "ANNULLA", "stop"),  # Italian
    (SHARED_NO, "10001 arret", ACME, "ARRET", "stop"),  # French
    (SHARED_NO, "10001 start", ACME, "START", "start"),
    (DEDICATED_NO, "stop", GAMMA, "STOP", "stop"),
    (DEDICATED_NO, "Promo", GAMMA, None, None),  # ACME's and BETA's keyword, not GAMMA's
    (SHARED_NO, "10001 hello", ACME, None, None),
])
def test_first_word_keywords(number, text, account, word, action) -> None:
    o = ledger().owner_of(X, number, text, T0)
    assert o.account_id == account
    assert (o.keyword.word if o.keyword else None, o.keyword.action if o.keyword else None) == (word, action)


def test_keyword_in_the_reply_window_and_help_texts() -> None:
    n = ledger()
    n.remember_mt(BETA, X, REPLY1, T0)
    o = n.owner_of(X, REPLY1, "promo", T0 + 1)
    assert o.keyword == Keyword(BETA, "PROMO", "reply", "beta promo", "PRO", "BETA") and o.free
    # HELP: the account's own help keyword's text, else the configured text of the word's language.
    assert n.owner_of(X, DEDICATED_NO, "help", T0).keyword.reply_text == "gamma help"
    assert n.owner_of(X, SHARED_NO, "10001 help", T0).keyword == Keyword(ACME, "HELP", "help", "Reply STOP to stop")


def test_stop_words_are_configurable_per_language() -> None:
    s = two_way_from_dict({"stop_words": {"it": ["BASTA"]}, "start_words": {"it": ["RIPRENDI"]}})
    n = Numbers(s, Configured(dedicated={DEDICATED_NO: GAMMA}))
    assert n.owner_of(X, DEDICATED_NO, "basta", T0).keyword.action == "stop"
    assert n.owner_of(X, DEDICATED_NO, "stop", T0).keyword is None  # replaced, not added to
    assert n.owner_of(X, DEDICATED_NO, "riprendi", T0).keyword.action == "start"


# ------------------------------------------------------------------ opt-outs


def test_opt_out_ledger_and_its_overlay_over_a_reload() -> None:
    n = ledger(opt_outs=frozenset({(ACME, Y)}))
    assert n.opted_out(ACME, Y) and not n.opted_out(BETA, Y)
    n.apply_opt(BETA, X, True, T0)
    assert n.opted_out(BETA, X) and n.opt_changes == {(BETA, "out"): 1}
    # A snapshot read before the STOP's commit does not undo it...
    n.configure(n.c, T0 + 1)
    assert n.opted_out(BETA, X)
    # ...and after the overlay the snapshot (which has it by then) is the truth.
    n.configure(Configured(opt_outs=frozenset({(ACME, Y), (BETA, X)})), T0 + OPT_OVERLAY + 1)
    assert n.opted_out(BETA, X)
    n.apply_opt(BETA, X, False, T0 + 20)
    assert not n.opted_out(BETA, X) and n.opt_changes[(BETA, "in")] == 1


# ------------------------------------------------------------------ pools


def test_smart_rotates_over_its_pool() -> None:
    n = ledger()
    got = [n.sender_for(ACME, f"39333{i:07d}", "SMART", T0) for i in range(6)]
    assert got == [SMART1, SMART2, SMART3, SMART1, SMART2, SMART3]


def test_reply_is_sticky_per_account_and_destination() -> None:
    n = ledger()
    first = n.sender_for(ACME, X, "REPLY", T0)
    n.remember_mt(ACME, X, first, T0)
    for hours in (1, 50, 95):
        assert n.sender_for(ACME, X, "REPLY", T0 + hours * H) == first
        n.remember_mt(ACME, X, first, T0 + hours * H)  # each MT extends the window


def test_two_accounts_writing_to_one_number_get_different_numbers_then_exhaustion() -> None:
    n = ledger()
    a = n.sender_for(ACME, X, "REPLY", T0)
    b = n.sender_for(BETA, X, "REPLY", T0)  # before ACME's MT is even committed
    assert {a, b} == {REPLY1, REPLY2}
    with pytest.raises(PoolExhausted) as exc:
        n.sender_for(GAMMA, X, "REPLY", T0)
    assert exc.value.status == Status.STAFFETTA_RPOOLEXHAUSTED == 0x410
    # Another handset: the whole pool again.
    assert n.sender_for(GAMMA, Y, "REPLY", T0) in (REPLY1, REPLY2)


def test_a_reservation_without_an_mt_is_released_after_the_hold() -> None:
    n = ledger()
    n.sender_for(ACME, X, "REPLY", T0)
    n.sender_for(BETA, X, "REPLY", T0)
    assert n.sender_for(GAMMA, X, "REPLY", T0 + RESERVE_HOLD + 1) in (REPLY1, REPLY2)


def test_a_number_is_free_for_another_account_after_the_window() -> None:
    n = ledger()
    for acct, num in ((ACME, REPLY1), (BETA, REPLY2)):
        n.remember_mt(acct, X, num, T0)
    with pytest.raises(PoolExhausted):
        n.sender_for(GAMMA, X, "REPLY", T0 + H)
    got = n.sender_for(GAMMA, X, "REPLY", T0 + DEFAULT_WINDOW + 1)
    n.remember_mt(GAMMA, X, got, T0 + DEFAULT_WINDOW + 1)
    assert n.owner_of(X, got, "hi", T0 + DEFAULT_WINDOW + 2).account_id == GAMMA


def test_smart_skips_numbers_another_account_holds_for_that_handset() -> None:
    n = ledger()
    n.remember_mt(ACME, X, SMART1, T0, "SMART")
    n.remember_mt(ACME, X, SMART2, T0, "SMART")
    assert {n.sender_for(BETA, X, "SMART", T0 + 1) for _ in range(3)} == {SMART3}


def test_an_account_own_pool_wins_over_the_shared_one() -> None:
    n = ledger()
    n.configure(Configured(pools={"REPLY": {0: (REPLY1,), BETA: (REPLY3,)}}))
    assert n.sender_for(BETA, X, "REPLY", T0) == REPLY3
    assert n.sender_for(ACME, X, "REPLY", T0) == REPLY1


@pytest.mark.parametrize(("own", "msg_type", "sender", "ton", "gave", "expect"), [
    ("ignore", "SMART", "ACME", 5, True, SMART1),  # the client's sender is ignored
    ("ignore", "REPLY", "393331234567", 1, True, REPLY1),
    ("refuse", "SMART", "ACME", 5, True, 0x0A),
    ("refuse", "SMART", "", 1, False, SMART1),  # no sender of its own: nothing to refuse
    ("ignore", "REPLY", "ACME", 5, True, 0x0A),  # REPLY never leaves from an alphanumeric sender
])
def test_mt_sender_policies(own, msg_type, sender, ton, gave, expect) -> None:
    n = ledger(own_sender={ACME: own})
    try:
        got = n.mt_sender(ACME, msg_type, X, sender, ton, gave, T0)
    except MtRefused as exc:
        got = exc.status
    assert got == expect


def test_without_a_pool_the_client_sender_stays_and_an_empty_one_is_refused() -> None:
    n = Numbers()
    assert n.mt_sender(ACME, "SMART", X, "ACME", 5, True, T0) is None
    with pytest.raises(MtRefused) as exc:
        n.mt_sender(ACME, "REPLY", X, "", 1, False, T0)
    assert exc.value.status == Status.ESME_RINVSRCADR


def test_forget_expired_bounds_memory_oldest_first() -> None:
    n = ledger()
    for i in range(100):
        n.remember_mt(ACME, f"39333{i:07d}", REPLY1, T0 + i)
    assert n.forget_expired(T0 + DEFAULT_WINDOW + 49.5) == 50
    assert n.conversations() == 50
    assert n.sender_for(ACME, "393330000099", "REPLY", T0 + DEFAULT_WINDOW + 50) == REPLY1


# ---------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 3), st.sampled_from(["SMART", "REPLY"]),
                          st.floats(0, 200 * H)), max_size=60))
def test_two_accounts_never_share_a_live_number_to_one_handset(ops) -> None:
    """Whatever the order of sends: while a window holds (handset, number) for one account, no other gets it."""
    n = ledger()
    held: dict[tuple[str, str], tuple[int, float]] = {}
    now = T0
    for account, handset_i, msg_type, dt in sorted(ops, key=lambda o: o[3]):
        now = T0 + dt
        handset = f"3933300000{handset_i}"
        try:
            num = n.sender_for(account, handset, msg_type, now)
        except PoolExhausted:
            continue
        other = held.get((handset, num))
        if other is not None and other[0] != account:
            assert now - other[1] >= DEFAULT_WINDOW, (handset, num, other, account)
        n.remember_mt(account, handset, num, now, msg_type)
        held[(handset, num)] = (account, now)
        assert n.owner_of(handset, num, "hi", now).account_id == account


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40))
def test_smart_rotation_is_even(k) -> None:
    n = ledger()
    got = [n.sender_for(ACME, f"39333{i:07d}", "SMART", T0) for i in range(3 * k)]
    assert {got.count(s) for s in (SMART1, SMART2, SMART3)} == {k}


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(("data", "message"), [
    ({"reply_window": "47h"}, "numbers.reply_window: at least 48h (the documented minimum), got 47h"),
    ({"reply_window": "soon"}, "numbers.reply_window: expected a duration like 96h, 4d or seconds, got 'soon'"),
    ({"windw": 1}, "numbers.windw: unknown setting"),
    ({"stop_words": ["STOP"]}, "numbers.stop_words: expected a mapping of language to a list of words"),
    ({"stop_words": {"en": ["two words"]}}, "numbers.stop_words.en: 'two words' is not one word of letters and digits"),
    ({"start_words": {"en": ["STOP"]}}, "numbers.start_words.en: 'STOP' is already a stop word"),
])
def test_config_errors_are_one_line(data, message) -> None:
    with pytest.raises(ConfigError) as exc:
        two_way_from_dict(data)
    assert str(exc.value) == message


def test_config_window_and_defaults() -> None:
    assert two_way_from_dict(None).reply_window == DEFAULT_WINDOW
    assert two_way_from_dict({"reply_window": "4d"}).reply_window == 96 * H
    assert two_way_from_dict({"reply_window": 172800}).reply_window == 48 * H


def test_auto_reply_source_keeps_the_conversation_on_its_number() -> None:
    n = ledger()
    n.remember_mt(BETA, X, REPLY2, T0)
    kw = Keyword(BETA, "PROMO", "reply", "ok", "REPLY")
    assert n.reply_source(kw, X, REPLY2, T0 + 1) == REPLY2  # the number the handset wrote to
    assert n.sender_for(BETA, X, "REPLY", T0 + 2) == REPLY2  # and it stays sticky
    # A number held for this handset by another account is not taken: the pool gives another.
    assert n.reply_source(Keyword(ACME, "PROMO", "reply", "ok", "REPLY"), X, REPLY2, T0 + 1) == REPLY1
    assert n.reply_source(Keyword(ACME, "PROMO", "reply", "ok", "SMART"), X, SHARED_NO, T0) == SMART1
    assert n.reply_source(Keyword(ACME, "PROMO", "reply", "ok", "PRO", "ACME"), X, SHARED_NO, T0) == "ACME"
    assert n.reply_source(Keyword(ACME, "PROMO", "reply", "ok", "PRO"), X, SHARED_NO, T0) == SHARED_NO
    with pytest.raises(PoolExhausted):
        n.reply_source(Keyword(GAMMA, "PROMO", "reply", "ok", "REPLY"), X, REPLY1, T0 + 2)


def test_a_number_removed_from_its_pool_is_not_reused_but_its_window_still_owns_replies() -> None:
    n = ledger()
    first = n.sender_for(ACME, X, "REPLY", T0)
    n.remember_mt(ACME, X, first, T0)
    other = REPLY2 if first == REPLY1 else REPLY1
    n.configure(Configured(pools={"REPLY": {0: (other,)}}, shared=frozenset({other})))
    assert n.sender_for(ACME, X, "REPLY", T0 + 1) == other
    assert n.owner_of(X, first, "hi", T0 + 2).account_id == ACME  # the MT went out from it: its replies


def test_a_number_restricted_to_some_countries_is_used_only_there() -> None:
    fr_short = "36111"
    n = Numbers(configured=Configured(pools={"SMART": {0: (fr_short, SMART1)}, "REPLY": {0: (fr_short,)}},
                                      countries={fr_short: frozenset({"FR"})}))
    assert {n.sender_for(ACME, f"39333{i:07d}", "SMART", T0, "IT") for i in range(4)} == {SMART1}
    assert {n.sender_for(ACME, f"33612{i:06d}", "SMART", T0, "FR") for i in range(4)} == {fr_short, SMART1}
    assert n.sender_for(ACME, "33612000000", "REPLY", T0, "FR") == fr_short
    with pytest.raises(PoolExhausted) as exc:
        n.sender_for(ACME, X, "REPLY", T0, "IT")
    assert exc.value.reason == "no REPLY pool number may be used in IT"


def test_journal_and_merge_share_conversations_between_hubs() -> None:
    a, b = ledger(), ledger()
    a.journaling = True
    a.remember_mt(ACME, X, REPLY1, T0)
    a.remember_mt(ACME, X, REPLY1, T0 + 5)  # one row per conversation, the latest MT
    rows = a.take_journal()
    assert rows == [(X, REPLY1, ACME, "REPLY", T0 + 5)] and a.take_journal() == []
    assert b.merge(rows) == 1 and b.merge(rows) == 0  # the same row twice changes nothing
    assert b.owner_of(X, REPLY1, "hi", T0 + 6) == Owner(ACME, "reply_window", free=True)
    assert b.sender_for(BETA, X, "REPLY", T0 + 6) == REPLY2  # hub b does not hand ACME's number to BETA
    assert b.sender_for(ACME, X, "REPLY", T0 + 6) == REPLY1  # and ACME stays on it there too
    # An older row from elsewhere does not override a newer conversation here.
    b.remember_mt(BETA, Y, REPLY1, T0 + 10)
    assert b.merge([(Y, REPLY1, ACME, "REPLY", T0 + 9)]) == 0
    assert b.owner_of(Y, REPLY1, "hi", T0 + 11).account_id == BETA
    assert b.take_journal() == []  # not journaling: a one-hub store shares nothing
