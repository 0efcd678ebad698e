"""What a non-editable install ships: every Python package and every data file the code reads.

An editable install runs from the checkout, so a package missing from the wheel shows only once
installed (``.ci/run`` builds the wheel and sdist and runs lpuc from them); this test catches the
usual causes without building anything: a folder of modules without ``__init__.py``, which
setuptools' package finding skips, and package-data patterns that match nothing.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_folder_of_modules_is_a_package_found_by_setuptools():
    find = CONFIG["tool"]["setuptools"]["packages"]["find"]
    found = set(find_packages(str(ROOT), include=find["include"]))
    want = set()
    for top in ("isa", "lpuc", "emulator"):
        for py in (ROOT / top).rglob("*.py"):
            if "__pycache__" not in py.parts:
                want.add(".".join(py.parent.relative_to(ROOT).parts))
    assert want >= {"lpuc.passes", "lpuc.ops", "emulator.units"}
    assert want <= found, f"not packages (add __init__.py): {sorted(want - found)}"
    assert not any(p.startswith(("tests", "bench", "examples", "docs")) for p in found)


def test_package_data_patterns_cover_the_data_files():
    data = CONFIG["tool"]["setuptools"]["package-data"]["isa"]
    shipped = {p for pattern in data for p in (ROOT / "isa").glob(pattern)}
    needed = {ROOT / "isa" / "asm.lark", ROOT / "isa" / "ISA.md", *(ROOT / "isa" / "configs").rglob("*.toml")}
    assert needed <= shipped, sorted(map(str, needed - shipped))
