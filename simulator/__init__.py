"""The bundled SMSC simulator (a scriptable upstream carrier) and the benchmark load client.

Imports only :mod:`pdu` and third-party libraries: it stands in for systems
that are not ours, so it must share no rule with the hub it tests.

* :mod:`simulator.carrier` - :class:`~simulator.carrier.Carrier`, the simulated SMSC;
* :mod:`simulator.faults` - a carrier's misbehaviour on submits, magic destinations (sans-IO);
* :mod:`simulator.fleet` - several carriers and one HLR: :class:`~simulator.fleet.CarrierSpec`,
  :func:`~simulator.fleet.start_fleet`;
* :mod:`simulator.hlr` - the HLR lookup API;
* :mod:`simulator.control` - its small HTTP control API;
* :mod:`simulator.loadclient` - :func:`~simulator.loadclient.run_load`, the load-generating ESME;
* :mod:`staffetta.simulator.cli` - ``staffetta simulator`` and ``staffetta bench``.

See docs/simulator.md.
"""
