"""The tracing backends' shared lowering (hal.backends.common), through jax and tf."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.backends.common.kernels import COMMON, FUSED
from hal.backends.common.table import KernelTable


def _usable(device: str) -> bool:
    kind, backend = device.split("@")
    return any(d.usable and d.kind == kind and d.backend == backend for d in hal.devices())


TRACING = [pytest.param(d, marks=pytest.mark.skipif(not _usable(d), reason=f"{d} unusable"))
           for d in ("cpu@jax", "cpu@tf")]


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_a_table_is_its_registrations():
    table = KernelTable(COMMON, FUSED)
    assert "Relu" in table.ops and "FusedConv" not in table.ops
    assert table.hal_ops == {"FusedConv", "FusedGemm", "FakeQuantize"}
    assert table.static_inputs["Reshape"] == {1}

    @table.kernel("Relu")
    def own_relu(cx, x):
        return x

    assert table.kernels["Relu"] is own_relu and COMMON.kernels["Relu"] is not own_relu
    with pytest.raises(ValueError, match="com.example"):
        table.kernel("Foo", domain="com.example")


@pytest.mark.parametrize("tracing_device", TRACING)
def test_softmax_of_a_huge_mean_is_not_nan(tracing_device):
    """XLA on CPU recomputes the mean's scaling in two fusions, once rounded and once as a
    fused multiply-add, so an unguarded softmax of logits near 1e10 gave all NaN."""
    x = (2e9 + np.arange(169, dtype=np.float32) * 7e7).reshape(1, 1, 13, 13)
    x = np.ascontiguousarray(np.broadcast_to(x, (1, 1000, 13, 13)))
    model = _model([helper.make_node("GlobalAveragePool", ["x"], ["g"]),
                    helper.make_node("Flatten", ["g"], ["f"]),
                    helper.make_node("Softmax", ["f"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000, 13, 13])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])])
    y = hal.compile(model, tracing_device, fallback=None)(x)[0]
    np.testing.assert_allclose(y, np.full((1, 1000), 1e-3, np.float32), rtol=1e-5)


@pytest.mark.parametrize("tracing_device", TRACING)
def test_weights_computed_from_constants_are_computed_once(tracing_device):
    """ConstantOfShape weights (ONNX's light models) are computed at lowering and are weights
    like any other: XLA on CPU miscompiled a conv whose filter it saw as one broadcast
    constant (conv + relu + sum gave 0 or garbage on jax)."""
    def filled(name, shape):
        return [helper.make_node("Constant", [], [name + "_shape"],
                                 value=numpy_helper.from_array(np.array(shape, np.int64))),
                helper.make_node("ConstantOfShape", [name + "_shape"], [name],
                                 value=numpy_helper.from_array(np.array([0.02], np.float32)))]

    # more than 2**20 elements: the flow's constant folding leaves it to run time
    nodes = filled("w", [2050, 512, 1, 1]) + filled("b", [2050]) + [
        helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=0)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512, 13, 13])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2050])],
                   [numpy_helper.from_array(np.array([2, 3], np.int64), "axes")])
    x = np.random.default_rng(0).random((1, 512, 13, 13), np.float32)
    compiled = hal.compile(model, tracing_device, fallback=None)
    plan = compiled.executables[0].plan
    assert not any(s.op == "ConstantOfShape" for s in plan.steps)
    per_pixel = np.maximum(x.astype(np.float64).sum(1) * 0.02 + 0.02, 0)  # every filter alike
    want = np.broadcast_to(per_pixel.sum((1, 2))[:, None], (1, 2050))
    np.testing.assert_allclose(compiled(x)[0], want, rtol=1e-5)


# -- training on the shared lowering ---------------------------------------------------
def _train_graph(ratio: float):
    """loss = mean(Dropout(x * w)); the contract's target input, unused."""
    import onnx_ir as ir

    from hal.trainer import TrainGraph

    f = TensorProto.FLOAT
    nodes = [helper.make_node("Transpose", ["w"], ["wt"]),
             helper.make_node("Mul", ["x", "wt"], ["y"]),
             helper.make_node("Dropout", ["y", "ratio", "mode"], ["d"]),
             helper.make_node("ReduceMean", ["d"], ["loss"], keepdims=0)]
    inits = [numpy_helper.from_array(np.arange(1, 7, dtype=np.float32).reshape(6, 1), "w"),
             numpy_helper.from_array(np.asarray(ratio, np.float32), "ratio"),
             numpy_helper.from_array(np.asarray(True), "mode")]
    model = ir.serde.deserialize_model(_model(
        nodes, [helper.make_tensor_value_info("x", f, [4, 6]),
                helper.make_tensor_value_info("target", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("loss", f, []),
         helper.make_tensor_value_info("d", f, [4, 6])], inits))
    return TrainGraph(model, model, params=["w"], frozen=[], updates={}, outputs=["d"])


def _context(framework: str):
    if framework == "jax":
        pytest.importorskip("jax")
        from hal.backends.jax_backend.context import JaxContext
        from hal.backends.jax_backend.framework import lax
        from hal.backends.jax_backend.kernels import TABLE

        return TABLE, JaxContext(TABLE, lax.Precision.HIGHEST)
    pytest.importorskip("tensorflow")
    from hal.backends.tf_backend.context import TfContext
    from hal.backends.tf_backend.kernels import TABLE

    return TABLE, TfContext(TABLE)


def test_trained_weights_are_never_folded_into_constants():
    from hal.backends.common.lowering import lower
    from hal.backends.jax_backend.kernels import TABLE

    model = _train_graph(0.5).model
    inference = lower(model, TABLE, "jax", params=True)
    assert "Transpose" not in [s.op for s in inference.steps] and "wt" in inference.param_names
    training = lower(model, TABLE, "jax", params=True, variables={"w", "ratio"})
    assert "Transpose" in [s.op for s in training.steps] and "w" in training.param_names
    assert "ratio" in training.consts  # Dropout must know it while tracing: a constant


@pytest.mark.parametrize("framework", ["jax", "tf"])
def test_dropout_draws_its_mask_from_the_trainers_random_source(framework):
    from hal.backends.common.training import RandomSource, lower_training, training_function
    from hal.errors import BackendError

    table, cx = _context(framework)
    u = np.random.default_rng(0).random((4, 6)).astype(np.float32)

    class Fixed(RandomSource):
        def draw(self, index, shape):
            assert index == 0 and [int(d) for d in shape] == [4, 6]
            return cx.cast(u, np.float32)

    tp = lower_training(_train_graph(0.25), table, framework)
    f = training_function(tp, cx)
    x = np.ones((4, 6), np.float32)
    w = np.arange(1, 7, dtype=np.float32).reshape(6, 1)
    loss, (d,), state = f({"w": cx.cast(w, np.float32)}, {}, {"x": cx.cast(x, np.float32),
                                                              "target": np.zeros(4, np.int64)},
                          Fixed())
    want = np.where(u >= 0.25, x * w.T / 0.75, 0)
    np.testing.assert_allclose(np.asarray(d), want, rtol=1e-6)
    np.testing.assert_allclose(float(loss), want.mean(), rtol=1e-6)
    assert state == {}
    with pytest.raises(BackendError, match="hal.train"):
        f({"w": cx.cast(w, np.float32)}, {}, {"x": cx.cast(x, np.float32),
                                             "target": np.zeros(4, np.int64)}, None)
