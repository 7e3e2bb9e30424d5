"""The opencl backend: devices, build cache, build failures, device-resident runs,
autotune override and the int8 kernels against a numpy integer reference."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import hal
from hal.errors import BackendError, OptionError, UnsupportedOp
from tests.helpers import make_model, rand

pytest.importorskip("pyopencl")


def _opencl_usable() -> bool:
    return any(d.usable and d.backend == "opencl" for d in hal.devices())


pytestmark = pytest.mark.skipif(not _opencl_usable(), reason="no usable OpenCL device")
DEV = "opencl:0"


def _mlp():
    w = rand(16, 8)
    b = rand(16, seed=1)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["y"])]
    return make_model(nodes, [("x", ["N", 8])], [("y", ["N", 16])], {"w": w, "b": b})


def test_devices_listed_and_usable():
    devs = [d for d in hal.devices() if d.backend == "opencl"]
    assert any(d.kind == "opencl" and d.index == 0 and d.usable for d in devs)
    d0 = hal.device(DEV)
    assert d0.info.host_memory is False and not d0.simulated
    by_type = [d for d in devs if d.kind in ("cpu", "gpu", "accelerator")]
    assert by_type and all(d.details["global_index"] >= 0 for d in by_type)


def test_cpu_at_opencl_addresses_the_cpu_device():
    if not any(d.kind == "cpu" and d.backend == "opencl" and d.usable for d in hal.devices()):
        pytest.skip("no OpenCL CPU device")
    x = rand(3, 8)
    y = hal.compile(_mlp(), "cpu@opencl")(x)[0]
    ref = hal.compile(_mlp(), "cpu@reference")(x)[0]
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_build_cache_cold_then_warm(tmp_path, monkeypatch):
    from hal.backends.opencl import programs

    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(programs, "_programs", {})
    c1 = hal.compile(_mlp(), DEV, autotune=False)
    progs = c1.report()["segments"][0]["info"]["programs"]
    assert progs and all(p["cache"] == "cold" for p in progs.values())
    assert list((tmp_path / "opencl" / "binaries").glob("*.bin"))
    monkeypatch.setattr(programs, "_programs", {})  # as in a new process
    c2 = hal.compile(_mlp(), DEV, autotune=False)
    progs2 = c2.report()["segments"][0]["info"]["programs"]
    assert all(p["cache"] == "warm" for p in progs2.values())
    x = rand(4, 8)
    np.testing.assert_array_equal(c1(x)[0], c2(x)[0])


def test_bad_build_options_raise_with_the_build_log():
    with pytest.raises(BackendError) as exc:
        hal.compile(_mlp(), DEV, build_options="-DHAL_BROKEN=1 -cl-no-such-option-xyz")
    assert "failed to build" in str(exc.value) and "build_options" in str(exc.value)
    assert getattr(exc.value, "log", None) is not None


def _fp16_model():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "half",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def test_fp16_falls_back_to_cpu_or_fails_strict():
    with pytest.warns(UserWarning):
        c = hal.compile(_fp16_model(), DEV)
    reasons = [f["reason"] for f in c.report()["fallbacks"] if f["op"] == "Relu"]
    assert reasons and "fp16" in reasons[0]
    assert set(c.placement.values()) == {hal.device("cpu").string}
    x = rand(2, 3).astype(np.float16)
    np.testing.assert_array_equal(c(x)[0], np.maximum(x, 0))
    with pytest.raises(UnsupportedOp, match="FLOAT16"):
        hal.compile(_fp16_model(), DEV, fallback=None)


def test_run_buffers_stays_on_device_between_calls():
    c = hal.compile(_mlp(), DEV)
    dev = hal.device(DEV)
    x = rand(5, 8)
    xb = dev.put(x)
    c.run([xb])
    before = dev.transfers.copy()
    outs = c.run([xb])
    outs = c.run(outs[:0] + [xb])
    assert (dev.transfers - before).count == 0
    assert c.last_transfers.count == 0
    y = outs[0].numpy()
    assert (dev.transfers - before).d2h_count == 1
    np.testing.assert_allclose(y, hal.compile(_mlp(), "cpu@reference")(x)[0], atol=1e-5)


def test_chained_models_keep_buffers_on_device():
    c = hal.compile(_mlp(), DEV)
    w2 = rand(16, 16, seed=3)
    second = make_model([helper.make_node("MatMul", ["h", "w"], ["y"])], [("h", ["N", 16])],
                        [("y", ["N", 16])], {"w": w2})
    c2 = hal.compile(second, DEV)
    dev = hal.device(DEV)
    xb = dev.put(rand(3, 8))
    before = dev.transfers.copy()
    yb = c2.run(c.run([xb]))[0]
    assert (dev.transfers - before).count == 0
    np.testing.assert_allclose(yb.numpy(), np.maximum(rand(3, 8) @ rand(16, 8).T
                                                      + rand(16, seed=1), 0) @ w2, atol=1e-4)


def test_gemm_tile_override_and_validation():
    x = rand(7, 8)
    ref = hal.compile(_mlp(), "cpu@reference")(x)[0]
    c = hal.compile(_mlp(), DEV, gemm_tile=(4, 8, 0, 1, 1))
    info = c.report()["segments"][0]["info"]["gemm"]
    assert (info["mr"], info["nr"], info["kc"], info["source"]) == (4, 8, 0, "gemm_tile option")
    np.testing.assert_allclose(c(x)[0], ref, atol=1e-5)
    with pytest.raises(OptionError, match="gemm_tile"):
        hal.compile(_mlp(), DEV, gemm_tile=(4, 7, 0))
    with pytest.raises(OptionError, match="unknown compile option"):
        hal.compile(_mlp(), DEV, gemm_tiles=(4, 8, 0))


@pytest.mark.parametrize("tile", [(6, 16, 32), (3, 8, 0, 1, 1), (8, 24, 16, 2, 2)])
def test_gemm_edges_with_any_tile(tile):
    rng = np.random.default_rng(0)
    for m, k, n in [(1, 1, 1), (13, 37, 29), (64, 100, 48), (5, 300, 70)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        g = make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], [("a", [m, k])],
                       [("y", [m, n])], {"b": b})
        y = hal.compile(g, DEV, gemm_tile=tile)(a)[0]
        np.testing.assert_allclose(y, a @ b, rtol=1e-4, atol=1e-4)


# -- the flow: every fusion a pass, none at opt_level 0 ---------------------------------
def _domains(compiled) -> set[str]:
    return {n.domain for n in compiled.model.graph}


def _fusions(compiled) -> list[dict]:
    return [p for p in compiled.report()["passes"]
            if p["modified"] and ("Fusion" in p["pass"] or "BatchNorm" in p["pass"])]


@pytest.mark.parametrize("name", hal.models.list())
def test_opt_level_0_runs_unfused_and_matches_the_reference(name):
    x = hal.models.example_input(name, 2)
    c = hal.compile(name, DEV, opt_level=0)
    assert c.report()["flow"] == "opencl.plain" and not _fusions(c)
    assert _domains(c) <= {"", "ai.onnx"}  # no ai.hal or ai.hal.opencl op
    assert set(c.placement.values()) == {hal.device(DEV).string}
    ref = hal.compile(name, "cpu@reference", opt_level=0)(x)
    for y, r in zip(c(x), ref):
        np.testing.assert_allclose(y, r, rtol=1e-4, atol=1e-4)


def test_default_level_shows_the_fusions_as_passes():
    from hal.backends.opencl.graph import OPENCL_DOMAIN

    shown = {}
    for name in ("resnet_lite", "tiny_transformer"):
        x = hal.models.example_input(name, 2)
        c = hal.compile(name, DEV)
        for p in _fusions(c):
            shown[p["pass"]] = f"{shown.get(p['pass'], '')} {name}: {p['detail']}"
        ref = hal.compile(name, "cpu@reference")(x)[0]
        np.testing.assert_allclose(c(x)[0], ref, rtol=1e-4, atol=1e-4)
        # the executable lowers the graph it was given, one kernel node per graph node
        info = c.report()["segments"][0]["info"]
        assert info["nodes"] == len(list(c.model.graph)) and "programs" in info
        assert OPENCL_DOMAIN in _domains(c)
    assert "folded 10 BatchNormalization into Conv" in shown["BatchNormFolding"]
    assert "Conv+Relu x5" in shown["ActivationFusion"]
    assert "Add+Relu x4" in shown["opencl.ActivationFusion"]
    assert "MatMul+Gelu x2" in shown["opencl.ActivationFusion"]
    assert "tiny_transformer: fused 12 MatMul+Add into FusedMatMul" in \
        shown["opencl.MatMulBiasFusion"]


def _act_node(op, src, dst):
    if op == "Clip":
        return helper.make_node("Clip", [src, "lo", "hi"], [dst])
    if op == "LeakyRelu":
        return helper.make_node(op, [src], [dst], alpha=0.2)
    return helper.make_node(op, [src], [dst])


@pytest.mark.parametrize("op", ["Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "Gelu"])
def test_every_activation_fused_and_unfused_matches_the_reference(op):
    """Each activation of hal.ir.schemas.ACTIVATIONS after Conv (ai.hal FusedConv), MatMul
    with bias and Add (ai.hal.opencl) runs the same fused, unfused and on cpu@reference: the
    kernels' codes mean what the table says."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             _act_node(op, "c", "y1"),
             helper.make_node("Reshape", ["y1", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "m"], ["mm"]),
             helper.make_node("Add", ["mm", "mb"], ["a"]),
             _act_node(op, "a", "y2"),
             helper.make_node("Add", ["y2", "z"], ["s"]),
             _act_node(op, "s", "y")]
    inits = {"w": rand(4, 3, 3, 3), "b": rand(4, seed=1), "shape": np.array([0, 4, -1]),
             "m": rand(64, 5, seed=2), "mb": rand(5, seed=3), "lo": np.float32(-0.3),
             "hi": np.float32(0.4)}
    g = make_model(nodes, [("x", [2, 3, 8, 8]), ("z", [2, 4, 5])], [("y", [2, 4, 5])], inits)
    x, z = rand(2, 3, 8, 8, seed=4), rand(2, 4, 5, seed=5)
    ref = hal.compile(g, "cpu@reference", opt_level=0)(x, z)[0]
    fused = hal.compile(g, DEV)
    kinds = {(n.domain, n.op_type) for n in fused.model.graph}
    assert ("ai.hal", "FusedConv") in kinds and ("ai.hal.opencl", "FusedMatMul") in kinds
    assert ("ai.hal.opencl", "FusedAdd") in kinds and not {k for k in kinds if k[1] == op}
    np.testing.assert_allclose(fused(x, z)[0], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hal.compile(g, DEV, opt_level=0)(x, z)[0], ref, rtol=1e-4,
                               atol=1e-5)


