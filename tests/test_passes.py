"""Shared passes change the graph as intended and never change the numbers."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper

import hal
from hal.backend import CompileOptions
from hal.errors import ModelError
from hal.passes import Flow, cleanup_passes, default_flow, optimize_passes
from hal.passes.constant_folding import ConstantFolding
from hal.passes.dead_code import DeadCodeElimination
from tests.helpers import make_model, rand


def _optimized(model: hal.Model, fuse: bool = True) -> tuple[hal.Model, list]:
    flow = Flow("test", cleanup_passes() + optimize_passes(CompileOptions(), fuse))
    ir_model, records = flow.run(model.copy().ir)
    return hal.Model(ir_model, model.name), records


def _run_exact(model: hal.Model, x: np.ndarray) -> np.ndarray:
    return hal.compile(model, "cpu@reference")(x)[0]


@pytest.mark.parametrize("name", hal.models.list())
def test_zoo_outputs_unchanged(name):
    model = hal.models.get(name)
    opt, _ = _optimized(model)
    assert len(opt.graph) <= len(model.graph)
    for batch in (1, 5):
        x = hal.models.example_input(name, batch)
        err = np.abs(_run_exact(opt, x).astype(np.float64) - _run_exact(model, x)).max()
        assert err <= 1e-5, f"{name} batch {batch}: max abs error {err:g}"


def test_batchnorm_folded_into_conv():
    model = hal.models.get("resnet_lite")
    opt, records = _optimized(model, fuse=False)
    ops = [n.op_type for n in opt.graph]
    assert "BatchNormalization" not in ops
    detail = {r.name: r.detail for r in records}
    assert detail["BatchNormFolding"] == "folded 10 BatchNormalization into Conv"


def test_activation_fusion_makes_hal_nodes_and_saves(tmp_path):
    opt, _ = _optimized(hal.models.get("lenet"))
    fused = [n for n in opt.graph if n.domain == "ai.hal"]
    assert [n.op_type for n in fused] == ["FusedGemm"]
    assert fused[0].attributes["activation"].value == "Relu"
    hal.save(opt, tmp_path / "fused.onnx")  # the ai.hal opset is declared, so it saves
    again = hal.load(tmp_path / "fused.onnx")
    x = hal.models.example_input("lenet", 2)
    np.testing.assert_array_equal(_run_exact(again, x), _run_exact(opt, x))


def test_relu6_clip_fused_with_bounds():
    opt, _ = _optimized(hal.models.get("mobilenet_lite"))
    clips = [n for n in opt.graph if n.domain == "ai.hal"
             and n.attributes["activation"].value == "Clip"]
    assert clips and list(clips[0].attributes["activation_params"].value) == [0.0, 6.0]


def test_constant_folding_and_bias_fusion():
    w = rand(4, 3)
    nodes = [helper.make_node("Add", ["a", "b"], ["c"], name="add_consts"),
             helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "c"], ["y"], name="bias")]
    proto = make_model(nodes, [("x", ["N", 4])], [("y", None)],
                       {"a": np.ones(3, np.float32), "b": np.full(3, 2, np.float32), "w": w})
    model = hal.load(proto)
    opt, _ = _optimized(model, fuse=False)
    assert [n.op_type for n in opt.graph] == ["Gemm"]
    x = rand(5, 4, seed=3)
    np.testing.assert_allclose(_run_exact(opt, x), x @ w + 3, rtol=1e-6)


def test_no_fusion_when_conv_output_is_shared():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "c"], ["y"], name="add")]
    model = hal.load(make_model(nodes, [("x", [1, 2, 5, 5])], [("y", None)],
                                {"w": rand(2, 2, 3, 3)}))
    opt, _ = _optimized(model)
    assert "Conv" in [n.op_type for n in opt.graph]


def test_explain_shows_pass_details():
    compiled = hal.compile(hal.models.get("resnet_lite"), "cpu@torch") \
        if any(d.backend == "torch" and d.usable for d in hal.devices()) else None
    if compiled is None:
        pytest.skip("needs the torch backend")
    details = [p["detail"] for p in compiled.report()["passes"] if p["detail"]]
    assert any("BatchNormalization" in d for d in details)


def _ops(model: hal.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def _check_same(model: hal.Model, opt: hal.Model, *shape) -> None:
    x = rand(*shape, seed=7)
    np.testing.assert_allclose(_run_exact(opt, x), _run_exact(model, x), atol=1e-5, rtol=0)


def test_optimize_passes_by_opt_level_and_flow_names():
    assert optimize_passes(CompileOptions(opt_level=0)) == []
    names = [type(p).__name__ for p in optimize_passes(CompileOptions(opt_level=2))]
    assert names[1:] == ["ConstantFolding", "DeadCodeElimination", "BatchNormFolding",
                         "BiasFusion", "DeadCodeElimination"]
    fused = [type(p).__name__ for p in optimize_passes(CompileOptions(), fuse_activations=True)]
    assert "ActivationFusion" in fused
    assert default_flow("x", CompileOptions(opt_level=0)).name == "x.plain"
    assert default_flow("x", CompileOptions(opt_level=3)).name == "x.default"
    all_passes = optimize_passes(CompileOptions(), True)[1:]
    assert all(p.hal_name for p in all_passes)


def test_reference_flow_runs_the_model_as_written():
    from hal.registry import REGISTRY

    ref = REGISTRY.resolve("cpu@reference").backend
    flow = ref.flow(CompileOptions(opt_level=3))
    assert flow.name == "reference.exact"
    assert [type(p) for p in flow.passes] == [type(p) for p in cleanup_passes()]
    compiled = hal.compile(hal.models.get("resnet_lite"), "cpu@reference", opt_level=3)
    assert "BatchNormalization" in _ops(compiled.model)


@pytest.mark.filterwarnings("ignore:.*cannot run:UserWarning")  # the unoptimized Shape
def test_constant_folding_shape_constant_and_chain():
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Constant", [], ["k"], name="k",
                              value=helper.make_tensor("kv", 1, [3], [1.0, 2.0, 3.0])),
             helper.make_node("Mul", ["k", "two"], ["k2"], name="mul"),
             helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape"),
             helper.make_node("Add", ["r", "k2"], ["y"], name="add")]
    model = hal.load(make_model(nodes, [("x", [2, 3])], [("y", None)],
                                {"two": np.full(3, 2, np.float32)}))
    opt, records = _optimized(model, fuse=False)
    assert _ops(opt) == ["Reshape", "Add"]
    (shape_init,) = [v for v in opt.graph.initializers.values() if v.name == "s"]
    assert shape_init.const_value.numpy().tolist() == [2, 3]
    assert "two" not in opt.graph.initializers  # dead after folding
    detail = {r.name: r.detail for r in records}["ConstantFolding"]
    assert "Mul x1" in detail and "Shape x1" in detail
    _check_same(model, opt, 2, 3)


def test_constant_folding_leaves_dynamic_shapes_big_results_and_overridable_inputs():
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape"),
             helper.make_node("Add", ["a", "b"], ["c"], name="add_consts"),
             helper.make_node("Add", ["r", "c"], ["y"], name="add")]
    proto = make_model(nodes, [("x", ["N", 4])], [("y", None)],
                       {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)})
    model = hal.load(proto)
    opt, _ = _optimized(model)
    assert _ops(opt) == ["Shape", "Reshape", "Add"]  # the batch dim is not known statically
    capped = model.copy()
    ConstantFolding(size_limit=4)(capped.ir)
    assert "add_consts" in [n.name for n in capped.graph]  # 8 input elements > 4
    # an initializer that is also a graph input is a default the caller may override
    proto.graph.input.append(helper.make_tensor_value_info("a", 1, [4]))
    opt = _optimized(hal.load(proto))[0]
    assert "add_consts" in [n.name for n in opt.graph]


def test_dead_code_drops_unused_nodes_and_initializers():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="used"),
             helper.make_node("Sigmoid", ["x"], ["dead"], name="dead")]
    model = hal.load(make_model(nodes, [("x", [2])], [("y", None)],
                                {"unused": np.ones(3, np.float32)}))
    dce = DeadCodeElimination()
    work = model.copy()
    assert dce(work.ir).modified
    assert _ops(work) == ["Relu"] and not work.graph.initializers
    assert dce.detail == "removed 1 node(s) and 1 initializer(s)"


def _bn_inits(c: int, seed: int = 1) -> dict:
    r = np.random.default_rng(seed)
    return {"scale": r.uniform(0.5, 2, c).astype(np.float32),
            "bnb": r.standard_normal(c).astype(np.float32),
            "mean": r.standard_normal(c).astype(np.float32),
            "var": r.uniform(0.5, 2, c).astype(np.float32)}


@pytest.mark.parametrize("trans_b", [1, 0])
def test_batchnorm_folded_into_gemm(trans_b):
    w = rand(5, 4) if trans_b else rand(4, 5)
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"], name="fc", transB=trans_b,
                              alpha=0.5, beta=2.0),
             helper.make_node("BatchNormalization", ["g", "scale", "bnb", "mean", "var"], ["y"],
                              name="bn", epsilon=1e-3)]
    model = hal.load(make_model(nodes, [("x", ["N", 4])], [("y", None)],
                                {"w": w, "c": rand(5, seed=2), **_bn_inits(5)}))
    opt, records = _optimized(model, fuse=False)
    assert _ops(opt) == ["Gemm"] and opt.graph.outputs[0].name == "y"
    assert {r.name: r.detail for r in records}["BatchNormFolding"] == \
        "folded 1 BatchNormalization into Gemm"
    _check_same(model, opt, 3, 4)


def test_batchnorm_kept_when_conv_output_has_another_reader():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "bnb", "mean", "var"], ["b"]),
             helper.make_node("Add", ["b", "c"], ["y"], name="add")]
    model = hal.load(make_model(nodes, [("x", [1, 2, 5, 5])], [("y", None)],
                                {"w": rand(3, 2, 3, 3), **_bn_inits(3)}))
    opt, _ = _optimized(model)
    assert "BatchNormalization" in _ops(opt)
    _check_same(model, opt, 1, 2, 5, 5)


@pytest.mark.parametrize("bias_shape,fused", [((1, 3, 1, 1), True), ((3, 1, 1), True),
                                              ((1,), True), ((3,), False), ((1, 3, 3, 3), False)])
def test_conv_add_into_bias_only_when_per_channel(bias_shape, fused):
    # spatial output 3x3 with 3 channels: a [3] constant adds along the width, not per channel
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "k"], ["y"], name="add")]
    model = hal.load(make_model(nodes, [("x", [2, 2, 5, 5])], [("y", None)],
                                {"w": rand(3, 2, 3, 3), "b": rand(3, seed=1),
                                 "k": rand(*bias_shape, seed=2)}))
    opt, _ = _optimized(model, fuse=False)
    assert _ops(opt) == (["Conv"] if fused else ["Conv", "Add"])
    assert opt.graph.outputs[0].name == "y"
    _check_same(model, opt, 2, 2, 5, 5)


def test_matmul_add_stays_when_input_is_not_2d():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["y"], name="bias")]
    model = hal.load(make_model(nodes, [("x", ["N", 3, 4])], [("y", None)],
                                {"w": rand(4, 5), "b": rand(5, seed=1)}))
    opt, _ = _optimized(model)
    assert _ops(opt) == ["MatMul", "Add"]


_ACTS = {"Relu": ({}, [], []), "Sigmoid": ({}, [], []), "Tanh": ({}, [], []),
         "LeakyRelu": ({"alpha": 0.2}, [], [0.2]), "Gelu": ({}, [], []),
         "Clip": ({}, ["lo", "hi"], [0.0, 6.0])}


@pytest.mark.parametrize("act", sorted(_ACTS))
@pytest.mark.parametrize("base", ["Conv", "Gemm"])
def test_activation_fusion_each_activation(base, act):
    attrs, extra, params = _ACTS[act]
    if base == "Conv":
        inputs, w, shape = [("x", ["N", 2, 5, 5])], rand(3, 2, 3, 3), (2, 2, 5, 5)
        first = helper.make_node("Conv", ["x", "w", "b"], ["c"], name="base", pads=[1, 1, 1, 1])
    else:
        inputs, w, shape = [("x", ["N", 4])], rand(3, 4), (2, 4)
        first = helper.make_node("Gemm", ["x", "w", "b"], ["c"], name="base", transB=1)
    nodes = [first, helper.make_node(act, ["c", *extra], ["y"], name="act", **attrs)]
    model = hal.load(make_model(nodes, inputs, [("y", None)],
                                {"w": w, "b": rand(3, seed=1), "lo": np.float32(0),
                                 "hi": np.float32(6)}))
    opt, _ = _optimized(model)
    (node,) = list(opt.graph)
    assert (node.domain, node.op_type) == ("ai.hal", "Fused" + base)
    assert node.attributes["activation"].value == act
    assert list(node.attributes["activation_params"].value) == pytest.approx(params)
    assert opt.graph.outputs[0].name == "y" and opt.ir.opset_imports["ai.hal"] == 1
    _check_same(model, opt, *shape)
    unfused = _optimized(model, fuse=False)[0]
    assert _ops(unfused) == [base, act]


def test_activation_not_fused_with_runtime_clip_bounds_or_tanh_gelu():
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g1"], name="g1"),
             helper.make_node("Clip", ["g1", "lo"], ["c"], name="clip"),
             helper.make_node("Gemm", ["c", "w2"], ["g2"], name="g2"),
             helper.make_node("Gelu", ["g2"], ["y"], name="gelu", approximate="tanh")]
    model = hal.load(make_model(nodes, [("x", ["N", 4]), ("lo", [])], [("y", None)],
                                {"w": rand(4, 4), "w2": rand(4, 4, seed=1)}))
    opt, _ = _optimized(model)
    assert _ops(opt) == ["Gemm", "Clip", "Gemm", "Gelu"]


def test_fused_nodes_are_validated_and_placed_by_hal_ops():
    from hal.ir.validate import validate
    from hal.registry import REGISTRY

    opt, _ = _optimized(hal.models.get("dwsep"))
    validate(opt, REGISTRY.known_ops())  # ai.hal nodes pass the unknown-op check
    node = next(n for n in opt.graph if n.domain == "ai.hal")
    ref = REGISTRY.resolve("cpu@reference")
    assert ref.backend.supports(node, ref.info) is True

    class Plain(type(ref.backend)):
        hal_ops = frozenset()
    assert "ai.hal FusedConv" in Plain().supports(node, ref.info)
    bad = opt.copy()
    next(n for n in bad.graph if n.domain == "ai.hal").op_type = "FusedPool"
    with pytest.raises(ModelError, match="FusedPool"):
        validate(bad, REGISTRY.known_ops())
    bad = opt.copy()
    next(n for n in bad.graph if n.domain == "ai.hal").attributes["activation"] = \
        ir.AttrString("activation", "Softplus")
    with pytest.raises(ModelError, match="Softplus"):
        validate(bad, REGISTRY.known_ops())


def test_inference_dropout_is_removed_by_every_flow_and_training_dropout_is_kept():
    import onnx
    from onnx import TensorProto, helper

    model = hal.models.get("mlp")
    assert "Dropout" in [n.op_type for n in model.graph]  # hal.nn records it, for training
    compiled = hal.compile(model, "cpu@reference")
    assert "Dropout" not in [n.op_type for n in compiled.model.graph]
    assert "InferenceDropoutElimination" in [p["pass"] for p in compiled.flow["passes"]]

    def dropout_model(training: bool):
        nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"),
                 helper.make_node("Dropout", ["h", "r", "t"], ["y"], name="drop")]
        inits = [helper.make_tensor("r", TensorProto.FLOAT, [], [0.5]),
                 helper.make_tensor("t", TensorProto.BOOL, [], [training])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2, 3])],
                              [helper.make_tensor_value_info("y", 1, [2, 3])], inits)
        return onnx.helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])

    kept = hal.compile(dropout_model(True), "cpu@reference")  # training mode drops
    assert "Dropout" in [n.op_type for n in kept.model.graph]
    gone = hal.compile(dropout_model(False), "cpu@reference")
    assert "Dropout" not in [n.op_type for n in gone.model.graph]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(gone(x)[0], x)
