"""A real /status endpoint (smsc.status.StatusResource on Twisted) for CLI tests, as a process.

``python -m tests.smsc.status_server STATES.json CONFIG`` serves
``/status/connectors`` from that file (read at every request, so a test
changes the live state by rewriting it) and ``/status/routes`` from the config's
table, on a free port of 127.0.0.1, and prints ``HOST:PORT`` once listening.
A hub cannot be made to show a connector at a given delivery ratio on demand;
smsc/app.py serves the same resource with the hub's callables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.web import resource, server

from staffetta.conf.settings import load
from staffetta.smsc.status import StatusResource, routes_doc


def main(states_path: str, config: str) -> None:
    path = Path(states_path)
    doc = routes_doc(load(config))
    status = StatusResource(lambda: json.loads(path.read_text()), lambda: doc, resource.NoResource())
    port = reactor.listenTCP(0, server.Site(status), interface="127.0.0.1")
    print(f"127.0.0.1:{port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
