"""Runs tests/pynq_env (the pynq transport through the real pynq 4 classes) inside .venv-pynq,
the second environment `make pynq-env` builds (pynq pins numpy<2). Builds it when missing;
skips, saying why, when it cannot be built (no network, no venv module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv-pynq" / "bin" / "python"


def _ensure_env() -> None:
    if (ROOT / ".venv-pynq" / ".hal-installed").is_file():
        return
    res = subprocess.run(["make", "--no-print-directory", "pynq-env", f"PYTHON={sys.executable}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if res.returncode:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        pytest.skip("the pynq environment could not be built (`make pynq-env` failed: "
                    + " | ".join(tail) + ")")


def test_pynq_transport_in_the_pynq_environment():
    if os.environ.get("HAL_SKIP_PYNQ_ENV"):
        pytest.skip("HAL_SKIP_PYNQ_ENV is set")
    _ensure_env()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "HAL_PYNQ"))}
    res = subprocess.run([str(PY), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/pynq_env"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    print(res.stdout[-3000:])
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "skipped" not in res.stdout.splitlines()[-1]
