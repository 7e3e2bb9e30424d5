"""The HLS C++ kernel (``bitstreams/hal_int8/hls/hal_int8.cpp``) built with the system C++
compiler into ``libhal_int8_sim.so`` and called through ctypes: the accelerator's own code,
run on the host, for checking against the spec and for the emulator.

The library is built on first use into ``$HAL_CACHE_DIR/fpga`` (default
``~/.cache/hal/fpga``) under a name keyed by the hash of the sources, the flags and the
compiler, so an edited kernel is rebuilt and an unchanged one never is; ``hal.diskcache``
checks its SHA-256 before it is loaded and locks it while it is built.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hal import diskcache
from hal.errors import BackendError, InputError

from . import spec
from .files import accelerator_dir

FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-Wno-unknown-pragmas", "-Wno-unused-label")
COMPILERS = ("g++", "c++", "clang++")
OP_CODES = {"conv": 0, "gemm": 1}
STATUS_BITS = {
    1: "op is neither conv (0) nor gemm (1)",
    2: "a size is < 1, pad or pool < 0, groups do not divide c and o, or the (pooled) output "
       "is empty",
    4: "the layer exceeds MAX_K products per output or an on-chip buffer (see the manifest's "
       "'limits'): split it or run it on another device",
    8: "a multiplier is negative or a shift is outside 1..62",
}
CONFIG_NAMES = ("pe_out", "pe_in", "axi_bytes", "burst_overhead", "pipeline_depth", "max_xbuf",
                "max_wk", "max_ow", "max_k")

_lock = threading.Lock()
_lib = None
_I8, _I32, _I64 = (ctypes.POINTER(t) for t in (ctypes.c_int8, ctypes.c_int32, ctypes.c_int64))


def cache_dir() -> Path:
    """``$HAL_CACHE_DIR/fpga`` or ``~/.cache/hal/fpga``, created private (hal.diskcache)."""
    return diskcache.folder("fpga")


def compiler() -> str:
    """``$CXX`` or the first of g++, c++, clang++ on PATH."""
    cxx = os.environ.get("CXX")
    found = shutil.which(cxx) if cxx else next(filter(None, map(shutil.which, COMPILERS)), None)
    if not found:
        asked = f"CXX={cxx!r} is not an executable" if cxx else \
            f"none of {', '.join(COMPILERS)} is on PATH"
        raise BackendError(f"no C++ compiler for the FPGA simulation library: {asked}; install one "
                           "(e.g. apt install g++) or set CXX to a C++17 compiler")
    return found


def build(force: bool = False) -> Path:
    """Compile the kernel into the cache (if not there yet); returns the library's path."""
    src = accelerator_dir() / "hls"
    cpp, hdr = src / "hal_int8.cpp", src / "hal_int8.h"
    cxx = compiler()
    params = src / "hal_int8_params.h"
    key = hashlib.sha256(cpp.read_bytes() + hdr.read_bytes() + params.read_bytes()
                         + " ".join((cxx,) + FLAGS).encode())
    lib = cache_dir() / f"libhal_int8_sim-{key.hexdigest()[:16]}.so"
    with diskcache.locked(lib):  # a second process building the same library waits for it
        if not force and diskcache.verified(lib):
            return lib
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
        os.close(fd)
        try:
            res = subprocess.run([cxx, *FLAGS, f"-I{src}", str(cpp), "-o", tmp],
                                 check=False, capture_output=True, text=True)
            if res.returncode:
                raise BackendError(f"building the FPGA simulation library with {cxx} failed:\n"
                                   f"{res.stderr.strip()[-2000:]}")
            diskcache.commit(Path(tmp), lib)  # atomic, then its hash
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return lib


def load():
    """The ctypes handle of the (built-on-demand) simulation library."""
    global _lib
    with _lock:
        if _lib is None:
            lib = ctypes.CDLL(str(build()))
            lib.hal_int8_sim_layer.restype = ctypes.c_int32
            lib.hal_int8_sim_layer.argtypes = [_I8, _I8, _I32, _I32, _I32, _I8] + \
                [ctypes.c_int32] * 14 + [_I64]
            lib.hal_int8_sim_config.restype = None
            lib.hal_int8_sim_config.argtypes = [_I64]
            _lib = lib
    return _lib


def config() -> dict[str, int]:
    """The kernel's compile-time parameters (PE array, cycle model, buffer limits)."""
    out = np.zeros(len(CONFIG_NAMES), np.int64)
    load().hal_int8_sim_config(out.ctypes.data_as(_I64))
    return dict(zip(CONFIG_NAMES, map(int, out)))


