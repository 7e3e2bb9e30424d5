"""pytest plugin: ``pytest --hal-device=DEV`` runs HAL's conformance kit against DEV.

Registered through the ``pytest11`` entry point, so any environment with HAL
installed has it. The kit (``hal/testing/kit.py``) checks ONNX operator cases
for every op the device's backend declares, every zoo model against
``cpu@reference``, bad inputs, and buffer round trips.
"""

from __future__ import annotations

from pathlib import Path

import pytest

KIT = Path(__file__).with_name("kit.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hal")
    group.addoption("--hal-device", dest="hal_device", default=None, metavar="DEV",
                    help="run HAL's conformance kit against this device (e.g. toy, opencl:0)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hal_kit: HAL's device conformance kit")
    if config.getoption("hal_device") and str(KIT) not in config.args:
        config.args.append(str(KIT))


@pytest.fixture(scope="session")
def hal_device(request: pytest.FixtureRequest):
    """The Device named by --hal-device (the kit's subject)."""
    import hal

    name = request.config.getoption("hal_device")
    if not name:
        pytest.skip("no --hal-device given")
    return hal.device(name)


def pytest_report_header(config: pytest.Config) -> list[str]:
    name = config.getoption("hal_device")
    return [f"hal kit: device {name}"] if name else []
