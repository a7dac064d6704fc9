"""No import runs upward (ARCHITECTURE.md "Layout"): checked on the source, not trusted."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"pdu", "conf", "store", "billing", "hlr", "router", "smsc", "simulator"}
ALLOWED = {
    "pdu": set(),
    "conf": set(),
    "store": set(),
    "billing": {"conf", "pdu", "store"},
    "hlr": {"conf", "pdu", "store"},
    "router": {"conf", "pdu", "store", "billing", "hlr"},
    "smsc": OURS,
    "simulator": {"pdu"},  # it stands in for foreign systems
}


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


def test_no_package_imports_upward():
    bad = []
    for pkg, allowed in ALLOWED.items():
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for m in imports_of(f) - allowed - {pkg}:
                bad.append(f"{f.relative_to(ROOT)} imports {m}")
    assert bad == []


def test_the_check_sees_an_upward_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from smsc.app import Hub\nimport billing.wallet\n")
    assert imports_of(f) == {"smsc", "billing"}
