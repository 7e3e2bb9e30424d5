"""Threads: one compiled model called from 8 threads at once gives every call the output one
thread gets, on every usable backend; compiling in several threads at once is safe; a device
that is not thread-safe says so in its DeviceInfo and HAL runs its calls one at a time.

Each backend is tested on its first device (``fpga:1@rtl`` is a second instance of the
``fpga:0@rtl`` simulation). The FPGA devices run lenet (int8); of tiny_transformer they would
run no layer. The slow simulations (``DeviceInfo.slow_simulation``: the cycle-accurate RTL,
hls4ml's C simulation) take one call per thread at batch 1, and sit out the compile test,
whose four compiles would take minutes there. While threads run together, Python switches
between them every 10 us instead of every 5 ms, so that a race shows: opencl's calls setting
kernel arguments over each other's went wrong in 25 of 160 calls so, in 1 of 160 at 100 us.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import hal
from hal.backend import Executable
from hal.backends.reference import ReferenceBackend
from hal.registry import REGISTRY

#: a device that runs part of a model leaves the rest to the fallback, and says so
pytestmark = pytest.mark.filterwarnings("ignore:.*cannot run .* node:UserWarning")
THREADS = 8
COMPILERS = 4


def _first_device_of_each_backend() -> list[str]:
    seen, out = set(), []
    for d in sorted(hal.devices(), key=lambda d: (d.backend, d.kind, d.index)):
        if d.usable and not d.alias_of and (d.backend, d.kind) not in seen:
            seen.add((d.backend, d.kind))
            out.append(d.string)
    return out


DEVICES = _first_device_of_each_backend()
FAST = [d for d in DEVICES if not hal.device(d).info.slow_simulation]


def _compile(model, device):
    dev = hal.device(device)
    precision = "fp32" if "fp32" in dev.backend.precisions else "int8"
    return hal.compile(model, dev, precision=precision)


def _inputs(compiled, seed: int, batch: int) -> np.ndarray:
    spec = compiled.inputs[0]
    shape = [batch if isinstance(d, str) else d for d in spec.shape]
    return np.random.default_rng(seed).standard_normal(shape).astype(spec.dtype)


def _together(work, n: int) -> list:
    """``work(i)`` for i in range(n), each in its own thread, all released at once."""
    start = threading.Barrier(n)

    def run(i):
        start.wait(timeout=60)
        return work(i)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(run, range(n)))
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.parametrize("model", ["lenet", "tiny_transformer"])
@pytest.mark.parametrize("where", DEVICES)
def test_calls_from_8_threads_agree_with_one_thread(where, model):
    device = where
    dev = hal.device(device)
    slow = bool(dev.info.slow_simulation)
    if model != "lenet" and (slow or "fp32" not in dev.backend.precisions):
        pytest.skip(f"{device} runs lenet's int8 layers; of tiny_transformer, its fallback would")
    calls, batch = (1, 1) if slow else (4, 2)
    compiled = _compile(model, device)
    xs = [[_inputs(compiled, 100 * t + k, batch) for k in range(calls)] for t in range(THREADS)]
    alone = [[compiled(x)[0] for x in row] for row in xs]
    together = _together(lambda t: [compiled(x)[0] for x in xs[t]], THREADS)
    for t in range(THREADS):
        for k in range(calls):
            np.testing.assert_array_equal(together[t][k], alone[t][k],
                                          err_msg=f"thread {t}, call {k} on {device}")


@pytest.mark.parametrize("where", FAST)
def test_compiling_in_4_threads_at_once(where):
    device = where
    x = _inputs(_compile("lenet", "cpu@reference"), 7, 2)
    want = _compile("lenet", device)(x)[0]
    compiled = _together(lambda _: _compile("lenet", device), COMPILERS)
    for c in compiled:
        np.testing.assert_array_equal(c(x)[0], want)


def test_fpga_devices_say_they_are_not_thread_safe():
    for d in hal.devices():
        if d.usable and d.backend in ("emu", "opencl", "rtl", "pynq", "hls4ml") \
                and d.kind == "fpga":
            assert d.thread_safe is False and d.to_dict()["thread_safe"] is False, d.string
            assert hal.device(d.string).serial is not None
    cpu = hal.device("cpu@reference")
    assert cpu.info.thread_safe and "thread_safe" not in cpu.info.to_dict()
    assert cpu.serial is None


class _Watched(Executable):
    """The reference's executable, counting the calls inside ``run`` at once; a thread-safe
    one first waits until ``meet`` threads are inside together (proof that HAL lets them)."""

    def __init__(self, inner, watch):
        super().__init__(inner.device, inner.input_names, inner.output_names)
        self.inner, self.watch = inner, watch

    def run(self, buffers):
        w = self.watch
        with w["lock"]:
            w["inside"] += 1
            w["most"] = max(w["most"], w["inside"])
        try:
            if w["meet"] is not None:
                w["meet"].wait(timeout=60)
            else:
                threading.Event().wait(0.01)  # room for another call to come in, were it let
            return self.inner.run(buffers)
        finally:
            with w["lock"]:
                w["inside"] -= 1


def _watched_backend(name: str, safe: bool, watch: dict):
    class Watched(ReferenceBackend):
        priority = -50
        thread_safe = safe

        def compile(self, model, device, options):
            return _Watched(super().compile(model, device, options), watch)

    Watched.name = name
    return Watched


@pytest.mark.parametrize("safe", [False, True])
def test_hal_takes_turns_only_for_a_device_that_is_not_thread_safe(safe):
    name = "threads_safe" if safe else "threads_unsafe"
    watch = {"lock": threading.Lock(), "inside": 0, "most": 0,
             "meet": threading.Barrier(THREADS) if safe else None}
    hal.register_backend(_watched_backend(name, safe, watch), replace=True)
    try:
        info = hal.device(f"cpu@{name}").info
        assert info.thread_safe is safe
        compiled = hal.compile("lenet", f"cpu@{name}")
        xs = [_inputs(compiled, t, 2) for t in range(THREADS)]
        want = [hal.compile("lenet", "cpu@reference")(x)[0] for x in xs]
        got = _together(lambda t: [compiled(xs[t])[0], compiled.run([xs[t]])[0].numpy()],
                        THREADS)
        for t in range(THREADS):
            np.testing.assert_array_equal(got[t][0], want[t])
            np.testing.assert_array_equal(got[t][1], want[t])
        assert watch["most"] == (THREADS if safe else 1)
    finally:
        REGISTRY.unregister(name)
