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


def _package(module: str, names: list[str]) -> set[str]:
    """Our package a dotted import names (``staffetta.router.x`` -> router)."""
    parts = module.split(".")
    if parts[0] != "staffetta":
        return {parts[0]}  # a bare name: only the lint rule stops it, but it still counts here
    if len(parts) > 1:
        return {parts[1]}
    return set(names)  # from staffetta import hlr


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                found |= _package(a.name, [])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= _package(node.module, [a.name for a in node.names])
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
    f.write_text("from staffetta.smsc.app import Hub\nimport staffetta.billing.wallet\nfrom staffetta import hlr\n")
    assert imports_of(f) == {"smsc", "billing", "hlr"}
