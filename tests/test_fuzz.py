"""Fuzzing HAL's one path (``hal.testing.fuzz``): every case ends in a result or a HalError
with a message — never another exception type, a hang or a changed input — and one
regression test for each thing fuzzing found. The long run is ``make fuzz``."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.testing import fuzz
from tests.helpers import make_model, rand

#: mostly load and validate, a share compiled and called on the reference and ORT, a few on
#: the slower-compiling backends: 2,000 cases in about a minute on a 2-core machine
PLAN = ((None, 80), ("cpu@reference", 8), ("cpu@ort", 9), ("cpu@torch", 1), ("cpu@jax", 1),
        ("cpu@tf", 1))
#: seconds a case may run before it counts as a hang: generous, as the machine may be shared
BOUND = 120


def _assert_no_findings(report: fuzz.Report) -> None:
    assert not report.findings, report.summary()


def test_fuzz_zoo_models():
    report = fuzz.fuzz(2000, plan=PLAN, node_cases=False, light=False, seed=0, timeout=BOUND)
    print(report.summary())
    assert len(report.outcomes) == 2000
    _assert_no_findings(report)
    counts = report.counts()
    assert counts["ok"] and counts["ModelError"] and counts["InputError"], counts
    devices = {o.device for o in report.outcomes}
    assert set(fuzz.usable_devices()) <= devices


def test_fuzz_onnx_light_models():
    report = fuzz.fuzz(40, plan=((None, 1),), node_cases=False, light=True, seed=1,
                       timeout=BOUND)
    assert len(report.outcomes) == 40
    _assert_no_findings(report)
    assert any(o.source.startswith("light:") for o in report.outcomes)


@pytest.mark.parametrize("backend", fuzz.usable_devices())
@settings(max_examples=15, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(call=st.sampled_from(fuzz.CALLS), seed=st.integers(0, 1 << 30),
       source=st.sampled_from(["zoo:lenet", "zoo:tiny_transformer"]))
def test_bad_call_inputs(backend, call, seed, source):
    """Wrong dtype, rank, shape, non-contiguous and read-only arrays, NaN, batch 0: a result
    or an InputError, and the caller's arrays unchanged."""
    outcome = fuzz.run_case(source, fuzz.zoo_models()[source], "identity", seed, backend, call,
                            BOUND)
    assert not outcome.finding, outcome.line()
    assert outcome.result in ("ok", "InputError"), outcome.line()


def test_the_harness_reports_other_exceptions_hangs_and_changed_inputs(monkeypatch):
    lenet = fuzz.zoo_models()["zoo:lenet"]

    def raises(model):
        raise ValueError("not a HalError")

    monkeypatch.setattr(hal, "load", raises)
    out = fuzz.run_case("zoo:lenet", lenet, "drop_node", 0, None, None)
    assert out.finding and out.result == "ValueError"
    monkeypatch.setattr(hal, "load", lambda model: time.sleep(5))
    out = fuzz.run_case("zoo:lenet", lenet, "drop_node", 0, None, None, timeout=0.2)
    assert out.finding and out.result == "hang"
    monkeypatch.undo()

    class Scribbles:
        inputs = hal.compile("lenet", "cpu@reference").inputs

        def __call__(self, *arrays):
            arrays[0][...] = 7

    monkeypatch.setattr(hal, "compile", lambda model, device: Scribbles())
    out = fuzz.run_case("zoo:lenet", lenet, "nonfinite_weights", 0, "cpu@reference", "good")
    assert out.finding and out.result == "input modified"


# -- what fuzzing found ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", fuzz.usable_devices())
def test_batch_of_zero_gives_an_empty_result(backend):
    """cpu@reference's MaxPool reshaped its windows with -1, which a batch of 0 cannot infer."""
    y = hal.compile("lenet", backend)(np.zeros((0, 1, 28, 28), np.float32))[0]
    assert y.shape == (0, 10)


def _gemm_with_one_input() -> onnx.ModelProto:
    return make_model([helper.make_node("Gemm", ["x"], ["y"], name="fc")], [("x", [2, 4])],
                      [("y", None)])


def test_gemm_left_with_one_input_is_a_model_error():
    """The validator read node.inputs[1] and raised IndexError, on every backend."""
    with pytest.raises(hal.ModelError, match=r"'fc' \(Gemm\) has 1 inputs but Gemm takes 2 to 3"):
        hal.compile(_gemm_with_one_input(), "cpu@reference")


def test_conv_on_a_scalar_is_a_model_error():
    proto = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], [("x", [])],
                       [("y", None)], {"w": rand(1, 1, 3, 3)})
    with pytest.raises(hal.ModelError, match=r"rank 0.*Conv takes \[N, C"):
        hal.compile(proto, "cpu@reference")


