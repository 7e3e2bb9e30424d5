"""Device strings, resolution, HAL_BACKENDS, and isolation of broken plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import hal
from hal.backend import Backend
from hal.device import DeviceInfo, DeviceSpec
from hal.registry import REGISTRY
from tests.plugins import broken_plugins, installed


@pytest.mark.parametrize("text,spec", [
    ("cpu", ("cpu", None, None)), ("cuda:1", ("cuda", 1, None)), ("cpu@jax", ("cpu", None, "jax")),
    ("tpu:3@jax", ("tpu", 3, "jax")), ("fpga@emu", ("fpga", None, "emu")),
])
def test_device_string_grammar(text, spec):
    s = DeviceSpec.parse(text)
    assert (s.kind, s.index, s.backend) == spec
    assert str(s) == text


@pytest.mark.parametrize("bad", ["", "CPU", "cuda:", "cuda:x", "@jax", "cpu@", "cpu@@jax", 3])
def test_malformed_device_strings(bad):
    with pytest.raises(hal.DeviceNotFound):
        DeviceSpec.parse(bad)


def test_reference_is_listed_usable():
    devs = {d.string: d for d in hal.devices()}
    assert devs["cpu:0@reference"].usable and not devs["cpu:0@reference"].simulated


def test_unknown_device_lists_usable():
    with pytest.raises(hal.DeviceNotFound) as e:
        hal.device("nosuch")
    assert "cpu:0@reference" in str(e.value) and "nosuch" in str(e.value)
    with pytest.raises(hal.DeviceNotFound, match="no backend named 'zzz'"):
        hal.device("cpu@zzz")
    with pytest.raises(hal.DeviceNotFound, match="index"):
        hal.device("cpu:7@reference")


def test_one_object_per_device():
    assert hal.device("cpu@reference") is hal.device("cpu:0@reference")


class Simulated(Backend):
    name = "simtest"
    kinds = ("widget",)
    ops = frozenset({"Relu"})

    def probe(self):
        return [DeviceInfo("widget", 0, self.name, name="software widget", simulated=True)]

    def compile(self, model, device, options):
        from hal.backends.reference import ReferenceBackend

        return ReferenceBackend().compile(model, device, options)


def test_simulated_never_serves_bare_kind():
    hal.register_backend(Simulated)
    try:
        with pytest.raises(hal.DeviceNotFound, match="simulated"):
            hal.device("widget")
        dev = hal.device("widget@simtest")
        assert dev.simulated
    finally:
        REGISTRY.unregister("simtest")


class Variants(Backend):
    """One backend, devices under several names after "@" (as fpga@emu / fpga@pynq)."""

    name = "gadgets"
    kinds = ("gadget",)
    variants = ("gsim", "reference")  # "reference" is also a backend's name: the variant wins
    ops = frozenset({"Relu"})

    def probe(self):
        return [DeviceInfo("gadget", 0, "gsim", name="gadget model", simulated=True),
                DeviceInfo("gadget", 0, "reference", name="real gadget"),
                DeviceInfo("gadget", 0, "other", usable=False, reason="unplugged")]

    def compile(self, model, device, options):
        return Simulated().compile(model, device, options)


def test_backend_variants_name_devices():
    hal.register_backend(Variants)
    try:
        names = {d.string for d in hal.devices() if d.kind == "gadget"}
        # a name outside ``variants`` is replaced by the backend's own
        assert names == {"gadget:0@gsim", "gadget:0@reference", "gadget:0@gadgets"}
        dev = hal.device("gadget@gsim")
        assert dev.simulated and dev.backend.name == "gadgets" and dev.string == "gadget:0@gsim"
        assert hal.device("gadget@reference").info.name == "real gadget"
        assert hal.device("gadget") is hal.device("gadget@reference")  # the real one, not sim
        assert hal.device("cpu@reference").backend.name == "reference"
    finally:
        REGISTRY.unregister("gadgets")


def test_bare_kind_with_only_simulated_variants_names_them():
    class OnlySim(Variants):
        name = "gadgets2"

        def probe(self):
            return [DeviceInfo("gadget", 0, "gsim", simulated=True),
                    DeviceInfo("gadget", 0, "gsim2", usable=False, reason="no board found")]

    OnlySim.variants = ("gsim", "gsim2")
    hal.register_backend(OnlySim)
    try:
        with pytest.raises(hal.DeviceNotFound, match=r"gadget@gsim\).*no board found"):
            hal.device("gadget")
    finally:
        REGISTRY.unregister("gadgets2")


def test_register_twice_needs_replace():
    hal.register_backend(Simulated)
    try:
        with pytest.raises(hal.HalError, match="already registered"):
            hal.register_backend(Simulated)
        hal.register_backend(Simulated, replace=True)
    finally:
        REGISTRY.unregister("simtest")


def test_hal_backends_env_restricts_and_orders(monkeypatch):
    monkeypatch.setenv("HAL_BACKENDS", "reference")
    REGISTRY.reset()
    try:
        assert hal.device("cpu").backend.name == "reference"
        monkeypatch.setenv("HAL_BACKENDS", "nope")
        REGISTRY.reset()
        with pytest.raises(hal.DeviceNotFound, match="HAL_BACKENDS"):
            hal.device("cpu")
    finally:
        monkeypatch.delenv("HAL_BACKENDS")
        REGISTRY.reset()


def test_broken_plugins_are_isolated(tmp_path):
    with installed(broken_plugins(tmp_path)):
        devs = {d.backend: d for d in hal.devices()}
        assert not devs["importboom"].usable and "libfoo.so" in devs["importboom"].reason
        assert devs["importboom"].details["broken"]
        assert not devs["probeboom"].usable and "driver handshake" in devs["probeboom"].reason
        # every other device keeps working
        y = hal.compile(hal.models.get("mlp"), "cpu@reference")(np.zeros((1, 784), np.float32))
        assert y[0].shape == (1, 10)
        with pytest.raises(hal.BackendError, match="kernel generator crashed"):
            hal.compile(hal.models.get("lenet"), "cpu@compileboom")
        with pytest.raises(hal.DeviceNotFound, match="libfoo.so"):
            hal.device("cpu@importboom")


def test_broken_plugin_in_cli(tmp_path):
    broken_plugins(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "hal.cli", "devices", "--json"], env=env,
                       capture_output=True, text=True, check=True)
    devs = {d["backend"]: d for d in json.loads(r.stdout)}
    assert devs["importboom"]["usable"] is False and "broken plugin" in devs["importboom"]["reason"]
    assert devs["reference"]["usable"] is True
    r = subprocess.run([sys.executable, "-m", "hal.cli", "run", "mlp", "--device", "cpu@reference",
                        "--json"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_alias_resolves_to_one_device():
    class Aliased(Backend):
        name = "aliastest"
        kinds = ("widget", "cpu")
        priority = -50

        def probe(self):
            return [DeviceInfo("widget", 0, self.name, name="w"),
                    DeviceInfo("cpu", 0, self.name, name="w", alias_of="widget:0@aliastest")]

        def compile(self, model, device, options):
            raise AssertionError

    hal.register_backend(Aliased)
    try:
        assert hal.device("cpu@aliastest") is hal.device("widget@aliastest")
    finally:
        REGISTRY.unregister("aliastest")


def test_a_requirement_whose_parent_package_is_missing_is_missing():
    """``requires = ("iree.compiler",)`` without iree installed: find_spec imports the parent
    and raises; the backend must say what is missing, not fail the probe."""
    from hal.backend import Backend

    class Needy(Backend):
        name = "needy"
        requires = ("no_such_package_for_hal.sub", "numpy")
        probe = compile = None

    assert Needy().missing_requirements() == ["no_such_package_for_hal.sub"]
