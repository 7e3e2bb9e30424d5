"""IREE as a HAL device: the module cache, one module per input shape, the shapes option,
threads, and the cases it refuses. The shared suites (conformance, zoo, pruned zoo, light
models) run on it through the ``device`` fixture like on every other device. Compiles take
about half a second each for these tiny graphs, so the models here are small."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from helpers import graph_model, usable

pytest.importorskip("iree.runtime")
pytest.importorskip("iree.compiler")

DEV = "cpu@iree"


pytestmark = pytest.mark.skipif(not usable("cpu:0@iree"), reason="cpu@iree is not usable here")


def _dense(n_in=8, n_out=4, seed=0):
    """x[N, n_in] -> Gemm -> Tanh: a dynamic-batch model that compiles in about a second."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((n_out, n_in)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "b")
    return graph_model([helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
                   helper.make_node("Tanh", ["h"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])], [w, b])


def _x(batch, n=8, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, n)).astype(np.float32)


def _ref(model, *x):
    return hal.compile(model, "cpu@reference")(*x)


def test_devices_are_probed_honestly():
    import iree.runtime as rt

    devs = {d.string: d for d in hal.devices() if d.backend == "iree"}
    cpu = devs["cpu:0@iree"]
    assert cpu.usable and "llvm-cpu" in cpu.name and "local-task" in cpu.name
    for kind, driver in (("cuda", "cuda"), ("vulkan", "vulkan")):
        try:
            found = rt.get_driver(driver).query_available_devices()
        except Exception:  # noqa: BLE001 - the driver's library is not there
            found = []
        if not found:
            info = devs[f"{kind}:0@iree"]
            assert not info.usable and driver in info.reason
    assert hal.device("cpu").backend.name != "iree"  # below ONNX Runtime's priority


def test_modules_are_cached_on_disk_per_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    m = _dense(seed=11)  # weights no other test uses: the cache starts cold
    c = hal.compile(m, DEV, fallback=None)
    info = c.executables[0].info
    assert info["shapes"] == "static" and "--iree-llvmcpu-target-cpu=host" in info["flags"]
    assert info["modules"] == [{"shapes": [[1, 8]], "cache": "cold",
                                "seconds": info["modules"][0]["seconds"]}]
    for batch in (1, 3, 3):
        x = _x(batch)
        assert np.max(np.abs(c(x)[0] - _ref(m, x)[0])) <= 1e-5
    assert [mod["shapes"] for mod in info["modules"]] == [[[1, 8]], [[3, 8]]]
    files = sorted(p.name for p in (tmp_path / "iree").glob("*.vmfb"))
    assert len(files) == 2
    again = hal.compile(m, DEV, fallback=None)  # a new executable finds the module on disk
    assert again.executables[0].info["modules"][0]["cache"] == "warm"
    again(_x(3))
    assert [mod["cache"] for mod in again.executables[0].info["modules"]] == ["warm", "warm"]


def test_dynamic_shapes_compile_one_module():
    m = _dense(seed=12)
    c = hal.compile(m, DEV, shapes="dynamic", fallback=None)
    for batch in (1, 5, 64):
        x = _x(batch)
        assert np.max(np.abs(c(x)[0] - _ref(m, x)[0])) <= 1e-5
    assert [mod["shapes"] for mod in c.executables[0].info["modules"]] == ["dynamic"]
    with pytest.raises(hal.OptionError, match="shapes"):
        hal.compile(m, DEV, shapes="sometimes")


def test_outputs_belong_to_the_caller_and_threads_share_modules():
    m = _dense(seed=13)
    c = hal.compile(m, DEV, fallback=None)
    xs = [_x(1, seed=s) for s in range(6)]
    want = [_ref(m, x)[0] for x in xs]
    first = c(xs[0])[0]
    keep = first.copy()
    c(xs[1])
    np.testing.assert_array_equal(first, keep)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                assert np.max(np.abs(c(xs[i])[0] - want[i])) <= 1e-5
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(c.executables[0].info["modules"]) == 1


def test_unsigned_results_keep_their_type():
    """IREE's ABI has no unsigned types (uint8 comes back as int8): the executable gives the
    graph's type back."""
    m = graph_model([helper.make_node("Add", ["a", "b"], ["c"])],
               [helper.make_tensor_value_info(n, TensorProto.UINT8, [4]) for n in "ab"],
               [helper.make_tensor_value_info("c", TensorProto.UINT8, [4])])
    a = np.array([250, 1, 128, 7], np.uint8)
    y = hal.compile(m, DEV, fallback=None)(a, np.full(4, 3, np.uint8))[0]
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, a + np.uint8(3))


def test_refused_cases_fall_back_visibly():
    """A Slice whose starts come at run time is declined (IREE's ONNX lowering needs them at
    compile time): it runs on the fallback, and the placement says why."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Slice", ["r", "s", "e"], ["y"])]
    m = graph_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6]),
                       helper.make_tensor_value_info("s", TensorProto.INT64, [1]),
                       helper.make_tensor_value_info("e", TensorProto.INT64, [1])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["k"])])
    with pytest.raises(hal.UnsupportedOp, match="compile time"):
        hal.compile(m, DEV, fallback=None)
    with pytest.warns(UserWarning, match="fallback"):
        c = hal.compile(m, DEV)
    assert [f.op for f in c.fallbacks] == ["Slice"]
    x = np.arange(-3, 3, dtype=np.float32)
    y = c(x, np.array([1], np.int64), np.array([4], np.int64))[0]
    np.testing.assert_array_equal(y, [0, 0, 0])


def test_hal_fused_ops_are_expanded():
    from onnx_ir import from_proto, to_proto

    from hal.passes.activation import ActivationFusion

    plain = _dense(seed=14)
    plain.graph.node[1].op_type = "Relu"
    ir_model = from_proto(plain)
    assert ActivationFusion()(ir_model).modified
    c = hal.compile(to_proto(ir_model), DEV, fallback=None)
    assert c.executables[0].info["expanded_hal_ops"] == 1
    x = _x(2)
    assert np.max(np.abs(c(x)[0] - _ref(plain, x)[0])) <= 1e-5


def test_channels_last_option():
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    m = graph_model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                helper.make_node("Relu", ["c"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], [w])
    c = hal.compile(m, DEV, channels_last=True, fallback=None)
    assert "convert-conv-to-channels-last" in c.executables[0].info["flags"]
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.max(np.abs(c(x)[0] - _ref(m, x)[0])) <= 1e-5
    with pytest.raises(hal.OptionError, match="channels_last"):
        hal.compile(m, DEV, channels_last="yes")
