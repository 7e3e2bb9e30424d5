"""Dynamic int8 (``calibration="dynamic"``): the oracle's integer ops, the pass's graph, its
accuracy against fp32, cpu@ort against cpu@reference, the option checks and the CLI."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest

import hal
from hal.errors import InputError, OptionError
from hal.oracle import OPS

DYNAMIC = {"precision": "int8", "calibration": "dynamic"}
INTEGER_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")


def _compile(model, device, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hal.compile(model, device, **DYNAMIC, **options)


@pytest.fixture(scope="module")
def digits():
    x, _ = hal.data.digits("test", size=28)
    return x


@pytest.fixture(scope="module")
def mlp_inputs(digits):
    return digits.reshape(len(digits), -1)


# -- the oracle's ops -----------------------------------------------------------------------
def test_dynamic_quantize_linear_by_hand():
    y, scale, zp = OPS["DynamicQuantizeLinear"](np.array([-1.0, 0.0, 2.0, 0.5], np.float32))
    assert scale.dtype == np.float32 and scale == np.float32(3.0) / np.float32(255)
    assert zp.dtype == np.uint8 and zp == 85  # -(-1) / (3/255)
    # 0.5 / (3/255) = 42.5 rounds half to even: 42, plus the zero point
    assert y.dtype == np.uint8 and y.tolist() == [0, 85, 255, 127]
    y, scale, zp = OPS["DynamicQuantizeLinear"](np.array([0.25, 1.0], np.float32))
    assert zp == 0 and y.tolist() == [64, 255]  # the range always includes 0
    y, scale, zp = OPS["DynamicQuantizeLinear"](np.zeros((2, 3), np.float32))
    assert scale == 1.0 and zp == 0 and not y.any()  # as onnxruntime; the spec divides by 0


def test_matmul_integer_per_column_zero_point_by_hand():
    a = np.array([[3, 200], [0, 255]], np.uint8)
    b = np.array([[-128, 5, 0], [127, -1, 2]], np.int8)
    b_zp = np.array([1, -2, 0], np.int8)
    got = OPS["MatMulInteger"](a, b, np.array(100, np.uint8), b_zp)
    expected = [[sum((int(a[i, k]) - 100) * (int(b[k, j]) - int(b_zp[j])) for k in range(2))
                 for j in range(3)] for i in range(2)]
    assert got.dtype == np.int32 and got.tolist() == expected


def test_conv_integer_pads_with_the_zero_point_by_hand():
    x = np.arange(9, dtype=np.uint8).reshape(1, 1, 3, 3) + 10
    w = np.array([1, -1], np.int8).reshape(2, 1, 1, 1) * np.ones((1, 1, 3, 3), np.int8)
    got = OPS["ConvInteger"](x, w, np.array(12, np.uint8), np.array([0, 1], np.int8),
                             pads=[1, 1, 1, 1])
    centered = np.pad(x[0, 0].astype(np.int64) - 12, 1)  # padding contributes nothing
    window = [[centered[i:i + 3, j:j + 3].sum() for j in range(3)] for i in range(3)]
    assert got.dtype == np.int32 and got.shape == (1, 2, 3, 3)
    assert got[0, 0].tolist() == window
    assert got[0, 1].tolist() == (-2 * np.array(window)).tolist()  # (w - 1) = -2


def _onnx_cases(op):
    from hal.testing.conformance import _cases

    return [c for c in _cases() if c.name.startswith(f"test_{op.lower()}")
            and [n.op_type for n in c.model.graph.node] == [op]]  # not the expanded forms


@pytest.mark.parametrize("op", INTEGER_OPS)
def test_oracle_matches_onnx_cases_exactly(op):
    """ONNX's own node cases for the op (the inputs and outputs its backend test data holds),
    on the oracle kernel: every output equal, bit for bit."""
    from hal.ir.attributes import attributes
    import onnx_ir as ir

    cases = _onnx_cases(op)
    assert cases, f"onnx ships no {op} cases"
    for case in cases:
        node = ir.from_proto(case.model).graph[0]
        for inputs, expected in case.data_sets:
            got = OPS[op](*inputs, **attributes(node))
            got = got if isinstance(got, tuple) else (got,)
            for e, g in zip(expected, got):
                assert g.dtype == e.dtype and np.array_equal(g, e), case.name


def test_onnx_cases_pass_through_cpu_reference():
    from hal.testing.conformance import run_conformance

    report = run_conformance("cpu@reference", set(INTEGER_OPS) | {"Cast"})
    assert report.failed == 0, report.failures_text()
    ran = {r.op for r in report.results if r.status == "passed"}
    assert set(INTEGER_OPS) <= ran


# -- the pass ---------------------------------------------------------------------------------
def test_mlp_becomes_the_form_onnxruntime_fuses():
    model = hal.models.get("mlp")
    before = model.to_proto().SerializeToString()
    q = _compile(model, "cpu@reference")
    assert model.to_proto().SerializeToString() == before  # the user's model is untouched
    ops = Counter(n.op_type for n in q.model.graph)
    assert ops["DynamicQuantizeLinear"] == ops["MatMulInteger"] == ops["Cast"] == 3
    assert ops["Mul"] == 6 and ops["Add"] == 3 and "Gemm" not in ops
    for node in q.model.graph:
        if node.op_type == "MatMulInteger":
            w, w_zp = (v.const_value.numpy() for v in node.inputs[1:4:2])
            assert w.dtype == np.int8 and np.abs(w).max() == 127  # full range, per column
            assert w_zp.shape == (w.shape[1],) and not w_zp.any()
    details = [p["detail"] for p in q.report()["passes"]]
    assert ("dynamic int8: 3 Gemm/MatMul weights int8 per-channel, activations quantized at "
            "run time") in " ".join(details)
    assert q.report()["options"]["calibration"] == "dynamic"
    assert q.report()["flow"].startswith("int8.dynamic+")


def test_mlp_agrees_with_fp32_and_with_onnxruntime(mlp_inputs):
    model = hal.models.get("mlp")
    fp32 = hal.compile(model, "cpu@ort")(mlp_inputs)[0]
    ort = _compile(model, "cpu@ort")(mlp_inputs)[0]
    ref = _compile(model, "cpu@reference")(mlp_inputs)[0]
    assert (ort.argmax(1) == fp32.argmax(1)).mean() >= 0.99  # measured 99.81 % of 540
    np.testing.assert_allclose(ort, ref, rtol=0, atol=1e-5)  # measured 3e-8
    assert not np.array_equal(ort, fp32)  # it is quantized


def test_same_numbers_as_onnxruntime_quantize_dynamic(mlp_inputs, tmp_path):
    """ORT's own quantizer (per-channel int8 weights) on the same model, run by plain ORT."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = hal.models.get("mlp")
    src, dst = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(model.to_proto(), src)
    quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8)
    theirs = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(
        None, {"input": mlp_inputs})[0]
    ours = _compile(model, "cpu@ort")(mlp_inputs)[0]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)  # measured 0.0


