"""Crash isolation: ``hal.compile(..., isolate=True)`` runs the backend in a worker process.

The crashing plugins (``tests/plugins.py``, ``CRASHING``) are real entry-point plugins: the
worker, a fresh interpreter, finds them the way it finds a vendor's installed plugin.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import hal
from hal.backends.reference import ReferenceBackend
from hal.device import DeviceInfo
from hal.registry import REGISTRY
from tests.plugins import crashing_plugins, installed


@pytest.fixture(scope="module")
def lenet():
    model = hal.models.get("lenet")
    x1 = hal.models.example_input("lenet", batch=1)
    x3 = hal.models.example_input("lenet", batch=3)
    ref = hal.compile(model, "cpu@reference")
    return model, x1, x3, ref(x1), ref(x3)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaped is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not running(pid):
            return True
        time.sleep(0.05)
    return False


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("where", ["cpu@reference", "cpu"])
def test_isolated_outputs_equal_in_process(lenet, where):
    model, x1, x3, _, _ = lenet
    here = hal.compile(model, where)
    with hal.compile(model, where, isolate=True) as iso:
        assert isinstance(iso, hal.CompiledModel)
        assert iso.pid != os.getpid() and running(iso.pid) and iso.alive
        assert iso.device.string == here.device.string
        assert iso.device.backend.name == here.device.backend.name
        assert iso.placement == here.placement and iso.outputs == here.outputs
        for x in (x1, x3, x1):
            assert same(iso(x), here(x))
        outs = iso.run([here.device.put(x3)])  # a Buffer in, host Buffers out
        assert all(isinstance(b, hal.Buffer) for b in outs)
        assert same([b.numpy() for b in outs], here(x3))
        assert iso.calls == 4
        rep = iso.report()
        assert rep["options"]["isolate"] is True and rep["isolated"]["pid"] == iso.pid
        assert rep["segments"][0]["backend"] == here.device.backend.name
        assert rep["transfers"]["calls"] == 4
        assert [s.name for s in iso.model.outputs] == [s.name for s in here.model.outputs]
        assert "isolated" in repr(iso)
        pid = iso.pid
    assert wait_gone(pid), "closing the model must end its worker"
    with pytest.raises(hal.BackendError, match="was closed"):
        iso(x1)


def test_bad_inputs_and_errors_keep_their_type(lenet):
    model, x1, _, _, _ = lenet
    with hal.compile(model, "cpu@reference", isolate=True) as iso:
        with pytest.raises(hal.InputError, match="dtype"):
            iso(x1.astype(np.float64))
        with pytest.raises(hal.InputError):
            iso([[1.0]])
        assert iso.alive  # a caller's mistake leaves the worker as it was
    with pytest.raises(hal.OptionError, match="unknown compile option"):  # raised there
        hal.compile(model, "cpu@reference", isolate=True, no_such_option=1)
    with pytest.raises(hal.DeviceNotFound, match="malformed"):  # before a worker starts
        hal.compile(model, "NPU!", isolate=True)


def test_bad_isolate_value_is_an_option_error(lenet, monkeypatch):
    model = lenet[0]
    for bad in ("yes", 1, "true"):
        with pytest.raises(hal.OptionError, match="isolate must be"):
            hal.compile(model, "cpu@reference", isolate=bad)
    monkeypatch.setenv("HAL_ISOLATE", "nosuchbackend")
    with pytest.raises(hal.HalError, match="HAL_ISOLATE.*nosuchbackend"):
        hal.compile(model, "cpu@reference")


def test_abort_in_compile_is_a_backend_error_and_the_process_goes_on(lenet, tmp_path):
    model, x1, _, ref1, _ = lenet
    with installed(crashing_plugins(tmp_path)):
        with pytest.raises(hal.BackendError) as err:
            hal.compile(model, "npu@abortboom", isolate=True)
        msg = str(err.value)
        assert "SIGABRT" in msg and "'abortboom'" in msg and "crashing_mod:AbortBoom" in msg
        assert "while compiling 'lenet'" in msg and "in compile" in msg  # the plugin's stack
        fast = hal.compile("lenet", "cpu")  # this process goes on
        assert np.abs(fast(x1)[0] - ref1[0]).max() < 1e-4


def test_a_hung_plugin_is_killed_past_the_timeout(lenet, tmp_path, monkeypatch):
    model, x1, _, ref1, _ = lenet
    monkeypatch.setenv("HAL_ISOLATE_TIMEOUT", "20")  # the worker's start counts too
    with installed(crashing_plugins(tmp_path)):
        t0 = time.monotonic()
        with pytest.raises(hal.BackendError) as err:
            hal.compile(model, "npu@hangboom", isolate=True)
        assert time.monotonic() - t0 < 60
        msg = str(err.value)
        assert "did not answer within 20 s and was killed while compiling 'lenet'" in msg
        assert "'hangboom'" in msg
    monkeypatch.delenv("HAL_ISOLATE_TIMEOUT")
    with hal.compile(model, "cpu@reference", isolate=True) as iso:  # this process goes on
        assert same(iso(x1), ref1)
    for bad in ("0", "soon"):
        monkeypatch.setenv("HAL_ISOLATE_TIMEOUT", bad)
        with pytest.raises(hal.errors.OptionError, match="HAL_ISOLATE_TIMEOUT"):
            hal.compile(model, "cpu@reference", isolate=True)


def test_segfault_in_compile_is_a_backend_error(lenet, tmp_path):
    model, x1, _, ref1, _ = lenet
    with installed(crashing_plugins(tmp_path)):
        with pytest.raises(hal.BackendError, match="SIGSEGV") as err:
            hal.compile(model, "npu@segvboom", isolate=True)
        assert "'segvboom'" in str(err.value) and "string_at" in str(err.value)
        assert same(hal.compile(model, "cpu@reference")(x1), ref1)


def test_out_of_memory_kill_is_a_backend_error(lenet, tmp_path):
    with installed(crashing_plugins(tmp_path)):
        with pytest.raises(hal.BackendError, match="SIGKILL.*out-of-memory") as err:
            hal.compile(lenet[0], "npu@killboom", isolate=True)
        assert "'killboom'" in str(err.value)


def test_crash_during_a_call_then_the_worker_is_gone(lenet, tmp_path):
    model, x1, x3, ref1, _ = lenet
    with installed(crashing_plugins(tmp_path)):
        iso = hal.compile(model, "npu@callboom", isolate=True)
        assert same(iso(x1), ref1)  # a batch of 1 runs; a batch of 3 crashes it
        with pytest.raises(hal.BackendError, match="SIGSEGV") as err:
            iso(x3)
        assert "'callboom'" in str(err.value) and "running call 2 of 'lenet'" in str(err.value)
        assert not iso.alive
        with pytest.raises(hal.BackendError, match="worker is gone: compile the model again"):
            iso(x1)
        with pytest.raises(hal.BackendError, match="SIGSEGV"):  # it says why
            iso.report()
        again = hal.compile(model, "npu@callboom", isolate=True)
        assert same(again(x1), ref1)
        again.close()


def test_hal_isolate_names_backends(lenet, tmp_path, monkeypatch):
    model, x1, _, ref1, _ = lenet
    with installed(crashing_plugins(tmp_path)):
        monkeypatch.setenv("HAL_ISOLATE", "segvboom,abortboom")
        with pytest.raises(hal.BackendError, match="SIGSEGV"):
            hal.compile(model, "npu@segvboom")  # isolated by the environment
        here = hal.compile(model, "cpu@reference")  # not listed: in this process
        assert not isinstance(here, hal.compiler.IsolatedModel)
        monkeypatch.setenv("HAL_ISOLATE", "1")
        iso = hal.compile(model, "cpu@reference")
        assert isinstance(iso, hal.compiler.IsolatedModel) and same(iso(x1), ref1)
        iso.close()
        assert not isinstance(hal.compile(model, "cpu@reference", isolate=False),
                              hal.compiler.IsolatedModel)  # the argument wins


def test_garbage_collection_ends_the_worker(lenet):
    iso = hal.compile(lenet[0], "cpu@reference", isolate=True)
    pid = iso.pid
    del iso
    gc.collect()
    assert wait_gone(pid)


def test_worker_dies_with_its_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        import hal
        m = hal.compile("lenet", "cpu@reference", isolate=True)
        print(m.pid, flush=True)
        time.sleep(60)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert running(pid)
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean-up runs in the parent
        proc.wait()
    assert wait_gone(pid), "a worker must not outlive its parent"


def test_calls_from_threads(lenet):
    model, x1, x3, ref1, ref3 = lenet
    errors = []
    with hal.compile(model, "cpu@reference", isolate=True) as iso:
        def work(i):
            x, ref = (x1, ref1) if i % 2 else (x3, ref3)
            for _ in range(5):
                if not same(iso(x), ref):
                    errors.append(i)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and iso.calls == 20


def test_int8_with_the_zoo_calibration(lenet):
    model, x1, _, _, _ = lenet
    here = hal.compile(model, "cpu@reference", precision="int8")
    with hal.compile(model, "cpu@reference", precision="int8", isolate=True) as iso:
        assert same(iso(x1), here(x1))
        assert iso.report()["calibration"] == here.report()["calibration"]


class Registered(ReferenceBackend):
    """A backend registered in this process with hal.register_backend, not installed."""

    name = "isoregistered"
    kinds = ("npu",)
    priority = -100

    def probe(self):
        return [DeviceInfo("npu", 0, self.name, name="registered in-process")]


def test_backend_registered_in_process_runs_in_the_worker(lenet):
    model, x1, _, ref1, _ = lenet
    hal.register_backend(Registered)
    try:
        with hal.compile(model, "npu@isoregistered", isolate=True) as iso:
            assert same(iso(x1), ref1)
            assert iso.device.backend.name == "isoregistered"
    finally:
        REGISTRY.unregister("isoregistered")
