"""One suite, every device: tests that take ``device`` run once per usable device."""

from __future__ import annotations

import os

import pytest

# HAL's processes must never load Debian's system PoCL next to TensorFlow (LLVM clash).
os.environ.setdefault("HAL_TEST", "1")


def _usable_devices() -> list[str]:
    import hal

    return sorted(d.string for d in hal.devices() if d.usable)


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("hal_device", None)
        devs = [chosen] if chosen else _usable_devices()
        metafunc.parametrize("device", devs)


@pytest.fixture(scope="session")
def zoo():
    import hal

    return {n: hal.models.get(n) for n in hal.models.list()}
