"""pyproject.toml against the code: every third-party import is a declared dependency (of the
package or an extra), and tadm bench's default images are package data."""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from pathlib import Path

import pytest

from jobs.bench.images import SAMPLES

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tadm", "pipeline", "jobs")
DISTRIBUTIONS = {"PIL": "pillow"}  # import name -> distribution, where they differ


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def imported_modules() -> set[str]:
    """Top-level names of every module imported anywhere in the packages (also in functions)."""
    names = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_declared():
    project = pyproject()["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    declared = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}
    third_party = imported_modules() - set(sys.stdlib_module_names) - set(PACKAGES)
    assert {"torch", "ray", "PIL", "matplotlib"} <= third_party  # the walk finds them
    missing = {m for m in third_party if DISTRIBUTIONS.get(m, m).lower() not in declared}
    assert missing == set()


def test_bench_samples_are_package_data():
    patterns = pyproject()["tool"]["setuptools"]["package-data"]["jobs"]
    files = [p for p in SAMPLES.rglob("*") if p.is_file()]
    assert len([p for p in files if p.suffix in (".jpg", ".png")]) == 4
    jobs = ROOT / "jobs"
    for path in files:
        rel = path.relative_to(jobs).as_posix()
        assert any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns)
    assert (ROOT / "samples").resolve() == SAMPLES  # the demo's samples/
