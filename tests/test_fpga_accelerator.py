"""hal_int8, the FPGA accelerator: its HLS C++ (as the simulation library) and its OpenCL kernel
(on a CPU OpenCL runtime) equal the int8 specification bit for bit; status errors; the manifest
and its register map; golden vectors; the packaged folder; build targets without vendor tools."""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hal.backends.fpga import files, manifest, simlib, spec, transport

from hal.errors import BackendError

ACC = files.accelerator_dir()
SCALARS = ("op", "n", "c", "h", "wd", "o", "kh", "kw", "stride", "pad", "groups", "act_min",
           "act_max", "pool")
GOLDEN = sorted(p.stem for p in (ACC / "golden").glob("*.npz"))


# -- cases ----------------------------------------------------------------------------------
def _qparams(rng, w, o):
    if rng.random() < 0.2:  # raw registers: mostly saturating or zero, still well defined
        return (rng.integers(0, 2**31, o).astype(np.int32),
                rng.integers(1, spec.MAX_SHIFT + 1, o).astype(np.int32))
    typical = 128 * 128 / 3 * np.sqrt(w[0].size)
    ms = [spec.quantize_multiplier(float(rng.uniform(0.3, 3)) * 40 / typical) for _ in range(o)]
    return np.array([m for m, _ in ms], np.int32), np.array([s for _, s in ms], np.int32)


