"""HAL's conformance kit for one device (collected by ``pytest --hal-device=DEV``)."""

from __future__ import annotations

import numpy as np
import pytest

import hal

pytestmark = pytest.mark.hal_kit

ZOO_TOLERANCE = 1e-4


def test_device_is_usable_and_described(hal_device):
    info = hal_device.info
    assert info.usable and info.name, "a usable device describes itself"
    assert hal_device.backend.ops, "a backend declares the ops it runs"


def test_declared_ops_pass_onnx_cases(hal_device, record_property):
    from hal.testing.conformance import run_conformance

    report = run_conformance(hal_device.string)
    record_property("conformance", report.summary())
    print("\n" + report.summary())
    assert report.failed == 0, report.failures_text()


@pytest.mark.parametrize("name", hal.models.list())
def test_zoo_model_matches_reference(hal_device, name):
    model = hal.models.get(name)
    compiled = hal.compile(model, hal_device.string)
    reference = hal.compile(model, "cpu@reference")
    for batch in (1, 3):
        x = hal.models.example_input(name, batch)
        err = float(np.max(np.abs(compiled(x)[0] - reference(x)[0])))
        assert err <= ZOO_TOLERANCE, f"{name} batch {batch}: max abs error {err:.2e}"


def test_bad_inputs_are_hal_errors(hal_device):
    compiled = hal.compile(hal.models.get("mlp"), hal_device.string)
    with pytest.raises(hal.InputError):
        compiled(np.zeros((2, 784), np.float64))
    with pytest.raises(hal.InputError):
        compiled(np.zeros((2, 783), np.float32))
    with pytest.raises(hal.InputError):
        compiled()


def test_buffer_round_trip(hal_device):
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    keep = x.copy()
    buf = hal_device.put(x)
    assert tuple(buf.shape) == (3, 5) and np.dtype(buf.dtype) == np.float32
    np.testing.assert_array_equal(buf.numpy(), keep)
    back = buf.to(hal.device("cpu@reference")).to(hal_device)
    np.testing.assert_array_equal(back.numpy(), keep)
    np.testing.assert_array_equal(x, keep)


def test_device_resident_runs_copy_nothing(hal_device):
    from hal import nn

    ops = hal_device.backend.ops
    if not {"Gemm", "Relu"} <= set(ops):
        pytest.skip("needs Gemm and Relu on the device for a fully resident model")
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    compiled = hal.compile(net, hal_device.string, input_shape=(None, 8), fallback=None)
    buf = hal_device.put(np.ones((2, 8), np.float32))
    out = compiled.run([buf])
    compiled.run(out)
    assert compiled.last_transfers.count == 0
