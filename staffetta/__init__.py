"""Staffetta, a carrier-facing SMPP 3.4 hub.

Installed, every package lives under this one name (``staffetta.pdu``,
``staffetta.router``, ...), so that ``pip install`` never writes a bare
``router`` or ``conf`` into site-packages. In the repository the packages stay
top-level folders, as the design card lays them out; ``setup.cfg`` maps them
here with ``package_dir``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("staffetta")
except PackageNotFoundError:  # pragma: no cover - run from a tree that was never installed
    __version__ = "0+unknown"
