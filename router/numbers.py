"""Numbers: sender pools, the reply window, dedicated numbers, codes and aliases, keywords, opt-outs.

This is the two-way ledger every hub holds in memory, and the two decisions it
makes on hot paths, without I/O (h11's model, like :mod:`smsc.pipeline`):

* :meth:`Numbers.sender_for` (MT): the source address of a SMART or REPLY
  message, taken from a pool. SMART rotates over the pool; REPLY is sticky
  per (account, destination) for the reply window. A pool number is never
  given to two accounts writing to the same handset while the window holds
  it for one of them: that is what lets the reply find its way back. No free
  number is :class:`PoolExhausted` (a documented status), never a shared one.
* :meth:`Numbers.owner_of` (MO): whose a handset's message is, in the order
  of issue 14 item 2 (docs/two-way.md "Ownership"): the reply window, a
  dedicated number, a receiving code or alias as first word on a shared
  number, else a dead letter with its cause. The first word (after the code)
  is then matched against the owner's keywords and the STOP/START/HELP words.

Both are dict lookups (µs: ``bench/bench_numbers.py``). What is configured
(pools, dedicated numbers, codes, aliases, keywords, opt-outs) lives in the
store (:mod:`router.number_store`), is loaded at start as a
:class:`Configured` and replaced whole by :meth:`Numbers.configure` whenever
the settings version moves (``smsc.app.Hub._poll_settings``), so a number
added with the command line is in force on every hub within seconds. The
reply window has no table of its own: it is what the messages table says
(SMART/REPLY rows sent from a pool number within the window), rebuilt at start
with :meth:`Numbers.remember_mt` and kept current after each accepted MT.

Numbers and handsets are E.164 digits without ``+`` (the form of
``messages.destination``). All times are seconds (``reactor.seconds()``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

from staffetta.conf.settings import ConfigError
from staffetta.pdu.constants import Status

SMART, PRO, REPLY = "SMART", "PRO", "REPLY"
POOL_TYPES = (SMART, REPLY)

#: The reply window: default (the seed's 96 hours) and the documented minimum (48 hours).
DEFAULT_WINDOW = 96 * 3600.0
MIN_WINDOW = 48 * 3600.0
#: A REPLY number chosen for a submit that was then refused (throttle, price, credit...)
#: holds its (handset, number) pair this long, then is free again.
RESERVE_HOLD = 300.0
#: An opt-out applied in memory outlives a settings reload this long (> the poll period + a read).
OPT_OVERLAY = 10.0

#: Statuses of the MT refusals this module decides (vendor range, docs/conformance.md).
POOL_EXHAUSTED_STATUS = int(Status.STAFFETTA_RPOOLEXHAUSTED)  # 0x410
OPTED_OUT_STATUS = int(Status.STAFFETTA_ROPTEDOUT)  # 0x411
_RINVSRCADR = int(Status.ESME_RINVSRCADR)
_ALPHANUMERIC_TON = 5

#: What an account's client-given sender does on SMART/REPLY (the pool's number is used).
OWN_SENDER_POLICIES = ("ignore", "refuse")

#: Built-in words, per language, for the three actions (config ``numbers.stop_words`` ...).
DEFAULT_STOP_WORDS = {"en": ("STOP", "UNSUBSCRIBE"), "fr": ("ARRET", "STOP"), "it": ("ANNULLA", "STOP"),
                      "de": ("STOPP",), "es": ("BAJA",)}
DEFAULT_START_WORDS = {"en": ("START", "SUBSCRIBE"), "fr": ("ARRIVEE",), "it": ("ATTIVA",),
                       "de": ("START",), "es": ("ALTA",)}
DEFAULT_HELP_WORDS = {"en": ("HELP", "INFO"), "fr": ("AIDE",), "it": ("AIUTO",), "de": ("HILFE",),
                      "es": ("AYUDA",)}

ACTIONS = ("reply", "stop", "start", "help")
#: Dead-letter causes owner_of gives.
UNKNOWN_NUMBER, NO_CODE, ALPHANUMERIC = "unknown_number", "no_code", "alphanumeric"


class MtRefused(Exception):
    """Refuse the MT with ``status`` (the submit pipeline answers it; docs/two-way.md)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class PoolExhausted(MtRefused):
    """No pool number is free for this (account, destination): status 0x410, never a shared number."""

    def __init__(self, reason: str) -> None:
        super().__init__(POOL_EXHAUSTED_STATUS, reason)