def test_tiny_transformer_agrees_with_fp32():
    """Each of 1,000 seeded inputs quantized on its own (a call per input): its activations'
    ranges are its own, as in serving. One call of all 1,000 measured 99.0 %, of 64 each
    98.6 % (per-tensor ranges over the batch; docs/precision.md)."""
    name = "tiny_transformer"
    model = hal.models.get(name)
    shape = hal.models.info(name).input_shape
    x = np.random.default_rng(0).standard_normal((1000,) + tuple(shape[1:])).astype(np.float32)
    fp32 = hal.compile(model, "cpu@ort")(x)[0]
    q = _compile(model, "cpu@ort")
    int8 = np.concatenate([q(x[i:i + 1])[0] for i in range(len(x))])
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= 0.99  # measured 99.3 %


def test_tiny_transformer_ort_and_reference_node_by_node():
    """Every node of the dynamic graph, fed onnxruntime's own inputs for it, gives ORT's
    outputs on the oracle: the integer ops exactly, the float ones to 1e-5. (End to end the
    two differ by up to 3e-3: a float op's last-bit difference upstream, e.g. in
    LayerNormalization, moves a value across a rounding boundary of the next
    DynamicQuantizeLinear, one quantization step.)"""
    import onnx_ir as ir
    import onnxruntime as ort
    from hal.ir.attributes import attributes

    name = "tiny_transformer"
    shape = hal.models.info(name).input_shape
    x = np.random.default_rng(0).standard_normal((64,) + tuple(shape[1:])).astype(np.float32)
    q = _compile(hal.models.get(name), "cpu@reference")
    g = q.model.ir.graph
    values = [o for n in g for o in n.outputs if not o.is_graph_output()]
    g.outputs.extend(values)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # node by node
    session = ort.InferenceSession(ir.to_proto(q.model.ir).SerializeToString(), so,
                                   providers=["CPUExecutionProvider"])
    env = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))
    env.update({k: v.const_value.numpy() for k, v in g.initializers.items()}, input=x)
    checked = Counter()
    for node in g:
        got = OPS[node.op_type](*[env[v.name] if v is not None else None for v in node.inputs],
                                **attributes(node))
        for o, a in zip(node.outputs, got if isinstance(got, tuple) else (got,)):
            if node.op_type in INTEGER_OPS or a.dtype.kind in "iu":
                assert a.dtype == env[o.name].dtype and np.array_equal(a, env[o.name]), node.name
            else:
                np.testing.assert_allclose(a, env[o.name], rtol=1e-5, atol=1e-5, err_msg=node.name)
        checked[node.op_type] += 1
    assert checked["MatMulInteger"] == 13 and checked["DynamicQuantizeLinear"] == 9


