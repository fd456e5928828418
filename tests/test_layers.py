"""The package order of issue 15 is enforced: `lint-imports` fails on an upward import.

Each test copies the source packages into a temporary directory, adds one import that runs
against the order, and runs the real `lint-imports` on the copy with this repository's
contracts (``[tool.importlinter]`` of ``pyproject.toml``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
# Lowest first, as the issue orders them; strategies and client share a rank.
ORDER = ["runconfig", "codetasks", "colora", "strategies", "client", "server", "simulations"]


def _copy_tree(tmp_path: Path) -> Path:
    for package in CONFIG["root_packages"]:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=_not_source)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _not_source(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or (Path(directory, n).is_file()
                                                      and not n.endswith(".py"))}  # fmt: skip


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _add_import(tree: Path, importer: str, imported: str) -> None:
    init = tree / importer / "__init__.py"
    init.write_text(init.read_text() + f"\nimport {imported}  # noqa: F401\n")


def test_every_shipped_package_has_a_place_in_the_order():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    layers = {name.strip() for layer in CONFIG["contracts"][0]["layers"] for name in
              layer.split("|")}  # fmt: skip
    assert packages <= layers
    assert set(ORDER) <= layers


def test_the_tree_as_committed_keeps_every_contract(tmp_path):
    result = _lint(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout


# Every package importing the one right above it, plus jumps, the sideways pair and the apps.
UPWARD = [
    *itertools.pairwise(ORDER),
    ("runconfig", "simulations"),
    ("colora", "server"),
    ("client", "strategies"),
    ("server", "client"),
]


@pytest.mark.parametrize(("importer", "imported"), UPWARD)
def test_an_upward_or_sideways_import_breaks_a_contract(tmp_path, importer, imported):
    tree = _copy_tree(tmp_path)
    _add_import(tree, importer, imported)
    result = _lint(tree)
    assert result.returncode != 0
    assert f"{importer} is not allowed to import {imported}" in result.stdout
