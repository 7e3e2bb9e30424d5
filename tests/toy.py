"""The example accelerator of examples/toy_accelerator, registered in-process for tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import hal
from hal.registry import REGISTRY

KIT = Path(__file__).resolve().parent.parent / "examples" / "toy_accelerator"


@pytest.fixture
def toy():
    """The toy backend registered in this process (whether or not the package is installed)."""
    sys.path.insert(0, str(KIT))
    try:
        from hal_toy_accelerator import ToyBackend
    finally:
        sys.path.remove(str(KIT))
    installed = any(r.name == "toy" for r in REGISTRY.records())
    if not installed:
        hal.register_backend(ToyBackend())
    try:
        yield hal.device("toy")
    finally:
        if not installed:
            REGISTRY.unregister("toy")
