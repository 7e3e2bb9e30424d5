"""The wheel's packages and package data, derived from the source tree.

``pyproject.toml`` holds the metadata and the ``package-dir`` mapping (``hal.backends`` is the
repository's ``backends/``, ``hal.models`` its ``models/``, ``hal.backends.fpga.bitstreams`` its
``bitstreams/``). This file walks each mapped folder: every folder with an ``__init__.py`` under
it is a package, and every other file (a kernel source, weights, a manifest, a whole folder such
as ``bitstreams/hal_int8/`` with its scripts) is package data of the nearest package above it.
Nothing is listed by hand, so a new module or data file ships without an edit here.

Left out: build outputs and caches (``EXCLUDED_DIRS``, ``EXCLUDED_SUFFIXES``) and dot files.
``tests/test_packaging.py`` builds the wheel and checks it against the files git tracks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

if sys.version_info >= (3, 11):
    import tomllib
else:  # build-system requires tomli there
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
EXCLUDED_DIRS = {"build", "dist", "__pycache__"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info")


def _kept(name: str) -> bool:
    return not (name.startswith(".") or name in EXCLUDED_DIRS or name.endswith(EXCLUDED_SUFFIXES))


def _walk(package: str, folder: Path, roots: dict[str, str],
          packages: list[str], data: dict[str, list[str]]) -> None:
    """Add ``package`` (in ``folder``), its data files and its subpackages."""
    packages.append(package)
    files: list[str] = []
    for entry in sorted(folder.iterdir()):
        if not _kept(entry.name):
            continue
        sub = f"{package}.{entry.name}"
        if entry.is_dir() and sub in roots:
            continue  # mapped elsewhere: walked from its own root
        if entry.is_dir() and (entry / "__init__.py").is_file():
            _walk(sub, entry, roots, packages, data)
        elif entry.is_dir():
            files += [f"{entry.name}/{f}" for f in _data_files(entry)]
        elif entry.suffix != ".py":
            files.append(entry.name)
    if files:
        data[package] = files


def _data_files(folder: Path) -> list[str]:
    """Every kept file under a folder that is not a package, relative to it."""
    out = []
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if _kept(d))
        rel = Path(top).relative_to(folder)
        out += [(rel / n).as_posix() for n in sorted(names) if _kept(n)]
    return out


def derived() -> tuple[list[str], dict[str, list[str]]]:
    """(packages, package_data) of every folder named in pyproject's ``package-dir``."""
    with open(HERE / "pyproject.toml", "rb") as f:
        roots = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    packages: list[str] = []
    data: dict[str, list[str]] = {}
    for package, folder in roots.items():
        _walk(package, HERE / folder, roots, packages, data)
    return sorted(packages), data


if __name__ == "__main__":
    packages, package_data = derived()
    setup(packages=packages, package_data=package_data)
