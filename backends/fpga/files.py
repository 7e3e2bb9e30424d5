"""Where an accelerator's folder (``bitstreams/<name>/``) is.

The folder is package data of ``hal.backends.fpga.bitstreams``: ``pyproject.toml`` maps that
package onto the repository's ``bitstreams/`` and ships its sources, manifest and golden
vectors, so one lookup through ``importlib.resources`` serves a source checkout, an editable
install and a wheel alike. Running from a plain checkout without installing, the folder is
found next to ``backends/``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from hal.errors import BackendError

DEFAULT = "hal_int8"


def bitstreams_root() -> Path:
    try:
        root = Path(str(importlib.resources.files("hal.backends.fpga.bitstreams")))
        if root.is_dir():
            return root
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "bitstreams"


def accelerator_dir(name: str = DEFAULT) -> Path:
    """``bitstreams/<name>``; BackendError if this installation lacks it."""
    path = bitstreams_root() / name
    if not (path / "manifest.json").is_file():
        raise BackendError(f"FPGA accelerator {name!r} not found (looked for {path}/manifest.json);"
                           " reinstall hal-accel, or run from a checkout that has bitstreams/")
    return path
