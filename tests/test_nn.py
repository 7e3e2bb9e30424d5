"""hal.nn: write-once layers, functional style, weights, dynamic batch, call-time checks."""

from __future__ import annotations

import numpy as np
import pytest

import hal
from hal import nn
from hal.nn import functional as F


def test_functional_style_matches_numpy():
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    b = np.ones(3, np.float32)

    def net(x):
        return F.relu(F.linear(x, w, b)) + 1.0

    model = nn.trace(net, (None, 4))
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    y = hal.compile(model, "cpu@reference")(x)[0]
    np.testing.assert_allclose(y, np.maximum(x @ w.T + b, 0) + 1, rtol=1e-6)


def test_seeded_weights_and_save_load(tmp_path):
    a = hal.models.build("lenet", seed=3)
    b = hal.models.build("lenet", seed=3)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    path = tmp_path / "w.npz"
    a.save_weights(path)
    c = hal.models.build("lenet", seed=4)
    c.load_weights(path)
    x = hal.models.example_input("lenet", 2)
    ya = hal.compile(a, "cpu@reference", input_shape=(None, 1, 28, 28))(x)[0]
    yc = hal.compile(c, "cpu@reference", input_shape=(None, 1, 28, 28))(x)[0]
    np.testing.assert_array_equal(ya, yc)


def test_load_weights_mismatch(tmp_path):
    path = tmp_path / "w.npz"
    hal.models.build("mlp").save_weights(path)
    with pytest.raises(hal.HalError, match="state dict does not match"):
        hal.models.build("lenet").load_weights(path)


def test_residual_and_concat():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1),
                        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU6())),
                        nn.Concat(nn.Sigmoid(), nn.Tanh(), dim=1), nn.GlobalAvgPool(),
                        nn.Flatten(), nn.Linear(8, 3), nn.Softmax())
    model = net.to_model((None, 2, 6, 6))
    y = hal.compile(model, "cpu@reference")(np.ones((2, 2, 6, 6), np.float32))[0]
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y.sum(1), 1, rtol=1e-5)


def test_dynamic_batch_one_compile_many_sizes():
    compiled = hal.compile(hal.models.get("mlp"), "cpu@reference")
    for n in (1, 2, 7, 64):
        assert compiled(np.zeros((n, 784), np.float32))[0].shape == (n, 10)


def test_wrong_input_dtype_and_shape_named():
    compiled = hal.compile(hal.models.get("lenet"), "cpu@reference")
    with pytest.raises(hal.InputError) as e:
        compiled(np.zeros((1, 1, 28, 28), np.float64))
    assert "'input'" in str(e.value) and "float64" in str(e.value) and "float32" in str(e.value)
    with pytest.raises(hal.InputError) as e:
        compiled(np.zeros((1, 3, 28, 28), np.float32))
    assert "[1, 3, 28, 28]" in str(e.value) and "['N', 1, 28, 28]" in str(e.value)
    with pytest.raises(hal.InputError, match="takes 1 input"):
        compiled()
    with pytest.raises(hal.InputError):
        compiled([[1.0]])


def test_module_needs_input_shape():
    with pytest.raises(hal.ModelError, match="input_shape"):
        hal.compile(nn.Linear(3, 2), "cpu@reference")


def test_bad_layer_config():
    with pytest.raises(hal.ModelError, match="groups"):
        nn.Conv2d(3, 8, 3, groups=2)


def test_unknown_option():
    with pytest.raises(hal.OptionError, match="frobnicate"):
        hal.compile(hal.models.get("mlp"), "cpu@reference", frobnicate=True)
    with pytest.raises(hal.OptionError, match="precision"):
        hal.compile(hal.models.get("mlp"), "cpu@reference", precision="fp8")
