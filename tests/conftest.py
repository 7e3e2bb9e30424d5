"""One suite, every device: tests that take ``device`` run once per usable device."""

from __future__ import annotations

import os

import pytest

# HAL's processes must never load Debian's system PoCL next to TensorFlow (LLVM clash).
os.environ.setdefault("HAL_TEST", "1")
# A bare "cpu" takes the fixed priority order in the suite: measured selection would compile
# and time every CPU backend for each new model (tests/test_selection.py turns it back on).
os.environ.setdefault("HAL_SELECT", "priority")


def _usable_devices() -> list[str]:
    """Every usable device that compiles fp32 models (the suite's models are fp32; int8-only
    devices such as fpga@emu are checked by their own tests, e.g. tests/test_fpga_backend.py)."""
    import hal

    return sorted(d.string for d in hal.devices() if d.usable and not d.alias_of
                  and "fp32" in hal.device(d.string).backend.precisions)


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("hal_device", None)
        devs = [chosen] if chosen else _usable_devices()
        metafunc.parametrize("device", devs)


@pytest.fixture(scope="session")
def zoo():
    import hal

    return {n: hal.models.get(n) for n in hal.models.list()}
