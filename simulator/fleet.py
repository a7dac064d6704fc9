"""A fleet of simulated carriers in one process: specs, their parsing, and the running fleet.

The hub routes over several upstreams (issue 13), so its tests and its demo
need several carriers that differ: one slow, one that throttles, one that
refuses a country, one whose network serves ported numbers. A
:class:`CarrierSpec` says how one carrier behaves; :func:`start_fleet` runs a
:class:`simulator.carrier.Carrier` per spec on its own port plus one shared
HLR (simulator/hlr.py) that knows which network serves which numbers, and
returns a :class:`Fleet` to look at and close.

Specs come from Python, from repeated ``--carrier key=value,...`` flags or
from a small YAML file (``--fleet fleet.yaml``); both text forms go through
:func:`spec_from_mapping`, so a mistake is one :class:`SpecError` line naming
the flag or the file, the carrier and the field, whichever form it came in.

Seeds: a carrier without its own ``seed`` takes one derived from the fleet's
seed and its name, so adding a carrier does not change another's ids,
outcomes or fault draws, and the same fleet seed gives the same run.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort

from staffetta.pdu.constants import Status
from staffetta.pdu.receipt import STAT_TO_STATE
from staffetta.simulator.carrier import ID_FORMATS, RECEIPT_FORMATS, Carrier
from staffetta.simulator.faults import Faults
from staffetta.simulator.handsets import Conversations, MoLoad, MoLoadResult
from staffetta.simulator.hlr import HlrSimulator

FINAL_STATS = tuple(s for s in STAT_TO_STATE if s != "ENROUTE")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
#: Names the fleet's HTTP control uses for its own paths.
RESERVED_NAMES = frozenset({"stats"})


class SpecError(ValueError):
    """A bad carrier spec or fleet file: the message names the field (one line)."""


@dataclass(frozen=True)
class CarrierSpec:
    """How one carrier of a fleet behaves. Everything but ``name`` has a plain-SMSC default.

    ``errors`` maps destination prefixes to the submit_sm_resp status they get
    (longest prefix wins: the carrier's scripts); ``serves`` maps number
    prefixes to the share of their numbers that the fleet's HLR says are
    served by this carrier's ``mccmnc`` (ported numbers).
    """

    name: str
    port: int = 0
    host: str = "127.0.0.1"
    id_format: str = "decimal"
    receipt_format: str = "strict"
    #: Delay of every submit_sm_resp, seconds.
    latency: float = 0.0
    #: Delay from the submit_sm_resp to the receipt, seconds.
    dlr_delay: float = 1.0
    outcomes: Mapping[str, float] = field(default_factory=lambda: {"DELIVRD": 1.0})
    #: Submits per second; above it ESME_RTHROTTLED. None: no limit.
    throughput: float | None = None
    errors: Mapping[str, int] = field(default_factory=dict)
    unanswered: float = 0.0
    slow: float = 0.0
    slow_delay: float = 5.0
    disconnect_every: int = 0
    magic: bool = True
    #: The MCC-MNC of this carrier's network (for ``serves``).
    mccmnc: str | None = None
    serves: Mapping[str, float] = field(default_factory=dict)
    #: system_id -> password accepted; None: any bind.
    credentials: Mapping[str, str] | None = None
    #: Our system_id in bind responses; None: the name.
    system_id: str | None = None
    window: int = 100
    #: None: derived from the fleet's seed and the name.
    seed: int | None = None
    #: Keep the per-destination order of accepted submits (Carrier.seen).
    record: bool = True
    #: Handsets (simulator/handsets.py): MO per second while a receiving session is bound (0: none),
    #: how many in all (0: no end), to which numbers, with what text, the share that is multipart.
    mo_rate: float = 0.0
    mo_count: int = 0
    mo_to: tuple[str, ...] = ("4000",)
    mo_text: str = "Hello"
    mo_long_share: float = 0.0
    #: Conversations: the share of MT recipients that reply to the sender, after reply_delay.
    reply_share: float = 0.0
    reply_delay: float = 2.0
    reply_text: str = "Re: {text}"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) or self.name in RESERVED_NAMES:
            raise SpecError(f"name: {self.name!r} is not 1-32 letters, digits, '-' or '_' (and not 'stats')")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise SpecError(f"port: {self.port!r} is not 0-65535")
        if self.id_format not in ID_FORMATS:
            raise SpecError(f"id_format: {self.id_format!r} is not one of {', '.join(ID_FORMATS)}")
        if self.receipt_format not in RECEIPT_FORMATS:
            raise SpecError(f"receipt_format: {self.receipt_format!r} is not one of {', '.join(RECEIPT_FORMATS)}")
        for name in ("latency", "dlr_delay", "slow_delay"):
            _check_seconds(name, getattr(self, name))
        for name in ("unanswered", "slow"):
            _check_share(name, getattr(self, name))
        if not self.outcomes:
            raise SpecError("outcomes: empty")
        for stat, weight in self.outcomes.items():
            if stat not in FINAL_STATS:
                raise SpecError(f"outcomes: {stat!r} is not one of {', '.join(FINAL_STATS)}")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf:
                raise SpecError(f"outcomes: weight of {stat} is not a number >= 0: {weight!r}")
        if sum(self.outcomes.values()) <= 0:
            raise SpecError("outcomes: weights sum to zero")
        for prefix, status in self.errors.items():
            if not isinstance(prefix, str) or not prefix.isdigit():
                raise SpecError(f"errors: prefix {prefix!r} is not digits")
            if isinstance(status, bool) or not isinstance(status, int) or not 0 < status <= 0xFFFFFFFF:
                raise SpecError(f"errors: status of {prefix} is not a command_status > 0: {status!r}")
        if self.mccmnc is not None and not (isinstance(self.mccmnc, str) and self.mccmnc.isdigit()
                                            and len(self.mccmnc) in (5, 6)):
            raise SpecError(f"mccmnc: {self.mccmnc!r} is not 5 or 6 digits (MCC + MNC)")
        if self.serves and self.mccmnc is None:
            raise SpecError("serves: needs mccmnc (the network that serves them)")
        for prefix, share in self.serves.items():
            if not isinstance(prefix, str) or not prefix.isdigit():
                raise SpecError(f"serves: prefix {prefix!r} is not digits")
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
                raise SpecError(f"serves: share of {prefix} is not in (0, 1]: {share!r}")
        if self.system_id is not None and not 0 < len(self.system_id) <= 15:
            raise SpecError(f"system_id: {self.system_id!r} is not 1-15 characters")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise SpecError(f"window: {self.window!r} is not a whole number >= 1")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise SpecError(f"seed: {self.seed!r} is not a whole number")
        try:
            self.faults()
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        if isinstance(self.mo_rate, bool) or not isinstance(self.mo_rate, int | float) \
                or not 0 <= self.mo_rate < math.inf:
            raise SpecError(f"mo_rate: {self.mo_rate!r} is not a number of MO per second >= 0")
        if isinstance(self.mo_count, bool) or not isinstance(self.mo_count, int) or self.mo_count < 0:
            raise SpecError(f"mo_count: {self.mo_count!r} is not a whole number >= 0")
        if not self.mo_to or not all(isinstance(t, str) and 0 < len(t) <= 20 for t in self.mo_to):
            raise SpecError(f"mo_to: {self.mo_to!r} is not a list of addresses of 1-20 characters")
        for name in ("mo_long_share", "reply_share"):
            _check_share(name, getattr(self, name))
        _check_seconds("reply_delay", self.reply_delay)
        try:
            self.reply_text.format(text="", n=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise SpecError(f"reply_text: {self.reply_text!r} may name only {{text}} and {{n}} ({exc})") from None

    def faults(self) -> Faults:
        """The submit misbehaviour part of the spec (simulator/faults.py)."""
        return Faults(latency=float(self.latency), throughput=self.throughput,
                      unanswered=float(self.unanswered), slow=float(self.slow),
                      slow_delay=float(self.slow_delay), disconnect_every=self.disconnect_every,
                      magic=self.magic)


def _check_seconds(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf:
        raise SpecError(f"{name}: {v!r} is not a number of seconds >= 0")


def _check_share(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise SpecError(f"{name}: {v!r} is not a share between 0 and 1")


def derive_seed(seed: int | None, name: str) -> int | None:
    """A carrier's seed from the fleet's: stable across runs and processes, distinct per name."""
    if seed is None:
        return None
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")


# ------------------------------------------------------------------ parsing

_FIELDS = {f.name: f for f in fields(CarrierSpec)}
#: Flag keys that repeat, one pair each, and the spec field they fill.
_PAIR_KEYS = {"outcome": "outcomes", "error": "errors", "serve": "serves", "credential": "credentials"}
#: Flag keys that repeat, one item each.
_LIST_KEYS = frozenset({"mo_to"})


def parse_status(v: Any) -> int:
    """A command_status: an int, ``0x45``, ``69`` or a name (``ESME_RSUBMITFAIL``)."""
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a command_status")
    if isinstance(v, int):
        return v
    s = str(v).strip()
    try:
        return int(s, 0)
    except ValueError:
        pass
    try:
        return int(Status[s.upper()])
    except KeyError:
        raise ValueError(f"{s!r} is not a command_status (0x45, 69 or ESME_RSUBMITFAIL)") from None


def _number(name: str, v: Any, kind: type = float) -> Any:
    if isinstance(v, bool):
        raise SpecError(f"{name}: {v!r} is not a number")
    if isinstance(v, int | float) and kind is float:
        return float(v)
    if isinstance(v, int) and kind is int:
        return v
    try:
        return kind(str(v).strip())
    except ValueError:
        raise SpecError(f"{name}: {v!r} is not a {'whole ' if kind is int else ''}number") from None


def _flag(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("on", "true", "yes", "1"):
        return True
    if s in ("off", "false", "no", "0"):
        return False
    raise SpecError(f"{name}: {v!r} is not on/off")


def _mapping(name: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise SpecError(f"{name}: expected a mapping, got {type(v).__name__}")
    return {str(k).strip(): val for k, val in v.items()}


def spec_from_mapping(data: Mapping[str, Any]) -> CarrierSpec:
    """A spec from YAML-like data (keys are the spec's fields; '-' may stand for '_').

    Values may be text (flags) or native (YAML): ``"0.5"`` and ``0.5`` alike.
    Raises :class:`SpecError` naming the field.
    """
    kw: dict[str, Any] = {}
    for raw_key, v in data.items():
        key = str(raw_key).strip().replace("-", "_")
        if key not in _FIELDS:
            raise SpecError(f"{raw_key}: unknown field (expected {', '.join(sorted(_FIELDS))})")
        if key in kw:
            raise SpecError(f"{key}: given twice")
        if v is None and key not in ("throughput", "mccmnc", "credentials", "system_id", "seed"):
            raise SpecError(f"{key}: empty")
        if key in ("port", "window", "disconnect_every", "seed", "mo_count"):
            v = None if v is None else _number(key, v, int)
        elif key in ("latency", "dlr_delay", "unanswered", "slow", "slow_delay", "mo_rate", "mo_long_share",
                     "reply_share", "reply_delay"):
            v = _number(key, v)
        elif key == "throughput":
            v = None if v is None or str(v).strip().lower() in ("off", "none") else _number(key, v)
        elif key in ("magic", "record"):
            v = _flag(key, v)
        elif key == "outcomes":
            m = _mapping(key, v)
            v = {stat.upper(): _number(f"outcomes: weight of {stat}", w) for stat, w in m.items()}
        elif key == "errors":
            out = {}
            for prefix, status in _mapping(key, v).items():
                try:
                    out[prefix] = parse_status(status)
                except ValueError as exc:
                    raise SpecError(f"errors: {prefix}: {exc}") from None
            v = out
        elif key == "serves":
            if isinstance(v, list | tuple):  # a plain list of prefixes: all their numbers
                v = {str(p).strip(): 1.0 for p in v}
            v = {p: _number(f"serves: share of {p}", s) for p, s in _mapping(key, v).items()}
        elif key == "credentials":
            v = None if v is None else {k: str(pw) for k, pw in _mapping(key, v).items()}
        elif key == "mo_to":
            v = tuple(str(t).strip() for t in (v if isinstance(v, list | tuple) else [v]))
        elif key in ("mccmnc", "system_id", "name", "host", "id_format", "receipt_format"):
            v = None if v is None else str(v).strip()
        elif key in ("mo_text", "reply_text"):
            v = str(v)
        kw[key] = v
    if "name" not in kw:
        raise SpecError("name: required")
    return CarrierSpec(**kw)


def parse_carrier_flag(text: str) -> CarrierSpec:
    """``name=a,port=2776,latency=0.05,error=3934:0x45,outcome=DELIVRD:0.9,...`` -> a spec.

    Map fields are given one pair at a time with a singular, repeatable key:
    ``outcome=STAT:WEIGHT``, ``error=PREFIX:STATUS``, ``serve=PREFIX[:SHARE]``,
    ``credential=SYSTEM_ID:PASSWORD``; every other key is a spec field.
    """
    data: dict[str, Any] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise SpecError(f"{part!r} is not KEY=VALUE")
        if key in _LIST_KEYS:
            items = data.setdefault(key, [])
            items.append(value.strip())
        elif key in _PAIR_KEYS:
            target = _PAIR_KEYS[key]
            k, sep2, val = value.partition(":")
            if key == "serve" and not sep2:
                val = "1"
            elif not sep2 or not k.strip():
                what = {"outcome": "STAT:WEIGHT", "error": "PREFIX:STATUS",
                        "credential": "SYSTEM_ID:PASSWORD"}[key]
                raise SpecError(f"{key}: {value!r} is not {what}")
            pairs = data.setdefault(target, {})
            if not isinstance(pairs, dict) or k.strip() in pairs:
                raise SpecError(f"{key}: {k.strip()!r} given twice")
            pairs[k.strip()] = val.strip()
        else:
            if key in data:
                raise SpecError(f"{key}: given twice")
            data[key] = value.strip()
    return spec_from_mapping(data)


@dataclass(frozen=True)
class FleetFile:
    """What a ``--fleet`` YAML file says: a seed (optional) and the carriers."""

    carriers: tuple[CarrierSpec, ...]
    seed: int | None = None


def load_fleet_file(path: str) -> FleetFile:
    """Read a fleet YAML file; :class:`SpecError` naming the file, carrier and field."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}:{where} not YAML: {getattr(exc, 'problem', None) or exc}") from None
    return fleet_from_data(data, path)


def fleet_from_data(data: Any, where: str = "fleet") -> FleetFile:
    """A :class:`FleetFile` from parsed YAML (``{"seed"?, "carriers": [...]}``)."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a mapping with 'carriers'")
    extra = set(data) - {"seed", "carriers"}
    if extra:
        raise SpecError(f"{where}: {sorted(map(str, extra))[0]}: unknown key (expected seed, carriers)")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise SpecError(f"{where}: seed: {seed!r} is not a whole number")
    carriers = data.get("carriers")
    if not isinstance(carriers, list) or not carriers:
        raise SpecError(f"{where}: carriers: expected a non-empty list")
    specs = []
    for i, item in enumerate(carriers):
        label = f"carriers[{i}]"
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            label += f" ({item['name']})"
        if not isinstance(item, Mapping):
            raise SpecError(f"{where}: {label}: expected a mapping")
        try:
            specs.append(spec_from_mapping(item))
        except SpecError as exc:
            raise SpecError(f"{where}: {label}: {exc}") from None
    check_fleet(specs, where)
    return FleetFile(tuple(specs), seed)


def check_fleet(specs: Iterable[CarrierSpec], where: str = "fleet") -> None:
    """Names unique, fixed ports unique: :class:`SpecError` otherwise."""
    names: set[str] = set()
    ports: dict[tuple[str, int], str] = {}
    for s in specs:
        if s.name in names:
            raise SpecError(f"{where}: {s.name}: name given twice")
        names.add(s.name)
        if s.port:
            other = ports.get((s.host, s.port))
            if other is not None:
                raise SpecError(f"{where}: {s.name}: port {s.port} already taken by {other}")
            ports[(s.host, s.port)] = s.name


# -------------------------------------------------------------------- fleet


class Fleet:
    """Carriers running on their ports, and the fleet's HLR.

    ``carriers[name]`` is the :class:`~simulator.carrier.Carrier` (its
    ``stats``, ``seen``, ``script()``, ``inject_mo()``, ``fault()``...).
    """

    def __init__(self, reactor: Any, specs: dict[str, CarrierSpec], carriers: dict[str, Carrier],
                 listening: dict[str, IListeningPort], hlr: HlrSimulator | None) -> None:
        self.reactor = reactor
        self.specs = specs
        self.carriers = carriers
        self.listening = listening
        self.hlr = hlr
        #: name -> port of carriers taken :meth:`down`.
        self.down_ports: dict[str, int] = {}
        #: name -> the carrier's MO load and conversations (simulator/handsets.py), when its spec asks.
        self.mo_loads: dict[str, MoLoad] = {}
        self.mo_results: dict[str, defer.Deferred[MoLoadResult]] = {}
        self.conversations: dict[str, Conversations] = {}

    def port(self, name: str) -> int:
        """The TCP port carrier ``name`` listens on (the real one when the spec said 0)."""
        if name in self.down_ports:
            return self.down_ports[name]
        return self.listening[name].getHost().port

    def address(self, name: str) -> tuple[str, int]:
        return self.specs[name].host, self.port(name)

    def order(self, name: str, destination: str | bytes) -> list[bytes]:
        """The texts of the submits ``name`` accepted for ``destination``, in the order it took them."""
        seen = self.carriers[name].seen
        if seen is None:
            raise ValueError(f"{name}: record is off")
        dest = destination.encode("latin-1") if isinstance(destination, str) else destination
        return list(seen.get(dest, ()))

    def counters(self, name: str) -> dict[str, int]:
        """The per-carrier counters a routing test looks at."""
        st = self.carriers[name].stats
        return {
            "submits": st["submits"],
            "accepted": st["submits"] - st["submits_rejected"] - st["submits_unanswered"],
            "rejected": st["submits_rejected"],
            "throttled": st["throttled"],
            "unanswered": st["submits_unanswered"],
            "slow": st["slow"],
            "disconnects": st["disconnects"],
            "receipts_sent": st["receipts_sent"],
            "binds": st["binds"],
            "mo_sent": st["mo_sent"],
            "mo_acked": st["mo_acked"],
        }

    def down(self, name: str) -> defer.Deferred[None]:
        """Carrier ``name`` dies: it stops listening (connects are refused) and drops its sessions.

        Receipts it still owes wait in its queues and go out after :meth:`up`,
        as from a carrier that restarts with its store intact.
        """
        carrier = self.carriers[name]
        self.down_ports[name] = self.port(name)
        return carrier.close()

    def up(self, name: str) -> IListeningPort:
        """Carrier ``name`` comes back on the port it had."""
        port = self.down_ports.pop(name)
        lp = self.carriers[name].listen(port, self.specs[name].host)
        self.listening[name] = lp
        return lp

    def is_up(self, name: str) -> bool:
        return name not in self.down_ports

    def snapshot(self) -> dict[str, Any]:
        """Every carrier's :meth:`Carrier.snapshot` with its port, for /stats."""
        out = {}
        for name, c in self.carriers.items():
            snap = c.snapshot()
            snap["port"] = self.port(name)
            snap["up"] = self.is_up(name)
            out[name] = snap
        return out

    def close(self) -> defer.Deferred[None]:
        """Stop every carrier, its handsets and the HLR; fires when all are down."""
        for load in self.mo_loads.values():
            load.stop()
        for conv in self.conversations.values():
            conv.close()
        ds = [c.close() for c in self.carriers.values()]
        if self.hlr is not None:
            ds.append(self.hlr.close())
        d = defer.gatherResults(ds, consumeErrors=True)
        d.addCallback(lambda _: None)
        return d


def build_carrier(reactor: Any, spec: CarrierSpec, fleet_seed: int | None = None) -> Carrier:
    """A (not yet listening) :class:`Carrier` that behaves as ``spec`` says."""
    seed = spec.seed if spec.seed is not None else derive_seed(fleet_seed, spec.name)
    carrier = Carrier(
        reactor,
        dlr_delay=float(spec.dlr_delay),
        outcomes=dict(spec.outcomes),
        id_format=spec.id_format,
        receipt_format=spec.receipt_format,
        credentials=None if spec.credentials is None else {
            k.encode("latin-1"): v.encode("latin-1") for k, v in spec.credentials.items()},
        seed=seed,
        window=spec.window,
        system_id=(spec.system_id or spec.name[:15]).encode("latin-1"),
        faults=spec.faults(),
        record=spec.record,
    )
    for prefix, status in spec.errors.items():
        carrier.script(prefix, submit_status=status)
    return carrier


def start_fleet(reactor: Any, specs: Iterable[CarrierSpec], *, seed: int | None = None,
                hlr_port: int | None = 0, hlr_host: str = "127.0.0.1", hlr_seed: int | None = None,
                **hlr_options: Any) -> Fleet:
    """Listen with every carrier (and the HLR unless ``hlr_port`` is None); returns the :class:`Fleet`.

    Raises :class:`SpecError` for a bad set of specs and Twisted's
    ``CannotListenError`` when a port is taken (after closing what it opened).
    ``hlr_options`` go to :class:`~simulator.hlr.HlrSimulator` (latency, error_rate, csv_path...).
    """
    specs = list(specs)
    if not specs:
        raise SpecError("fleet: no carrier")
    check_fleet(specs)
    carriers: dict[str, Carrier] = {}
    listening: dict[str, IListeningPort] = {}
    hlr = None
    try:
        for spec in specs:
            c = build_carrier(reactor, spec, seed)
            listening[spec.name] = c.listen(spec.port, spec.host)
            carriers[spec.name] = c
        if hlr_port is not None:
            hlr = HlrSimulator(reactor, seed=hlr_seed if hlr_seed is not None else (seed or 0), **hlr_options)
            for spec in specs:
                for prefix, share in spec.serves.items():
                    assert spec.mccmnc is not None
                    hlr.serve(prefix, spec.mccmnc, share=float(share))
            hlr.listen(hlr_port, hlr_host)
    except BaseException:
        for c in carriers.values():
            c.close()
        if hlr is not None:
            hlr.close()
        raise
    fleet = Fleet(reactor, {s.name: s for s in specs}, carriers, listening, hlr)
    for spec in specs:
        start_handsets(fleet, spec, seed)
    return fleet


def start_handsets(fleet: Fleet, spec: CarrierSpec, fleet_seed: int | None = None) -> None:
    """The spec's MO load and conversations on its fleet carrier (seeded like the carrier)."""
    seed = spec.seed if spec.seed is not None else derive_seed(fleet_seed, spec.name)
    load, conv = handsets_for(fleet.carriers[spec.name], spec, seed)
    if conv is not None:
        fleet.conversations[spec.name] = conv
    if load is not None:
        fleet.mo_loads[spec.name] = load
        fleet.mo_results[spec.name] = load.start()


def handsets_for(carrier: Carrier, spec: CarrierSpec,
                 seed: int | None) -> tuple[MoLoad | None, Conversations | None]:
    """What ``spec``'s mo_* and reply_* fields ask for on ``carrier`` (the MO load not yet started)."""
    conv = None
    if spec.reply_share:
        conv = Conversations(carrier, share=spec.reply_share, delay=spec.reply_delay, text=spec.reply_text,
                             seed=seed)
    load = None
    if spec.mo_rate:
        load = MoLoad(carrier, rate=spec.mo_rate, n=spec.mo_count or None, to=spec.mo_to, text=spec.mo_text,
                      long_share=spec.mo_long_share, seed=seed)
    return load, conv


def demo_specs() -> list[CarrierSpec]:
    """Two carriers that make routing visible (a suggestion for ``staffetta demo``).

    ``cheap`` throttles above 20 msg/s, refuses destinations under 3934 with
    ESME_RSUBMITFAIL and loses a share of its receipts to UNDELIV/EXPIRED: a
    failover route moves traffic off it, a least-cost route prefers it until
    its delivery ratio falls under a floor. ``premium`` is dearer and
    reliable; its network (222 10) serves a fifth of the 39333 numbers, so a
    ported number has somewhere to go. Both on free ports; magic on.
    """
    return [
        CarrierSpec("cheap", dlr_delay=1.0, outcomes={"DELIVRD": 0.85, "UNDELIV": 0.1, "EXPIRED": 0.05},
                    throughput=20, errors={"3934": int(Status.ESME_RSUBMITFAIL)}, mccmnc="22288"),
        CarrierSpec("premium", dlr_delay=0.5, latency=0.01, mccmnc="22210", serves={"39333": 0.2},
                    reply_share=0.1, reply_delay=5.0),
    ]


#: The spec fields of the handsets, which ``staffetta simulator`` also takes as options (``--mo-rate``...).
HANDSET_FIELDS = ("mo_rate", "mo_count", "mo_to", "mo_text", "mo_long_share", "reply_share", "reply_delay",
                  "reply_text")


__all__ = [
    "HANDSET_FIELDS",
    "CarrierSpec",
    "Fleet",
    "FleetFile",
    "SpecError",
    "build_carrier",
    "check_fleet",
    "demo_specs",
    "derive_seed",
    "fleet_from_data",
    "handsets_for",
    "load_fleet_file",
    "parse_carrier_flag",
    "parse_status",
    "spec_from_mapping",
    "start_fleet",
]
