"""OpenVINO as a HAL device: precision, performance hints, dynamic batch, threads, int8 and the
cases it refuses. The shared suites (conformance, zoo, pruned zoo) run on it through the
``device`` fixture like on every other device."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from helpers import graph_model, usable
from hal.backends.common.frameworks import import_openvino

if importlib.util.find_spec("openvino") is None:
    pytest.skip("openvino is not installed", allow_module_level=True)

DEV = "cpu@openvino"


pytestmark = pytest.mark.skipif(not usable("cpu:0@openvino"), reason="cpu@openvino is not usable here")


def _ref(model, *x):
    return hal.compile(model, "cpu@reference")(*x)


def test_devices_are_probed_honestly():
    ov = import_openvino()  # as HAL imports it: without its telemetry
    devs = {d.string: d for d in hal.devices() if d.backend == "openvino"}
    assert devs["cpu:0@openvino"].usable and "OpenVINO" in devs["cpu:0@openvino"].name
    listed = ov.Core().available_devices
    gpu = devs["gpu:0@openvino"]
    if not any(d.startswith("GPU") for d in listed):
        assert not gpu.usable and "lists no GPU" in gpu.reason
    assert hal.device("cpu").backend.name != "openvino"  # below ONNX Runtime's priority


def test_fp32_is_fp32_even_where_the_cpu_has_bf16():
    c = hal.compile("lenet", DEV)
    info = c.executables[0].info
    assert info["inference_precision"] == "f32" and info["performance_hint"] == "LATENCY"
    x = hal.models.example_input("lenet", 4)
    assert np.max(np.abs(c(x)[0] - _ref("lenet", x)[0])) <= 1e-5


def test_bf16_only_when_asked_and_reported():
    caps = hal.device(DEV).info.details["optimization_capabilities"]
    if "BF16" not in caps:
        with pytest.raises(hal.OptionError, match="BF16"):
            hal.compile("lenet", DEV, precision="bf16")
        return
    c = hal.compile("lenet", DEV, precision="bf16")
    assert c.executables[0].info["inference_precision"] == "bf16"
    assert c.report()["options"]["precision"] == "bf16"
    x = hal.models.example_input("lenet", 8)
    y, ref = c(x)[0], _ref("lenet", x)[0]
    assert y.dtype == np.float32
    assert np.max(np.abs(y - ref)) <= 0.05 * np.max(np.abs(ref))
    assert np.array_equal(y.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("opt_level,option,hint", [(1, None, "LATENCY"), (3, None, "THROUGHPUT"),
                                                   (3, "latency", "LATENCY")])
def test_performance_hint(opt_level, option, hint):
    kw = {"performance_hint": option} if option else {}
    c = hal.compile("mlp", DEV, opt_level=opt_level, **kw)
    assert c.executables[0].info["performance_hint"] == hint
    x = hal.models.example_input("mlp", 3)
    assert np.max(np.abs(c(x)[0] - _ref("mlp", x)[0])) <= 1e-5


def test_bad_options():
    with pytest.raises(hal.OptionError, match="performance_hint"):
        hal.compile("mlp", DEV, performance_hint="FAST")
    with pytest.raises(hal.OptionError, match="num_threads"):
        hal.compile("mlp", DEV, num_threads=-1)
    c = hal.compile("mlp", DEV, num_threads=1)
    assert c.executables[0].info["inference_num_threads"] == 1


def test_dynamic_batch_compiles_once():
    c = hal.compile("tiny_transformer", DEV)
    exe = c.executables[0]
    assert exe.info["dynamic_inputs"]
    compiled = exe.compiled
    for batch in (1, 7, 64, 2):
        x = hal.models.example_input("tiny_transformer", batch)
        assert np.max(np.abs(c(x)[0] - _ref("tiny_transformer", x)[0])) <= 1e-4
    assert exe.compiled is compiled


def test_outputs_belong_to_the_caller():
    c = hal.compile("mlp", DEV)
    a = hal.models.example_input("mlp", 2, seed=1)
    b = hal.models.example_input("mlp", 2, seed=2)
    ya = c(a)[0]
    keep = ya.copy()
    c(b)
    np.testing.assert_array_equal(ya, keep)
    ya[:] = 0  # writable, and the next call does not see it
    np.testing.assert_array_equal(c(a)[0], keep)


def test_calls_from_several_threads():
    c = hal.compile("lenet", DEV)
    xs = [hal.models.example_input("lenet", 1 + i % 3, seed=i) for i in range(8)]
    want = [_ref("lenet", x)[0] for x in xs]
    errors = []

    def work(i):
        try:
            for _ in range(5):
                y = c(xs[i])[0]
                assert np.max(np.abs(y - want[i])) <= 1e-4
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_int8_runs_hals_qdq_graph():
    x = hal.models.example_input("digits", 64)
    q = hal.compile("digits", DEV, precision="int8")
    info = q.executables[0].info
    assert info["precision"] == "int8" and info["qdq_nodes"] > 0
    assert info["inference_precision"] == "f32"  # the float parts stay fp32
    assert info["int8_layers"].get("Convolution") == 2  # and the convs run as int8
    ref = hal.compile("digits", "cpu@reference", precision="int8")(x)[0]
    y = q(x)[0]
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.98
    span = float(np.max(ref) - np.min(ref))
    assert np.max(np.abs(y - ref)) <= 0.05 * span


def test_refused_cases_fall_back_visibly():
    """Pad mode="wrap" is declined (OpenVINO has none): the node runs on the fallback, and the
    placement says why; strict compiles refuse."""
    pads = numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads")
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Pad", ["r", "pads"], ["y"], mode="wrap")]
    m = graph_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], [pads])
    with pytest.warns(UserWarning, match="fallback"):
        c = hal.compile(m, DEV)
    assert [f.op for f in c.fallbacks] == ["Pad"] and "wrap" in c.fallbacks[0].reason
    with pytest.raises(hal.UnsupportedOp, match="wrap"):
        hal.compile(m, DEV, fallback=None)
    x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(c(x)[0], _ref(m, x)[0])


def test_reduce_max_of_a_masked_row_is_minus_inf():
    """OpenVINO's CPU plugin starts ReduceMax at -FLT_MAX; HAL adds the -inf case back, so a
    fully masked attention row is detected as ONNX's own Attention function does."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
             helper.make_node("ReduceMin", ["x"], ["mn"], keepdims=0)]
    m = graph_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
               [helper.make_tensor_value_info("mx", TensorProto.FLOAT, []),
                helper.make_tensor_value_info("mn", TensorProto.FLOAT, [])])
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    rows = graph_model([helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=0)],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [axes])
    c, r = hal.compile(m, DEV, fallback=None), hal.compile(rows, DEV, fallback=None)
    assert c.executables[0].info["exact_extrema"] == 2
    inf = np.inf
    x = np.array([[-inf] * 4, [1, -inf, 2, -inf], [-3.4e38, -inf, -inf, -inf]], np.float32)
    np.testing.assert_array_equal(r(x)[0], [-inf, 2, np.float32(-3.4e38)])
    mx, mn = c(np.full((3, 4), inf, np.float32))
    assert mx == inf and mn == inf
    mx, mn = c(np.full((3, 4), -inf, np.float32))
    assert mx == -inf and mn == -inf