def test_window_attribute_of_the_wrong_length_is_a_model_error():
    proto = make_model([helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2],
                                         strides=[1])], [("x", [1, 1, 4, 4])], [("y", None)])
    with pytest.raises(hal.ModelError, match=r"strides=\[1\] needs 2 values"):
        hal.compile(proto, "cpu@reference")


def test_attribute_of_the_wrong_type_in_an_old_opset_is_a_model_error():
    """onnx's version converter crashed the whole process (a segfault) on such a model."""
    node = helper.make_node("Unsqueeze", ["x"], ["y"], name="u")
    node.attribute.append(helper.make_attribute("axes", "zero"))
    proto = make_model([node], [("x", [3])], [("y", None)], opset=9)
    with pytest.raises(hal.ModelError, match=r"'axes' is a STRING but Unsqueeze takes a INTS"):
        hal.load(proto)


def test_initializer_of_undefined_type_is_a_model_error():
    """Shape inference's dtype table raised KeyError: 0 on it."""
    proto = make_model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", [2])], [("y", None)],
                       {"w": rand(2)})
    proto.graph.initializer[0].data_type = TensorProto.UNDEFINED
    with pytest.raises(hal.ModelError, match="initializer 'w'"):
        hal.compile(proto, "cpu@reference")


def test_graph_input_of_undefined_type_is_a_model_error():
    """It compiled, then reading the compiled model's inputs raised TypeError."""
    proto = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2])], [("y", [2])])
    proto.graph.input[0].type.tensor_type.elem_type = TensorProto.UNDEFINED
    with pytest.raises(hal.ModelError, match="graph input 'x' has element type UNDEFINED"):
        hal.compile(proto, "cpu@reference")


def test_value_written_twice_is_a_model_error():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"),
             helper.make_node("Neg", ["x"], ["y"], name="b")]
    with pytest.raises(hal.ModelError, match=r"Output 'y' is redeclared"):
        hal.compile(make_model(nodes, [("x", [2])], [("y", None)]), "cpu@reference")


def test_unknown_attribute_is_a_model_error():
    proto = make_model([helper.make_node("Relu", ["x"], ["y"], name="r", bogus=3)],
                       [("x", [2])], [("y", None)])
    with pytest.raises(hal.ModelError, match=r"attribute 'bogus' is not one Relu takes"):
        hal.compile(proto, "cpu@reference")


def test_undecodable_string_is_a_model_error():
    """A flipped byte in a name left a model HAL read but could not write back (SerdeError)."""
    proto = make_model([helper.make_node("Relu", ["x"], ["y"], name="XXXX")], [("x", [2])],
                       [("y", None)])
    data = proto.SerializeToString().replace(b"XXXX", b"\xaa\xbb\xcc\xdd")
    with pytest.raises(hal.ModelError, match="UnicodeDecodeError"):
        hal.load(data)


def _huge_constant_of_shape() -> onnx.ModelProto:
    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 22], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="fill"),
             helper.make_node("ReduceSum", ["big"], ["y"], name="sum", keepdims=0)]
    g = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                           None)], [shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("backend", fuzz.usable_devices())
def test_huge_intermediate_is_refused_before_any_backend_allocates(backend):
    """cpu@jax tried to allocate 15 TB (its own RESOURCE_EXHAUSTED) for a mutated shape."""
    with pytest.raises(hal.ModelError, match=r"value 'big' of shape \[1048576, 4194304\].*"
                                             r"16\.0 TiB.*HAL_MAX_TENSOR_BYTES"):
        hal.compile(_huge_constant_of_shape(), backend)


def test_huge_input_dim_is_refused():
    proto = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 1 << 40])],
                       [("y", None)])
    with pytest.raises(hal.ModelError, match=r"value 'x' of shape \['N', 1099511627776\]"):
        hal.compile(proto, "cpu@reference")


def test_tensor_limit_is_configurable(monkeypatch):
    monkeypatch.setenv("HAL_MAX_TENSOR_BYTES", "64KiB")
    with pytest.raises(hal.ModelError, match=r"more than HAL_MAX_TENSOR_BYTES \(64\.0 KiB\)"):
        hal.compile("lenet", "cpu@reference")
    monkeypatch.setenv("HAL_MAX_TENSOR_BYTES", "64MiB")
    hal.compile("lenet", "cpu@reference")


@pytest.mark.skipif("cpu@ort" not in fuzz.usable_devices(), reason="onnxruntime not usable")
def test_ort_failures_print_nothing_of_their_own(capfd):
    """onnxruntime printed red error lines on stderr for failures HAL reports as BackendError."""
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                           helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    compiled = hal.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]),
                           "cpu@ort")
    capfd.readouterr()
    with pytest.raises(hal.BackendError, match="cannot be reshaped"):
        compiled(np.zeros(4, np.float32), np.array([3, 3], np.int64))
    assert "onnxruntime" not in capfd.readouterr().err