def test_batchnorm_and_arithmetic_take_their_activation():
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Sub", ["r", "z"], ["d"]),
             helper.make_node("Tanh", ["d"], ["t"]),
             helper.make_node("Mul", ["t", "x"], ["p"]),
             helper.make_node("Sigmoid", ["p"], ["q"]),
             helper.make_node("Div", ["q", "k"], ["e"]),
             helper.make_node("LeakyRelu", ["e"], ["y"], alpha=0.3)]
    inits = {"s": rand(3, seed=1), "b": rand(3, seed=2), "m": rand(3, seed=3),
             "v": np.abs(rand(3, seed=4)) + 0.5, "k": rand(1, 3, 1, 1, seed=5)}
    g = make_model(nodes, [("x", [2, 3, 4, 4]), ("z", [2, 3, 4, 4])], [("y", [2, 3, 4, 4])],
                   inits)
    x, z = rand(2, 3, 4, 4, seed=6), rand(2, 3, 4, 4, seed=7)
    c = hal.compile(g, DEV)
    assert sorted(n.op_type for n in c.model.graph) == [
        "FusedBatchNormalization", "FusedDiv", "FusedMul", "FusedSub"]
    ref = hal.compile(g, "cpu@reference")(x, z)[0]
    np.testing.assert_allclose(c(x, z)[0], ref, rtol=1e-4, atol=1e-5)