def test_int64_arithmetic_is_refused():
    """OpenVINO's CPU plugin holds int64 as int32: 2**40 + 1 would come back as 1."""
    m = graph_model([helper.make_node("Add", ["a", "b"], ["c"])],
               [helper.make_tensor_value_info("a", TensorProto.INT64, [2]),
                helper.make_tensor_value_info("b", TensorProto.INT64, [2])],
               [helper.make_tensor_value_info("c", TensorProto.INT64, [2])])
    with pytest.raises(hal.UnsupportedOp, match="int64 as int32"):
        hal.compile(m, DEV, fallback=None)
    c = hal.compile(m, DEV, fallback="cpu@reference")
    a = np.array([2 ** 40, 5], np.int64)
    np.testing.assert_array_equal(c(a, np.ones(2, np.int64))[0], a + 1)


@pytest.mark.parametrize("op,dtype", [("GlobalMaxPool", TensorProto.FLOAT),
                                      ("GlobalLpPool", TensorProto.FLOAT),
                                      ("Xor", TensorProto.BOOL)])
def test_ops_without_runnable_onnx_cases(op, dtype):
    """Declared ops whose ONNX cases are all at opsets HAL cannot convert from: checked here."""
    rng = np.random.default_rng(0)
    if op == "Xor":
        m = graph_model([helper.make_node(op, ["a", "b"], ["y"])],
                   [helper.make_tensor_value_info(n, dtype, [3, 4]) for n in "ab"],
                   [helper.make_tensor_value_info("y", dtype, [3, 4])])
        args = [rng.random((3, 4)) > 0.5, rng.random((3, 4)) > 0.5]
    else:
        m = graph_model([helper.make_node(op, ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", dtype, [2, 3, 4, 5])],
                   [helper.make_tensor_value_info("y", dtype, [2, 3, 1, 1])])
        args = [rng.standard_normal((2, 3, 4, 5)).astype(np.float32)]
    y = hal.compile(m, DEV, fallback=None)(*args)[0]
    ref = hal.compile(m, "cpu@ort")(*args)[0]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_stable_topk():
    """Ties keep their input order, as ONNX specifies (OpenVINO's TopK is made stable)."""
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    m = graph_model([helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
               [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 3]),
                helper.make_tensor_value_info("i", TensorProto.INT64, [2, 3])], [k])
    c = hal.compile(m, DEV, fallback=None)
    assert c.executables[0].info["stable_topk"] == 1
    x = np.array([[1, 2, 2, 2, 0, 2], [5, 5, 5, 5, 5, 5]], np.float32)
    np.testing.assert_array_equal(c(x)[1], [[1, 2, 3], [0, 1, 2]])


def test_hal_fused_ops_are_expanded():
    from onnx_ir import from_proto, to_proto

    from hal.passes.activation import ActivationFusion

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    plain = graph_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w])
    ir_model = from_proto(plain)
    assert ActivationFusion()(ir_model).modified
    fused = to_proto(ir_model)
    c = hal.compile(fused, DEV, fallback=None)
    assert c.executables[0].info["expanded_hal_ops"] == 1
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    assert np.max(np.abs(c(x)[0] - _ref(plain, x)[0])) <= 1e-5