@dataclass(frozen=True)
class LayerResult:
    y: np.ndarray
    cycles: int  # the kernel's estimate from its loop structure, not a measurement


def _int8(name, a, ndim):
    if not isinstance(a, np.ndarray) or a.dtype != np.int8 or a.ndim != ndim:
        raise InputError(f"{name} must be an int8 numpy array of rank {ndim}, got "
                         f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    return np.ascontiguousarray(a)


def _per_channel(name, v, o, lo, hi):
    a = np.asarray(v)
    if a.dtype.kind not in "iu" or a.ndim > 1 or (a.ndim == 1 and a.size != o):
        raise InputError(f"{name} must be an integer scalar or have {o} entries (one per output "
                         f"channel), got {a.dtype} {a.shape}")
    if a.size and (a.min() < lo or a.max() > hi):
        raise InputError(f"{name} must lie in {lo}..{hi}, got {a.min()}..{a.max()}")
    return np.ascontiguousarray(np.broadcast_to(a, (o,)), dtype=np.int32)


def run_layer(x: np.ndarray, w: np.ndarray, bias, m, s, *, op: str = "conv", stride: int = 1,
              pad: int = 0, groups: int = 1, act_min: int = spec.INT8_MIN,
              act_max: int = spec.INT8_MAX, pool: int = 0) -> LayerResult:
    """One accelerator layer on the simulation library.

    conv: x int8 [N,C,H,W], w int8 [O,C/groups,kh,kw] -> y int8 [N,O,H',W'] (pooled if pool > 1)
    gemm: x int8 [N,K], w int8 [O,K] -> y int8 [N,O]
    bias int32 [O]; m (0..2**31-1) and s (1..62) per channel or scalar.
    """
    if op not in OP_CODES:
        raise InputError(f"op must be one of {sorted(OP_CODES)}, got {op!r}")
    if op == "conv":
        x, w = _int8("x", x, 4), _int8("w", w, 4)
        n, c, h, wd = x.shape
        o, cg, kh, kw = w.shape
        if groups < 1 or c % groups or cg != c // groups:
            raise InputError(f"weight {w.shape} does not fit input {x.shape} with groups={groups}:"
                             f" expected [O, {c}//groups, kh, kw]")
    else:
        x, w = _int8("x", x, 2), _int8("w", w, 2)
        (n, c), (o, k) = x.shape, w.shape
        if k != c:
            raise InputError(f"gemm weight {w.shape} must be [O, {c}] for input {x.shape}")
        h = wd = kh = kw = stride = groups = 1
        pad = pool = 0
    b = np.asarray(bias)
    if b.dtype != np.int32 or b.shape != (o,):
        raise InputError(f"bias must be int32 of shape ({o},), got {b.dtype} {b.shape}")
    b = np.ascontiguousarray(b)
    m32 = _per_channel("multiplier m", m, o, 0, 2**31 - 1)
    s32 = _per_channel("shift s", s, o, 1, spec.MAX_SHIFT)
    ints = (stride, pad, groups, act_min, act_max, pool)
    if not all(isinstance(v, (int, np.integer)) and -2**31 <= v < 2**31 for v in ints):
        raise InputError(f"stride, pad, groups, act_min, act_max, pool must be int32, got {ints}")
    pk = max(1, pool)
    oh = (h + 2 * pad - kh) // stride + 1 if stride >= 1 else 0
    ow = (wd + 2 * pad - kw) // stride + 1 if stride >= 1 else 0
    shape = (n, o, max(oh // pk, 0), max(ow // pk, 0)) if op == "conv" else (n, o)
    y = np.zeros(shape, np.int8)
    cycles = np.zeros(1, np.int64)
    status = load().hal_int8_sim_layer(
        x.ctypes.data_as(_I8), w.ctypes.data_as(_I8), b.ctypes.data_as(_I32),
        m32.ctypes.data_as(_I32), s32.ctypes.data_as(_I32), y.ctypes.data_as(_I8),
        OP_CODES[op], n, c, h, wd, o, kh, kw, int(stride), int(pad), int(groups),
        int(act_min), int(act_max), int(pool), cycles.ctypes.data_as(_I64))
    if status:
        why = "; ".join(t for bit, t in STATUS_BITS.items() if status & bit)
        raise BackendError(f"hal_int8 {op} layer x{list(x.shape)} w{list(w.shape)} stride={stride}"
                           f" pad={pad} groups={groups} pool={pool} refused (status {status}): "
                           f"{why}")
    return LayerResult(y, int(cycles[0]))
