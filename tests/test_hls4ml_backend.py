"""``fpga@hls4ml``: hls4ml's C simulation checked bit for bit against an independent numpy
fixed-point model, zoo accuracy at int8, refusal of float scales, visible fallback, and the
board build command.

Needs ``pip install hal-accel[hls4ml]`` and g++; skips cleanly without them. Projects are
built under a per-session cache directory, so the first compile of each model pays the
conversion and g++ (a few seconds to ~20 s) and later ones reuse the library.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.backend import CompileOptions

pytest.importorskip("hls4ml")
pytest.importorskip("qonnx")

DEV = "fpga@hls4ml"
HAS_QUANT = "power_of_two" in {f.name for f in dataclasses.fields(CompileOptions)}
needs_quant = pytest.mark.skipif(not HAS_QUANT, reason="needs the shared int8 quantization "
                                 "pass (hal.passes.quantize, power_of_two=)")


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HAL_CACHE_DIR", str(tmp_path_factory.mktemp("hal-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def usable():
    try:
        return hal.device(DEV).info
    except hal.HalError as exc:
        pytest.skip(f"fpga@hls4ml is not usable: {exc}")


# -- a small QDQ model built by hand, exactly as QDQ.md describes ---------------------------

def qdq_model(seed: int = 0, float_scales: bool = False, tail: str | None = None
              ) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv 1->4 3x3 pad 1 (+bias) -> Relu -> Q/DQ -> MaxPool 2 -> Q/DQ
    -> Flatten -> Q/DQ -> Gemm 64->5 (transB) -> Q/DQ [-> ``tail`` op]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def qdq(t, s, name):
        const(f"{name}_s", np.array(s, np.float32))
        const(f"{name}_z", np.array(0, np.int8))
        nodes.append(helper.make_node("QuantizeLinear", [t, f"{name}_s", f"{name}_z"],
                                      [f"{name}_q"], name=f"{name}_Q"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"],
                                      [f"{name}_dq"], name=f"{name}_DQ"))
        return f"{name}_dq"

    def const_dq(q, s, name, zdtype):
        const(f"{name}_q", q)
        const(f"{name}_s", s.astype(np.float32))
        const(f"{name}_z", np.zeros(len(s), zdtype))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"],
                                      [f"{name}_f"], axis=0, name=f"{name}_DQ"))
        return f"{name}_f"

    sx = 0.0371 if float_scales else 2.0 ** -5
    x = qdq("x", sx, "in")
    sw = 2.0 ** -rng.integers(5, 9, 4)                  # per-channel, different shifts
    w = const_dq(rng.integers(-127, 128, (4, 1, 3, 3)).astype(np.int8), sw, "w1", np.int8)
    b = const_dq(rng.integers(-300, 300, 4).astype(np.int32), sx * sw, "b1", np.int32)
    nodes.append(helper.make_node("Conv", [x, w, b], ["c1"], pads=[1, 1, 1, 1], name="conv1"))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
    sy = 2.0 ** -3
    y = qdq("r1", sy, "a1")
    nodes.append(helper.make_node("MaxPool", [y], ["p1"], kernel_shape=[2, 2], strides=[2, 2],
                                  name="pool1"))
    y = qdq("p1", sy, "a2")
    nodes.append(helper.make_node("Flatten", [y], ["f1"], axis=1, name="flat"))
    y = qdq("f1", sy, "a3")
    sw2 = 2.0 ** -rng.integers(5, 9, 5)
    w2 = const_dq(rng.integers(-127, 128, (5, 64)).astype(np.int8), sw2, "w2", np.int8)
    b2 = const_dq(rng.integers(-300, 300, 5).astype(np.int32), sy * sw2, "b2", np.int32)
    nodes.append(helper.make_node("Gemm", [y, w2, b2], ["g1"], transB=1, name="gemm1"))
    out = qdq("g1", 2.0 ** -2, "out")
    if tail:
        nodes.append(helper.make_node(tail, [out], ["y"], name="tail", axis=1))
        out = "y"
    g = helper.make_graph(nodes, "qdq_small",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 5])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(m, full_check=True)
    return m


# -- the independent fixed-point model: integers and power-of-two exponents only ------------

def _round_shift(acc: np.ndarray, sh: np.ndarray, rounding: str) -> np.ndarray:
    """acc * 2**-sh rounded to an integer (sh may differ per element; sh <= 0 is exact)."""
    acc = acc.astype(np.int64)
    sh = np.broadcast_to(sh, acc.shape).astype(np.int64)
    left = np.where(sh <= 0, acc << np.maximum(-sh, 0), 0)
    s = np.maximum(sh, 1)
    floor = acc >> s
    rem = acc - (floor << s)
    half = np.int64(1) << (s - 1)
    if rounding == "half_up":
        up = rem >= half
    else:  # half to even
        up = (rem > half) | ((rem == half) & (floor & 1 == 1))
    return np.where(sh <= 0, left, floor + up)


def fixed_point_reference(model: onnx.ModelProto, x: np.ndarray,
                          rounding: str = "half_up") -> np.ndarray:
    """Runs the QDQ graph on (int64 values, int exponents): value = v * 2**e exactly."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    env: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    floats = {model.graph.input[0].name: x.astype(np.float64)}

    def exp2(s):
        e = np.log2(np.asarray(s, np.float64))
        assert np.all(e == np.round(e)), "the fixed-point model needs power-of-two scales"
        return e.astype(np.int64)

    for n in model.graph.node:
        a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
        if n.op_type == "QuantizeLinear":
            e_y = exp2(inits[n.input[1]])
            if n.input[0] in floats:          # the float input: QuantizeLinear's own rounding
                q = np.clip(np.rint(floats[n.input[0]] / 2.0 ** e_y), -128, 127)
                env[n.output[0]] = (q.astype(np.int64), e_y)
            else:
                v, e = env[n.input[0]]
                env[n.output[0]] = (np.clip(_round_shift(v, e_y - e, rounding), -128, 127), e_y)
        elif n.op_type == "DequantizeLinear":
            if n.input[0] in inits:
                q = inits[n.input[0]].astype(np.int64)
                e = exp2(inits[n.input[1]])
                shape = [1] * q.ndim
                shape[a.get("axis", 1)] = -1
                env[n.output[0]] = (q, e.reshape(shape))
            else:
                env[n.output[0]] = env[n.input[0]]
        elif n.op_type in ("Conv", "Gemm"):
            (v, ex), (w, ew) = env[n.input[0]], env[n.input[1]]
            ew = ew.reshape(-1)
            if n.op_type == "Conv":
                p = a.get("pads", [0, 0, 0, 0])
                vp = np.pad(v, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])))
                kh, kw = w.shape[2:]
                win = np.lib.stride_tricks.sliding_window_view(vp, (kh, kw), axis=(2, 3))
                acc = np.einsum("nchwij,ocij->nohw", win, w)
                cshape = (1, -1, 1, 1)
            else:
                acc = v @ (w.T if a.get("transB", 0) else w)
                cshape = (1, -1)
            # every channel's products sit on 2**(ex + ew[c]); so does its int32 bias
            if len(n.input) > 2 and n.input[2]:
                bq, eb = env[n.input[2]]
                assert np.all(eb.reshape(-1) == ex + ew)
                acc = acc + bq.reshape(cshape)
            env[n.output[0]] = (acc, (ex + ew).reshape(cshape))
        elif n.op_type == "Relu":
            v, e = env[n.input[0]]
            env[n.output[0]] = (np.maximum(v, 0), e)
        elif n.op_type == "MaxPool":
            v, e = env[n.input[0]]
            k = a["kernel_shape"][0]
            nb, c, h, w_ = v.shape
            env[n.output[0]] = (v[:, :, :h // k * k, :w_ // k * k]
                                .reshape(nb, c, h // k, k, w_ // k, k).max(axis=(3, 5)), e)
        elif n.op_type == "Flatten":
            v, e = env[n.input[0]]
            env[n.output[0]] = (v.reshape(v.shape[0], -1), e)
        else:
            raise NotImplementedError(n.op_type)
    v, e = env[model.graph.output[0].name]
    return (v * 2.0 ** e).astype(np.float32)


def _compile(model, **kw):
    """g++ -O0 (opt_level=0) unless asked: the build is what costs test time."""
    kw.setdefault("opt_level", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hal.compile(model, DEV, precision="int8", **kw)


# -- tests -----------------------------------------------------------------------------------

def test_device_listed_and_simulated(usable):
    assert usable.simulated and "C simulation" in usable.name
    assert hal.device(DEV).backend.default_precision == "int8"


STREAM = {"io_type": "io_stream", "reuse_factor": 2, "rounding": "half_even", "opt_level": 1}


@pytest.mark.parametrize("options", [{}, STREAM], ids=["parallel-half_up", "stream-half_even"])
def test_c_simulation_is_bit_exact(usable, options):
    model = qdq_model(seed=1)
    rounding = options.get("rounding", "half_up")
    compiled = _compile(model, **options)
    assert set(compiled.placement.values()) == {hal.device(DEV).string}
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((16, 1, 8, 8)) * 1.5).astype(np.float32)
    x[0, 0, :2, :2] = [[0.015625, -0.046875], [100.0, -100.0]]  # ties and saturation
    x_before = x.copy()
    y = compiled(x)[0]
    np.testing.assert_array_equal(x, x_before)
    want = fixed_point_reference(model, x, rounding)
    np.testing.assert_array_equal(y, want)
    # and the float QDQ evaluation agrees up to one output step where rounding differs
    ort = hal.compile(model, "cpu@ort", precision="int8", opt_level=0)(x)[0]
    assert np.max(np.abs(y - ort)) <= 2.0 ** -2 + 1e-6
    if rounding == "half_even":  # ONNX's rounding everywhere: equal to the QDQ evaluation
        np.testing.assert_array_equal(y, ort)


def test_report_shows_project_types_and_options(usable):
    compiled = _compile(qdq_model(seed=1), **STREAM)  # built by the test above: a cache hit
    info = compiled.report()["segments"][0]["info"]
    assert info["cache"] == "warm"
    assert "io_stream" in info["hls4ml"] and "reuse factor 2" in info["hls4ml"]
    assert "ap_fixed<8," in info["fixed-point types"] and "Dense" in info["fixed-point types"]
    from pathlib import Path

    proj = Path(info["hls4ml project"])
    assert (proj / "axi_stream_driver.py").exists() and (proj / "design.tcl").exists()
    assert compiled.report()["options"]["io_type"] == "io_stream"
    x = np.random.default_rng(3).standard_normal((4, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(compiled(x)[0],
                                  fixed_point_reference(qdq_model(seed=1), x, "half_even"))


def test_float_scales_are_refused(usable):
    with pytest.raises(hal.HalError, match="power-of-two") as e:
        _compile(qdq_model(float_scales=True), float_scales="refuse")
    assert "power_of_two=True" in str(e.value)


def test_float_scales_are_requantized_and_reported(usable):
    model = qdq_model(float_scales=True)
    with pytest.warns(UserWarning, match="powers of two"):
        compiled = hal.compile(model, DEV, precision="int8", opt_level=0)
    assert "requantized" in compiled.report()["segments"][0]["info"]
    x = np.random.default_rng(5).standard_normal((4, 1, 8, 8)).astype(np.float32)
    from hal.backends.hls4ml_backend.qdq import requantize_pow2

    pow2 = onnx.ModelProto()
    pow2.CopyFrom(model)
    requantize_pow2(pow2)  # what the backend ran, checked by the independent model
    np.testing.assert_array_equal(compiled(x)[0], fixed_point_reference(pow2, x))


def test_hls4ml_alpha_layers_are_caught(usable, tmp_path):
    """The second guard: were a float scale to reach hls4ml, its ApplyAlpha is refused."""
    from hal.backends.hls4ml_backend import project
    from hal.backends.hls4ml_backend.qdq import FloatScaleError, prepare

    prep = prepare(qdq_model(float_scales=True))
    hls_model = project._convert(prep, project.Settings(), tmp_path / "p")
    with pytest.raises(FloatScaleError, match="ApplyAlpha"):
        project._check_exact(hls_model)


def test_unsupported_tail_falls_back_visibly(usable):
    model = qdq_model(seed=1, tail="LogSoftmax")  # its hls4ml segment is a cache hit
    with pytest.warns(UserWarning, match="fallback"):
        compiled = hal.compile(model, DEV, precision="int8", opt_level=0)
    assert compiled.placement["tail"] != hal.device(DEV).string
    assert compiled.placement["conv1"] == hal.device(DEV).string
    fb = compiled.report()["fallbacks"]
    assert [f["op"] for f in fb] == ["LogSoftmax"] and "LogSoftmax" in fb[0]["reason"]
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    logits = fixed_point_reference(qdq_model(seed=1), x)
    want = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    np.testing.assert_allclose(compiled(x)[0], want, atol=1e-5)


def _fork_and_depthwise() -> onnx.ModelProto:
    """x -Q/DQ-> {Conv pw0, Add}; pw0 -Q/DQ-> depthwise Conv -> Relu -Q/DQ-> Conv pw1
    -Q/DQ-> Add."""
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr, name))
        return name

    const("s", np.array(2.0 ** -4, np.float32))
    const("z", np.array(0, np.int8))

    def qdq(t, name):
        nodes.append(helper.make_node("QuantizeLinear", [t, "s", "z"], [f"{name}_q"],
                                      name=f"{name}_Q"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"],
                                      [f"{name}_dq"], name=f"{name}_DQ"))
        return f"{name}_dq"

    def conv(x, name, shape, **attrs):
        const(f"{name}_q", np.ones(shape, np.int8))
        const(f"{name}_s", np.full(shape[0], 2.0 ** -6, np.float32))
        const(f"{name}_z", np.zeros(shape[0], np.int8))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"],
                                      [f"{name}_w"], axis=0, name=f"{name}_DQ"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w"], [name], name=name, **attrs))
        return name

    x = qdq("x", "in")
    y = qdq(conv(x, "pw0", (2, 2, 1, 1)), "a0")
    nodes.append(helper.make_node("Relu", [conv(y, "dw", (2, 1, 3, 3), group=2,
                                                pads=[1, 1, 1, 1])], ["dwr"], name="dwrelu"))
    y = qdq(conv(qdq("dwr", "a1"), "pw1", (2, 2, 1, 1)), "a2")
    nodes.append(helper.make_node("Add", [y, x], ["out"], name="residual"))
    g = helper.make_graph(nodes, "fork",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 4, 4])],
                          initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_segments_stay_closed_under_qdq():
    """A quantized tensor that forks into hls4ml work and an op it cannot run keeps its
    DequantizeLinear and that work off; a depthwise Conv (not mapped) takes its Relu and
    weights with it; a DequantizeLinear ending a segment stays on."""
    import onnx_ir as ir
    from hal.backends.hls4ml_backend import Hls4mlBackend

    backend = Hls4mlBackend()
    model = ir.from_proto(_fork_and_depthwise())
    ok = {n.name: backend.supports(n, None) is True for n in model.graph}
    assert not ok["in_DQ"] and not ok["pw0"] and not ok["pw0_DQ"] and not ok["residual"]
    assert not ok["dw"] and not ok["dw_DQ"] and not ok["dwrelu"]
    assert ok["in_Q"] and ok["a1_Q"] and ok["a1_DQ"] and ok["pw1"] and ok["pw1_DQ"]
    assert ok["a2_DQ"]  # feeds only the Add: the segment's float output
    conv = next(n for n in model.graph if n.name == "dw")
    assert "group" in backend.supports(conv, None)


def test_float_model_is_not_run_as_float(usable):
    float_only = hal.load(hal.models.get("digits").to_proto())  # no calibration inputs of its own
    with pytest.raises(hal.HalError):  # nothing quantized: no hls4ml layer, strict mode
        hal.compile(float_only, DEV, precision="int8", fallback=None)


def test_bad_options_are_named(usable):
    for kw, word in (({"io_type": "axi"}, "io_type"), ({"reuse_factor": 0}, "reuse_factor"),
                     ({"board": "u250"}, "board"), ({"rounding": "up"}, "rounding")):
        with pytest.raises(hal.HalError, match=word):
            _compile(qdq_model(), **kw)


def test_fpga_build_without_vivado_lists_files(usable, tmp_path, capsys, monkeypatch):
    import shutil

    if shutil.which("vivado") and shutil.which("vivado_hls"):
        pytest.skip("Vivado is installed here: the build would run for real")
    from hal.cli import main

    path = tmp_path / "small.onnx"
    onnx.save(qdq_model(seed=1), path)
    rc = main(["fpga", "build", str(path), "--board", "pynq-z2"])  # already QDQ
    out = capsys.readouterr().out
    assert rc == 1
    assert "Vivado is missing" in out and "axi_stream_driver.py" in out and "design.tcl" in out
    assert "built" not in out.replace("no bitstream was built", "")


# -- zoo models through the shared quantization pass (power-of-two scales) -----------------

@needs_quant
def test_lenet_agrees_with_fp32(usable):
    """LeNet int8 (power-of-two scales) on hls4ml, LogSoftmax on the fallback, vs fp32 on the
    reference: max abs error within 5% of the fp32 output range (measured: 1.5%)."""
    model = hal.models.get("lenet")
    calib = hal.models.example_input("lenet", 16, seed=1)
    compiled = _compile(model, calibration=calib, power_of_two=True)
    dev = hal.device(DEV).string
    assert {compiled.placement[n.name] for n in compiled.model.graph
            if n.op_type in ("Conv", "Gemm")} == {dev}
    assert [f["op"] for f in compiled.report()["fallbacks"]] == ["LogSoftmax"]
    x = hal.models.example_input("lenet", 4, seed=2)
    y = compiled(x)[0]
    ref = hal.compile(model, "cpu@reference")(x)[0]
    assert np.max(np.abs(y - ref)) <= 0.05 * float(ref.max() - ref.min())


@needs_quant
def test_digits_int8_accuracy_within_one_point(usable):
    from hal.models import digits

    model = hal.models.get("digits")
    xtr, _ = digits.dataset("train")
    x, labels = digits.dataset("test")
    compiled = _compile(model, calibration=xtr[:200], power_of_two=True)
    acc8 = float((compiled(x)[0].argmax(1) == labels).mean())
    acc32 = float((hal.compile(model, "cpu@reference")(x)[0].argmax(1) == labels).mean())
    assert acc32 - acc8 <= 0.01, f"int8 {acc8:.4f} vs fp32 {acc32:.4f}"