def test_nodes_the_kernels_cannot_run_are_not_fused():
    """An fp16 Add -> Relu goes to the fallback as it is: a fused ai.hal.opencl node could
    run nowhere else."""
    g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["a"]),
                           helper.make_node("Relu", ["a"], ["y"])], "half",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.warns(UserWarning):
        c = hal.compile(m, DEV)
    assert {n.op_type for n in c.model.graph} == {"Add", "Relu"}
    x = rand(2, 3).astype(np.float16)
    np.testing.assert_array_equal(c(x)[0], np.maximum(x + x, 0))


def test_activation_codes_come_from_the_one_table():
    """The OpenCL kernels name the codes and get their numbers from hal.ir.schemas (through
    the program builder's -D defines); the static FPGA kernel sources that ship with
    bitstreams carry no codes of their own, or the table's."""
    import re
    from pathlib import Path

    from hal.backends.opencl import codes
    from hal.ir.schemas import ACTIVATIONS, activation_code

    defines = codes.defines()
    assert defines["ACT_NONE"] == 0
    for name in ACTIVATIONS:
        assert defines[f"ACT_{codes.macro(name)}"] == activation_code(name)
    assert len(set(defines[k] for k in defines if k[0] in "AU")) == len(ACTIVATIONS) + 1 + \
        len(codes.MATH)  # activation and unary-math codes share unary_f32's switch
    root = Path(__file__).resolve().parents[1]
    kernels = sorted((root / "backends" / "opencl" / "kernels").glob("*.[ch]*"))
    assert kernels
    code_macro = re.compile(r"\b((?:ACT|U|B)_[A-Z_]+)\b")
    for path in kernels:
        text = path.read_text()
        assert not re.search(r"#define\s+(ACT|U|B)_", text), f"{path.name} numbers a code"
        unknown = set(code_macro.findall(text)) - set(defines)
        assert not unknown, f"{path.name} uses {unknown}, which codes.defines() lacks"
    static = [p for ext in ("*.cl", "*.h", "*.cpp") for p in (root / "bitstreams").rglob(ext)]
    assert static
    for path in static:
        for macro, value in re.findall(r"#define\s+(ACT_[A-Z_]+)\s+(\d+)", path.read_text()):
            assert defines.get(macro) == int(value), f"{path.name}: {macro} {value}"


