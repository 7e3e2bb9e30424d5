"""int8 post-training quantization (``precision="int8"``): the QDQ form of HAL's int8 contract,
calibration, errors, and accuracy on the trained digits model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hal.backends.reference import ReferenceBackend
from onnx import TensorProto, helper

import hal
from hal.device import DeviceInfo
from hal.errors import InputError, OptionError


# -- helpers ---------------------------------------------------------------------------------
def init(v) -> np.ndarray:
    assert v.const_value is not None, f"{v.name} is not a constant"
    return v.const_value.numpy()


def attr(node, name, default=None):
    return node.attributes[name].value if name in node.attributes else default


@pytest.fixture(scope="module")
def lenet_int8():
    return hal.compile("lenet", "cpu@reference", precision="int8")


def check_weight_dq(node, axis: int, n_out: int):
    """``node``'s weight and bias come from per-channel DequantizeLinear of int8 / int32."""
    wdq = node.inputs[1].producer()
    assert wdq.op_type == "DequantizeLinear" and attr(wdq, "axis") == axis
    w_q, s_w, zp_w = (init(v) for v in wdq.inputs)
    assert w_q.dtype == np.int8 and np.abs(w_q.astype(int)).max() <= 127
    assert s_w.dtype == np.float32 and s_w.shape == (n_out,)
    assert zp_w.dtype == np.int8 and zp_w.shape == (n_out,) and not zp_w.any()
    x_dq = node.inputs[0].producer()
    assert x_dq.op_type == "DequantizeLinear"
    s_x = init(x_dq.inputs[1])
    assert s_x.shape == () and s_x.dtype == np.float32
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bdq = node.inputs[2].producer()
        assert bdq.op_type == "DequantizeLinear" and attr(bdq, "axis") == 0
        b_q, s_b, zp_b = (init(v) for v in bdq.inputs)
        assert b_q.dtype == np.int32 and zp_b.dtype == np.int32 and not zp_b.any()
        np.testing.assert_array_equal(s_b, (s_x * s_w).astype(np.float32))
    return s_w


# -- structure -------------------------------------------------------------------------------
def test_lenet_qdq_structure(lenet_int8):
    g = lenet_int8.model.graph
    ops = [n.op_type for n in g]
    assert ops.count("Conv") == 2 and ops.count("Gemm") == 2
    for node in g:
        if node.op_type == "Conv":
            check_weight_dq(node, 0, init(node.inputs[1].producer().inputs[0]).shape[0])
        if node.op_type == "Gemm":
            assert attr(node, "transB") == 1
            check_weight_dq(node, 0, init(node.inputs[1].producer().inputs[0]).shape[0])
        if node.op_type == "QuantizeLinear":
            s, zp = init(node.inputs[1]), init(node.inputs[2])
            assert s.shape == () and zp.dtype == np.int8 and zp == 0
            assert node.outputs[0].dtype == ir.DataType.INT8
            (dq,) = node.outputs[0].consumers()
            assert dq.op_type == "DequantizeLinear" and dq.inputs[1] is node.inputs[1]
        if node.op_type in ("MaxPool", "Flatten"):  # DQ -> op -> Q with the input's scale
            dq = node.inputs[0].producer()
            (q,) = node.outputs[0].consumers()
            assert dq.op_type == "DequantizeLinear" and q.op_type == "QuantizeLinear"
            assert q.inputs[1] is dq.inputs[1]
        if node.op_type == "Relu":  # between the Gemm and its QuantizeLinear
            assert node.inputs[0].producer().op_type == "Gemm"
            assert [c.op_type for c in node.outputs[0].consumers()] == ["QuantizeLinear"]
    # the float tail stays float, reading the last DequantizeLinear
    tail = next(n for n in g if n.op_type == "LogSoftmax")
    assert tail.inputs[0].producer().op_type == "DequantizeLinear"
    report = lenet_int8.report()
    assert report["flow"].startswith("int8.quantize+")
    passes = [p["pass"] for p in report["passes"]]
    assert passes.index("BatchNormFolding") < passes.index("Quantize")
    assert "FusedConv" not in ops and "FusedGemm" not in ops


