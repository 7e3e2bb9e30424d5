"""Long runs, short: 60 compile -> call -> release cycles of lenet per CPU backend, each in
a process of its own with a temporary folder of its own (``hal.testing.soak``), leave no
descriptor, temporary file or process behind, and resident memory stays within a generous
bound. ``make soak`` runs 1,000 cycles with the 5% bound (docs/reliability.md).

cpu@jax and cpu@tf sit out the short run: each of their compiles is an XLA compile (0.5-1 s
of lenet), so 60 cycles would take about a minute each; ``make soak`` runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

import hal
from hal.backend import Executable
from hal.backends.reference import ReferenceBackend
from hal.registry import REGISTRY
from hal.testing import soak

CYCLES, WARMUP = 60, 20
#: over 40 cycles after warm-up: a leak of lenet's weights (1.7 MB) per cycle passes it on no
#: backend, the allocator's noise (a few MiB) on every one
MAX_GROWTH_PCT = 20.0
XLA_COMPILES = ("jax", "tf")


def _cpu_backends() -> list[str]:
    out = []
    for d in hal.devices():
        name = d.alias_of or d.string
        if d.usable and d.kind == "cpu" and d.backend not in XLA_COMPILES and name not in out:
            out.append(name)
    return out


@pytest.mark.parametrize("where", _cpu_backends())
def test_short_soak_leaves_nothing_behind(where, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hal.testing.soak", where, "--cycles", str(CYCLES),
         "--warmup", str(WARMUP), "--json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, **soak.STEADY_MALLOC, "TMPDIR": str(tmp_path)})
    assert proc.stdout.strip(), proc.stderr[-2000:]
    r = soak.SoakResult.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert (r.leaked_fds, r.leaked_tmp, r.leaked_children) == ([], [], []), r.line()
    assert r.wrong_outputs == 0, r.line()
    assert r.growth_pct <= MAX_GROWTH_PCT, r.line()


class _Leaky(Executable):
    def __init__(self, inner):
        super().__init__(inner.device, inner.input_names, inner.output_names)
        self.inner = inner

    def run(self, buffers):
        return self.inner.run(buffers)


class Leaky(ReferenceBackend):
    """Each compile leaves an open file, a temporary file, a process and 4 MiB behind."""

    name = "soak_leaky"
    priority = -50
    kept: list = []

    def compile(self, model, device, options):
        fd, _ = tempfile.mkstemp(prefix="leaky-")
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.kept.append((fd, child, b"\x01" * (4 << 20)))
        return _Leaky(super().compile(model, device, options))


def test_soak_sees_what_is_left_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    hal.register_backend(Leaky, replace=True)
    try:
        r = soak.soak("cpu@soak_leaky", cycles=8, warmup=3)
    finally:
        REGISTRY.unregister("soak_leaky")
        for fd, child, _ in Leaky.kept:
            os.close(fd)
            child.kill()
            child.wait()
        Leaky.kept.clear()
    assert len(r.leaked_fds) == 5 and all("leaky-" in f for f in r.leaked_fds)
    assert len(r.leaked_tmp) == 5 and len(r.leaked_children) == 5
    assert r.rss_end - r.rss_warm >= 4 * (4 << 20) and r.leaked and not r.ok()


def test_soak_refuses_a_warmup_outside_the_run():
    with pytest.raises(hal.OptionError, match="warmup"):
        soak.soak("cpu@reference", cycles=10, warmup=10)