# -- int8 ------------------------------------------------------------------------------
def requantize_ref(acc, mult, shift, zp=0, qmin=-128, qmax=127, rounding="half_away_from_zero"):
    """The integer spec in numpy (Python ints, exact)."""
    p = acc.astype(object) * np.asarray(mult).astype(object)
    shift = np.broadcast_to(np.asarray(shift), p.shape)
    out = np.empty(p.shape, object)
    for idx in np.ndindex(p.shape):
        v, s = int(p[idx]), int(shift[idx])
        if s:
            half = 1 << (s - 1)
            if rounding == "half_away_from_zero":
                v = (v + half) >> s if v >= 0 else -((-v + half) >> s)
            elif rounding == "half_up":
                v = (v + half) >> s
            else:
                q, rem = v >> s, v - ((v >> s) << s)
                v = q + 1 if rem > half or (rem == half and q & 1) else q
        out[idx] = min(max(v + zp, qmin), qmax)
    return out.astype(np.int64)


def _int8(rng, *shape):
    return rng.integers(-128, 128, shape, dtype=np.int8)


def test_int8_gemm_random_against_numpy():
    from hal.backends.opencl.int8 import gemm_int8

    rng = np.random.default_rng(1)
    a, b = _int8(rng, 17, 45), _int8(rng, 45, 23)
    bias = rng.integers(-5000, 5000, 23).astype(np.int32)
    acc = a.astype(np.int64) @ b.astype(np.int64) + bias
    np.testing.assert_array_equal(gemm_int8(DEV, a, b, bias, out="int32"), acc)
    mult = rng.integers(1 << 29, 1 << 31, 23)
    shift = rng.integers(28, 40, 23)
    y = gemm_int8(DEV, a, b, bias, mult, shift, zero_point=3, rounding="half_away_from_zero")
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y, requantize_ref(acc, mult, shift, 3))
    y = gemm_int8(DEV, a, b, bias, mult, shift)
    np.testing.assert_array_equal(y, requantize_ref(acc, mult, shift, rounding="half_up"))