def _gemm_clip_model(trans_b: int) -> hal.Model:
    """x[N,8] -> Gemm(W, C, alpha 0.5, beta 2, transB) -> Clip(0, 6) -> MatMul(W2) -> y."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 8) if trans_b else (8, 6)).astype(np.float32)
    c = rng.standard_normal(6).astype(np.float32)
    w2 = rng.standard_normal((6, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["h"], alpha=0.5, beta=2.0,
                              transB=trans_b),
             helper.make_node("Clip", ["h", "lo", "hi"], ["a"]),
             helper.make_node("MatMul", ["a", "w2"], ["y"])]
    inits = [onnx.numpy_helper.from_array(a, n) for a, n in
             ((w, "w"), (c, "c"), (w2, "w2"), (np.float32(0), "lo"), (np.float32(6), "hi"))]
    g = helper.make_graph(nodes, "gemm_clip",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                          inits)
    return hal.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]))


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_axes_clip_and_matmul(trans_b):
    model = _gemm_clip_model(trans_b)
    x = np.random.default_rng(4).uniform(-2, 2, (64, 8)).astype(np.float32)
    cm = hal.compile(model, "cpu@reference", precision="int8", calibration=x)
    g = cm.model.graph
    gemm = next(n for n in g if n.op_type == "Gemm")
    assert attr(gemm, "alpha", 1.0) == 1.0 and attr(gemm, "beta", 1.0) == 1.0
    check_weight_dq(gemm, 1 - trans_b, 6)
    clip = gemm.outputs[0].consumers()[0]
    assert clip.op_type == "Clip"
    assert [c.op_type for c in clip.outputs[0].consumers()] == ["QuantizeLinear"]
    check_weight_dq(next(n for n in g if n.op_type == "MatMul"), 1, 4)
    fp = hal.compile(model, "cpu@reference")(x)[0]
    y = cm(x)[0]
    last_scale = init([n for n in g if n.op_type == "QuantizeLinear"][-1].inputs[1])
    assert np.abs(y - fp).max() < 0.05 * np.abs(fp).max() + 2 * last_scale


# -- numbers ---------------------------------------------------------------------------------
def output_lsb(compiled) -> float:
    """The scale of the last QuantizeLinear before the float tail (one output LSB)."""
    return float(init([n for n in compiled.model.graph if n.op_type == "QuantizeLinear"][-1]
                      .inputs[1]))


@pytest.mark.parametrize("opt_level", [0, 1, 3])
def test_reference_and_ort_agree_within_one_lsb(lenet_int8, opt_level):
    pytest.importorskip("onnxruntime")
    x = hal.models.example_input("lenet", 8, seed=5)
    ort = hal.compile("lenet", "cpu@ort", precision="int8", opt_level=opt_level)
    y_ref, y_ort = lenet_int8(x)[0], ort(x)[0]
    info = ort.executables[0].info
    integer_kernels = info["graph_optimization_level"] in ("ORT_ENABLE_EXTENDED",
                                                           "ORT_ENABLE_ALL") and "int8" not in info
    if integer_kernels:  # a VNNI CPU: ORT's QLinearConv rounds each layer its own way
        assert (y_ref.argmax(1) == y_ort.argmax(1)).all()
        assert np.abs(y_ref - y_ort).max() <= 4 * output_lsb(lenet_int8)
    else:  # QDQ evaluated in float, as the reference does
        assert np.abs(y_ref - y_ort).max() <= output_lsb(lenet_int8) + 1e-6


def test_power_of_two_scales():
    cm = hal.compile("lenet", "cpu@reference", precision="int8", power_of_two=True)
    scales = [init(n.inputs[1]) for n in cm.model.graph
              if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(scales) > 10
    for s in scales:
        e = np.log2(s.astype(np.float64))
        np.testing.assert_array_equal(e, np.round(e))
    x = hal.models.example_input("lenet", 4)
    ref = hal.compile("lenet", "cpu@reference")(x)[0]
    assert (cm(x)[0].argmax(1) == ref.argmax(1)).mean() >= 0.75


def test_quantize_linear_rounds_half_to_even_and_saturates():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"]),
             helper.make_node("QuantizeLinear", ["x", "s", "zpu"], ["u"])]
    inits = [onnx.numpy_helper.from_array(np.float32(0.5), "s"),
             onnx.numpy_helper.from_array(np.int8(0), "zp"),
             onnx.numpy_helper.from_array(np.uint8(10), "zpu")]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                       [8])],
                          [helper.make_tensor_value_info(n, t, [8]) for n, t in
                           (("q", TensorProto.INT8), ("y", TensorProto.FLOAT),
                            ("u", TensorProto.UINT8))], inits)
    model = hal.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]))
    x = np.array([0.25, 0.75, 1.25, -0.25, -0.75, 100.0, -100.0, 1e12], np.float32)
    q, y, u = hal.compile(model, "cpu@reference")(x)
    np.testing.assert_array_equal(q, [0, 2, 2, 0, -2, 127, -128, 127])
    np.testing.assert_array_equal(y, q * np.float32(0.5))
    np.testing.assert_array_equal(u, [10, 12, 12, 10, 8, 210, 0, 255])


# -- calibration input and errors -------------------------------------------------------------
def test_int8_without_calibration_says_how():
    bare = hal.load(hal.models.get("lenet").to_proto())  # the zoo's graph, not its inputs
    with pytest.raises(OptionError, match=r"calibration=.*hal.models.calibration_data\('lenet'\)"):
        hal.compile(bare, "cpu@reference", precision="int8")


@pytest.mark.parametrize("bad,needle", [
    (np.zeros((4, 1, 28), np.float32), "shape"),
    (np.zeros((4, 1, 28, 27), np.float32), "1, 28, 28"),
    (np.zeros((4, 1, 28, 28), np.float64), "float32"),
    ({"nosuch": np.zeros((4, 1, 28, 28), np.float32)}, "nosuch"),
    ([], "empty"),
    ("data.npy", "numpy array"),
])
def test_bad_calibration_names_the_input(bad, needle):
    with pytest.raises(InputError, match=needle) as e:
        hal.compile("lenet", "cpu@reference", precision="int8", calibration=bad)
    assert "input" in str(e.value)


def test_bad_int8_options():
    x = hal.models.calibration_data("lenet", 2)
    with pytest.raises(OptionError, match="calibration_method"):
        hal.compile("lenet", "cpu@reference", precision="int8", calibration=x,
                    calibration_method="kl")
    with pytest.raises(OptionError, match="only apply to precision='int8'"):
        hal.compile("lenet", "cpu@reference", calibration=x)


def test_user_inputs_untouched():
    model = hal.models.get("lenet")
    before = model.to_proto().SerializeToString()
    batches = [hal.models.calibration_data("lenet", 3), hal.models.calibration_data("lenet", 2)]
    copies = [b.copy() for b in batches]
    as_dicts = [{"input": b} for b in batches]
    for cal in (batches, as_dicts):
        cm = hal.compile(model, "cpu@reference", precision="int8", calibration=cal,
                         calibration_method="percentile")
        assert any(n.op_type == "QuantizeLinear" for n in cm.model.graph)
    assert model.to_proto().SerializeToString() == before
    assert len(batches) == 2 and all(isinstance(d, dict) and len(d) == 1 for d in as_dicts)
    for b, c in zip(batches, copies):
        np.testing.assert_array_equal(b, c)


class _Int8Npu(ReferenceBackend):
    """An int8-only accelerator for the test (runs through the reference kernels)."""

    name = "testint8npu"
    kinds = ("npu",)
    precisions = ("int8",)
    default_precision = "int8"

    def probe(self):
        return [DeviceInfo("npu", 0, self.name, name="int8-only test NPU")]


class _Fp32Npu(_Int8Npu):
    name = "testfp32npu"
    precisions = ("fp32",)
    default_precision = "fp32"


@pytest.fixture
def npus():
    hal.register_backend(_Int8Npu())
    hal.register_backend(_Fp32Npu())
    yield
    from hal.registry import REGISTRY

    REGISTRY.unregister(_Int8Npu.name)
    REGISTRY.unregister(_Fp32Npu.name)


def test_default_precision_and_backends_without_int8(npus):
    cm = hal.compile("lenet", "npu@testint8npu")  # no precision: the backend's int8
    assert cm.options.precision == "int8"
    assert any(n.op_type == "QuantizeLinear" for n in cm.model.graph)
    with pytest.raises(OptionError, match="calibration="):
        hal.compile(hal.load(hal.models.get("lenet").to_proto()), "npu@testint8npu")
    with pytest.raises(OptionError, match="cannot compile for precision 'int8'.*runs on"):
        hal.compile("lenet", "npu@testfp32npu", precision="int8")


# -- accuracy on a trained model --------------------------------------------------------------
@pytest.mark.parametrize("method,power_of_two", [("minmax", False), ("percentile", False),
                                                 ("minmax", True), ("percentile", True)])
def test_digits_accuracy(method, power_of_two, capsys):
    from hal.models import digits

    x, labels = digits.dataset("test")
    fp = hal.compile("digits", "cpu@reference")(x)[0].argmax(1)
    q = hal.compile("digits", "cpu@reference", precision="int8", calibration_method=method,
                    power_of_two=power_of_two)(x)[0].argmax(1)
    acc_fp, acc_q = (fp == labels).mean() * 100, (q == labels).mean() * 100
    agree = (q == fp).mean() * 100
    with capsys.disabled():
        print(f"\ndigits ({len(labels)} test images) {method}{' pow2' * power_of_two}: "
              f"fp32 {acc_fp:.2f}%, int8 {acc_q:.2f}%, top-1 agreement {agree:.2f}%")
    assert acc_fp - acc_q <= 1.0 and agree >= 98.0


# -- the CLI (in process: the subprocess tests live in test_cli.py) -------------------------------
def test_cli_int8_zoo_and_calibration_file(tmp_path, capsys):
    from hal.cli import main

    assert main(["run", "digits", "--device", "cpu@reference", "--precision", "int8",
                 "--explain", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "int8 calibration data: zoo 'digits'" in out and "Quantize" in out
    path = tmp_path / "m.onnx"
    hal.save(hal.models.get("mlp"), path)
    assert main(["run", str(path), "--device", "cpu@reference", "--precision", "int8"]) == 2
    assert "calibration=" in capsys.readouterr().err
    cal = tmp_path / "cal.npy"
    np.save(cal, hal.models.calibration_data("mlp", 8))
    assert main(["run", str(path), "--device", "cpu@reference", "--precision", "int8",
                 "--calibration", str(cal), "--json", "--repeat", "1"]) == 0
    assert '"calibration"' in capsys.readouterr().out


def test_percentile_histogram_matches_numpy_across_batches():
    from hal.passes.calibration import TensorStats

    a = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    parts = [a[:1000] * 0.1, a[1000:]]  # the second batch widens the histogram's range
    stats = TensorStats()
    for p in parts:
        stats.update(p)
    every = np.abs(np.concatenate(parts))
    assert stats.absmax == every.max()
    for p in (99.0, 99.99):
        assert abs(stats.percentile(p) - np.percentile(every, p)) < 2e-3


def test_an_already_quantized_model_runs_as_given(lenet_int8, tmp_path):
    path = tmp_path / "lenet_int8.onnx"
    hal.save(lenet_int8.model, path)  # the QDQ graph round-trips through a file
    again = hal.compile(str(path), "cpu@reference", precision="int8")
    x = hal.models.example_input("lenet", 2)
    np.testing.assert_array_equal(again(x)[0], lenet_int8(x)[0])
    ops = [n.op_type for n in again.model.graph]
    assert ops.count("DequantizeLinear") == [n.op_type for n in lenet_int8.model.graph].count(
        "DequantizeLinear")
    detail = next(p["detail"] for p in again.report()["passes"] if p["pass"] == "Quantize")
    assert "already quantized" in detail
    with pytest.raises(OptionError, match="already quantized"):
        hal.compile(str(path), "cpu@reference", precision="int8",
                    calibration=hal.models.calibration_data("lenet", 2))


@pytest.mark.parametrize("power_of_two", [False, True])
def test_first_digits_layer_matches_the_fpga_integer_spec(power_of_two):
    """The QDQ layer, evaluated in float, equals the FPGA integer spec within one LSB."""
    from hal.backends.fpga import spec
    from hal.oracle import OPS

    cm = hal.compile("digits", "cpu@reference", precision="int8", power_of_two=power_of_two)
    conv = next(n for n in cm.model.graph if n.op_type == "Conv")
    relu = conv.outputs[0].consumers()[0]
    (q_out,) = relu.outputs[0].consumers()
    s_x = init(conv.inputs[0].producer().inputs[1])
    w_q, s_w, _ = (init(v) for v in conv.inputs[1].producer().inputs)
    b_q, s_b, _ = (init(v) for v in conv.inputs[2].producer().inputs)
    s_y = init(q_out.inputs[1])
    x, _ = hal.models.digits.dataset("test")
    x_q = OPS["QuantizeLinear"](x[:64], s_x, np.int8(0))
    # the QDQ form, as ONNX evaluates it
    y = OPS["Conv"](x_q * s_x, w_q * s_w[:, None, None, None], b_q * s_b, pads=[1, 1, 1, 1])
    qdq = OPS["MaxPool"](OPS["QuantizeLinear"](np.maximum(y, 0), s_y, np.int8(0)),
                         kernel_shape=[2, 2], strides=[2, 2])
    qdq = qdq[0] if isinstance(qdq, tuple) else qdq  # (values, indices)
    # the accelerator's integers
    ms = [spec.quantize_multiplier(float(s_x * sw / s_y), power_of_two) for sw in s_w]
    m, s = np.array([a for a, _ in ms]), np.array([b for _, b in ms])
    fpga = spec.conv2d(x_q, w_q, b_q, m, s, pad=1, act_min=0, pool=2)
    diff = np.abs(fpga.astype(int) - qdq.astype(int))
    print(f"\nfpga spec vs QDQ: max {diff.max()} LSB, equal {(diff == 0).mean():.4%}")
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_every_zoo_model_builds_on_ort_at_int8():
    """onnxruntime's QDQ rewrites refuse some int8 graphs (dwsep: Q/DQ moved across MaxPool);
    the session is then built without QDQ propagation, says so, and still agrees."""
    pytest.importorskip("onnxruntime")
    for name in hal.models.list():
        x = hal.models.example_input(name, 2, seed=3)
        ref = hal.compile(name, "cpu@reference", precision="int8")
        ort = hal.compile(name, "cpu@ort", precision="int8")
        info = ort.executables[0].info
        if "disabled_optimizers" in info:
            assert info["disabled_optimizers"].startswith("QDQPropagationTransformer")
        y_ref, y_ort = ref(x)[0], ort(x)[0]
        assert y_ref.shape == y_ort.shape
        assert (y_ref.argmax(-1) == y_ort.argmax(-1)).mean() >= 0.5, name
