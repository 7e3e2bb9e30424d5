"""Fake installed plugin distributions (real entry points) for registry tests."""

from __future__ import annotations

import contextlib
import sys
import textwrap
from pathlib import Path

import hal
from hal.registry import REGISTRY

BROKEN_IMPORT = """
raise RuntimeError("vendor SDK libfoo.so not found")
"""

BROKEN_PROBE = """
from hal.backend import Backend

class ProbeBoom(Backend):
    name = "probeboom"
    kinds = ("npu",)
    def probe(self):
        raise OSError("driver handshake failed")
    def compile(self, model, device, options):
        raise AssertionError("never reached")
"""

BROKEN_COMPILE = """
from hal.backend import Backend
from hal.device import DeviceInfo

class CompileBoom(Backend):
    name = "compileboom"
    kinds = ("cpu",)
    priority = -100
    ops = frozenset({"Conv", "Gemm", "Relu", "MaxPool", "Flatten", "LogSoftmax", "MatMul", "Add"})
    def probe(self):
        return [DeviceInfo("cpu", 0, self.name, name="compiles nothing")]
    def compile(self, model, device, options):
        raise RuntimeError("kernel generator crashed")
"""

#: plugins that take the process down: compiled with isolate=True they must end in a
#: BackendError naming the signal, the caller going on (tests/test_isolate.py). Kind "npu",
#: so that a bare "cpu" never picks one.
CRASHING = """
import ctypes
import os
import signal
import time

from hal.backends.reference import ReferenceBackend
from hal.device import DeviceInfo


def segfault():
    ctypes.string_at(0)  # reads address 0: SIGSEGV


class Crashing(ReferenceBackend):
    kinds = ("npu",)
    priority = -100
    crash_in = "compile"

    def crash(self):
        raise NotImplementedError

    def probe(self):
        return [DeviceInfo("npu", 0, self.name, name=f"crashes in {self.crash_in}")]

    def compile(self, model, device, options):
        if self.crash_in == "compile":
            self.crash()
        exe = super().compile(model, device, options)
        if self.crash_in == "call":
            run = exe.run
            def crashing_run(buffers):
                if buffers[0].shape[0] == 3:  # a batch of 3 crashes it; others run
                    self.crash()
                return run(buffers)
            exe.run = crashing_run
        return exe


class AbortBoom(Crashing):
    name = "abortboom"
    def crash(self):
        os.abort()


class SegvBoom(Crashing):
    name = "segvboom"
    def crash(self):
        segfault()


class KillBoom(Crashing):  # what the out-of-memory killer does
    name = "killboom"
    def crash(self):
        os.kill(os.getpid(), signal.SIGKILL)


class HangBoom(Crashing):  # a driver stuck waiting for its device
    name = "hangboom"
    def crash(self):
        time.sleep(3600)


class CallBoom(Crashing):
    name = "callboom"
    crash_in = "call"
    def crash(self):
        segfault()
"""


def write_plugin(root: Path, dist: str, modules: dict[str, str], entries: dict[str, str]) -> None:
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    eps = "[hal.backends]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
    (info / "entry_points.txt").write_text(eps)
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))


@contextlib.contextmanager
def installed(root: Path):
    """Make the fake distributions under ``root`` visible, and forget them afterwards."""
    sys.path.insert(0, str(root))
    REGISTRY.reset()
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for mod in [m for m, v in sys.modules.items()
                    if getattr(v, "__file__", "") and str(root) in str(v.__file__)]:
            del sys.modules[mod]
        REGISTRY.reset()


def broken_plugins(root: Path) -> Path:
    write_plugin(root, "hal_broken_plugins",
                 {"broken_import_mod": BROKEN_IMPORT, "broken_probe_mod": BROKEN_PROBE,
                  "broken_compile_mod": BROKEN_COMPILE},
                 {"importboom": "broken_import_mod:Backend",
                  "probeboom": "broken_probe_mod:ProbeBoom",
                  "compileboom": "broken_compile_mod:CompileBoom"})
    return root


def crashing_plugins(root: Path) -> Path:
    write_plugin(root, "hal_crashing_plugins", {"crashing_mod": CRASHING},
                 {"abortboom": "crashing_mod:AbortBoom", "segvboom": "crashing_mod:SegvBoom",
                  "killboom": "crashing_mod:KillBoom", "callboom": "crashing_mod:CallBoom",
                  "hangboom": "crashing_mod:HangBoom"})
    return root


__all__ = ["broken_plugins", "crashing_plugins", "hal", "installed", "write_plugin"]