@pytest.mark.parametrize("rounding", ["half_away_from_zero", "half_up", "half_even"])
def test_int8_requantize_ties_and_saturation(rounding):
    from hal.backends.opencl.int8 import gemm_int8

    # a @ I = a: the accumulator is exactly the chosen values; mult 1, shift 2 -> x / 4
    vals = np.array([2, -2, 6, -6, 10, -10, 1, -1, 3, -3, 0, 508, -508, 510, -514, 600, -600],
                    np.int64)
    a = np.zeros((len(vals), 1), np.int8)
    b = np.ones((1, 1), np.int8)
    bias = np.zeros(1, np.int32)
    # put the values in through the bias of a 1-column GEMM, one row per value
    out = []
    for v in vals:
        out.append(gemm_int8(DEV, a[:1], b, np.array([v], np.int32), 1, 2, rounding=rounding)[0, 0])
    expect = requantize_ref(vals, 1, 2, rounding=rounding)
    np.testing.assert_array_equal(np.array(out, np.int64), expect)
    assert bias.sum() == 0
    if rounding == "half_away_from_zero":  # the ties: 2/4 -> 1, -2/4 -> -1, 6/4 -> 2, 10/4 -> 3
        assert list(expect[:6]) == [1, -1, 2, -2, 3, -3]
    big = gemm_int8(DEV, np.full((2, 64), 127, np.int8), np.full((64, 3), 127, np.int8),
                    multiplier=1, shift=0)
    assert (big == 127).all()
    small = gemm_int8(DEV, np.full((2, 64), -128, np.int8), np.full((64, 3), 127, np.int8))
    assert (small == -128).all()


def test_int8_conv_against_numpy():
    from hal.backends.opencl.int8 import conv2d_int8

    rng = np.random.default_rng(2)
    x, w = _int8(rng, 2, 3, 9, 8), _int8(rng, 5, 3, 3, 3)
    bias = rng.integers(-1000, 1000, 5).astype(np.int32)
    acc = np.zeros((2, 5, 5, 4), np.int64)
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0), (1, 1), (1, 1)])
    for oh in range(5):
        for ow in range(4):
            win = xp[:, :, oh * 2:oh * 2 + 3, ow * 2:ow * 2 + 3]
            acc[:, :, oh, ow] = np.einsum("nchw,ochw->no", win, w.astype(np.int64))
    acc += bias.reshape(1, 5, 1, 1)
    got = conv2d_int8(DEV, x, w, bias, strides=(2, 2), pads=(1, 1, 1, 1), out="int32")
    np.testing.assert_array_equal(got, acc)
    mult = rng.integers(1 << 30, 1 << 31, 5)
    shift = np.full(5, 38)
    q = conv2d_int8(DEV, x, w, bias, mult, shift, strides=(2, 2), pads=(1, 1, 1, 1))
    ref = requantize_ref(acc, mult.reshape(1, 5, 1, 1), shift.reshape(1, 5, 1, 1),
                         rounding="half_up")
    np.testing.assert_array_equal(q, ref)


def test_int8_matches_the_fpga_spec_bit_for_bit():
    from hal.backends.fpga import spec
    from hal.backends.opencl.int8 import conv2d_int8, gemm_int8

    rng = np.random.default_rng(4)
    x, w = _int8(rng, 9, 70), _int8(rng, 12, 70)
    bias = rng.integers(-3000, 3000, 12).astype(np.int32)
    ms = [spec.quantize_multiplier(float(r)) for r in rng.uniform(1e-4, 5e-3, 12)]
    m, s = np.array([a for a, _ in ms]), np.array([b for _, b in ms])
    np.testing.assert_array_equal(gemm_int8(DEV, x, np.ascontiguousarray(w.T), bias, m, s),
                                  spec.gemm(x, w, bias, m, s))
    np.testing.assert_array_equal(gemm_int8(DEV, x, np.ascontiguousarray(w.T), bias, m, s, qmin=0),
                                  spec.gemm(x, w, bias, m, s, act_min=0))
    xc, wc = _int8(rng, 2, 4, 7, 7), _int8(rng, 6, 4, 3, 3)
    bc = rng.integers(-3000, 3000, 6).astype(np.int32)
    mc, sc = m[:6], s[:6]
    np.testing.assert_array_equal(conv2d_int8(DEV, xc, wc, bc, mc, sc, pads=(1, 1, 1, 1)),
                                  spec.conv2d(xc, wc, bc, mc, sc, pad=1))


def test_int8_bad_input_is_a_hal_error():
    from hal.backends.opencl.int8 import gemm_int8
    from hal.errors import InputError

    with pytest.raises(InputError, match="int8"):
        gemm_int8(DEV, np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int8))
    with pytest.raises(InputError, match="rounding"):
        gemm_int8(DEV, np.zeros((2, 2), np.int8), np.zeros((2, 2), np.int8), rounding="up")
