"""The FPGA backend end to end: QDQ models on fpga@emu and fpga@opencl equal the integer
specification bit for bit; placement with FPGA and CPU segments and transfers; the driver's
register protocol, status errors and limits; device resolution; unbuilt targets."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
from hal.backends.fpga import manifest, qdq, spec
from hal.backends.fpga.driver import Driver
from hal.backends.fpga.transports.emu import EmuTransport
from qdq_by_hand import evaluate, quantize

import hal
from hal.errors import BackendError

SIM_DEVICES = [d for d in ("fpga@emu", "fpga@opencl")
               if any(i.string == f"fpga:0@{d[5:]}" and i.usable for i in hal.devices())]


def _compile(model, device, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning: asserted on in its own test
        return hal.compile(model, device, precision="int8", **kw)


@pytest.fixture(scope="module")
def digits_qdq():
    from hal.models import digits

    x, _ = digits.dataset("train")
    return quantize(hal.models.get("digits").to_proto(), x[:200])


@pytest.fixture(scope="module")
def lenet_qdq():
    x = hal.models.example_input("lenet", 4)
    m = quantize(hal.models.get("lenet").to_proto(), x)
    # end at the dequantized logits: LogSoftmax is float on the CPU, compared separately
    soft = next(n for n in m.graph.node if n.op_type == "LogSoftmax")
    m.graph.node.remove(soft)
    m.graph.output[0].name = soft.input[0]
    return m


# -- devices --------------------------------------------------------------------------------

def test_devices_are_listed_and_labelled():
    devs = {d.string: d for d in hal.devices() if d.kind == "fpga"}
    assert devs["fpga:0@emu"].usable and devs["fpga:0@emu"].simulated
    if "fpga:0@opencl" in devs and devs["fpga:0@opencl"].usable:
        assert devs["fpga:0@opencl"].simulated or "CPU" not in devs["fpga:0@opencl"].name
    pynq = devs["fpga:0@pynq"]
    if importlib.util.find_spec("pynq") is None:
        assert not pynq.usable and "no board found" in pynq.reason.lower()
        assert "fpga@emu" in pynq.reason


def test_plain_fpga_never_resolves_to_a_simulation():
    if any(d.kind == "fpga" and d.usable and not d.simulated for d in hal.devices()):
        pytest.skip("real FPGA hardware is present here")
    with pytest.raises(hal.DeviceNotFound, match="fpga@emu") as err:
        hal.device("fpga")
    assert "simulated" in str(err.value)


def test_cli_plain_fpga_exits_nonzero_and_suggests_emu(capsys):
    from hal.cli import main

    if any(d.kind == "fpga" and d.usable and not d.simulated for d in hal.devices()):
        pytest.skip("real FPGA hardware is present here")
    assert main(["run", "lenet", "--device", "fpga"]) != 0
    err = capsys.readouterr().err
    assert "DeviceNotFound" in err or "not usable" in err
    assert "fpga@emu" in err


def test_backend_declares_int8():
    dev = hal.device("fpga@emu")
    assert dev.backend.precisions == ("int8",) and dev.backend.default_precision == "int8"
    assert dev.string == "fpga:0@emu" and not dev.info.host_memory
    assert hal.device("opencl").backend.name == "opencl"  # the OpenCL backend keeps its name


# -- whole models, bit for bit ----------------------------------------------------------------

@pytest.mark.parametrize("fpga", SIM_DEVICES)
def test_digits_qdq_equals_the_spec(fpga, digits_qdq):
    from hal.models import digits

    x, _ = digits.dataset("test")
    x = x[:64]
    y = _compile(digits_qdq, fpga)(x)[0]
    np.testing.assert_array_equal(y, evaluate(digits_qdq, x)[0])


@pytest.mark.parametrize("fpga", SIM_DEVICES)
def test_lenet_qdq_equals_the_spec_with_fpga_and_cpu_segments(fpga, lenet_qdq):
    x = hal.models.example_input("lenet", 2)
    c = _compile(lenet_qdq, fpga)
    y = c(x)[0]
    np.testing.assert_array_equal(y, evaluate(lenet_qdq, x)[0])
    devs = [s.device.string for s in c.segments]
    # the flatten between the convs and the gemms is a view on the device: one FPGA segment
    assert devs == ["cpu:0@ort", f"fpga:0@{fpga[5:]}", "cpu:0@ort"]
    rep = c.report()
    on_fpga = [s for s in rep["segments"] if s["device"].startswith("fpga")]
    assert {tuple(sorted(s["ops"])) for s in on_fpga} == {
        ("Conv", "DequantizeLinear", "Flatten", "Gemm", "MaxPool", "QuantizeLinear", "Relu")}
    assert "flatten 50×4×4→800 (a view)" in on_fpga[0]["info"]["layers"]
    assert all(s["simulated"] for s in on_fpga)
    for s in on_fpga:
        info = s["info"]
        assert "simulated" in info["accelerator"] and "simulated" in info["cycles"]
        assert "simulated" in info["wall_ms"] and "ESTIMATED" in info["estimate"]
        assert "kv260 @ 200 MHz" in info["estimate"]
    t = rep["transfers"]["last_call"]
    assert t["h2d_count"] == 1 and t["d2h_count"] == 1 and t["bytes"] > 0
    assert "Flatten" not in {f["op"] for f in rep["fallbacks"]}
    print(f"\n{fpga} lenet: " + "; ".join(f"{s['info']['layers']}: {s['info']['cycles']}"
                                        for s in on_fpga))


def test_segment_executables_take_and_give_int8(lenet_qdq):
    c = _compile(lenet_qdq, "fpga@emu")
    exe = next(e for s, e in zip(c.segments, c.executables) if s.device.string == "fpga:0@emu")
    xq = np.random.default_rng(1).integers(-128, 128, (3, 1, 28, 28), dtype=np.int8)
    (y,) = exe(xq)
    want = xq
    assert [s.op for s in exe.steps] == ["conv", "conv", "view", "gemm", "gemm"]
    for L in exe.steps:
        if L.op == "view":
            want = want.reshape(len(want), -1)
        elif L.op == "conv":
            want = spec.conv2d(want, L.w, L.bias, L.m, L.s, L.stride, L.pad, L.groups,
                               L.act_min, L.act_max, L.pool)
        else:
            want = spec.gemm(want, L.w, L.bias, L.m, L.s, L.act_min, L.act_max)
    assert y.dtype == np.int8 and y.shape == (3, 10)
    np.testing.assert_array_equal(y, want)


# -- capability: each layer claimed as one unit ------------------------------------------------

def test_claim_hands_over_each_layer_and_view_as_one_group(lenet_qdq):
    c = _compile(lenet_qdq, "fpga@emu")
    dev = hal.device("fpga@emu")
    graph = c.model.graph
    claims = dev.backend.claim(graph, dev.info)
    assert sorted(id(n) for cl in claims for n in cl.nodes) == sorted(id(n) for n in graph)
    ran = [cl for cl in claims if cl.reason is None]
    assert [[n.op_type for n in cl.nodes if n.op_type not in ("DequantizeLinear",
                                                               "QuantizeLinear")]
            for cl in ran] == [["Conv", "MaxPool"], ["Conv", "MaxPool"], ["Flatten"],
                               ["Gemm", "Relu"], ["Gemm"]]
    for cl in ran:
        assert {c.placement[n.name] for n in cl.nodes} == {"fpga:0@emu"}
    refused = [cl for cl in claims if cl.reason is not None]
    assert refused and all(len(cl.nodes) == 1 and "LogSoftmax" not in cl.reason or
                           "quantized Conv/Gemm/MatMul layer" in cl.reason for cl in refused)


def test_a_layer_listed_apart_is_kept_together(lenet_qdq):
    """Weight DQs listed first (a topological order exporters write) still go with their layer:
    the partitioner moves each claimed group together."""
    import copy

    m = copy.deepcopy(lenet_qdq)
    weights = {t.name for t in m.graph.initializer}
    first = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    rest = [n for n in m.graph.node if n not in first]
    del m.graph.node[:]
    m.graph.node.extend(first + rest)
    x = hal.models.example_input("lenet", 2)
    c = _compile(m, "fpga@emu")
    assert [s.device.string for s in c.segments] == ["cpu:0@ort", "fpga:0@emu", "cpu:0@ort"]
    np.testing.assert_array_equal(c(x)[0], evaluate(lenet_qdq, x)[0])


def test_supports_answers_for_one_node(lenet_qdq):
    c = _compile(lenet_qdq, "fpga@emu")
    dev = hal.device("fpga@emu")
    conv = next(n for n in c.model.graph if n.op_type == "Conv")
    assert dev.backend.supports(conv, dev.info) is True
    dq = next(n for n in c.model.graph if n.op_type == "DequantizeLinear")
    assert "claim()" in dev.backend.supports(dq, dev.info)


def test_fp32_is_refused_with_the_supported_precision():
    with pytest.raises(hal.HalError, match="int8"):
        hal.compile("lenet", "fpga@emu", precision="fp32")


# -- the driver on every simulated transport ---------------------------------------------------

def _transport(device):
    dev = hal.device(device)
    return dev.backend.transport(dev)[0]


def _layer(rng, op, **kw):
    if op == "gemm":
        k, o = kw.pop("k", 37), kw.pop("o", 19)
        w = rng.integers(-128, 128, (o, k), dtype=np.int8)
        shape = (k,)
    else:
        c, o, g, kh = kw.pop("c", 6), kw.pop("o", 12), kw.get("groups", 1), kw.pop("kh", 3)
        w = rng.integers(-128, 128, (o, c // g, kh, kh), dtype=np.int8)
        shape = (c, kw.pop("h", 11), kw.pop("wd", 9))
    o = w.shape[0]
    ms = [spec.quantize_multiplier(float(rng.uniform(0.5, 2)) / (40 * np.sqrt(w[0].size)))
          for _ in range(o)]
    return qdq.Layer(op=op, nodes=[], x="x", y="y", w=w,
                     bias=rng.integers(-5000, 5000, o).astype(np.int32),
                     m=np.array([m for m, _ in ms], np.int32),
                     s=np.array([s for _, s in ms], np.int32), in_shape=shape, **kw)


CASES = [("gemm", {}), ("gemm", {"act_min": 0}), ("conv", {}),
         ("conv", {"stride": 2, "pad": 1}), ("conv", {"groups": 6, "o": 6, "pad": 1}),
         ("conv", {"groups": 3, "pool": 2, "act_min": 0, "act_max": 40}),
         ("conv", {"c": 20, "o": 40, "kh": 5, "h": 12, "wd": 12, "pool": 2})]


@pytest.mark.parametrize("fpga", SIM_DEVICES)
def test_driver_layers_equal_the_spec(fpga):
    from hal.backends.fpga.driver import output_shape

    t = _transport(fpga)
    drv = Driver(t)
    rng = np.random.default_rng(7)
    for op, kw in CASES:
        L = _layer(rng, op, **kw)
        n = 2
        x = rng.integers(-128, 128, (n, *L.in_shape), dtype=np.int8)
        if op == "gemm":
            want = spec.gemm(x, L.w, L.bias, L.m, L.s, L.act_min, L.act_max)
        else:
            want = spec.conv2d(x, L.w, L.bias, L.m, L.s, L.stride, L.pad, L.groups, L.act_min,
                               L.act_max, L.pool)
        assert want.shape == output_shape(L, n)
        loaded = drv.load(L)
        xm, ym = drv.upload(x), t.allocate(want.size)
        cycles = drv.run(loaded, xm, ym, n)
        got = ym.read(np.int8, want.size).reshape(want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"{fpga} {op} {kw}")
        assert cycles > 0
        loaded.free()


@pytest.mark.parametrize("fpga", SIM_DEVICES)
def test_golden_vectors_through_the_driver(fpga):
    from hal.backends.fpga.files import accelerator_dir

    t = _transport(fpga)
    drv = Driver(t)
    golden = sorted((accelerator_dir() / "golden").glob("*.npz"))
    assert golden
    for path in golden:
        g = np.load(path)
        op = "gemm" if int(g["op"]) == 1 else "conv"
        x = g["x"]
        L = qdq.Layer(op=op, nodes=[], x="x", y="y", w=g["w"], bias=g["bias"], m=g["mult"],
                      s=g["shift"], stride=int(g["stride"]), pad=int(g["pad"]),
                      groups=int(g["groups"]), act_min=int(g["act_min"]),
                      act_max=int(g["act_max"]), pool=int(g["pool"]), in_shape=x.shape[1:])
        loaded = drv.load(L)
        ym = t.allocate(g["y"].size)
        drv.run(loaded, drv.upload(x), ym, x.shape[0])
        np.testing.assert_array_equal(ym.read(np.int8, g["y"].size).reshape(g["y"].shape),
                                      g["y"], err_msg=f"{fpga} {path.stem}")


@pytest.mark.parametrize("fpga", SIM_DEVICES)
def test_status_errors_are_raised(fpga):
    t = _transport(fpga)
    drv = Driver(t)
    L = _layer(np.random.default_rng(0), "gemm")
    L.s = np.zeros_like(L.s)  # shift 0 is outside 1..62: the kernel sets status bit 8
    loaded = drv.load(L)
    x = drv.upload(np.zeros((1, 37), np.int8))
    with pytest.raises(BackendError, match=r"status 0x8.*shift"):
        drv.run(loaded, x, t.allocate(19), 1)


def test_emulator_bus_error_and_register_protocol():
    from hal.backends.fpga import transport as T

    t = EmuTransport()
    assert t.read_reg(T.CTRL) & T.AP_IDLE
    drv = Driver(t)
    loaded = drv.load(_layer(np.random.default_rng(0), "gemm"))
    with pytest.raises(BackendError, match="bus error"):
        drv.run(loaded, drv.upload(np.zeros((2, 37), np.int8)), t.allocate(19), 2)  # y too small
    y = t.allocate(38)
    drv.run(loaded, drv.upload(np.zeros((2, 37), np.int8)), y, 2)
    assert t.read_reg(T.CTRL) & T.AP_DONE == 0  # ap_done is clear-on-read; wait() read it
    assert y.address > 0xFFFFFFFF  # 64-bit addresses: the high words are exercised


def test_layers_beyond_the_limits_fall_back():
    from onnx import TensorProto, helper, numpy_helper

    lim = qdq.limits()
    for key in ("max_k", "max_wk", "max_xbuf", "max_ow"):
        assert lim[key] == manifest.load()["limits"][key]
    assert qdq.check_limits("gemm", lim["max_wk"], 1, 1, 4, 1, 1, 1, 0, 1, 0) is None
    assert "exceed" in qdq.check_limits("gemm", lim["max_wk"] + 1, 1, 1, 4, 1, 1, 1, 0, 1, 0)
    # a gemm with K beyond the weight buffer: supports() refuses it, it runs on the CPU
    rng = np.random.default_rng(0)
    k = lim["max_wk"] + 8
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="big", transB=1)], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(rng.standard_normal((4, k)).astype(np.float32), "w"),
         numpy_helper.from_array(np.zeros(4, np.float32), "b")])
    fm = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    qm = quantize(fm, rng.standard_normal((8, k)).astype(np.float32))
    c = _compile(qm, "fpga@emu")
    assert all(s.device.string.startswith("cpu") for s in c.segments)
    assert any("exceed" in f.reason for f in c.fallbacks if f.op == "Gemm")
    x = rng.standard_normal((2, k)).astype(np.float32)
    np.testing.assert_allclose(c(x)[0], evaluate(qm, x)[0], atol=1e-6)


def test_unbuilt_targets_name_the_make_command():
    man = manifest.load()
    for name, t in man["targets"].items():
        kind = t["files"][0]["kind"]
        if t["files"][0]["status"] == "built":
            continue
        assert t["build"].startswith("make -C bitstreams/hal_int8 ")
        with pytest.raises(BackendError, match=re.escape(t["build"])):
            manifest.target_file(man, name, kind)


def test_pynq_transport_without_pynq_is_a_clear_unusable_device():
    if importlib.util.find_spec("pynq") is not None:
        pytest.skip("pynq is importable here: tests/pynq_env covers it")
    with pytest.raises(hal.DeviceNotFound, match="no board found"):
        hal.device("fpga@pynq")


# -- the quantization pass, once it is there ---------------------------------------------------

def _quant_pass():
    if importlib.util.find_spec("hal.passes.quantize") is None:
        pytest.skip("the int8 quantization pass (hal.passes.quantize) is not in this tree yet")


def test_digits_int8_accuracy_and_agreement():
    _quant_pass()
    from hal.models import digits

    xtr, _ = digits.dataset("train")
    x, y = digits.dataset("test")
    model = hal.models.get("digits")
    fp32 = hal.compile(model, "cpu@reference")(x)[0].argmax(1)
    outs, compiled = {}, {}
    for dev in SIM_DEVICES:
        compiled[dev] = _compile(model, dev, calibration=xtr[:256])
        outs[dev] = compiled[dev](x)[0]
    q = outs["fpga@emu"].argmax(1)
    acc32, acc8 = (fp32 == y).mean() * 100, (q == y).mean() * 100
    agree = (q == fp32).mean() * 100
    print(f"\ndigits held-out ({len(y)}): fp32 {acc32:.2f}%, int8 fpga@emu {acc8:.2f}%, "
          f"drop {acc32 - acc8:.2f} points, top-1 agreement {agree:.2f}%")
    assert acc32 - acc8 <= 1.0 and agree >= 98.0
    for dev, out in outs.items():
        np.testing.assert_array_equal(out, outs["fpga@emu"], err_msg=dev)
    # the quantized graph the flow produced, evaluated with the specification
    spec_out = evaluate(compiled["fpga@emu"].model.to_proto(), x)[0]
    np.testing.assert_array_equal(outs["fpga@emu"], spec_out)


def test_cli_explain_shows_segments_and_simulated(capsys):
    _quant_pass()
    from hal.cli import main

    for dev in SIM_DEVICES:
        assert main(["run", "lenet", "--device", dev, "--explain", "--repeat", "1",
                     "--batch", "1"]) == 0
        out = capsys.readouterr().out
        assert "simulated" in out and f"fpga:0@{dev[5:]}" in out and "cpu:0@" in out
        assert "ESTIMATED" in out and "cycles" in out and "transfers per call" in out
        assert "FindLayers" in out and "4 accelerator layer(s)" in out


def test_model_is_not_modified(digits_qdq):
    before = digits_qdq.SerializeToString()
    _compile(digits_qdq, "fpga@emu")
    assert digits_qdq.SerializeToString() == before
    assert isinstance(onnx.load_from_string(before), onnx.ModelProto)


def test_opencl_fpga_platform_loads_the_target_binary_or_names_its_build():
    if "fpga@opencl" not in SIM_DEVICES:
        pytest.skip("no OpenCL runtime here")
    from hal.backends.fpga.files import accelerator_dir
    from hal.backends.fpga.transports.opencl import OpenCLTransport

    t = OpenCLTransport(_transport("fpga@opencl").cl_device)
    t.simulated = False  # as on a Xilinx platform: the program must be the built .xclbin
    with pytest.raises(BackendError, match=r"make -C bitstreams/hal_int8 alveo-u50"):
        t.load(accelerator_dir(), manifest.load(), None)


def test_emulator_without_a_cpp_compiler_computes_through_the_spec(tmp_path):
    code = ("import numpy as np, hal\n"
            "from hal.backends.fpga.transports import self_test\n"
            "d = hal.device('fpga@emu')\n"
            "t = d.backend.transport(d)[0]\n"
            "self_test(t)\n"
            "print(t.engine, '|', d.info.name)\n")
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "HAL_CACHE_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("spec |") and "no-such-compiler" in res.stdout


@pytest.mark.skipif(len(SIM_DEVICES) < 2, reason="needs fpga@emu and fpga@opencl")
def test_mobilenet_relu6_layers_run_and_agree_across_transports():
    """Clip(0, 6) bounds of shape [1] (as exporters write them) fuse into accelerator layers."""
    _quant_pass()
    name = "mobilenet_lite"
    cal = hal.models.calibration_data(name)
    x = hal.models.example_input(name, 2)
    outs = []
    for dev in SIM_DEVICES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = hal.compile(hal.models.get(name), dev, calibration=cal)
        on_fpga = [s for s in c.report()["segments"] if s["device"].startswith("fpga")]
        assert any("Clip" in s["ops"] for s in on_fpga)
        outs.append(c(x)[0])
    np.testing.assert_array_equal(outs[0], outs[1])


def test_flatten_at_another_scale_is_not_a_view(lenet_qdq):
    import copy

    from onnx import numpy_helper

    m = copy.deepcopy(lenet_qdq)
    flat = next(n for n in m.graph.node if n.op_type == "Flatten")
    q = next(n for n in m.graph.node
             if n.op_type == "QuantizeLinear" and n.input[0] == flat.output[0])
    old = next(i for i in m.graph.initializer if i.name == q.input[1])
    m.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(old) * 1.5,
                                                       "flatten_q_scale"))
    q.input[1] = "flatten_q_scale"  # a real requantization now: the CPU does it
    x = hal.models.example_input("lenet", 2)
    c = _compile(m, "fpga@emu")
    assert [s.device.string for s in c.segments].count("fpga:0@emu") == 2
    assert "Flatten" in {f["op"] for f in c.report()["fallbacks"]}
    np.testing.assert_array_equal(c(x)[0], evaluate(m, x)[0])


def test_buffer_view_shares_memory_and_checks_size():
    from hal.backends.fpga.executable import put

    dev = hal.device("fpga@emu")
    buf = put(dev, dev.backend.transport(dev)[0], np.arange(24, dtype=np.int8).reshape(2, 3, 4))
    v = buf.view((2, 12))
    assert v.memory is buf.memory and v.base is buf
    np.testing.assert_array_equal(v.numpy(), np.arange(24, dtype=np.int8).reshape(2, 12))
    with pytest.raises(hal.HalError, match="cannot view"):
        buf.view((5, 5))
