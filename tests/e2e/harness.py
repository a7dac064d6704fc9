"""Start a real hub and a real simulator on 127.0.0.1 for one test."""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import defer, reactor, task

from staffetta.billing.accounts import create_account, upgrade
from staffetta.billing.wallet import topup
from staffetta.conf.settings import HlrSettings, SessionSettings, Settings, UpstreamSettings
from staffetta.simulator.carrier import Carrier
from staffetta.smsc.app import Hub
from staffetta.store.db import create_schema, make_engine

SIM_USER, SIM_PASS = "hubuser", "hubpass"


class Env:
    def __init__(self, data_dir: str, carrier: Carrier, carrier_port, settings: Settings) -> None:
        self.data_dir = data_dir
        self.carrier = carrier
        self.carrier_port = carrier_port
        self.settings = settings
        self.hub: Hub | None = None

    @property
    def port(self) -> int:
        return self.hub.smpp_port

    def start_hub(self) -> Hub:
        self.hub = Hub(self.settings, reactor)
        self.hub.start()
        return self.hub

    @defer.inlineCallbacks
    def stop_hub(self):
        if self.hub is not None:
            yield self.hub.stop()
            # Let the connections' close callbacks run before the next hub starts.
            yield task.deferLater(reactor, 0.05, lambda: None)
            self.hub = None

    @defer.inlineCallbacks
    def stop(self):
        yield self.stop_hub()
        for s in list(getattr(self.carrier, "sessions", [])):
            if s.transport is not None:
                s.transport.loseConnection()
        yield self.carrier_port.stopListening()


#: Enough credit that a test never runs dry unless it means to (centi-credits).
PLENTY = 100_000_000


def make_env(data_dir: str, *, dlr_delay: float = 0.01, accounts=(("demo", "demo"),),
             session: SessionSettings | None = None, billing: dict | None = None,
             hlr: HlrSettings | None = None, **carrier_kw) -> Env:
    """accounts: (name, password) or (name, password, credit in centi-credits, {create_account options})."""
    carrier = Carrier(reactor, dlr_delay=dlr_delay, credentials={SIM_USER.encode(): SIM_PASS.encode()},
                      **carrier_kw)
    port = carrier.listen(0)
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=data_dir,
        metrics_listen="127.0.0.1:0",
        session=session or SessionSettings(),
        billing=billing,
        hlr=hlr or HlrSettings(),
        upstreams=(
            UpstreamSettings("sim", "127.0.0.1", port.getHost().port, SIM_USER, SIM_PASS,
                             reconnect_min=0.05, reconnect_max=0.5),
        ),
    )
    engine = make_engine(settings.db_url)
    import staffetta.router.messages  # noqa: F401

    create_schema(engine)
    upgrade(engine)
    with engine.begin() as conn:
        for name, pw, *rest in accounts:
            credit = rest[0] if rest else PLENTY
            options = rest[1] if len(rest) > 1 else {}
            acct = create_account(conn, name, pw, **options)
            if credit:
                topup(conn, acct.id, credit, method="test")
    engine.dispose()
    env = Env(data_dir, carrier, port, settings)
    env.start_hub()
    return env


def with_settings(env: Env, **kw) -> None:
    env.settings = replace(env.settings, **kw)


@defer.inlineCallbacks
def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01):
    """Wait for a condition of the system under test (not a fixed sleep)."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError("condition not reached in time")
        yield task.deferLater(reactor, interval, lambda: None)
        waited += interval


def with_timeout(d: defer.Deferred, seconds: float = 10.0) -> defer.Deferred:
    return d.addTimeout(seconds, reactor)