def test_conv_becomes_conv_integer_where_the_device_has_it(digits):
    model = hal.models.get("lenet")
    x = digits[:64]
    ort = _compile(model, "cpu@ort")
    ref = _compile(model, "cpu@reference")
    assert any(n.op_type == "ConvInteger" for n in ort.model.graph)
    np.testing.assert_allclose(ort(x)[0], ref(x)[0], rtol=0, atol=1e-5)  # measured 5e-7
    torch = _compile(model, "cpu@torch")  # torch has no ConvInteger: its Conv stays float
    assert not any(n.op_type == "ConvInteger" for n in torch.model.graph)


def test_a_device_without_the_integer_ops_falls_back_visibly(mlp_inputs):
    model = hal.models.get("mlp")
    with pytest.warns(UserWarning, match="DynamicQuantizeLinear, MatMulInteger"):
        q = hal.compile(model, "cpu@torch", **DYNAMIC)
    fell_back = {f["op"] for f in q.report()["fallbacks"]}
    assert fell_back == {"DynamicQuantizeLinear", "MatMulInteger"}
    ort = _compile(model, "cpu@ort")
    np.testing.assert_allclose(q(mlp_inputs[:32])[0], ort(mlp_inputs[:32])[0], atol=1e-5)


# -- options --------------------------------------------------------------------------------
@pytest.mark.parametrize("options, fix", [
    ({"calibration": "dynamic"}, "add precision='int8'"),
    ({"calibration": "dynamic", "precision": "fp16"}, "add precision='int8'"),
    ({**DYNAMIC, "calibration_method": "percentile"}, "leave calibration_method out"),
    ({**DYNAMIC, "calibration_percentile": 99.9}, "leave calibration_percentile out"),
    ({**DYNAMIC, "power_of_two": True}, "leave power_of_two out"),
])
def test_bad_options_name_the_fix(options, fix):
    model = hal.models.get("mlp")
    before = model.to_proto().SerializeToString()
    with pytest.raises(OptionError, match=fix.replace("(", r"\(")):
        hal.compile(model, "cpu@ort", **options)
    assert model.to_proto().SerializeToString() == before


def test_a_misspelt_dynamic_is_a_bad_calibration_value():
    with pytest.raises(InputError, match="numpy array .* or calibration='dynamic'"):
        hal.compile("mlp", "cpu@ort", precision="int8", calibration="dynamc")


def test_cli_run_dynamic(capsys):
    from hal.cli import main

    assert main(["run", "mlp", "--device", "cpu@ort", "--precision", "int8",
                 "--calibration", "dynamic", "--json", "--repeat", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["report"]["options"]["calibration"] == "dynamic"
    assert "run time" in out["calibration"]
    assert out["report"]["segments"][0]["ops"]["MatMulInteger"] == 3