def _random_case(kind: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))
    regs = {"stride": 1, "pad": 0, "groups": 1, "act_min": -128, "act_max": 127, "pool": 0}
    n = r(1, 2)
    if kind == "gemm":
        k, o = r(1, 300), r(1, 40)
        x = rng.integers(-128, 128, (n, k), dtype=np.int8)
        w = rng.integers(-128, 128, (o, k), dtype=np.int8)
        regs.update(op=1)
    else:
        c, o, groups = r(1, 24), r(1, 40), 1
        if kind == "depthwise":
            groups = c = r(1, 24)
            o = c * r(1, 2)
        elif kind == "grouped":
            groups = r(2, 4)
            c, o = groups * r(1, 6), groups * r(1, 10)
        k, kw = r(1, 5), r(1, 5)
        if kind != "rect":
            kw = k
        stride = r(2, 3) if kind == "strided" else r(1, 2)
        pad = r(0, 2)
        h, wd = r(max(k, 3), 12), r(max(kw, 3), 12)
        pool = r(2, 3) if kind == "pool" else 0
        oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - kw) // stride + 1
        if pool and min(oh, ow) < pool:
            pool = 0
        x = rng.integers(-128, 128, (n, c, h, wd), dtype=np.int8)
        w = rng.integers(-128, 128, (o, c // groups, k, kw), dtype=np.int8)
        regs.update(op=0, stride=stride, pad=pad, groups=groups, pool=pool)
    if kind == "relu6":
        regs.update(act_min=0, act_max=r(20, 127))
    elif rng.random() < 0.3:
        regs.update(act_min=int(rng.choice([0, -300, 10])), act_max=int(rng.choice([6, 300, 50])))
    bias = rng.integers(-2**20, 2**20, o, dtype=np.int32)
    mult, shift = _qparams(rng, w, o)
    return _complete(dict(x=x, w=w, bias=bias, mult=mult, shift=shift, **regs))


def _complete(case: dict) -> dict:
    """Fill in the size registers and the expected output from the spec."""
    x, w = case["x"], case["w"]
    if case["op"] == 0:
        (n, c, h, wd), (o, _, kh, kw) = x.shape, w.shape
        case.update(n=n, c=c, h=h, wd=wd, o=o, kh=kh, kw=kw)
        case["y"] = spec.conv2d(x, w, case["bias"], case["mult"], case["shift"], case["stride"],
                                case["pad"], case["groups"], case["act_min"], case["act_max"],
                                case["pool"])
    else:
        (n, c), (o, _) = x.shape, w.shape
        case.update(n=n, c=c, h=1, wd=1, o=o, kh=1, kw=1)
        case["y"] = spec.gemm(x, w, case["bias"], case["mult"], case["shift"], case["act_min"],
                              case["act_max"])
    return case


KINDS = ("conv", "strided", "rect", "depthwise", "grouped", "pool", "relu6", "gemm")
RANDOM = [(k, s) for k in KINDS for s in range(6)]


def _edge_cases() -> dict[str, dict]:
    """Hand-made: saturation (acc far outside int8), rounding ties, int32 wrap, clamp order."""
    acc = np.array([1, -1, 3, -3, 5, -5, 127, -128, 0, 2, -2, 6, -6], np.int8)
    ties = {"op": 1, "x": acc.reshape(-1, 1), "w": np.ones((4, 1), np.int8),
            "bias": np.array([0, 0, 4, -4], np.int32),
            "mult": np.array([1, 2**30, 3, 1], np.int32),
            "shift": np.array([1, 31, 3, 2], np.int32)}
    sat = {"op": 1, "x": np.full((2, 300), 127, np.int8) * np.array([[1], [-1]], np.int8),
               "w": np.full((3, 300), 127, np.int8),
               "bias": np.array([0, 2**31 - 100, -2**31], np.int32),
               "mult": np.array([2**31 - 1, 2**30, 2**31 - 1], np.int32),
               "shift": np.array([1, 31, 62], np.int32)}
    odd_clamp = {"op": 1, "x": np.arange(-128, 128, 8, dtype=np.int8).reshape(-1, 1),
                     "w": np.ones((1, 1), np.int8), "bias": np.zeros(1, np.int32),
                     "mult": np.ones(1, np.int32), "shift": np.ones(1, np.int32)}
    base = {"stride": 1, "pad": 0, "groups": 1, "act_min": -128, "act_max": 127, "pool": 0}
    return {"ties": _complete({**base, **ties}), "saturation": _complete({**base, **sat}),
            "act_min_above_act_max": _complete({**base, **odd_clamp, "act_min": 20,
                                                "act_max": -200})}


EDGE = _edge_cases()


def _golden(name: str) -> dict:
    with np.load(ACC / "golden" / f"{name}.npz") as d:
        return {k: d[k] for k in d.files}


def _all_cases():
    yield from (pytest.param(("random", k, s), id=f"{k}-{s}") for k, s in RANDOM)
    yield from (pytest.param(("edge", n), id=f"edge-{n}") for n in EDGE)
    yield from (pytest.param(("golden", n), id=f"golden-{n}") for n in GOLDEN)


def _case(key) -> dict:
    if key[0] == "random":
        return _random_case(key[1], key[2])
    return EDGE[key[1]] if key[0] == "edge" else _golden(key[1])


# -- simulation library ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim():
    try:
        simlib.load()
    except BackendError as e:
        pytest.skip(f"no simulation library: {e}")
    return simlib


def _run_sim(case):
    return simlib.run_layer(case["x"], case["w"], case["bias"], case["mult"], case["shift"],
                            op="conv" if int(case["op"]) == 0 else "gemm",
                            **{k: int(case[k]) for k in ("stride", "pad", "groups", "act_min",
                                                         "act_max", "pool")})


@pytest.mark.parametrize("key", _all_cases())
def test_simulation_library_equals_spec(sim, key):
    case = _case(key)
    res = _run_sim(case)
    assert res.y.dtype == np.int8 and res.y.shape == case["y"].shape
    np.testing.assert_array_equal(res.y, case["y"])
    assert res.cycles > 0


def test_edge_cases_exercise_what_they_claim():
    ties = EDGE["ties"]
    acc = spec.gemm_acc(ties["x"], ties["w"], ties["bias"]).astype(np.int64)
    frac = (acc * ties["mult"]) / 2.0 ** ties["shift"] % 1
    assert (frac == 0.5).sum() >= 12  # exact .5 products, positive and negative
    sat = EDGE["saturation"]
    exact = sat["x"].astype(np.int64) @ sat["w"].T.astype(np.int64) + sat["bias"]
    acc = spec.gemm_acc(sat["x"], sat["w"], sat["bias"])
    assert np.abs(exact).max() > 2**31 and (exact != acc).any()  # bias + sum wraps in int32
    assert {-128, 127} <= set(np.unique(sat["y"]).tolist())


def test_golden_vectors_are_the_spec():
    for name in GOLDEN:
        g = _golden(name)
        case = _complete({k: g[k] for k in ("x", "w", "bias", "mult", "shift")} |
                         {k: int(g[k]) for k in ("op", "stride", "pad", "groups", "act_min",
                                                 "act_max", "pool")})
        np.testing.assert_array_equal(g["y"], case["y"], err_msg=name)
        assert all(int(g[k]) == case[k] for k in SCALARS), name
    res = subprocess.run([sys.executable, str(ACC / "golden" / "make_golden.py"), "--check"],
                         check=False, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_golden_set_covers_the_contract():
    kinds = {name: _golden(name) for name in GOLDEN}
    assert any(int(g["op"]) == 1 for g in kinds.values())
    assert any(int(g["groups"]) == int(g["c"]) > 1 for g in kinds.values())  # depthwise
    assert any(int(g["stride"]) > 1 for g in kinds.values())
    assert any(int(g["pool"]) > 1 for g in kinds.values())
    assert any(int(g["act_min"]) == 0 and int(g["act_max"]) < 127 for g in kinds.values())
    t = kinds["rounding_ties"]
    assert (((t["acc"].astype(np.int64) * t["mult"]) % (2 ** t["shift"].astype(np.int64)))
            == 2 ** (t["shift"].astype(np.int64) - 1)).sum() >= 10


def _raw(sim, **regs) -> int:
    """Call the kernel with registers only (null buffers): for refusals, nothing is touched."""
    r = dict.fromkeys(SCALARS, 1) | {"op": 0, "pad": 0, "pool": 0, "act_min": -128,
                                     "act_max": 127} | regs
    null8, null32 = ctypes.POINTER(ctypes.c_int8)(), ctypes.POINTER(ctypes.c_int32)()
    cycles = ctypes.c_int64(-1)
    return sim.load().hal_int8_sim_layer(null8, null8, null32, null32, null32, null8,
                                         *[r[k] for k in SCALARS], ctypes.byref(cycles))


@pytest.mark.parametrize("regs,bit", [
    ({"op": 2}, 1), ({"op": -1}, 1),
    ({"n": 0}, 2), ({"c": 6, "groups": 4}, 2), ({"c": 4, "o": 6, "groups": 4}, 2),
    ({"stride": 0}, 2),
    ({"pad": -1}, 2), ({"kh": 3}, 2), ({"h": 4, "wd": 4, "pool": 5}, 2), ({"pool": -2}, 2),
    ({"c": 8192, "h": 2, "kh": 2}, 4),                 # weights per channel > max_wk
    ({"wd": 1100, "kw": 1}, 4),                     # output row > max_ow
    ({"c": 512, "h": 3, "wd": 64, "kh": 3, "kw": 3}, 4),     # input row ring > max_xbuf
    ({"h": 8, "wd": 8, "kh": 3, "kw": 3, "pad": 2**30}, 4),  # h + 2*pad beyond int32: no overflow
    ({"h": 2**31 - 1, "wd": 2**31 - 1, "kh": 2**31 - 1, "kw": 2**31 - 1}, 4),
])
def test_status_reports_bad_registers(sim, regs, bit):
    assert _raw(sim, **regs) == bit


def test_status_reports_bad_multiplier_or_shift(sim):
    x, w = np.ones((1, 4), np.int8), np.ones((3, 4), np.int8)
    b = np.zeros(3, np.int32)
    for m, s in (([1, -1, 1], [1, 1, 1]), ([1, 1, 1], [1, 0, 1]), ([1, 1, 1], [63, 1, 1])):
        m, s = np.array(m, np.int32), np.array(s, np.int32)
        y, cyc = np.zeros(3, np.int8), ctypes.c_int64()
        p = lambda a, t: a.ctypes.data_as(ctypes.POINTER(t))
        got = sim.load().hal_int8_sim_layer(
            p(x, ctypes.c_int8), p(w, ctypes.c_int8), p(b, ctypes.c_int32), p(m, ctypes.c_int32),
            p(s, ctypes.c_int32), p(y, ctypes.c_int8), 1, 1, 4, 1, 1, 3, 1, 1, 1, 0, 1, -128,
            127, 0, ctypes.byref(cyc))
        assert got == 8


def test_refusals_surface_as_backend_errors(sim):
    x, w = np.ones((1, 9000), np.int8), np.ones((2, 9000), np.int8)
    with pytest.raises(BackendError, match="status 4.*exceeds"):
        sim.run_layer(x, w, np.zeros(2, np.int32), 1, 1, op="gemm")
    with pytest.raises(BackendError, match="status 2"):
        sim.run_layer(np.ones((1, 1, 2, 2), np.int8), np.ones((1, 1, 2, 2), np.int8),
                      np.zeros(1, np.int32), 1, 1, pool=2)


def test_cycle_estimate_follows_the_model(sim):
    cfg = sim.config()
    burst = lambda b: cfg["burst_overhead"] + -(-b // cfg["axi_bytes"])
    x, w = np.ones((1, 64), np.int8), np.ones((16, 64), np.int8)
    res = sim.run_layer(x, w, np.zeros(16, np.int32), 1, 1, op="gemm")
    want = (3 * burst(4 * 16) + burst(16 * 64)         # qparams, weights of the one tile
            + burst(64) + 64 // cfg["pe_in"]             # the input row, 4 MAC steps
            + cfg["pipeline_depth"] + burst(16))         # pipeline fill, the 16 outputs
    assert res.cycles == want


# -- OpenCL kernel on a CPU runtime ---------------------------------------------------------
class OpenCLKernel:
    """Registers -> kernel arguments, in manifest order (as an OpenCL transport does)."""

    def __init__(self):
        from hal.backends.opencl.runtime import cl

        self.cl = cl()
        # The kernel keeps its on-chip buffers in __local memory (xbuf + wbuf + obuf): CPU
        # runtimes have room, most GPUs do not, so a CPU device is preferred.
        need = sum(manifest.load()["parameters"]["on_chip_bytes"].values())
        devices = sorted((d for p in self.cl.get_platforms() for d in p.get_devices()
                          if d.local_mem_size >= need),
                         key=lambda d: not d.type & self.cl.device_type.CPU)
        if not devices:
            pytest.skip(f"no OpenCL device with {need} bytes of local memory (pip install "
                        "pyopencl[pocl] gives a CPU one)")
        self.ctx = self.cl.Context(devices[:1])
        self.queue = self.cl.CommandQueue(self.ctx)
        src = (ACC / "opencl" / "hal_int8.cl").read_text()
        program = self.cl.Program(self.ctx, src).build(options=["-I", str(ACC / "hls")])
        self.kernel = self.cl.Kernel(program, "hal_int8_layer")
        self.args = manifest.kernel_args(manifest.load())
        self.device = devices[0]

    def run(self, case) -> tuple[np.ndarray, int, int]:
        cl, mf = self.cl, self.cl.mem_flags
        out = np.zeros(max(case["y"].size, 1), np.int8)
        status, cycles = np.full(1, -1, np.int32), np.full(1, -1, np.int64)
        bufs = {k: cl.Buffer(self.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                             hostbuf=np.ascontiguousarray(case[k]))
                for k in ("x", "w", "bias", "mult", "shift")}
        for k, a in (("y", out), ("status", status), ("cycles", cycles)):
            bufs[k] = cl.Buffer(self.ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=a)
        for i, name in enumerate(self.args):
            self.kernel.set_arg(i, bufs[name] if name in bufs else np.int32(case[name]))
        cl.enqueue_nd_range_kernel(self.queue, self.kernel, (1,), (1,))
        for k, a in (("y", out), ("status", status), ("cycles", cycles)):
            cl.enqueue_copy(self.queue, a, bufs[k])
        self.queue.finish()
        return out[:case["y"].size].reshape(case["y"].shape), int(status[0]), int(cycles[0])


@pytest.fixture(scope="module")
def ocl():
    pytest.importorskip("pyopencl", reason="pyopencl is not installed (hal-accel[opencl])")
    return OpenCLKernel()


@pytest.mark.parametrize("key", _all_cases())
def test_opencl_kernel_equals_spec(ocl, sim, key):
    case = _case(key)
    y, status, cycles = ocl.run(case)
    assert status == 0
    np.testing.assert_array_equal(y, case["y"])
    assert cycles == _run_sim(case).cycles  # one cycle model, two sources


@pytest.mark.parametrize("regs,bit", [({"op": 3}, 1), ({"groups": 3}, 2),
                                      ({"kw": 9000, "wd": 9000}, 4),
                                      ({"mult": np.array([1, -5], np.int32)}, 8)])
def test_opencl_kernel_status(ocl, regs, bit):
    rng = np.random.default_rng(0)
    case = _complete({"op": 0, "x": rng.integers(-128, 128, (1, 2, 4, 4), dtype=np.int8),
                      "w": rng.integers(-128, 128, (2, 2, 3, 3), dtype=np.int8),
                      "bias": np.zeros(2, np.int32), "mult": np.ones(2, np.int32),
                      "shift": np.ones(2, np.int32), "stride": 1, "pad": 0, "groups": 1,
                      "act_min": -128, "act_max": 127, "pool": 0})
    assert ocl.run(case)[1] == 0
    assert ocl.run(case | regs)[1] == bit  # refused before reading past the small buffers


# -- manifest, register map, packaging, build targets -----------------------------------------
def test_manifest_validates_and_files_match():
    m = manifest.load()
    assert manifest.check_files(m, ACC) == []
    assert {"kv260", "zcu104"} <= set(m["targets"])
    kinds = {t["kind"] for t in m["targets"].values()}
    assert {"pynq", "xclbin", "aocx"} <= kinds
    for name, t in m["targets"].items():
        assert t["build"].startswith("make -C bitstreams/hal_int8 "), name
        for f in t["files"]:  # never a fake bitstream: unbuilt until a real build
            present = (ACC / f["path"]).is_file()
            if f["status"] != "built":
                assert not present, f["path"]
            else:  # a built output may be absent from a checkout; its build recorded a hash
                assert present or f["path"].startswith("build/"), f["path"]
                assert f.get("sha256"), f["path"]
    assert sorted(g["path"] for g in m["golden"]["files"]) == [f"golden/{n}.npz" for n in GOLDEN]


def test_register_map_matches_transport_pragmas_and_kernel_signature():
    m = manifest.load()
    regs = {r["arg"] or r["name"]: int(r["offset"], 16) for r in m["registers"]}
    want = {"CTRL": transport.CTRL, "GIE": transport.GIE, "IER": transport.IER,
            "ISR": transport.ISR, **transport.ADDRESS_REGS, **transport.SCALAR_REGS,
            "status": transport.STATUS, "cycles": transport.CYCLES_LO}
    assert regs == want
    assert all(r["width"] == 64 for r in m["registers"] if r["arg"] in transport.ADDRESS_REGS)
    cpp = (ACC / "hls" / "hal_int8.cpp").read_text()
    pragmas = {p: int(o, 16) for p, o in
               re.findall(r"mode=s_axilite port=(\w+) offset=(0x[0-9a-f]+)", cpp)}
    assert pragmas == {k: v for k, v in want.items() if k.islower()}
    cl_src = (ACC / "opencl" / "hal_int8.cl").read_text()
    sig = cl_src[cl_src.index("__kernel void hal_int8_layer("):].split(")", 1)[0]
    names = re.findall(r"(\w+)\s*(?:,|$)", sig)
    assert names == manifest.kernel_args(m) == sorted(pragmas, key=pragmas.get)
    assert set(m["buffers"]) == set(transport.ADDRESS_REGS)


def test_manifest_parameters_match_the_kernel(sim):
    m, cfg = manifest.load(), sim.config()
    p, lim = m["parameters"], m["limits"]
    assert (p["pe_out"], p["pe_in"], p["axi_data_bits"]) == \
        (cfg["pe_out"], cfg["pe_in"], 8 * cfg["axi_bytes"])
    assert (lim["max_k"], lim["max_wk"], lim["max_xbuf"], lim["max_ow"]) == \
        (cfg["max_k"], cfg["max_wk"], cfg["max_xbuf"], cfg["max_ow"]) and cfg["max_k"] == spec.MAX_K
    assert p["clock_mhz"] == {name: t["clock_mhz"] for name, t in m["targets"].items()}
    assert m["cycle_model"]["parameters"] == {
        "axi_bytes": cfg["axi_bytes"], "burst_overhead": cfg["burst_overhead"],
        "pipeline_depth": cfg["pipeline_depth"]}


def test_check_regmap_script(tmp_path):
    m = manifest.load()
    lines = [f"#define XHAL_INT8_LAYER_CONTROL_ADDR_{r['arg'].upper()}_DATA "
             f"0x{int(r['offset'], 16):x}" for r in m["registers"] if r["arg"]]
    header = tmp_path / "xhal_int8_layer_hw.h"
    header.write_text("\n".join(lines) + "\n")
    script = ACC / "hls" / "check_regmap.py"
    ok = subprocess.run([sys.executable, str(script), str(header), str(ACC / "manifest.json")],
                        check=False, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    header.write_text(header.read_text().replace("POOL_DATA 0xc0", "POOL_DATA 0xc4"))
    bad = subprocess.run([sys.executable, str(script), str(header), str(ACC / "manifest.json")],
                         check=False, capture_output=True, text=True)
    assert bad.returncode == 1 and "pool" in bad.stdout


def test_manifest_refresh_and_unbuilt_target_errors(tmp_path):
    # the scratch copy keeps only the HLS targets: the RTL ones point at build outputs
    # (tests/test_fpga_rtl.py checks those against their sources)
    data = json.loads((ACC / "manifest.json").read_text())
    data["targets"] = {k: v for k, v in data["targets"].items()
                       if k in ("kv260", "zcu104", "alveo-u50", "intel-pac-a10")}
    (tmp_path / "manifest.json").write_text(json.dumps(data, indent=2) + "\n")
    shutil.copytree(ACC / "golden", tmp_path / "golden")
    m = manifest.load(tmp_path / "manifest.json")
    with pytest.raises(BackendError, match=r"not built.*make -C bitstreams/hal_int8 kv260"):
        manifest.target_file(m, "kv260", "bitstream", tmp_path)
    with pytest.raises(BackendError, match="no target 'nosuch'"):
        manifest.target(m, "nosuch")
    # a stand-in file in a scratch copy shows that refresh records what exists
    (tmp_path / "zcu104").mkdir()
    (tmp_path / "zcu104" / "hal_int8.bit").write_bytes(b"scratch bytes, not a bitstream")
    assert manifest.refresh(tmp_path / "manifest.json") == \
        ["zcu104: zcu104/hal_int8.bit unbuilt -> built"]
    m = manifest.load(tmp_path / "manifest.json")
    assert manifest.target_file(m, "zcu104", "bitstream", tmp_path).name == "hal_int8.bit"
    (tmp_path / "zcu104" / "hal_int8.bit").write_bytes(b"altered")
    with pytest.raises(BackendError, match="does not match the manifest"):
        manifest.target_file(m, "zcu104", "bitstream", tmp_path)
    (tmp_path / "zcu104" / "hal_int8.bit").unlink()
    assert manifest.refresh(tmp_path / "manifest.json") == \
        ["zcu104: zcu104/hal_int8.bit built -> unbuilt"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == data


def test_manifest_command_line(capsys, tmp_path):
    assert manifest.main([]) == 0
    out = capsys.readouterr().out
    assert all(f"{t} " in out for t in manifest.load()["targets"]) and "unbuilt" in out
    (tmp_path / "manifest.json").write_text("{")
    assert manifest.main([str(tmp_path / "manifest.json")]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_manifest_validation_names_problems():
    m = manifest.load()
    broken = {**m, "registers": m["registers"] + [{"name": "EXTRA", "offset": "0x14",
                                                   "arg": None, "width": 32, "access": "r"}]}
    broken["targets"] = {**m["targets"], "kv260": {**m["targets"]["kv260"], "files": [
        {"kind": "bitstream", "path": "kv260/hal_int8.bit", "status": "built", "sha256": None}]}}
    with pytest.raises(BackendError) as e:
        manifest.validate(broken)
    assert "EXTRA overlaps X" in str(e.value) and "needs its sha256" in str(e.value)


def test_accelerator_folder_is_package_data():
    import importlib.resources

    root = Path(str(importlib.resources.files("hal.backends.fpga.bitstreams")))
    assert files.accelerator_dir() == root / "hal_int8"
    for rel in ("manifest.json", "Makefile", "README.md", "hls/hal_int8.cpp", "hls/hal_int8.h",
                "hls/hal_int8_params.h", "opencl/hal_int8.cl", "vivado/kv260.tcl", "golden/make_golden.py"):
        assert (files.accelerator_dir() / rel).is_file(), rel
    with pytest.raises(BackendError, match="not found"):
        files.accelerator_dir("nosuch")


@pytest.mark.parametrize("target,tool", [("kv260", "vitis_hls"), ("zcu104", "vitis_hls"),
                                         ("alveo-u50", "v++"), ("intel-pac-a10", "aoc")])
def test_hardware_targets_name_the_missing_tool(tmp_path, target, tool):
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    if (ACC / target).exists():
        pytest.skip(f"{target} has been built here")
    # An empty PATH: no vendor tool can be found, so nothing starts building.
    res = subprocess.run([make, "-C", str(ACC), target], check=False, capture_output=True,
                         text=True, env={"PATH": str(tmp_path)})
    assert res.returncode != 0
    assert f"'{tool}' not found on PATH" in res.stderr and "Install" in res.stderr
    assert not (ACC / target).exists()


# Vivado / Vitis HLS commands as logging stubs, so the shipped Tcl runs to the end without the
# tools: catches Tcl errors, wrong arguments and wrong paths before anyone spends a build on them.
TCL_STUBS = r"""
set ::calls {}
proc unknown {args} {
    lappend ::calls $args
    switch -- [lindex $args 0] {
        get_property { if {[lindex $args 1] eq "PROGRESS"} { return "100%" } }
    }
    return [lindex $args end]
}
rename glob _glob
proc glob {args} {
    lappend ::calls [list glob {*}$args]
    if {[lindex $args 0] eq "-nocomplain"} { return {} }
    return [list [lindex $args end]]
}
rename file _file
proc file {sub args} {
    if {$sub in {copy mkdir delete}} { lappend ::calls [list file $sub {*}$args]; return }
    return [_file $sub {*}$args]
}
proc exec {args} { lappend ::calls [list exec {*}$args]; return 4 }
proc exit {args} {}
cd [lindex $argv 0]
set script [lindex $argv 1]
set argv [lrange $argv 2 end]
set argc [llength $argv]
source $script
foreach c $::calls { puts "CALL $c" }
"""


@pytest.mark.parametrize("board", ["kv260", "zcu104"])
def test_vendor_tcl_runs_against_stubs(tmp_path, board):
    tclsh = shutil.which("tclsh")
    if tclsh is None:
        pytest.skip("tclsh is not installed (apt install tcl)")
    m = manifest.load()
    t = m["targets"][board]
    stubs = tmp_path / "stubs.tcl"
    stubs.write_text(TCL_STUBS)

    def run(folder, *args):
        res = subprocess.run([tclsh, str(stubs), str(ACC / folder), *args], check=False,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        return [c[5:] for c in res.stdout.splitlines() if c.startswith("CALL ")]

    make = shutil.which("make")
    if make:  # the Makefile passes the manifest's part and clock
        plan = subprocess.run([make, "-n", "-C", str(ACC), board], check=False,
                              capture_output=True, text=True).stdout
        assert f"-tclargs {t['part']} {t['clock_mhz']} ../build/ip_{board}" in plan
        assert f"-source {board}.tcl -tclargs ../build/ip_{board} ../{board} {t['clock_mhz']}" \
            in plan
    hls = run("hls", "run_hls.tcl", t["part"], str(t["clock_mhz"]), f"../build/ip_{board}")
    assert f"set_part {t['part']}" in hls
    assert f"create_clock -period {1000 / t['clock_mhz']} -name default" in hls
    assert "set_top hal_int8_layer" in hls and "csynth_design" in hls
    assert any(c.startswith("export_design -format ip_catalog") and
               c.endswith(f"build/ip_{board}/hal_int8_layer.zip") for c in hls)
    viv = run("vivado", f"{board}.tcl", f"../build/ip_{board}", f"../{board}",
              str(t["clock_mhz"]))
    assert f"set_property board_part {t['board_part']} current_project" in viv
    assert any(c.startswith("update_ip_catalog -add_ip") and
               c.split()[2].endswith(f"build/ip_{board}/hal_int8_layer.zip") for c in viv)
    ip = m["accelerator"]
    assert f"create_bd_cell -type ip -vlnv {ip['ip_vlnv']} {ip['instance']}" in viv
    for port in m["parameters"]["axi_ports"]:
        assert any(c.startswith(f"connect_bd_intf_net {ip['instance']}/{port} ") for c in viv)
    copies = [c.split()[-1] for c in viv if c.startswith("file copy")]
    assert {f"../{f['path']}" for f in t["files"]} <= set(copies)
