"""HAL's validator names the node, the op, the attribute and the shapes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx import helper

import hal
from hal import nn
from tests.helpers import make_model, rand


def _compile_error(proto) -> str:
    with pytest.raises(hal.ModelError) as e:
        hal.compile(hal.load(proto), "cpu@reference")
    return str(e.value)


def grouped_conv(group=64, c_in=32):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv_g", group=group,
                            kernel_shape=[3, 3])
    return make_model([node], [("x", ["N", c_in, 8, 8])], [("y", None)],
                      {"w": rand(64, 1, 3, 3)})


def test_conv_group_not_dividing_channels():
    msg = _compile_error(grouped_conv())
    assert "conv_g" in msg and "Conv" in msg and "group=64" in msg and "32 input channels" in msg
    assert "[N, 32, 8, 8]" in msg


def test_conv_weight_does_not_match_channels():
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv_w")
    msg = _compile_error(make_model([node], [("x", ["N", 3, 8, 8])], [("y", None)],
                                    {"w": rand(8, 4, 3, 3)}))
    assert "conv_w" in msg and "[8, 4, 3, 3]" in msg and "3 input channels" in msg


def test_matmul_inner_dims():
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    msg = _compile_error(make_model([node], [("x", ["N", 7])], [("y", None)], {"w": rand(6, 3)}))
    assert "mm" in msg and "MatMul" in msg and "[N, 7]" in msg and "[6, 3]" in msg


def test_gemm_inner_dims():
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)
    msg = _compile_error(make_model([node], [("x", ["N", 7])], [("y", None)],
                                    {"w": rand(3, 6), "b": rand(3)}))
    assert "fc" in msg and "Gemm" in msg and "[N, 7]" in msg and "[3, 6]" in msg
    assert "transB=1" in msg


def test_reshape_changes_element_count():
    shape = np.array([4, 5], np.int64)
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")
    msg = _compile_error(make_model([node], [("x", [3, 6])], [("y", None)], {"s": shape}))
    assert "rs" in msg and "Reshape" in msg and "[3, 6]" in msg and "18 elements" in msg


def test_flatten_to_linear_mismatch():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(100, 10))
    with pytest.raises(hal.ModelError) as e:
        hal.compile(net, "cpu@reference", input_shape=(None, 1, 8, 8))
    msg = str(e.value)
    assert "2/Gemm" in msg and "[N, 144]" in msg and "[10, 100]" in msg and "Flatten" in msg


def test_missing_initializer():
    node = helper.make_node("Add", ["x", "bias"], ["y"], name="add_b")
    msg = _compile_error(make_model([node], [("x", [2])], [("y", None)]))
    assert "add_b" in msg and "'bias'" in msg and "missing initializer or input" in msg


def test_unknown_op():
    with pytest.raises(hal.ModelError) as e:
        hal.compile(_unknown_op_model(), "cpu@reference")
    assert "frob" in str(e.value) and "FrobnicateTensor" in str(e.value)


def _unknown_op_model():
    from hal.ir.model import from_proto

    node = helper.make_node("FrobnicateTensor", ["x"], ["y"], name="frob")
    proto = make_model([node], [("x", [2])], [("y", None)])
    return from_proto(proto)


def test_valid_models_pass():
    for name in hal.models.list():
        hal.ir.validate.validate(hal.models.get(name))  # no exception


def test_hal_run_rejects_bad_group(tmp_path):
    import onnx

    path = tmp_path / "bad_group.onnx"
    onnx.save(grouped_conv(), str(path))
    r = subprocess.run([sys.executable, "-m", "hal.cli", "run", str(path), "--device", "cpu"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "group=64" in r.stderr and "32 input channels" in r.stderr
    assert "Traceback" not in r.stderr


# -- structure and sizes, checked before any per-op check, pass or backend reads the graph ----

def test_required_input_left_empty():
    proto = make_model([helper.make_node("Add", ["x", ""], ["y"], name="add")], [("x", [2])],
                       [("y", None)])
    assert "input #1 (B) is required but left empty" in _compile_error(proto)


def test_initializer_data_not_matching_its_dims():
    proto = make_model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", [4])],
                       [("y", None)], {"w": rand(4)})
    proto.graph.initializer[0].dims[:] = [5]
    assert "initializer 'w'" in _compile_error(proto)


def test_negative_dim_is_refused():
    proto = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2, -3])], [("y", None)])
    assert "negative dim" in _compile_error(proto)


def test_weight_above_the_tensor_limit_is_named(monkeypatch):
    proto = make_model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", [256])],
                       [("y", None)], {"w": rand(256)})
    monkeypatch.setenv("HAL_MAX_TENSOR_BYTES", "512")
    assert "'w' of shape [256]" in _compile_error(proto)
    monkeypatch.setenv("HAL_MAX_TENSOR_BYTES", "1KiB")
    hal.compile(proto, "cpu@reference")
