"""Dependency direction: isa imports neither lpuc nor emulator; emulator never imports lpuc."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FORBIDDEN = {"isa": {"lpuc", "emulator"}, "emulator": {"lpuc"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package):
    bad = {}
    for path in (ROOT / package).rglob("*.py"):
        hits = imported_packages(path) & FORBIDDEN[package]
        if hits:
            bad[str(path.relative_to(ROOT))] = sorted(hits)
    assert not bad, bad


def test_no_chip_figures_in_code():
    """Chip parameters live in the config files: no lane count or latency literal stands in code."""
    for package in ("isa", "lpuc", "emulator"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for needle in ("lanes = 320", "lanes=320", "= 900.0", "clock_mhz = 900"):
                assert needle not in text, (path, needle)