@dataclass(frozen=True, slots=True)
class Keyword:
    """One configured keyword of an account (or a built-in STOP/START/HELP word, account_id 0)."""

    account_id: int
    word: str  # upper-case
    action: str  # "reply" (auto-reply) | "stop" | "start" | "help"
    reply_text: str = ""  # the auto-reply / help text ("" = none)
    reply_type: str = "SMART"  # SMART | PRO | REPLY, charged to the account like any MT
    reply_sender: str | None = None


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose an MO is, and why (stored with the MO)."""

    account_id: int | None  # None: dead letter
    how: str  # reply_window | dedicated | code | alias | dead_letter
    free: bool = False  # a reply to a REPLY message within the window is not charged
    keyword: Keyword | None = None  # the first word matched a keyword of the owner (or STOP/START/HELP)
    cause: str = ""  # dead letters: unknown_number | no_code | alphanumeric


@dataclass(frozen=True, slots=True)
class Configured:
    """Everything configured, as the store holds it (one immutable snapshot, swapped whole).

    ``pools``: kind -> account id (0: shared by every account without its own) -> numbers,
    in the order they rotate. ``shared``: numbers on which a first word routes
    by code or alias (every pool number is one too). ``codes``: upper-case word
    -> (account id, "code" | "alias"). ``keywords``: (account id, word) -> Keyword.
    ``own_sender``: account id -> "ignore" | "refuse" (absent: ignore).
    ``countries``: pool number -> the destination countries it may be used for.
    """

    pools: dict[str, dict[int, tuple[str, ...]]] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()
    dedicated: dict[str, int] = field(default_factory=dict)
    codes: dict[str, tuple[int, str]] = field(default_factory=dict)
    keywords: dict[tuple[int, str], Keyword] = field(default_factory=dict)
    opt_outs: frozenset[tuple[int, str]] = frozenset()
    own_sender: dict[int, str] = field(default_factory=dict)
    #: number -> the ISO countries it may send to (absent: any country).
    countries: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TwoWaySettings:
    """The ``numbers:`` section of ``staffetta.yaml`` (docs/configuration.md)."""

    reply_window: float = DEFAULT_WINDOW
    #: word -> (action, language) for the built-in STOP/START/HELP words.
    words: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: language -> the HELP answer when the account has no HELP keyword of its own.
    help_text: dict[str, str] = field(default_factory=dict)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object, path: str) -> float:
    """``96h``, ``4d``, ``90m``, or seconds -> seconds; else a one-line ConfigError naming ``path``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise ConfigError(f"{path}: expected a duration like 96h, 4d or seconds, got {value!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _word_lists(value: object, path: str, default: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    if value is None:
        return default
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping of language to a list of words")
    out = {}
    for lang, words in value.items():
        if isinstance(words, str):
            words = [words]
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise ConfigError(f"{path}.{lang}: expected a list of words")
        for w in words:
            if not w.strip().isalnum():
                raise ConfigError(f"{path}.{lang}: {w!r} is not one word of letters and digits")
        out[str(lang)] = tuple(w.strip().upper() for w in words)
    return out


def two_way_from_dict(data: dict | None) -> TwoWaySettings:
    """Validate the ``numbers:`` config section; every mistake is one line naming the setting."""
    data = dict(data or {})
    known = {"reply_window", "stop_words", "start_words", "help_words", "help_text"}
    for key in data:
        if key not in known:
            raise ConfigError(f"numbers.{key}: unknown setting")
    window = parse_duration(data.get("reply_window", DEFAULT_WINDOW), "numbers.reply_window")
    if window < MIN_WINDOW:
        raise ConfigError(f"numbers.reply_window: at least 48h (the documented minimum), got {window / 3600:g}h")
    words: dict[str, tuple[str, str]] = {}
    for action, key, default in (("stop", "stop_words", DEFAULT_STOP_WORDS),
                                 ("start", "start_words", DEFAULT_START_WORDS),
                                 ("help", "help_words", DEFAULT_HELP_WORDS)):
        for lang, ws in _word_lists(data.get(key), f"numbers.{key}", default).items():
            for w in ws:
                prev = words.get(w)
                if prev is not None and prev[0] != action:
                    raise ConfigError(f"numbers.{key}.{lang}: {w!r} is already a {prev[0]} word")
                words.setdefault(w, (action, lang))
    help_text = data.get("help_text") or {}
    if not isinstance(help_text, dict) or not all(isinstance(v, str) for v in help_text.values()):
        raise ConfigError("numbers.help_text: expected a mapping of language to a text")
    return TwoWaySettings(window, words, {str(k): v for k, v in help_text.items()})


_DEAD = {cause: Owner(None, "dead_letter", cause=cause) for cause in (UNKNOWN_NUMBER, NO_CODE, ALPHANUMERIC)}


class _Conversation:
    """One (handset, pool number) held by an account: the last accepted MT, or a reservation."""

    __slots__ = ("account_id", "msg_type", "last_mt", "touched")

    def __init__(self, account_id: int, msg_type: str, last_mt: float | None, touched: float) -> None:
        self.account_id = account_id
        self.msg_type = msg_type
        self.last_mt = last_mt  # None: chosen by sender_for, no MT accepted yet
        self.touched = touched


class Numbers:
    """The in-memory ledger and its decisions; one per hub, fed by the store and the submit path.

    Memory is bounded by the traffic of one window: a conversation is
    forgotten (O(1), oldest first) once its window is over (:meth:`forget_expired`).
    """

    def __init__(self, settings: TwoWaySettings | None = None, configured: Configured | None = None) -> None:
        self.settings = settings or TwoWaySettings(words=two_way_from_dict(None).words)
        self.window = self.settings.reply_window
        self.c = Configured()
        self._help: dict[int, Keyword] = {}
        self._pool_numbers: frozenset[str] = frozenset()
        self._owners: dict[tuple[int, str, bool], Owner] = {}
        self._region_pools: dict[tuple[str, int, str], tuple[str, ...]] = {}
        #: (handset, number) -> conversation, least recently touched first.
        self._conv: OrderedDict[tuple[str, str], _Conversation] = OrderedDict()
        #: (account id, handset) -> the REPLY number it sticks to.
        self._sticky: dict[tuple[int, str], str] = {}
        #: (kind, pool owner, region) -> next index to try (SMART rotation, REPLY spread).
        self._next: dict[tuple[str, int, str | None], int] = {}
        #: Opt-out changes applied in memory after their commit: (account, handset) -> (out, when).
        #: They win over a snapshot for OPT_OVERLAY seconds (a reload read before the commit).
        self._opt: dict[tuple[int, str], tuple[bool, float]] = {}
        self._opt_latest = 0.0
        #: Metrics (plain ints, exported at scrape): MO owned by the reply window per account,
        #: opt-out changes per (account, "out" | "in").
        self.window_hits: dict[int, int] = {}
        self.opt_changes: dict[tuple[int, str], int] = {}
        #: Several hubs on one store: conversations this hub opened since the last
        #: :meth:`take_journal`, for the others (docs/two-way.md "Several hubs").
        self.journaling = False
        self._journal: dict[tuple[str, str], tuple[int, str, float]] = {}
        self.configure(configured or Configured())

    # ------------------------------------------------------------ configuration

    def configure(self, configured: Configured, now: float | None = None) -> None:
        """Swap in what the store holds now (at start and at every settings reload).

        Opt-out changes applied in memory in the last :data:`OPT_OVERLAY`
        seconds before ``now`` stay on top: the snapshot may have been read
        before their commit. Without ``now`` (start, tests) none stay.
        """
        self.c = configured
        self._help = {k.account_id: k for k in configured.keywords.values() if k.action == "help"}
        self._pool_numbers = frozenset(n for by in configured.pools.values() for ns in by.values() for n in ns)
        self._region_pools = {}
        if now is None or now - self._opt_latest >= OPT_OVERLAY:
            self._opt.clear()
        else:
            self._opt = {k: v for k, v in self._opt.items() if now - v[1] < OPT_OVERLAY}

    def own_sender(self, account_id: int) -> str:
        """``ignore`` | ``refuse``: what a client-given sender does on SMART and REPLY."""
        return self.c.own_sender.get(account_id, "ignore")

    def pool(self, account_id: int, msg_type: str, region: str | None = None) -> tuple[str, ...]:
        """The numbers an account's messages of this type come from (its own pool, else the shared one).

        With ``region`` (the destination's ISO country), only the numbers that
        may be used there (C2: a number restricted to some countries, e.g. a
        French short code, is not used elsewhere).
        """
        by_owner = self.c.pools.get(msg_type)
        if not by_owner:
            return ()
        own = by_owner.get(account_id)
        numbers = own if own else by_owner.get(0, ())
        if region is None or not self.c.countries:
            return numbers
        key = (msg_type, account_id if own else 0, region)
        got = self._region_pools.get(key)
        if got is None:
            allowed = self.c.countries
            got = self._region_pools[key] = tuple(
                n for n in numbers if n not in allowed or region in allowed[n])
        return got

    # --------------------------------------------------------------------- MT

    def mt_sender(self, account_id: int, msg_type: str, destination: str, sender: str, sender_ton: int,
                  client_gave: bool, now: float, region: str | None = None) -> str | None:
        """The source address of an MT: a pool number, or None to keep ``sender``; raises :class:`MtRefused`.

        ``client_gave``: the submit carried its own source_addr (not the
        account's default). Rules (docs/two-way.md "Pools"): a REPLY never
        leaves from an alphanumeric sender (ESME_RINVSRCADR: replies could not
        come back); SMART and REPLY take a pool number when a pool of their
        type exists, ignoring the client's sender, or refusing it
        (ESME_RINVSRCADR) when the account's policy is ``refuse``; with no
        pool of the type the client's own sender goes, as before pools.
        """
        if msg_type == REPLY and client_gave and sender_ton == _ALPHANUMERIC_TON:
            raise MtRefused(_RINVSRCADR, "source_addr: a REPLY cannot leave from an alphanumeric sender")
        if not self.pool(account_id, msg_type):  # no pool of the type at all (any country)
            if not sender:
                raise MtRefused(_RINVSRCADR, f"source_addr: empty and no {msg_type} pool is configured")
            return None
        if client_gave and self.c.own_sender.get(account_id) == "refuse":
            raise MtRefused(_RINVSRCADR, f"source_addr: this account's {msg_type} messages take "
                                         "their sender from the pool")
        return self.sender_for(account_id, destination, msg_type, now, region)

    def sender_for(self, account_id: int, destination: str, msg_type: str, now: float,
                   region: str | None = None) -> str:
        """The pool number a SMART or REPLY message from ``account_id`` to ``destination`` leaves from.

        REPLY: the number this account already writes to this handset from,
        while the window holds it; else a free one, held at once (a second
        account writing to the same handset meanwhile gets another). SMART:
        the next number of the pool that no other account holds for this
        handset. Raises :class:`PoolExhausted` when none is free.
        """
        window = self.window
        if msg_type == REPLY:
            n = self._sticky.get((account_id, destination))
            if n is not None and n in self._pool_numbers:  # a number removed from its pool is not reused
                conv = self._conv.get((destination, n))
                if conv is not None and conv.account_id == account_id and self._holds(conv, now, window):
                    return n
        pool = self.pool(account_id, msg_type, region)
        if not pool:
            raise PoolExhausted(f"no {msg_type} pool number may be used in {region}" if region
                                else f"no {msg_type} pool configured")
        key = (msg_type, account_id if account_id in self.c.pools.get(msg_type, ()) else 0, region)
        start = self._next.get(key, 0)
        size = len(pool)
        conv_get = self._conv.get
        for i in range(size):
            n = pool[(start + i) % size]
            conv = conv_get((destination, n))
            if conv is None or conv.account_id == account_id or not self._holds(conv, now, window):
                self._next[key] = (start + i + 1) % size
                if msg_type == REPLY:
                    self._hold(account_id, destination, n, REPLY, None, now)
                return n
        raise PoolExhausted(
            f"all {size} {msg_type} numbers are held for {destination} by other accounts"
        )

    def reply_source(self, keyword: Keyword, handset: str, number: str, now: float) -> str:
        """The sender of the automatic reply of ``keyword`` to an MO from ``handset`` to ``number``.

        The keyword's own sender when it has one (PRO); a SMART or REPLY reply
        goes out from the number the handset wrote to when it is in the
        account's pool of that type and free for this handset (so the
        conversation keeps one number), else from :meth:`sender_for`; a PRO
        reply without a sender answers from ``number``. Raises
        :class:`PoolExhausted` like any MT. Charged and sent like any MT (the
        caller's: the MO side).
        """
        if keyword.reply_sender:
            return keyword.reply_sender
        t = keyword.reply_type
        if t == PRO:
            return number
        account_id = keyword.account_id
        if number in self.pool(account_id, t):
            conv = self._conv.get((handset, number))
            if conv is None or conv.account_id == account_id or not self._holds(conv, now, self.window):
                if t == REPLY:
                    self._hold(account_id, handset, number, REPLY, None, now)
                return number
        return self.sender_for(account_id, handset, t, now)

    @staticmethod
    def _holds(conv: _Conversation, now: float, window: float) -> bool:
        if conv.last_mt is None:
            return now - conv.touched < RESERVE_HOLD
        return now - conv.last_mt < window

    def _hold(self, account_id: int, handset: str, number: str, msg_type: str, last_mt: float | None,
              now: float) -> None:
        key = (handset, number)
        conv = self._conv.get(key)
        if conv is not None and conv.account_id != account_id:
            # Another account's, expired (sender_for checked): it no longer owns replies.
            if self._sticky.get((conv.account_id, handset)) == number:
                del self._sticky[(conv.account_id, handset)]
            conv = None
        if conv is None:
            self._conv[key] = _Conversation(account_id, msg_type, last_mt, now)
        else:
            if last_mt is not None:
                conv.last_mt = last_mt
                conv.msg_type = msg_type
            conv.touched = now
            self._conv.move_to_end(key)
        if msg_type == REPLY:
            self._sticky[(account_id, handset)] = number

    def remember_mt(self, account_id: int, handset: str, pool_number: str, now: float,
                    msg_type: str = REPLY) -> None:
        """An MT from ``account_id`` to ``handset`` via ``pool_number`` was accepted at ``now``.

        Opens (or extends) the reply window. Also used at start to rebuild the
        window from the messages table, oldest first. A number that is not in
        a pool (a client's own sender) opens nothing.
        """
        if pool_number not in self._pool_numbers:
            return
        self._hold(account_id, handset, pool_number, msg_type, now, now)
        if self.journaling:
            self._journal[(handset, pool_number)] = (account_id, msg_type, now)

    def take_journal(self) -> list[tuple[str, str, int, str, float]]:
        """The conversations opened here since the last call: (handset, number, account, type, last MT)."""
        j, self._journal = self._journal, {}
        return [(h, n, a, t, at) for (h, n), (a, t, at) in j.items()]

    def merge(self, rows) -> int:
        """Conversations other hubs opened (``take_journal`` rows read back from the store).

        A row newer than what this hub holds for (handset, number) wins; its
        own, and older ones, change nothing. Returns how many were taken.
        """
        taken = 0
        for handset, number, account_id, msg_type, last_mt in rows:
            conv = self._conv.get((handset, number))
            if conv is not None and conv.last_mt is not None and conv.last_mt >= last_mt:
                continue
            if number not in self._pool_numbers:
                continue
            self._hold(account_id, handset, number, msg_type, last_mt, last_mt)
            taken += 1
        return taken

    def forget_expired(self, now: float) -> int:
        """Drop conversations whose window is over, oldest first; returns how many."""
        conv, window, n = self._conv, self.window, 0
        while conv:
            key, c = next(iter(conv.items()))
            if now - c.touched < window:
                break
            del conv[key]
            if self._sticky.get((c.account_id, key[0])) == key[1]:
                del self._sticky[(c.account_id, key[0])]
            n += 1
        return n

    def pool_numbers(self) -> frozenset[str]:
        """Every number of every pool (SMART and REPLY, shared and accounts' own)."""
        return self._pool_numbers

    def conversations(self) -> int:
        return len(self._conv)

    def opted_out(self, account_id: int, handset: str) -> bool:
        """Whether ``handset`` said STOP to ``account_id`` (and no START since): its MT are refused."""
        key = (account_id, handset)
        if self._opt:
            v = self._opt.get(key)
            if v is not None:
                return v[0]
        return key in self.c.opt_outs

    def apply_opt(self, account_id: int, handset: str, out: bool, now: float) -> None:
        """The in-memory change after the durable write of writer kind ``opt_out``."""
        if self.opted_out(account_id, handset) != out:
            k = (account_id, "out" if out else "in")
            self.opt_changes[k] = self.opt_changes.get(k, 0) + 1
        self._opt[(account_id, handset)] = (out, now)
        self._opt_latest = max(self._opt_latest, now)

    # --------------------------------------------------------------------- MO

    def owner_of(self, handset: str, number: str, text: str | None, now: float) -> Owner:
        """Whose the MO from ``handset`` to ``number`` is (docs/two-way.md "Ownership")."""
        c = self.c
        if number[:1] == "+":  # carriers write international numbers either way
            number = number[1:]
        if handset[:1] == "+":
            handset = handset[1:]
        if not number.isdigit():
            return _DEAD[ALPHANUMERIC]
        words = text.split(None, 2) if text else ()
        w1 = words[0].upper() if words else ""
        conv = self._conv.get((handset, number))
        if conv is not None and conv.last_mt is not None and now - conv.last_mt < self.window:
            a = conv.account_id
            self.window_hits[a] = self.window_hits.get(a, 0) + 1
            return self._owner(a, "reply_window", conv.msg_type == REPLY, self.keyword(a, w1) if w1 else None)
        a = c.dedicated.get(number)
        if a is not None:
            return self._owner(a, "dedicated", False, self.keyword(a, w1) if w1 else None)
        if number in c.shared:
            hit = c.codes.get(w1)
            if hit is None:
                return _DEAD[NO_CODE]
            a, how = hit
            # The word after the code is the keyword; a code alone may carry one itself.
            w2 = words[1].upper() if len(words) > 1 else ""
            return self._owner(a, how, False, self.keyword(a, w2 or w1))
        return _DEAD[UNKNOWN_NUMBER]

    def _owner(self, account_id: int, how: str, free: bool, keyword: Keyword | None) -> Owner:
        """An Owner; the ones without a keyword (most) are made once and shared (they are immutable)."""
        if keyword is not None:
            return Owner(account_id, how, free, keyword)
        key = (account_id, how, free)
        o = self._owners.get(key)
        if o is None:
            o = self._owners[key] = Owner(account_id, how, free)
        return o

    def keyword(self, account_id: int, word: str) -> Keyword | None:
        """The account's keyword ``word`` (upper-case), else a built-in STOP/START/HELP word, else None."""
        if not word:
            return None
        k = self.c.keywords.get((account_id, word))
        if k is not None:
            return k
        hit = self.settings.words.get(word)
        if hit is None:
            return None
        action, lang = hit
        if action == "help":
            # The account's own HELP text, if it configured a "help" keyword, wins.
            k = self._help.get(account_id)
            if k is not None:
                return Keyword(account_id, word, "help", k.reply_text, k.reply_type, k.reply_sender)
            return Keyword(account_id, word, "help", self.settings.help_text.get(lang, ""))
        return Keyword(account_id, word, action)
