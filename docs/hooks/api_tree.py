"""MkDocs hook: lay out the sources as the installed package for the API pages.

``pyproject.toml`` maps ``hal.backends`` onto ``backends/``, ``hal.models`` onto ``models/``
and so on (``package-dir``); the docstring reader (griffe, under mkdocstrings) finds packages
by folder and knows no such mapping. Before each build this hook writes ``build/docs-api/``:
the ``hal`` package as a wheel installs it, made of symbolic links to the source files, so the
API pages read the same files the tests run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mkdocs.plugins import event_priority

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "build" / "docs-api"


def _source(package: str, mapping: dict[str, str]) -> Path:
    if package in mapping:
        return ROOT / mapping[package]
    parent, _, name = package.rpartition(".")
    return _source(parent, mapping) / name if parent else ROOT / package


def _lay(package: str, target: Path, mapping: dict[str, str], expanded: set[str]) -> None:
    """``target`` as the folder of ``package``: a link per entry, a folder per mapped child."""
    target.mkdir(parents=True)
    source = _source(package, mapping)
    children = {e.name for e in source.iterdir() if e.name != "__pycache__"}
    children |= {p.rpartition(".")[2] for p in expanded if p.rpartition(".")[0] == package}
    for name in sorted(children):
        child = f"{package}.{name}"
        if child in expanded:
            _lay(child, target / name, mapping, expanded)
        else:
            (target / name).symlink_to(source / name)


@event_priority(100)  # before mkdocstrings reads its search paths
def on_config(config):
    with open(ROOT / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    # every mapped package and its ancestors get a folder of their own
    expanded = {".".join(p.split(".")[:i + 1]) for p in mapping for i in range(p.count(".") + 1)}
    shutil.rmtree(TREE, ignore_errors=True)
    for top in sorted({p.split(".")[0] for p in mapping}):
        _lay(top, TREE / top, mapping, expanded)
    return config
