"""The Verilog hal_int8 in cycle-accurate co-simulation (fpga@rtl): bit for bit the spec.

The default suite runs the golden vectors, a seeded conv and gemm through the driver, and the
register interface (ap_ctrl, status bits, cycle counter) on the Verilated RTL; the ``slow``
tests sweep seeded layers (depthwise, strides, multi-tile, batches), the small-part
configurations of the bitstream targets and the zoo's quantized lenet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hal.backends.fpga import spec
from hal.backends.fpga import transport as T

from hal.errors import BackendError

rtl = pytest.importorskip("hal.backends.fpga.transports.rtl")

try:
    rtl.find_verilator()
    from hal.backends.fpga.simlib import compiler

    compiler()
except BackendError as exc:
    pytest.skip(f"fpga@rtl cannot build here: {exc}", allow_module_level=True)

from hal.backends.fpga.driver import Driver
from hal.backends.fpga.files import accelerator_dir
from hal.backends.fpga.qdq import Layer

ACC = accelerator_dir()
GOLDEN = sorted(p.stem for p in (ACC / "golden").glob("*.npz"))
SCALARS = tuple(T.SCALAR_REGS)


@pytest.fixture(scope="module")
def sim():
    t = rtl.RtlTransport()
    t.open()
    yield t
    t.close()


def _put(t, array):
    a = np.ascontiguousarray(array)
    mem = t.allocate(max(a.nbytes, 1))
    mem.write(a)
    return mem


def run_registers(t, case: dict) -> tuple[np.ndarray, int, int]:
    """One layer through the registers alone (no driver): y, status, cycles."""
    mems = {k: _put(t, case[k]) for k in ("x", "w", "bias", "mult", "shift")}
    mems["y"] = t.allocate(max(case["y"].nbytes, 1))
    for name, mem in mems.items():
        t.write_reg(T.ADDRESS_REGS[name], mem.address & 0xFFFFFFFF)
        t.write_reg(T.ADDRESS_REGS[name] + 4, mem.address >> 32)
    for name in SCALARS:
        t.write_reg(T.SCALAR_REGS[name], int(case[name]) & 0xFFFFFFFF)
    assert t.read_reg(T.CTRL) & T.AP_IDLE
    t.write_reg(T.CTRL, T.AP_START)
    t.wait()
    ctrl = t.read_reg(T.CTRL)
    assert ctrl & T.AP_DONE and ctrl & T.AP_IDLE
    assert not t.read_reg(T.CTRL) & T.AP_DONE  # clear on read, as the Vitis HLS block
    status = t.read_reg(T.STATUS)
    cycles = t.read_reg(T.CYCLES_LO) | t.read_reg(T.CYCLES_HI) << 32
    y = mems["y"].read(np.int8, case["y"].size).reshape(case["y"].shape)
    return y, status, cycles


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_vector(sim, name):
    with np.load(ACC / "golden" / f"{name}.npz") as d:
        case = {k: d[k] for k in d.files}
    y, status, cycles = run_registers(sim, case)
    assert status == 0
    np.testing.assert_array_equal(y, case["y"])
    assert cycles > 0


def _conv_layer(rng, c, o, k, h, stride=1, pad=0, groups=1, pool=0, act=(-128, 127), kw=None):
    kw = k if kw is None else kw
    w = rng.integers(-128, 128, (o, c // groups, k, kw), dtype=np.int8)
    b = rng.integers(-20000, 20000, o).astype(np.int32)
    m = rng.integers(1 << 29, (1 << 31) - 1, o).astype(np.int32)
    s = rng.integers(36, 41, o).astype(np.int32)
    return Layer("conv", [], "x", "y", w, b, m, s, stride, pad, groups, act[0], act[1], pool,
                 (c, h, h))


def _run_conv(t, layer, x):
    want = spec.conv2d(x, layer.w, layer.bias, layer.m, layer.s, layer.stride, layer.pad,
                       layer.groups, layer.act_min, layer.act_max, layer.pool)
    drv = Driver(t)
    loaded, xm, ym = drv.load(layer), drv.upload(x), t.allocate(want.nbytes)
    cycles = drv.run(loaded, xm, ym, x.shape[0])
    np.testing.assert_array_equal(ym.read(np.int8, want.size).reshape(want.shape), want)
    return cycles


def test_conv_layer_through_the_driver(sim):
    rng = np.random.default_rng(9)
    layer = _conv_layer(rng, 5, 11, 3, 9, pad=1, pool=2, act=(0, 127))
    x = rng.integers(-128, 128, (2, 5, 9, 9), dtype=np.int8)
    assert _run_conv(sim, layer, x) > 0


def test_gemm_saturation_and_rounding_ties(sim):
    rng = np.random.default_rng(10)
    x = rng.integers(-128, 128, (3, 37), dtype=np.int8)
    w = rng.integers(-128, 128, (13, 37), dtype=np.int8)
    bias = rng.integers(-3000, 3000, 13).astype(np.int32)
    # m = 2**30, s = 31: y = acc / 2 exactly, so every odd accumulator is a tie (half up);
    # small shifts saturate at both ends
    m = np.array([1 << 30] * 6 + [(1 << 31) - 1] * 4 + [1] * 3, np.int32)
    s = np.array([31] * 6 + [33, 20, 3, 62] + [1, 2, 62], np.int32)
    want = spec.gemm(x, w, bias, m, s)
    acc = spec.gemm_acc(x, w, bias)
    assert (acc[:, :6] % 2 == 1).any() and (want == 127).any() and (want == -128).any()
    layer = Layer("gemm", [], "x", "y", w, bias, m, s, in_shape=(37,))
    drv = Driver(sim)
    loaded, xm, ym = drv.load(layer), drv.upload(x), sim.allocate(want.nbytes)
    drv.run(loaded, xm, ym, 3)
    np.testing.assert_array_equal(ym.read(np.int8, want.size).reshape(want.shape), want)


def test_status_bits_and_idle_core(sim):
    with np.load(ACC / "golden" / "gemm.npz") as d:
        case = {k: d[k] for k in d.files}
    _, status, _ = run_registers(sim, {**case, "op": 2})
    assert status == 1  # HAL_ERR_OP
    _, status, _ = run_registers(sim, {**case, "groups": 0, "op": 0})
    assert status == 2  # HAL_ERR_SHAPE
    bad = {**case, "shift": np.zeros_like(case["shift"])}
    _, status, _ = run_registers(sim, bad)
    assert status == 8  # HAL_ERR_QPARAM
    _, status, _ = run_registers(sim, {**case, "c": 1 << 20, "op": 0})
    assert status == 4  # HAL_ERR_LIMIT


def test_device_is_listed():
    import hal

    devs = {d.string: d for d in hal.devices()}
    rtl_dev = [d for s, d in devs.items() if s.endswith("@rtl")]
    assert rtl_dev and rtl_dev[0].usable and rtl_dev[0].simulated


# -- slow: sweeps, small-part configurations, the zoo ------------------------------------------

SWEEP = [  # c, o, k, h, stride, pad, groups, pool, kw
    (3, 5, 3, 7, 1, 1, 1, 0, None), (1, 20, 5, 28, 1, 0, 1, 2, None),
    (8, 8, 3, 9, 2, 1, 8, 0, None), (20, 50, 5, 12, 1, 0, 1, 2, None),
    (6, 12, 3, 8, 1, 1, 3, 2, None), (16, 32, 1, 6, 1, 0, 1, 0, None),
    (9, 9, 3, 11, 2, 2, 9, 3, None), (12, 24, 3, 7, 1, 1, 4, 0, 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", SWEEP, ids=lambda c: "c{}o{}k{}h{}s{}p{}g{}pool{}".format(*c))
def test_seeded_layer_sweep(sim, case):
    c, o, k, h, stride, pad, groups, pool, kw = case
    rng = np.random.default_rng(sum(case[:8]))
    layer = _conv_layer(rng, c, o, k, h, stride, pad, groups, pool, kw=kw)
    if kw is not None:
        layer.in_shape = (c, h, h)
    x = rng.integers(-128, 128, (3, c, h, h), dtype=np.int8)
    _run_conv(sim, layer, x)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ice40-up5k", "ecp5-25f"])
def test_bitstream_target_configuration(target):
    """The exact core parameters a bitstream target was built with, on the golden vectors."""
    man = json.loads((ACC / "manifest.json").read_text())
    entry = man.get("targets", {}).get(target)
    if not entry or "rtl" not in entry:
        pytest.skip(f"{target} has no RTL entry in the manifest yet (make bitstreams)")
    t = rtl.RtlTransport()
    t.load(ACC, man, target)
    grouped = t.params.get("GROUPS", 1) != 0
    size_bits = t.params.get("SZW", 16)
    try:
        for name in ("conv_relu_pool2", "depthwise3x3", "gemm_relu", "rounding_ties"):
            with np.load(ACC / "golden" / f"{name}.npz") as d:
                case = {k: d[k] for k in d.files}
            y, status, _ = run_registers(t, case)
            if int(case["groups"]) > 1 and not grouped:
                assert status == 4  # HAL_ERR_LIMIT: a core without the group loop
                continue
            assert status == 0
            np.testing.assert_array_equal(y, case["y"])
        # the largest size the core takes, and one more
        with np.load(ACC / "golden" / "gemm_relu.npz") as d:
            case = {k: d[k] for k in d.files}
        n = (1 << size_bits) - 1
        big = {**case, "n": n, "x": np.resize(case["x"], (n, case["x"].shape[1])),
               "y": np.zeros((n, case["y"].shape[1]), np.int8)}
        assert run_registers(t, big)[1] == 0
        assert run_registers(t, {**case, "n": n + 1})[1] == 4  # HAL_ERR_LIMIT, before any read
    finally:
        t.close()


def _case(rng, op, c, h, wd, o, k, pool=0, groups=1):
    """A seeded layer as registers and buffers (y sized by the spec's output shape)."""
    if op == "gemm":
        x = rng.integers(-128, 128, (1, c), dtype=np.int8)
        w = rng.integers(-128, 128, (o, c), dtype=np.int8)
        y = np.zeros((1, o), np.int8)
    else:
        x = rng.integers(-128, 128, (1, c, h, wd), dtype=np.int8)
        w = rng.integers(-128, 128, (o, c // groups, k, k), dtype=np.int8)
        pk = max(pool, 1)
        y = np.zeros((1, o, (h - k + 1) // pk, (wd - k + 1) // pk), np.int8)
    return {"x": x, "w": w, "y": y, "bias": np.zeros(o, np.int32),
            "mult": np.full(o, 1 << 30, np.int32), "shift": np.full(o, 40, np.int32),
            "op": int(op == "gemm"), "n": 1, "c": c, "h": h, "wd": wd, "o": o, "kh": k, "kw": k,
            "stride": 1, "pad": 0, "groups": groups, "act_min": -128, "act_max": 127,
            "pool": pool}


@pytest.mark.slow
def test_core_limits_match_the_small_core():
    """rtl.core_limit, which placement and the driver use, says beforehand exactly what the
    iCE40 core answers with LIMIT: each of its limits, at the edge and one past it."""
    man = json.loads((ACC / "manifest.json").read_text())
    if "rtl" not in man.get("targets", {}).get("ice40-up5k", {}):
        pytest.skip("ice40-up5k has no RTL entry in the manifest yet (make bitstreams)")
    t = rtl.RtlTransport()
    t.load(ACC, man, "ice40-up5k")
    p = t.params
    assert (p["PE_IN"], p["XDEPTH"], p["WDEPTH"], p["OW_MAX"], p["SZW"], p["GROUPS"]) == \
        (1, 4096, 1024, 16, 10, 0)
    rng = np.random.default_rng(11)
    cases = [  # (op, c, h, wd, o, k, pool, groups), the limit at its edge, then one past it
        ("conv", 1, 4, 16, 2, 1, 0, 1), ("conv", 1, 4, 17, 2, 1, 0, 1),  # OW_MAX
        ("conv", 1, 64, 64, 1, 1, 4, 1), ("conv", 1, 64, 65, 1, 1, 4, 1),  # XDEPTH
        ("conv", 1, 32, 32, 2, 32, 0, 1), ("conv", 1, 33, 33, 2, 33, 0, 1),  # WDEPTH
        ("gemm", 8, 1, 1, 1023, 1, 0, 1), ("gemm", 8, 1, 1, 1024, 1, 0, 1),  # SZW
        ("conv", 2, 5, 5, 2, 3, 0, 1), ("conv", 2, 5, 5, 2, 3, 0, 2),  # GROUPS=0
    ]
    try:
        for i, (op, c, h, wd, o, k, pool, groups) in enumerate(cases):
            why = rtl.core_limit(p, op, c, h, wd, o, k, k, 1, 0, groups, pool)
            assert (why is None) == (i % 2 == 0), (cases[i], why)
            _, status, _ = run_registers(t, _case(rng, op, c, h, wd, o, k, pool, groups))
            assert status == (0 if why is None else 4), (cases[i], why, status)
        # the driver refuses such a layer before it starts, naming the limit
        layer = Layer("conv", [], "x", "y", np.ones((2, 1, 3, 3), np.int8),
                      np.zeros(2, np.int32), np.full(2, 1 << 30, np.int32),
                      np.full(2, 40, np.int32), in_shape=(2, 5, 5), groups=2)
        with pytest.raises(BackendError, match="GROUPS=0"):
            Driver(t).load(layer)
        # a batch of 2**SZW or more is split by the driver into starts the core takes
        n = t.max_batch() + 7
        x = rng.integers(-128, 128, (n, 8), dtype=np.int8)
        g = Layer("gemm", [], "x", "y", rng.integers(-128, 128, (3, 8), dtype=np.int8),
                  np.zeros(3, np.int32), np.full(3, 1 << 30, np.int32), np.full(3, 38, np.int32),
                  in_shape=(8,))
        drv = Driver(t)
        loaded, xm, ym = drv.load(g), drv.upload(x), t.allocate(n * 3)
        assert drv.run(loaded, xm, ym, n) > 0
        np.testing.assert_array_equal(ym.read(np.int8, n * 3).reshape(n, 3),
                                      spec.gemm(x, g.w, g.bias, g.m, g.s))
    finally:
        t.close()


def test_placement_keeps_what_the_core_refuses_off_it():
    """On fpga:1@rtl (the iCE40 core) the layers beyond that core go to the fallback with
    the core's reason, before anything runs; fpga@rtl keeps them."""
    from hal.backends.fpga import FpgaBackend
    from hal.backends.fpga.qdq import analyse

    import hal

    if not rtl._other_built_cores():
        pytest.skip("no other bitstream core built (make bitstreams)")
    info = {d.string: d for d in hal.devices()}
    small = next(d for d in info.values() if d.backend == "rtl" and d.index == 1)
    default = next(d for d in info.values() if d.backend == "rtl" and d.index == 0)
    model = hal.compile("dwsep", "cpu@reference", precision="int8").model
    found = analyse(model.graph)
    backend = FpgaBackend()
    convs = [layer for layer in found.layers if layer.op == "conv"]
    depthwise = [layer for layer in convs if layer.groups > 1]
    assert depthwise
    for layer in depthwise:
        op = next(n for n in layer.nodes if n.op_type == "Conv")
        assert backend.supports(op, default) is True
        why = backend.supports(op, small)
        assert isinstance(why, str) and "GROUPS=0" in why
        # every node of the layer goes with it: the layer is one refused group
        group = next(c for c in backend.claim(model.graph, small) if op in c.nodes)
        assert group.nodes == layer.nodes and group.reason == why


def test_rtl_sources_are_packaged():
    names = {p.name for p in (ACC / "rtl").iterdir()}
    assert set(rtl.SOURCES) | {"harness.cpp", "hal_int8_fabric.v", "build.py"} <= names
    assert Path(rtl.__file__).is_file()


def test_built_cores_are_devices():
    """fpga:1@rtl, ... are the built bitstreams whose core fpga@rtl does not simulate."""
    others = rtl._other_built_cores()
    man = json.loads((ACC / "manifest.json").read_text())
    default = rtl.RtlTransport()
    for target in others:
        assert man["targets"][target]["status"] == "built"
        assert not default.matches(man["targets"][target])
    found = rtl.discover()
    if found[0].usable:
        assert [(f.index, f.handle) for f in found] == [(0, None)] + \
            [(i + 1, t) for i, t in enumerate(others)]
        assert all(rtl.connect(f.handle).default_target == f.handle for f in found)


@pytest.mark.slow
@pytest.mark.parametrize("rtl_device", ["fpga@rtl", "fpga:1@rtl"])
def test_quantized_lenet_matches_the_emulator(rtl_device):
    """fpga@rtl runs LeNet's accelerator segments in the RTL, bit-identical to fpga@emu."""
    pytest.importorskip("hal.passes.quantize", reason="the int8 quantization pass is not here yet")
    import hal

    if rtl_device != "fpga@rtl" and not rtl._other_built_cores():
        pytest.skip(f"{rtl_device}: no other bitstream core built (make bitstreams)")
    model, x = hal.models.get("lenet"), hal.models.example_input("lenet", 2)
    calib = hal.models.calibration_data("lenet")
    outs = [hal.compile(model, dev, precision="int8", calibration=calib)(x)[0]
            for dev in ("fpga@emu", rtl_device)]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_manifest_records_the_current_rtl_build():
    """Built RTL targets name the sources they were built from; a present bitstream matches."""
    import hashlib

    man = json.loads((ACC / "manifest.json").read_text())
    built = {k: t for k, t in man["targets"].items()
             if isinstance(t.get("rtl"), dict) and t.get("status") == "built"}
    if not built:
        pytest.skip("no RTL target built yet (make bitstreams)")
    for name, t in built.items():
        for src, digest in t["sources_sha256"].items():
            have = hashlib.sha256((ACC / "rtl" / src).read_bytes()).hexdigest()
            assert have == digest, f"{name}: rtl/{src} changed since its bitstream was built; " \
                                   "rerun make bitstreams"
        assert t["fmax_mhz"] > 0 and t["resources"]["luts"]["used"] > 0
        for f in t["files"]:
            path = ACC / f["path"]
            if path.is_file():  # build outputs are not committed
                assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
