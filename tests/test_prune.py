"""hal.prune: structured (channel) pruning checked against the zeroing oracle (the unpruned
model with the removed channels' producing weights set to zero computes the same), against
the weights sliced by hand, on every device, and on what it leaves alone."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.compression import cost
from hal.errors import OptionError
from hal.passes.channels import analyze
from hal.compression.structured import ALLOCATIONS
from hal.passes.prune_channels import zero_channels

ORACLE_TOL = 1e-5
DEVICE_TOL = 1e-4  # fp32 max abs error against the reference, as tests/test_zoo.py


def inits(model: hal.Model) -> dict[str, np.ndarray]:
    return {n: v.const_value.numpy().copy() for n, v in model.graph.initializers.items()}


def run(model, x, device="cpu@reference", **kw):
    return hal.compile(model, device, **kw)(x)[0]


def oracle_gap(model: hal.Model, x: np.ndarray, **options) -> tuple[float, hal.Model]:
    """max |pruned(x) - zeroed(x)| on cpu@reference, zeroed being ``model`` with the channels
    hal.prune removes zeroed in their producing tensors (weights, biases, BN scale and shift)."""
    pruned = hal.prune(model, **options)
    zeroed = model.copy()
    cg = analyze(zeroed.ir, options.get("exclude", ()))
    sel = ALLOCATIONS[options.get("allocation", "uniform")](
        cg, options.get("ratio", 0.5), options.get("importance", "l1"), options.get("round_to"),
        options.get("keep_residual", False))
    zero_channels(zeroed.ir, cg, sel.kept)
    return float(np.abs(run(pruned, x) - run(zeroed, x)).max()), pruned


def build(nodes, inputs, outputs, arrays, name="g") -> hal.Model:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in arrays.items()])
    return hal.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def group_of(report, producer: str) -> dict:
    return next(g for g in report.groups if producer in g["producers"])


def row(report, layer: str) -> dict:
    return next(r for r in report.rows if r["layer"] == layer)


# -- residual Add -------------------------------------------------------------------------------

def test_residual_add_group_is_consistent_and_matches_the_zeroing_oracle():
    model = hal.models.get("resnet_lite")
    x = hal.models.example_input("resnet_lite", 4)
    gap, pruned = oracle_gap(model, x, ratio=0.5)
    assert gap <= ORACLE_TOL
    report = pruned.compression
    stage1 = group_of(report, "0.0/Conv")  # the stem and both blocks' second convs add up
    assert set(stage1["producers"]) == {"0.0/Conv", "2.conv2.0/Conv", "3.conv2.0/Conv"}
    stage2 = group_of(report, "4.shortcut.0/Conv")  # the projection shortcut joins them
    assert set(stage2["producers"]) == {"4.conv2.0/Conv", "4.shortcut.0/Conv", "5.conv2.0/Conv"}
    before, after = inits(model), inits(pruned)
    inputs = {"0.0.weight": [0, 1, 2], "4.shortcut.0.weight": stage1["kept"]}
    for g, weights in ((stage1, ["0.0.weight", "2.conv2.0.weight", "3.conv2.0.weight"]),
                       (stage2, ["4.conv2.0.weight", "4.shortcut.0.weight", "5.conv2.0.weight"])):
        kept = g["kept"]
        assert g["channels"] == [len(kept), len(kept) * 2] and g["status"] == "pruned"
        for w in weights:  # every branch keeps the same channels
            cols = inputs.get(w) or group_of(report, w.replace("conv2.0.weight", "conv1.0/Conv"))[
                "kept"]
            np.testing.assert_array_equal(after[w], before[w][kept][:, cols])
    # the consumers of the joined channels slice their input axis with the same channels
    np.testing.assert_array_equal(after["4.shortcut.0.weight"],
                                  before["4.shortcut.0.weight"][stage2["kept"]][:, stage1["kept"]])
    np.testing.assert_array_equal(after["9.weight"], before["9.weight"][:, stage2["kept"]])
    assert pruned.outputs[0].shape == model.outputs[0].shape


def test_a_residual_add_of_two_branches_sums_importance_over_the_group():
    """y = Relu(conv_a(x)) + conv_b(x): the kept channels are those of the largest summed
    L1 norm over both producers, not of either alone."""
    rng = np.random.default_rng(0)
    wa = np.zeros((4, 2, 1, 1), np.float32)
    wb = np.zeros((4, 2, 1, 1), np.float32)
    wa[:, 0, 0, 0] = [5, 0, 1, 1]  # channel 0 is strong in a only, channel 1 in b only
    wb[:, 0, 0, 0] = [0, 5, 1, 3]  # sums: 5, 5, 2, 4
    model = build(
        [helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
         helper.make_node("Relu", ["a"], ["ra"], name="relu"),
         helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b"),
         helper.make_node("Add", ["ra", "b"], ["s"], name="add"),
         helper.make_node("Conv", ["s", "wc"], ["y"], name="conv_c")],
        [("x", ["N", 2, 5, 5])], [("y", ["N", 3, 5, 5])],
        {"wa": wa, "wb": wb, "wc": rand(rng, 3, 4, 1, 1)})
    gap, pruned = oracle_gap(model, rand(rng, 2, 2, 5, 5), ratio=0.5)
    assert gap <= ORACLE_TOL
    assert group_of(pruned.compression, "conv_a")["kept"] == [0, 1]


# -- Concat, Flatten -> Gemm, depthwise, heads ------------------------------------------------

def concat_model(seed=0) -> hal.Model:
    """conv1 (3->8) and conv2 (3->6) concatenated on the channels, ReLU, conv3 (14->4),
    global average pool, flatten, fc (4->10)."""
    rng = np.random.default_rng(seed)
    return build(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["x", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
         helper.make_node("Concat", ["c1", "c2"], ["cat"], name="concat", axis=1),
         helper.make_node("Relu", ["cat"], ["r"], name="relu"),
         helper.make_node("Conv", ["r", "w3"], ["c3"], name="conv3"),
         helper.make_node("GlobalAveragePool", ["c3"], ["p"], name="gap"),
         helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
         helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1)],
        [("x", ["N", 3, 8, 8])], [("y", ["N", 10])],
        {"w1": rand(rng, 8, 3, 3, 3), "b1": rand(rng, 8), "w2": rand(rng, 6, 3, 3, 3),
         "w3": rand(rng, 4, 14, 1, 1), "wf": rand(rng, 10, 4), "bf": rand(rng, 10)})


def test_concat_maps_each_input_to_its_channel_offset():
    model = concat_model()
    x = rand(np.random.default_rng(1), 2, 3, 8, 8)
    gap, pruned = oracle_gap(model, x, ratio=0.5)
    assert gap <= ORACLE_TOL
    rep = pruned.compression
    k1, k2 = group_of(rep, "conv1")["kept"], group_of(rep, "conv2")["kept"]
    assert len(k1) == 4 and len(k2) == 3
    before, after = inits(model), inits(pruned)
    np.testing.assert_array_equal(after["w1"], before["w1"][k1])
    np.testing.assert_array_equal(after["b1"], before["b1"][k1])
    np.testing.assert_array_equal(after["w2"], before["w2"][k2])
    cols = list(k1) + [8 + c for c in k2]  # conv2's channels start at offset 8 of the concat
    k3 = group_of(rep, "conv3")["kept"]
    np.testing.assert_array_equal(after["w3"], before["w3"][k3][:, cols])
    np.testing.assert_array_equal(after["wf"], before["wf"][:, k3])
    assert row(rep, "conv3")["in_channels"] == [7, 14]


def test_flatten_into_gemm_maps_a_channel_to_its_h_times_w_features():
    model = hal.models.get("lenet")  # conv 20->50, pool to 4x4, flatten 800, fc 800->500
    x = hal.models.example_input("lenet", 3)
    gap, pruned = oracle_gap(model, x, ratio=0.5)
    assert gap <= ORACLE_TOL
    kept = group_of(pruned.compression, "2/Conv")["kept"]
    assert len(kept) == 25
    features = (np.asarray(kept)[:, None] * 16 + np.arange(16)[None, :]).reshape(-1)
    before, after = inits(model), inits(pruned)
    fc = next(n for n in before if before[n].shape == (500, 800))
    assert after[fc].shape[1] == 400
    fc_kept = group_of(pruned.compression, "5/Gemm")["kept"]
    np.testing.assert_array_equal(after[fc], before[fc][fc_kept][:, features])


def test_mobilenet_depthwise_prunes_input_and_output_together():
    model = hal.models.get("mobilenet_lite")
    x = hal.models.example_input("mobilenet_lite", 4)
    gap, pruned = oracle_gap(model, x, ratio=0.5)
    assert gap <= ORACLE_TOL
    rep = pruned.compression
    expand = group_of(rep, "1.body.0.0/Conv")
    assert "1.body.1.0/Conv" in expand["members"]  # the depthwise conv follows the expansion
    dw = next(n for n in pruned.graph if n.name == "1.body.1.0/Conv")
    assert dw.attributes["group"].value == len(expand["kept"]) == 32
    assert inits(pruned)["1.body.1.0.weight"].shape == (32, 1, 3, 3)
    assert cost.flops(pruned) < cost.flops(model) / 2
    assert rep.totals["flops_ratio"] > 2


def test_tiny_transformer_prunes_whole_heads_and_the_mlp_width():
    model = hal.models.get("tiny_transformer")
    x = hal.models.example_input("tiny_transformer", 3)
    gap, pruned = oracle_gap(model, x, ratio=0.5)
    assert gap <= ORACLE_TOL
    rep, after = pruned.compression, inits(pruned)
    heads = group_of(rep, "layer0.attn.q/MatMul")
    assert set(heads["producers"]) == {f"layer0.attn.{p}/MatMul" for p in "qkv"}
    assert heads["unit"] == 16 and len(heads["kept"]) == 32  # 2 of 4 heads of 16
    kept_heads = sorted({c // 16 for c in heads["kept"]})
    assert heads["kept"] == [h * 16 + i for h in kept_heads for i in range(16)]
    for p in "qkv":
        assert after[f"layer0.attn.{p}.weight_t"].shape == (64, 32)
    assert after["layer0.attn.out.weight_t"].shape == (32, 64)
    assert after["layer0.mlp.0.weight_t"].shape == (64, 64)
    assert after["layer0.mlp.2.weight_t"].shape == (64, 64)
    reshapes = {n.name: n.inputs[1].const_value.numpy().tolist() for n in pruned.graph
                if n.op_type == "Reshape" and n.name.startswith("layer0.")}
    assert reshapes["layer0.attn/Reshape"] == [0, 0, 2, 16]
    assert reshapes["layer0.attn/Reshape_3"] == [0, 0, 32]
    residual = group_of(rep, "layer0.attn.out/MatMul")  # the residual stream starts at the input
    assert residual["status"] == "left alone" and "model input 'input'" in residual["reasons"][0]
    assert cost.flops(pruned) < cost.flops(model)


# -- what is left alone ---------------------------------------------------------------------

def test_the_model_outputs_and_inputs_keep_their_shapes():
    for name in ("resnet_lite", "mlp", "tiny_transformer"):
        model = hal.models.get(name)
        pruned = hal.prune(model, ratio=0.75)
        x = hal.models.example_input(name, 2)
        assert run(pruned, x).shape == run(model, x).shape
        last = pruned.compression.rows[-1]
        assert last["out_channels"][0] == last["out_channels"][1]
        reasons = group_of(pruned.compression, last["layer"])["reasons"]
        assert any(("model output" if name != "mlp" else "Softmax") in r for r in reasons)


def test_unprunable_layers_are_left_alone_with_their_reason():
    rng = np.random.default_rng(0)
    model = build(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
         helper.make_node("LRN", ["c1"], ["n1"], name="lrn", size=3),  # unknown: across channels
         helper.make_node("Conv", ["n1", "w2"], ["c2"], name="conv2"),
         helper.make_node("Conv", ["c2", "wg"], ["c3"], name="grouped", group=2),
         helper.make_node("Relu", ["c3"], ["r3"], name="relu"),
         helper.make_node("Conv", ["r3", "w4"], ["c4"], name="conv4"),
         helper.make_node("Softmax", ["c4"], ["s4"], name="softmax", axis=1),
         helper.make_node("Conv", ["s4", "w5"], ["c5"], name="conv5"),
         helper.make_node("Relu", ["c5"], ["r5"], name="relu5"),
         helper.make_node("Conv", ["r5", "w6"], ["y"], name="conv6")],
        [("x", ["N", 3, 6, 6])], [("y", ["N", 2, 6, 6])],
        {"w1": rand(rng, 8, 3, 1, 1), "w2": rand(rng, 8, 8, 1, 1), "wg": rand(rng, 8, 4, 1, 1),
         "w4": rand(rng, 8, 8, 1, 1), "w5": rand(rng, 8, 8, 1, 1), "w6": rand(rng, 2, 8, 1, 1)})
    before = model.digest()
    pruned = hal.prune(model, ratio=0.5)
    assert model.digest() == before
    rep = pruned.compression
    reasons = {g["producers"][0]: (g["status"], " ".join(g["reasons"])) for g in rep.groups}
    assert reasons["conv1"][0] == "left alone" and "does not follow LRN" in reasons["conv1"][1]
    assert reasons["conv2"][0] == "left alone" and "grouped convolution" in reasons["conv2"][1]
    assert row(rep, "grouped")["status"] == "left alone"
    assert "grouped convolution (group=2" in row(rep, "grouped")["reason"]
    assert reasons["conv4"][0] == "left alone" and "normalizes over them" in reasons["conv4"][1]
    assert reasons["conv6"][0] == "left alone" and "model output" in reasons["conv6"][1]
    assert reasons["conv5"][0] == "pruned"  # the one group nothing stops
    assert row(rep, "conv5")["out_channels"] == [4, 8] and row(rep, "conv6")["in_channels"] == [4, 8]
    assert "left alone" in str(rep) and "LRN" in str(rep)


def test_a_reshape_it_cannot_follow_is_reported():
    rng = np.random.default_rng(0)
    model = build(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
         helper.make_node("Reshape", ["c1", "shape"], ["r"], name="reshape"),  # 8 -> 2 x (4*16)
         helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
         helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1)],
        [("x", ["N", 3, 4, 4])], [("y", ["N", 5])],
        {"w1": rand(rng, 8, 3, 1, 1), "shape": np.array([0, 2, 64], np.int64),
         "wf": rand(rng, 5, 128)})
    pruned = hal.prune(model, ratio=0.5)
    g = group_of(pruned.compression, "conv1")
    assert g["status"] == "left alone" and "Reshape 'reshape'" in g["reasons"][0]
    np.testing.assert_array_equal(inits(pruned)["w1"], inits(model)["w1"])
    assert row(pruned.compression, "conv1")["status"] == "left alone"


def test_exclude_leaves_nodes_and_initializers_alone():
    model = hal.models.get("resnet_lite")
    pruned = hal.prune(model, ratio=0.5, exclude=["2.conv1.*", "4.shortcut.0.weight"])
    rep, after = pruned.compression, inits(pruned)
    assert after["2.conv1.0.weight"].shape[0] == 16  # its output channels stay
    assert after["2.conv2.0.weight"].shape[1] == 16  # and so does its consumer's input
    assert row(rep, "2.conv1.0/Conv")["status"] == "left alone"
    assert "excluded" in row(rep, "2.conv1.0/Conv")["reason"]
    g = group_of(rep, "4.shortcut.0/Conv")  # a pattern on an initializer leaves its group alone
    assert g["status"] == "left alone"
    assert any("'4.shortcut.0.weight' matches '4.shortcut.0.weight'" in r for r in g["reasons"])
    assert after["4.shortcut.0.weight"].shape[0] == 32
    assert group_of(rep, "3.conv1.0/Conv")["status"] == "pruned"  # the others are pruned
    x = hal.models.example_input("resnet_lite", 2)
    gap, _ = oracle_gap(model, x, ratio=0.5, exclude=["2.conv1.*", "4.shortcut.0.weight"])
    assert gap <= ORACLE_TOL


def test_keep_residual_prunes_only_inside_the_blocks():
    model = hal.models.get("resnet_lite")
    x = hal.models.example_input("resnet_lite", 3)
    gap, pruned = oracle_gap(model, x, ratio=0.5, keep_residual=True)
    assert gap <= ORACLE_TOL
    rep = pruned.compression
    for producer in ("0.0/Conv", "4.shortcut.0/Conv"):
        g = group_of(rep, producer)
        assert g["status"] == "kept" and "keep_residual=True" in g["reasons"][0]
        assert g["joins"] and g["channels"][0] == g["channels"][1]
    for producer in ("2.conv1.0/Conv", "3.conv1.0/Conv", "4.conv1.0/Conv", "5.conv1.0/Conv"):
        g = group_of(rep, producer)
        assert g["status"] == "pruned" and g["channels"][0] * 2 == g["channels"][1]
        assert not g["joins"]
    assert 1.8 <= rep.totals["flops_ratio"] < hal.prune(model).compression.totals["flops_ratio"]


def chain_model(rng) -> hal.Model:
    """conv1 (8 channels, all alike) -> Relu -> conv2 (8 channels, 2 strong, 6 weak) -> Relu
    -> conv3 (4 channels, the output)."""
    w1 = np.abs(rand(rng, 8, 3, 3, 3)) * 0.1 + 1.0
    w2 = rand(rng, 8, 8, 3, 3) * 0.01
    w2[[2, 5]] *= 100
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Conv", ["ra", "w2"], ["b"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Conv", ["rb", "w3"], ["y"], name="conv3", pads=[1] * 4)]
    return build(nodes, [("x", [None, 3, 8, 8])], [("y", [None, 4, 8, 8])],
                 {"w1": w1, "w2": w2, "w3": rand(rng, 4, 8, 3, 3)})


def test_global_allocation_removes_the_ratio_of_all_channels_where_they_matter_least():
    rng = np.random.default_rng(3)
    model = chain_model(rng)
    x = rand(rng, 2, 3, 8, 8)
    gap, pruned = oracle_gap(model, x, ratio=0.5, allocation="global")
    assert gap <= ORACLE_TOL
    rep = pruned.compression
    # 8 of the 16 channels go: conv2's six weak ones (relative to their group's mean) first,
    # then the two weakest of conv1, whose channels matter about equally
    assert group_of(rep, "conv2")["kept"] == [2, 5]
    assert len(group_of(rep, "conv1")["kept"]) == 6
    assert rep.totals["prunable_channels"] == [8, 16]
    assert rep.settings["allocation"] == "global" and "allocation global" in str(rep)
    uniform = hal.prune(model, ratio=0.5).compression
    assert [len(group_of(uniform, c)["kept"]) for c in ("conv1", "conv2")] == [4, 4]


def test_global_allocation_keeps_a_quarter_of_every_group_and_half_of_resnet_lite():
    model = hal.models.get("resnet_lite")
    x = hal.models.example_input("resnet_lite", 2)
    gap, pruned = oracle_gap(model, x, ratio=0.5, allocation="global", importance="bn_gamma")
    assert gap <= ORACLE_TOL
    rep = pruned.compression
    assert rep.totals["prunable_channels"] == [72, 144]
    assert all(g["channels"][0] >= g["channels"][1] // 4 for g in rep.groups)
    rng = np.random.default_rng(0)
    weights = chain_model(rng)
    very = hal.prune(weights, ratio=0.9, allocation="global").compression
    assert [len(group_of(very, c)["kept"]) for c in ("conv1", "conv2")] == [2, 2]


# -- options --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    ({"ratio": 0}, "strictly between 0 and 1"),
    ({"ratio": 1.0}, "strictly between 0 and 1"),
    ({"ratio": 1.5}, "strictly between 0 and 1"),
    ({"ratio": -0.2}, "strictly between 0 and 1"),
    ({"ratio": True}, "strictly between 0 and 1"),
    ({"ratio": "half"}, "strictly between 0 and 1"),
    ({"importance": "l3"}, "importance='l1'"),
    ({"importance": "taylor"}, "'bn_gamma'"),
    ({"structured": False}, "hal.sparsify"),
    ({"round_to": 0}, "round_to must be a positive int"),
    ({"exclude": [3]}, "fnmatch patterns"),
    ({"keep_residual": "yes"}, "keep_residual must be True or False"),
    ({"allocation": "layer"}, "allocation='uniform'"),
])
def test_bad_options_are_option_errors_naming_the_fix(kw, match):
    with pytest.raises(OptionError, match=match):
        hal.prune(hal.models.get("lenet"), **kw)


def test_the_users_model_is_not_modified():
    model = hal.models.get("mobilenet_lite")
    proto = model.to_proto().SerializeToString()
    pruned = hal.prune(model, ratio=0.5)
    assert model.to_proto().SerializeToString() == proto
    assert model.compression is None and pruned.compression is not None
    assert pruned.calibration is model.calibration  # the zoo's int8 calibration inputs still fit


def test_prune_takes_what_compile_takes(tmp_path):
    path = tmp_path / "lenet.onnx"
    hal.models.get("lenet").save(path)
    by_path, by_name = hal.prune(str(path), ratio=0.5), hal.prune("lenet", ratio=0.5)
    assert by_path.digest() == by_name.digest()
    net = hal.models.build("lenet")
    by_module = hal.prune(net, ratio=0.5, input_shape=(None, 1, 28, 28))
    assert cost.flops(by_module) == cost.flops(by_name)


def test_round_to_keeps_hardware_friendly_widths():
    pruned = hal.prune(hal.models.get("mobilenet_lite"), ratio=0.6, round_to=8)
    for g in pruned.compression.groups:
        kept, total = g["channels"]
        assert kept % 8 == 0 or kept == total, g


def test_importance_bn_gamma_keeps_the_largest_gammas():
    model = hal.models.get("resnet_lite")
    pruned = hal.prune(model, ratio=0.5, importance="bn_gamma")
    g = group_of(pruned.compression, "2.conv1.0/Conv")
    gamma = np.abs(inits(model)["2.conv1.1.weight"])
    assert g["kept"] == sorted(np.argsort(-gamma, kind="stable")[:8].tolist())
    l1 = group_of(hal.prune(model, ratio=0.5, importance="l1").compression, "2.conv1.0/Conv")
    w = np.abs(inits(model)["2.conv1.0.weight"]).sum((1, 2, 3))
    assert l1["kept"] == sorted(np.argsort(-w, kind="stable")[:8].tolist())
    # a model without BatchNormalization keeps everything under bn_gamma, and says why
    mlp = hal.prune(hal.models.get("mlp"), ratio=0.5, importance="bn_gamma")
    assert mlp.compression.totals["groups_pruned"] == 0
    assert all("no BatchNormalization" in " ".join(g["reasons"])
               for g in mlp.compression.groups if g["status"] == "kept")


def test_report_is_a_table_and_data():
    pruned = hal.prune(hal.models.get("resnet_lite"), ratio=0.5)
    rep = pruned.compression
    text = str(rep)
    assert "layer" in text and "FLOPs" in text and "total" in text and "fewer" in text
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["totals"]["flops_before"] == cost.flops(hal.models.get("resnet_lite"))
    assert data["totals"]["flops_after"] == cost.flops(pruned)
    assert data["totals"]["params_after"] == cost.params(pruned)
    assert data["totals"]["flops_ratio"] >= 1.8
    for r in rep.rows:
        assert {"layer", "op", "out_channels", "in_channels", "flops_before", "flops_after",
                "params_before", "params_after", "status", "reason"} <= set(r)
    assert row(rep, "2.conv1.0/Conv")["out_channels"] == [8, 16]


# -- cost ------------------------------------------------------------------------------------

def test_cost_counts_multiply_adds_twice_and_ignores_elementwise_ops():
    rng = np.random.default_rng(0)
    model = build(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
         helper.make_node("Gemm", ["f", "wf"], ["g"], name="fc", transB=1),
         helper.make_node("MatMul", ["g", "wm"], ["y"], name="mm")],
        [("x", ["N", 2, 5, 5])], [("y", ["N", 3])],
        {"w": rand(rng, 4, 2, 3, 3), "b": rand(rng, 4), "wf": rand(rng, 7, 100),
         "wm": rand(rng, 7, 3)})
    conv, fc, mm = 2 * 4 * 25 * (2 * 9), 2 * 7 * 100, 2 * 3 * 7
    assert cost.flops(model) == conv + fc + mm
    assert cost.flops(model, batch=8) == 8 * (conv + fc + mm)
    assert cost.params(model) == 72 + 4 + 700 + 21
    assert [(c.name, c.flops) for c in cost.layers(model)] == [("conv", conv), ("fc", fc),
                                                               ("mm", mm)]


# -- every device -----------------------------------------------------------------------------

PRUNED = ("resnet_lite", "mobilenet_lite", "tiny_transformer")


@pytest.fixture(scope="module")
def pruned_zoo():
    return {name: hal.prune(hal.models.get(name), ratio=0.5) for name in PRUNED}


@pytest.mark.parametrize("name", PRUNED)
def test_pruned_models_match_the_reference_on_every_device(device, name, pruned_zoo):
    model = pruned_zoo[name]
    x = hal.models.example_input(name, 5)
    ref = run(model, x)
    y = run(model, x, device)
    assert y.shape == ref.shape
    err = float(np.abs(y - ref).max())
    assert err <= DEVICE_TOL, f"{name} pruned on {device}: max abs error {err:.2e}"


def _int8_devices() -> list[str]:
    return sorted(d.string for d in hal.devices() if d.usable and not d.alias_of
                  and hal.device(d.string).backend.precisions == ("int8",))


#: fpga@hls4ml refuses resnet_lite and mobilenet_lite unpruned as well (a BatchNormalization
#: output feeding a residual Add is no QDQ segment output there): it runs the pruned LeNet
INT8_MODELS = {"hls4ml": ("lenet",)}


@pytest.mark.parametrize("int8_device", _int8_devices())
def test_pruned_models_run_int8_on_the_int8_only_devices(int8_device, pruned_zoo):
    """The int8-only accelerators run the pruned models (precision="int8", the zoo's own
    calibration inputs) as cpu@reference runs the same int8 model."""
    backend = hal.device(int8_device).info.backend
    for name in INT8_MODELS.get(backend, ("resnet_lite", "mobilenet_lite")):
        model = pruned_zoo[name] if name in pruned_zoo else hal.prune(hal.models.get(name))
        kw = {"calibration": hal.models.calibration_data(name)}
        if backend == "hls4ml":
            kw["power_of_two"] = True  # the scales hls4ml computes right
        x = hal.models.example_input(name, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback of layers the accelerator lacks
            y = run(model, x, int8_device, precision="int8", **kw)
        ref = run(model, x, precision="int8", **kw)
        if backend == "hls4ml":  # its fixed-point arithmetic rounds differently
            assert np.abs(y - ref).max() <= 0.05 * float(ref.max() - ref.min())
        else:
            np.testing.assert_allclose(y, ref, atol=1e-5, err_msg=f"{name} on {int8_device}")


# -- the acceptance run (slow) --------------------------------------------------------------------

@pytest.mark.slow
def test_resnet_lite_pruned_by_half_keeps_its_accuracy_with_fewer_flops():
    """bench/prune.py's run without the timing: resnet_lite trained on digits 3x32x32 (15
    epochs), pruned by half and fine-tuned (10 epochs, SGD). Pruned everywhere it loses at most
    a point with 3.9x fewer FLOPs; with the residual streams whole (keep_residual) at most a
    point with 1.9x fewer (docs/pruning.md)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "prune.py"
    spec = importlib.util.spec_from_file_location("hal_bench_prune", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.run_pipeline(measure=False)  # the bench's own settings, seed 0
    base = r["baseline"]
    for name in ("pruned", "pruned_keep_residual"):
        v = r[name]
        print(f"\n{name}: {base['accuracy']:.2%} -> {v['accuracy']:.2%}, FLOPs "
              f"{base['flops']:,} -> {v['flops']:,} ({v['flops_ratio']:.2f}x)")
    assert base["accuracy"] >= 0.98
    keep = r["pruned_keep_residual"]
    assert keep["drop_points"] <= 1.0 and keep["flops_ratio"] >= 1.8
    everywhere = r["pruned"]
    assert everywhere["drop_points"] <= 1.0 and everywhere["flops_ratio"] >= 3.5
