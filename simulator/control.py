"""A small HTTP control for a running simulator: look at it and poke it from outside.

Tests in the same process call :class:`simulator.carrier.Carrier` directly;
this is for a simulator started by ``staffetta simulator`` (manual runs, e2e
scripts in other processes, benchmarks). JSON in, JSON out::

    GET  /stats             counters, queue sizes, sessions
    POST /mo                {"source", "destination", "text", "data_coding"?, "esm_class"?,
                             "system_id"?, "wait"?, "multipart"?, "order"?}  -> inject an MO
                            (multipart: udh8|udh16|sar, order: reverse|shuffle|last_first|in_order
                             or a list of part numbers: a long MO cut in parts, sent in that order)
    POST /script            {"prefix", "submit_status"?, "stat"?, "err"?, "delay"?,
                             "respond"?, "answer"?}  -> add/replace a rule
    GET  /script            the rules
    DELETE /script          remove every rule
    POST /fault             {"kind"}  -> send a fault fixture to every bound session

Every error is a 400 with ``{"error": "..."}`` naming the field.

A fleet (simulator/fleet.py) serves the same endpoints per carrier under its
name (``/NAME/stats``, ``/NAME/mo``, ...), ``POST /NAME/down`` and
``POST /NAME/up`` (a dead carrier and its return) and ``GET /stats`` for all.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web import resource, server

from staffetta.pdu.constants import status_name
from staffetta.simulator.carrier import Carrier


class BadRequest(ValueError):
    pass


def _body(request: server.Request) -> dict[str, Any]:
    raw = request.content.read() if request.content is not None else b""
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in data or data[name] is None:
        if default is ...:
            raise BadRequest(f"{name}: required")
        return default
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # JSON true/false are Python bools, which are ints: refuse them for numbers.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise BadRequest(f"{name}: expected {kinds[0].__name__}, got {type(value).__name__}")
    return value


def _json(request: server.Request, code: int, payload: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode() + b"\n"


class _Endpoint(resource.Resource):
    isLeaf = True

    def __init__(self, carrier: Carrier) -> None:
        super().__init__()
        self.carrier = carrier

    def _guard(self, request: server.Request, fn: Any) -> Any:
        try:
            return fn(request)
        except (BadRequest, ValueError) as exc:
            return _json(request, 400, {"error": str(exc)})


class StatsResource(_Endpoint):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 - twisted.web's name
        return _json(request, 200, self.carrier.snapshot())


class MoResource(_Endpoint):
    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        return self._guard(request, self._post)

    def _post(self, request: server.Request) -> Any:
        data = _body(request)
        source = _field(data, "source", str)
        destination = _field(data, "destination", str)
        text = _field(data, "text", str)
        dc = _field(data, "data_coding", int, 0)
        esm = _field(data, "esm_class", int, 0)
        sid = _field(data, "system_id", str, None)
        wait = _field(data, "wait", bool, False)
        form = _field(data, "multipart", str, None)
        order = _field(data, "order", (str, list), "reverse")
        if not 0 <= dc <= 255:
            raise BadRequest("data_coding: must be 0-255")
        if not 0 <= esm <= 255:
            raise BadRequest("esm_class: must be 0-255")
        d: Any
        if form is not None:
            from staffetta.simulator.handsets import multipart_mo

            try:
                d = multipart_mo(self.carrier, source, destination, text, form=form, order=order, system_id=sid)
            except ValueError as exc:
                raise BadRequest(f"multipart/order/source/destination: {exc}") from None
        else:
            try:
                d = self.carrier.inject_mo(source, destination, text, data_coding=dc, esm_class=esm,
                                           system_id=sid)
            except ValueError as exc:
                raise BadRequest(f"text/source/destination: {exc}") from None
        if not wait:
            d.addErrback(lambda _f: None)  # nobody waits: a dropped MO is only counted
            return _json(request, 202, {"queued": True})

        finished = [False]
        request.notifyFinish().addErrback(lambda _f: finished.__setitem__(0, True))

        def done(status: int | list[int]) -> None:
            if finished[0]:
                return
            if isinstance(status, list):  # a multipart MO: one status per part, in part order
                body = {"statuses": status, "status_names": [status_name(s) for s in status]}
            else:
                body = {"status": status, "status_name": status_name(status)}
            request.write(_json(request, 200, body))
            request.finish()

        def failed(f: Failure) -> None:
            if not finished[0]:
                request.write(_json(request, 503, {"error": f.getErrorMessage()}))
                request.finish()

        d.addCallbacks(done, failed)
        return server.NOT_DONE_YET


class ScriptResource(_Endpoint):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        return _json(request, 200, [r.as_dict() for r in self.carrier.rules])

    def render_DELETE(self, request: server.Request) -> bytes:  # noqa: N802
        self.carrier.clear_scripts()
        return _json(request, 200, {"cleared": True})

    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        return self._guard(request, self._post)

    def _post(self, request: server.Request) -> bytes:
        data = _body(request)
        known = {"prefix", "submit_status", "stat", "err", "delay", "respond", "answer"}
        extra = set(data) - known
        if extra:
            raise BadRequest(f"{sorted(extra)[0]}: unknown field (expected {', '.join(sorted(known))})")
        delay = _field(data, "delay", (int, float), None)
        rule = self.carrier.script(
            _field(data, "prefix", str),
            submit_status=_field(data, "submit_status", int, 0),
            stat=_field(data, "stat", str, None),
            delay=None if delay is None else float(delay),
            respond=_field(data, "respond", bool, True),
            err=_field(data, "err", int, None),
            answer=_field(data, "answer", str, None),
        )
        return _json(request, 200, rule.as_dict())


class FaultResource(_Endpoint):
    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        return self._guard(request, self._post)

    def _post(self, request: server.Request) -> bytes:
        kind = _field(_body(request), "kind", str)
        n = self.carrier.fault(kind)
        return _json(request, 200, {"kind": kind, "sessions": n})


def carrier_resource(carrier: Carrier) -> resource.Resource:
    """The control endpoints of one carrier, as children of one resource."""
    root = resource.Resource()
    root.putChild(b"stats", StatsResource(carrier))
    root.putChild(b"mo", MoResource(carrier))
    root.putChild(b"script", ScriptResource(carrier))
    root.putChild(b"fault", FaultResource(carrier))
    return root


def _site(root: resource.Resource) -> server.Site:
    site = server.Site(root)
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


def control_site(carrier: Carrier) -> server.Site:
    """The twisted.web Site serving the control endpoints (no access log)."""
    return _site(carrier_resource(carrier))


class FleetStatsResource(resource.Resource):
    isLeaf = True

    def __init__(self, fleet: Any) -> None:
        super().__init__()
        self.fleet = fleet

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        return _json(request, 200, self.fleet.snapshot())


class UpDownResource(resource.Resource):
    """``POST /NAME/down`` kills a fleet carrier (connects refused), ``POST /NAME/up`` revives it."""

    isLeaf = True

    def __init__(self, fleet: Any, name: str, up: bool) -> None:
        super().__init__()
        self.fleet, self.name, self.up = fleet, name, up

    def render_POST(self, request: server.Request) -> bytes:  # noqa: N802
        fleet, name = self.fleet, self.name
        if self.up != (not fleet.is_up(name)):
            return _json(request, 409, {"error": f"{name} is already {'up' if self.up else 'down'}"})
        if self.up:
            fleet.up(name)
        else:
            fleet.down(name)
        return _json(request, 200, {"carrier": name, "up": self.up, "port": fleet.port(name)})


def fleet_control_site(fleet: Any) -> server.Site:
    """``/NAME/...`` per carrier of a :class:`simulator.fleet.Fleet` (plus up/down), ``/stats`` for all."""
    root = resource.Resource()
    root.putChild(b"stats", FleetStatsResource(fleet))
    for name, carrier in fleet.carriers.items():
        child = carrier_resource(carrier)
        child.putChild(b"down", UpDownResource(fleet, name, False))
        child.putChild(b"up", UpDownResource(fleet, name, True))
        root.putChild(name.encode("ascii"), child)
    return _site(root)


def listen_control(carrier: Carrier, port: int, interface: str = "127.0.0.1") -> IListeningPort:
    """Serve the control API on ``interface:port`` with the carrier's reactor."""
    return carrier.reactor.listenTCP(port, control_site(carrier), interface=interface)


def listen_fleet_control(fleet: Any, port: int, interface: str = "127.0.0.1") -> IListeningPort:
    """Serve a fleet's control API on ``interface:port``."""
    return fleet.reactor.listenTCP(port, fleet_control_site(fleet), interface=interface)


__all__ = ["carrier_resource", "control_site", "fleet_control_site", "listen_control", "listen_fleet_control"]
