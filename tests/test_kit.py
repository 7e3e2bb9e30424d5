"""The accelerator kit end to end: install the example plugin package, run the kit on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "examples" / "toy_accelerator"


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory) -> Path:
    """pip-install examples/toy_accelerator (its own package, one entry point) into a folder."""
    site = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--target", str(site), str(KIT)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return site


def _env(site: Path) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH",
                                                                                   "")]))


def test_installed_plugin_is_a_device(toy_site):
    r = subprocess.run([sys.executable, "-m", "hal.cli", "devices", "--json"], env=_env(toy_site),
                       capture_output=True, text=True, check=True)
    assert '"toy:0@toy"' in r.stdout


def test_run_explain_on_toy(toy_site, tmp_path):
    r = subprocess.run([sys.executable, "-m", "hal.cli", "run", "resnet_lite", "--device", "toy",
                        "--explain"], env=_env(toy_site), capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "toy:0@toy" in r.stdout and "fallback" in r.stdout and "transfers per call" in r.stdout
    r = subprocess.run([sys.executable, "-m", "hal.cli", "run", "resnet_lite", "--device", "toy",
                        "--fallback", "none"], env=_env(toy_site), capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode != 0
    assert "cannot run node" in r.stderr and "Devices that can run it" in r.stderr


@pytest.mark.parametrize("kit_device", ["toy", "cpu@reference"])
def test_kit_passes(toy_site, tmp_path, kit_device):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                        f"--hal-device={kit_device}"], env=_env(toy_site), capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    print(r.stdout[-1500:])
    assert " passed" in r.stdout and "failed" not in r.stdout.splitlines()[-1]
