"""The simulator's HLR: a vendor-like JSON lookup API over HTTP, deterministic per seed.

It stands in for a foreign system (an HLR/MNP vendor), so it speaks its own
JSON, not the hub's: the hub reads it through its generic HTTP provider with
a field-mapping preset, exactly as it would read a real vendor. ::

    GET    /lookup?msisdn=393331234567       (or POST /lookup {"msisdn": "393331234567"})
      200 {"msisdn": "393331234567",
           "result": "DELIVERED" | "ABSENT" | "UNKNOWN_SUBSCRIBER" | "NOT_MOBILE",
           "serving": {"mccmnc": "22210", "name": "Vodafone"} | null,
           "home":    {"mccmnc": "22201", "name": "TIM"} | null,
           "ported": true, "roaming": {"country": "FR"} | null}
      400 {"error": ...}  msisdn missing or not digits
      401 {"error": ...}  a token is configured and the Authorization header is not "Bearer TOKEN"
      500 {"error": "simulated failure"}  with probability error_rate
      503 {"error": "down"}  while down
    GET    /stats           counters (calls, per status, errors, in flight)
    DELETE /stats           reset the counters
    POST   /config          {"latency"?, "error_rate"?, "down"?, "seed"?} -> the new settings

Answers: a number that ``phonenumbers`` does not take for a valid mobile is
``NOT_MOBILE``. Otherwise a hash of (seed, number) decides: ``p_unknown`` of
numbers are unknown, ``p_absent`` absent, the rest delivered; ``p_ported`` of
them are served by another network of their country than their prefix's;
``p_roaming`` of the delivered ones are roaming abroad. The same seed gives
the same answers, in any order, in any process. A CSV of fixed answers
(``number,status,mcc,mnc,network,ported,original_mcc,original_mnc,
original_network,roaming_country``; status ``valid|absent|unknown|invalid``
or the wire names) overrides the rules for its numbers.

Served prefixes (:meth:`HlrSimulator.serve`, what a fleet carrier's
``mccmnc`` and ``serves`` say): a number under a served prefix is, for the
given share of such numbers (decided by a hash of seed and number), a live
subscriber (``DELIVERED``) whose serving network is that MCC-MNC; when that is
not its prefix's home network it is ``ported``. So one carrier of a fleet can
be the network that serves another network's numbers, and a routing test can
send a ported number to it. The longest served prefix wins; fixed answers
still come first.

Every answer waits ``latency`` seconds (``reactor.callLater``: the simulator
never blocks), so timeouts and concurrency limits can be exercised.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from functools import lru_cache
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import carrier as pn_carrier
from twisted.internet.interfaces import IListeningPort
from twisted.web import resource, server

DELIVERED, ABSENT, UNKNOWN, NOT_MOBILE = "DELIVERED", "ABSENT", "UNKNOWN_SUBSCRIBER", "NOT_MOBILE"
_CSV_STATUS = {
    "valid": DELIVERED, "delivered": DELIVERED, "absent": ABSENT, "unknown": UNKNOWN,
    "unknown_subscriber": UNKNOWN, "invalid": NOT_MOBILE, "not_mobile": NOT_MOBILE,
}
_MOBILE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
#: Track per-number call counts for at most this many numbers (bounded memory).
MAX_TRACKED = 1_000_000

#: region -> (MCC, [(MNC, network name), ...]). Enough to look real; others get MCC 001.
NETWORKS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "IT": ("222", [("01", "TIM"), ("10", "Vodafone"), ("88", "WindTre"), ("50", "Iliad")]),
    "GB": ("234", [("15", "Vodafone UK"), ("10", "O2 UK"), ("30", "EE"), ("20", "Three UK")]),
    "DE": ("262", [("01", "Telekom"), ("02", "Vodafone DE"), ("03", "O2 DE")]),
    "FR": ("208", [("01", "Orange"), ("10", "SFR"), ("20", "Bouygues"), ("15", "Free Mobile")]),
    "ES": ("214", [("07", "Movistar"), ("01", "Vodafone ES"), ("03", "Orange ES"), ("04", "Yoigo")]),
    "CH": ("228", [("01", "Swisscom"), ("02", "Sunrise"), ("03", "Salt")]),
    "AT": ("232", [("01", "A1"), ("03", "Magenta"), ("05", "Drei")]),
    "NL": ("204", [("08", "KPN"), ("16", "Odido"), ("04", "Vodafone NL")]),
    "BE": ("206", [("01", "Proximus"), ("10", "Orange BE"), ("20", "Base")]),
    "PT": ("268", [("06", "MEO"), ("01", "Vodafone PT"), ("03", "NOS")]),
    "PL": ("260", [("01", "Plus"), ("02", "T-Mobile PL"), ("03", "Orange PL"), ("06", "Play")]),
    "RO": ("226", [("10", "Orange RO"), ("01", "Vodafone RO"), ("03", "Telekom RO")]),
    "US": ("310", [("410", "AT&T"), ("260", "T-Mobile US"), ("012", "Verizon")]),
    "BR": ("724", [("05", "Claro"), ("06", "Vivo"), ("02", "TIM Brasil")]),
    "IN": ("404", [("10", "Airtel"), ("20", "Vodafone Idea")]),
    "SM": ("292", [("01", "San Marino Telecom")]),
}
#: phonenumbers' prefix carrier names that differ from ours.
_ALIASES = {"t-mobile": "Telekom", "wind": "WindTre", "3": "WindTre", "h3g": "WindTre", "e-plus": "O2 DE",
            "o2": "O2 UK", "orange": "Orange", "free": "Free Mobile", "bouygues telecom": "Bouygues"}
_ROAMING = ("FR", "DE", "ES", "GB", "CH", "US", "AT", "GR")


def network_name(mccmnc: str) -> str:
    """Our name of network ``mccmnc`` (from :data:`NETWORKS`), or ``"MCCMNC <mccmnc>"``."""
    for mcc, nets in NETWORKS.values():
        if mccmnc.startswith(mcc):
            for mnc, name in nets:
                if mcc + mnc == mccmnc:
                    return name
    return f"MCCMNC {mccmnc}"


def _uniforms(seed: int, number: str) -> tuple[float, float, float, float]:
    h = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return tuple(int.from_bytes(h[i:i + 8], "big") / 2**64 for i in (0, 8, 16, 24))  # type: ignore[return-value]


@lru_cache(maxsize=200_000)
def _mobile_region(number: str) -> tuple[str, str] | None:
    """(region, carrier name by prefix) for a valid mobile number, else None."""
    try:
        num = phonenumbers.parse("+" + number)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.number_type(num) not in _MOBILE:  # UNKNOWN for an invalid number
        return None
    region = phonenumbers.region_code_for_number(num) or "ZZ"
    return region, pn_carrier.name_for_valid_number(num, "en") or ""


def _home(region: str, prefix_name: str, u: float) -> tuple[str, str, str, list[tuple[str, str]]]:
    mcc, nets = NETWORKS.get(region, ("001", [("01", f"{region} Mobile"), ("02", f"{region} Mobile 2")]))
    pick = None
    low = prefix_name.lower()
    alias = _ALIASES.get(low)
    if alias is not None:
        pick = next((n for n in nets if n[1] == alias), None)
    if low and pick is None:
        for mnc, name in nets:
            n = name.lower()
            if n.startswith(low) or low.startswith(n.split()[0]) or n.split()[0] in low:
                pick = (mnc, name)
                break
    if pick is None:
        pick = nets[int(u * len(nets)) % len(nets)]
    return mcc, pick[0], pick[1], nets


class HlrSimulator:
    """The rule set, the fixed answers, the counters; :meth:`listen` serves it over HTTP."""

    def __init__(
        self,
        reactor: Any,
        *,
        seed: int = 0,
        latency: float = 0.0,
        error_rate: float = 0.0,
        p_absent: float = 0.04,
        p_unknown: float = 0.03,
        p_ported: float = 0.12,
        p_roaming: float = 0.03,
        csv_path: str | None = None,
        token: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.seed = seed
        self.latency = latency
        self.error_rate = error_rate
        self.down = False
        self.p_absent = p_absent
        self.p_unknown = p_unknown
        self.p_ported = p_ported
        self.p_roaming = p_roaming
        self.token = token
        self.fixed: dict[str, dict[str, Any]] = {}
        #: prefix -> (mccmnc, network name, share): see :meth:`serve`.
        self.served: dict[str, tuple[str, str, float]] = {}
        self._served_lengths: list[int] = []
        self._rng = random.Random(seed)
        self.ports: list[IListeningPort] = []
        self._pending: set[Any] = set()
        self.reset()
        if csv_path:
            self.load_csv(csv_path)

    # --------------------------------------------------------------- answers

    def answer(self, msisdn: str) -> dict[str, Any]:
        """The wire answer for ``msisdn`` (digits); pure: no counters, no randomness."""
        fixed = self.fixed.get(msisdn)
        if fixed is not None:
            return fixed
        if self.served:
            answer = self._served_answer(msisdn)
            if answer is not None:
                return answer
        found = _mobile_region(msisdn)
        if found is None:
            return {"msisdn": msisdn, "result": NOT_MOBILE, "serving": None, "home": None,
                    "ported": False, "roaming": None}
        region, prefix_name = found
        u_status, u_net, u_port, u_roam = _uniforms(self.seed, msisdn)
        mcc, mnc, name, nets = _home(region, prefix_name, u_net)
        home = {"mccmnc": mcc + mnc, "name": name}
        ported = False
        serving = dict(home)
        if u_port < self.p_ported and len(nets) > 1:
            others = [n for n in nets if n[0] != mnc]
            smnc, sname = others[int(u_net * 997) % len(others)]
            serving = {"mccmnc": mcc + smnc, "name": sname}
            ported = True
        if u_status < self.p_unknown:
            result = UNKNOWN
            serving = None
        elif u_status < self.p_unknown + self.p_absent:
            result = ABSENT
        else:
            result = DELIVERED
        roaming = None
        if result == DELIVERED and u_roam < self.p_roaming:
            choices = [c for c in _ROAMING if c != region]
            roaming = {"country": choices[int(u_roam * 7919) % len(choices)]}
        return {"msisdn": msisdn, "result": result, "serving": serving, "home": home,
                "ported": ported, "roaming": roaming}

    def serve(self, prefix: str, mccmnc: str, name: str | None = None, share: float = 1.0) -> None:
        """Numbers under ``prefix`` are served by network ``mccmnc`` (``share`` of them, seeded).

        The numbers picked are the same for the same seed, in any order and
        any process; a later call for the same prefix replaces the earlier.
        """
        if not prefix.isdigit():
            raise ValueError(f"prefix: {prefix!r} is not digits")
        if not (mccmnc.isdigit() and len(mccmnc) in (5, 6)):
            raise ValueError(f"mccmnc: {mccmnc!r} is not 5 or 6 digits (MCC + MNC)")
        if not 0 < share <= 1:
            raise ValueError(f"share: {share!r} is not a share in (0, 1]")
        self.served[prefix] = (mccmnc, name or network_name(mccmnc), float(share))
        self._served_lengths = sorted({len(p) for p in self.served}, reverse=True)

    def _served_answer(self, msisdn: str) -> dict[str, Any] | None:
        for n in self._served_lengths:
            rule = self.served.get(msisdn[:n]) if len(msisdn) >= n else None
            if rule is None:
                continue
            mccmnc, name, share = rule
            if share < 1:
                h = hashlib.sha256(f"{self.seed}:serve:{msisdn}".encode()).digest()
                if int.from_bytes(h[:8], "big") / 2**64 >= share:
                    return None
            found = _mobile_region(msisdn)
            home = None
            if found is not None:
                u_net = _uniforms(self.seed, msisdn)[1]
                hmcc, hmnc, hname, _nets = _home(found[0], found[1], u_net)
                home = {"mccmnc": hmcc + hmnc, "name": hname}
            serving = {"mccmnc": mccmnc, "name": name}
            return {"msisdn": msisdn, "result": DELIVERED, "serving": serving,
                    "home": home or dict(serving), "ported": home is not None and home["mccmnc"] != mccmnc,
                    "roaming": None}
        return None

    def fix(self, number: str, status: str = "valid", *, mcc: str | None = None, mnc: str | None = None,
            network: str | None = None, ported: bool = False, original_mcc: str | None = None,
            original_mnc: str | None = None, original_network: str | None = None,
            roaming_country: str | None = None) -> dict[str, Any]:
        """Fix the answer for one number (what a CSV row does); returns the wire answer."""
        result = _CSV_STATUS.get(status.strip().lower())
        if result is None:
            raise ValueError(f"status: {status!r} is not one of valid, absent, unknown, invalid")
        serving = {"mccmnc": (mcc or "") + (mnc or ""), "name": network} if mcc and mnc else None
        home = (
            {"mccmnc": original_mcc + original_mnc, "name": original_network}
            if original_mcc and original_mnc else serving
        )
        answer = {"msisdn": number, "result": result, "serving": serving, "home": home,
                  "ported": bool(ported), "roaming": {"country": roaming_country} if roaming_country else None}
        self.fixed[number] = answer
        return answer

    def load_csv(self, path: str) -> int:
        """Load fixed answers; a header row names the columns (``number`` and ``status`` required)."""
        n = 0
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "number" not in reader.fieldnames or "status" not in reader.fieldnames:
                raise ValueError(f"{path}: the header must name at least number,status")
            for line, row in enumerate(reader, start=2):
                number = (row.get("number") or "").strip().lstrip("+")
                if not number.isdigit():
                    raise ValueError(f"{path}:{line}: number {row.get('number')!r} is not digits")

                def opt(key: str, row: dict = row) -> str | None:
                    v = (row.get(key) or "").strip()
                    return v or None

                try:
                    self.fix(number, row["status"], mcc=opt("mcc"), mnc=opt("mnc"), network=opt("network"),
                             ported=(opt("ported") or "").lower() in ("1", "true", "yes", "y"),
                             original_mcc=opt("original_mcc"), original_mnc=opt("original_mnc"),
                             original_network=opt("original_network"),
                             roaming_country=opt("roaming_country"))
                except ValueError as exc:
                    raise ValueError(f"{path}:{line}: {exc}") from None
                n += 1
        return n

    # -------------------------------------------------------------- counters

    def reset(self) -> None:
        self.calls = 0
        self.per_number: Counter[str] = Counter()
        self.results: Counter[str] = Counter()
        self.errors = 0
        self.rejected = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def calls_for(self, number: str) -> int:
        return self.per_number.get(number, 0)

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls, "results": dict(self.results), "errors": self.errors,
            "rejected": self.rejected, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
            "numbers": len(self.per_number), "seed": self.seed, "latency": self.latency,
            "error_rate": self.error_rate, "down": self.down, "fixed": len(self.fixed),
        }

    def configure(self, *, latency: float | None = None, error_rate: float | None = None,
                  down: bool | None = None, seed: int | None = None) -> None:
        if latency is not None:
            if not latency >= 0:
                raise ValueError("latency: must be >= 0 seconds")
            self.latency = float(latency)
        if error_rate is not None:
            if not 0 <= error_rate <= 1:
                raise ValueError("error_rate: must be between 0 and 1")
            self.error_rate = float(error_rate)
        if down is not None:
            self.down = bool(down)
        if seed is not None:
            self.seed = int(seed)
            self._rng = random.Random(seed)

    # ----------------------------------------------------------------- HTTP

    def handle(self, request: server.Request) -> Any:
        """Serve one GET /lookup; answers after ``latency`` without blocking the reactor."""
        if self.token is not None:
            auth = request.getHeader(b"authorization") or b""
            if auth != b"Bearer " + self.token.encode():
                self.rejected += 1
                return _json(request, 401, {"error": "bad or missing token"})
        raw = (request.args.get(b"msisdn") or [b""])[0].decode("latin-1").strip().lstrip("+")
        if not raw.isdigit() or not 5 <= len(raw) <= 15:
            self.rejected += 1
            return _json(request, 400, {"error": f"msisdn: {raw!r} is not 5-15 digits"})
        self.calls += 1
        if raw in self.per_number or len(self.per_number) < MAX_TRACKED:
            self.per_number[raw] += 1
        if self.down:
            self.errors += 1
            return self._later(request, 503, {"error": "down"})
        if self.error_rate and self._rng.random() < self.error_rate:
            self.errors += 1
            return self._later(request, 500, {"error": "simulated failure"})
        answer = self.answer(raw)
        self.results[answer["result"]] += 1
        return self._later(request, 200, answer)

    def _later(self, request: server.Request, code: int, payload: dict[str, Any]) -> Any:
        if self.latency <= 0:
            return _json(request, code, payload)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        gone = [False]

        def send() -> None:
            self._pending.discard(call)
            self.in_flight -= 1
            if not gone[0]:
                request.write(_json(request, code, payload))
                request.finish()

        def lost(_f: Any) -> None:
            gone[0] = True
            if call.active():
                call.cancel()
                self._pending.discard(call)
                self.in_flight -= 1

        call = self.reactor.callLater(self.latency, send)
        self._pending.add(call)
        request.notifyFinish().addErrback(lost)
        return server.NOT_DONE_YET

    def site(self) -> server.Site:
        return hlr_site(self)

    def listen(self, port: int = 0, interface: str = "127.0.0.1") -> IListeningPort:
        lp = self.reactor.listenTCP(port, self.site(), interface=interface)
        self.ports.append(lp)
        return lp

    @property
    def url(self) -> str:
        """Base URL of the first listening port."""
        addr = self.ports[0].getHost()
        return f"http://{addr.host}:{addr.port}"

    def close(self) -> Any:
        """Stop listening and drop answers still waiting for their latency."""
        from twisted.internet import defer

        for call in list(self._pending):
            if call.active():
                call.cancel()
        self._pending.clear()
        self.in_flight = 0
        ds = [defer.maybeDeferred(p.stopListening) for p in self.ports]
        self.ports = []
        return defer.gatherResults(ds)


def _json(request: server.Request, code: int, payload: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode()


class _Lookup(resource.Resource):
    isLeaf = True

    def __init__(self, sim: HlrSimulator) -> None:
        super().__init__()
        self.sim = sim

    def render_GET(self, request: server.Request) -> Any:  # noqa: N802 - twisted.web's name
        return self.sim.handle(request)

    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        """The same lookup with a JSON body ``{"msisdn": "..."}`` (vendors that want POST)."""
        try:
            data = json.loads(request.content.read() or b"{}")
            msisdn = str(data.get("msisdn", "")) if isinstance(data, dict) else ""
        except ValueError:
            msisdn = ""
        request.args[b"msisdn"] = [msisdn.encode("latin-1", "replace")]
        return self.sim.handle(request)


class _Stats(_Lookup):
    def render_GET(self, request: server.Request) -> Any:  # noqa: N802
        return _json(request, 200, self.sim.snapshot())

    def render_DELETE(self, request: server.Request) -> Any:  # noqa: N802
        self.sim.reset()
        return _json(request, 200, {"reset": True})


class _Config(_Lookup):
    def render_GET(self, request: server.Request) -> Any:  # noqa: N802
        return _json(request, 200, self.sim.snapshot())

    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        try:
            data = json.loads(request.content.read() or b"{}")
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            extra = set(data) - {"latency", "error_rate", "down", "seed"}
            if extra:
                raise ValueError(f"{sorted(extra)[0]}: unknown field")
            for key, kinds in (("latency", (int, float)), ("error_rate", (int, float)),
                               ("down", (bool,)), ("seed", (int,))):
                v = data.get(key)
                if v is not None and (not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds)):
                    raise ValueError(f"{key}: expected {kinds[0].__name__}")
            self.sim.configure(**{k: data.get(k) for k in ("latency", "error_rate", "down", "seed")})
        except ValueError as exc:
            return _json(request, 400, {"error": str(exc)})
        return _json(request, 200, self.sim.snapshot())


def hlr_site(sim: HlrSimulator) -> server.Site:
    """The twisted.web Site of the HLR API (no access log)."""
    root = resource.Resource()
    root.putChild(b"lookup", _Lookup(sim))
    root.putChild(b"stats", _Stats(sim))
    root.putChild(b"config", _Config(sim))
    site = server.Site(root)
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


def listen_hlr(reactor: Any, port: int = 0, interface: str = "127.0.0.1", **kw: Any) -> HlrSimulator:
    """An :class:`HlrSimulator` (``kw`` are its options) listening on ``interface:port``."""
    sim = HlrSimulator(reactor, **kw)
    sim.listen(port, interface)
    return sim


__all__ = ["NETWORKS", "HlrSimulator", "hlr_site", "listen_hlr", "network_name"]
