"""Every zoo model on every usable device agrees with cpu@reference."""

from __future__ import annotations

import numpy as np
import pytest

import hal

TOL = 1e-4  # fp32 max abs error against the reference


@pytest.fixture(scope="module")
def reference_outputs(zoo):
    out = {}
    for name, model in zoo.items():
        ref = hal.compile(model, "cpu@reference")
        for batch in (1, 5):
            x = hal.models.example_input(name, batch)
            out[name, batch] = ref(x)[0]
    return out


@pytest.mark.parametrize("name", hal.models.list())
def test_zoo_model_matches_reference(device, name, zoo, reference_outputs):
    compiled = hal.compile(zoo[name], device)
    for batch in (1, 5):  # the batch dim is dynamic: one compile, two batch sizes
        x = hal.models.example_input(name, batch)
        x_before = x.copy()
        y = compiled(x)[0]
        np.testing.assert_array_equal(x, x_before)  # inputs are never modified
        ref = reference_outputs[name, batch]
        assert y.shape == ref.shape and y.dtype == ref.dtype
        err = float(np.max(np.abs(y - ref)))
        assert err <= TOL, f"{name} on {device}, batch {batch}: max abs error {err:.2e}"


def test_zoo_list_and_inputs():
    names = hal.models.list()
    assert names == sorted(["lenet", "dwsep", "mlp", "resnet_lite", "mobilenet_lite",
                            "tiny_transformer", "digits"])
    shapes = {n: tuple(hal.models.get(n).inputs[0].shape) for n in names}
    assert shapes["lenet"] == ("N", 1, 28, 28) and shapes["dwsep"] == ("N", 1, 28, 28)
    assert shapes["resnet_lite"] == ("N", 3, 32, 32) == shapes["mobilenet_lite"]
    assert shapes["mlp"] == ("N", 784) and shapes["tiny_transformer"] == ("N", 16, 64)
    assert shapes["digits"] == ("N", 1, 8, 8)


def test_digits_model_is_trained():
    from hal.models import digits

    x, y = digits.dataset("test")
    pred = hal.compile(hal.models.get("digits"), "cpu@reference")(x)[0].argmax(1)
    assert (pred == y).mean() > 0.95


def test_zoo_is_deterministic():
    a = hal.models.get("resnet_lite").to_proto().SerializeToString()
    b = hal.models.get("resnet_lite").to_proto().SerializeToString()
    assert a == b
    assert hal.models.get("lenet", seed=1).digest() != hal.models.get("lenet").digest()


def test_zoo_model_brings_its_calibration_inputs():
    """hal.models.get gives the model its own int8 calibration inputs; a copy keeps them, the
    same graph loaded from ONNX has none."""
    model = hal.models.get("digits")
    data, source = model.calibration()
    assert np.array_equal(data, hal.models.calibration_data("digits"))
    assert source == hal.models.calibration_source("digits")
    assert model.copy().calibration is model.calibration
    assert hal.load(model.to_proto()).calibration is None
    compiled = hal.compile(model, "cpu@reference", precision="int8")
    assert compiled.report()["calibration"] == source
    by_name = hal.compile("digits", "cpu@reference", precision="int8")
    x = hal.models.example_input("digits", 4)
    assert np.array_equal(compiled(x)[0], by_name(x)[0])
