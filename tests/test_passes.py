"""Shared passes change the graph as intended and never change the numbers."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import hal
from hal.backend import CompileOptions
from hal.passes import Flow, cleanup_passes, optimize_passes
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
    opt, records = _optimized(model)
    assert len(opt.graph) <= len(model.graph)
    for batch in (1, 5):
        x = hal.models.example_input(name, batch)
        np.testing.assert_allclose(_run_exact(opt, x), _run_exact(model, x), atol=1e-5, rtol=1e-5)


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
    opt, records = _optimized(model, fuse=False)
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
