"""The wheel installs one top-level package, ``staffetta`` (issue 11: one namespace on install).

Seven of our folder names are other PyPI projects; pip overwrites files silently
when two distributions ship one path, so nothing of ours may be top-level.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_has_one_top_level_package(tmp_path):
    had_build = (ROOT / "build").exists()
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", str(tmp_path), str(ROOT)],
            check=True, capture_output=True, timeout=300,
        )
    finally:
        if not had_build:  # setuptools builds in the source tree; leave it as it was
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = tmp_path.glob("staffetta-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"staffetta"}
    # Every package of the design card is inside it, with its modules.
    for pkg in ("pdu", "conf", "store", "billing", "hlr", "router", "smsc", "simulator"):
        assert f"staffetta/{pkg}/__init__.py" in names
    assert "staffetta/pdu/codec.py" in names
    assert "staffetta/conf/staffetta.example.yaml" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "staffetta = staffetta.smsc.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_version_flag():
    out = subprocess.run([sys.executable, "-m", "staffetta.smsc.cli", "--version"],
                         capture_output=True, text=True, timeout=60, check=True)
    from staffetta import __version__

    assert out.stdout.strip() == f"staffetta {__version__}"
    assert __version__ != "0+unknown"
