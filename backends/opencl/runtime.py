"""pyopencl import (with the ICD guard), device enumeration, per-device state and buffers.

ICD guard: Debian's system PoCL (``pocl-opencl-icd``, listed in ``/etc/OpenCL/vendors``)
links its own LLVM; loaded into a process that also holds TensorFlow, the two LLVMs
clash and the process crashes. So before pyopencl is first imported, if the system
vendors directory lists a PoCL ICD and TensorFlow is installed or imported, HAL points
``OCL_ICD_VENDORS`` at a directory holding only the other (safe) system ICDs. The PoCL
that ``pip install pyopencl[pocl]`` brings is found by pyopencl itself, so a CPU device
remains. A user who sets ``OCL_ICD_VENDORS`` keeps full control: HAL leaves it alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hal import diskcache
from hal.backend import Buffer, Device

SYSTEM_VENDORS = Path("/etc/OpenCL/vendors")
#: Every buffer gets this many spare bytes: GEMM reads B rows up to the next whole panel.
SLACK_BYTES = 256

_lock = threading.RLock()
_cl = None


def cache_dir() -> Path:
    """``$HAL_CACHE_DIR/opencl`` or ``~/.cache/hal/opencl``, created private (hal.diskcache)."""
    return diskcache.folder("opencl")


def _tensorflow_may_load() -> bool:
    return "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is not None


def guard_icd_vendors() -> str | None:
    """Hide the system PoCL ICD when TensorFlow may share the process; returns the dir used."""
    if "OCL_ICD_VENDORS" in os.environ or not SYSTEM_VENDORS.is_dir():
        return None
    icds = sorted(SYSTEM_VENDORS.glob("*.icd"))
    unsafe = [p for p in icds if "pocl" in p.name.lower() or "pocl" in p.read_text(errors="ignore")]
    if not unsafe or not _tensorflow_may_load():
        return None
    safe_dir = cache_dir() / "icd-vendors"
    safe_dir.mkdir(parents=True, exist_ok=True)
    for old in safe_dir.glob("*.icd"):
        old.unlink()
    for p in icds:
        if p not in unsafe:
            (safe_dir / p.name).write_text(p.read_text())
    os.environ["OCL_ICD_VENDORS"] = str(safe_dir)
    return str(safe_dir)


def cl():
    """pyopencl, imported once behind the ICD guard."""
    global _cl
    if _cl is None:
        with _lock:
            if _cl is None:
                guard_icd_vendors()
                os.environ.setdefault("PYOPENCL_NO_CACHE", "1")  # HAL keeps its own binary cache
                import pyopencl

                _cl = pyopencl
    return _cl


@dataclass
class ClDevice:
    """One OpenCL device with its context and its single in-order command queue."""

    index: int  # global index over all platforms: opencl:<index>
    device: Any
    platform: Any
    type_kind: str  # "cpu", "gpu" or "accelerator"
    _context: Any = None
    _queue: Any = None
    tuning: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.device.name.strip()

    @property
    def context(self):
        if self._context is None:
            self._context = cl().Context([self.device])
        return self._context

    @property
    def queue(self):
        if self._queue is None:
            self._queue = cl().CommandQueue(self.context, self.device)
        return self._queue

    @property
    def identity(self) -> str:
        """What a compiled binary depends on: device, driver, platform."""
        d = self.device
        return f"{d.name.strip()}|{d.driver_version}|{d.version}|{self.platform.version}"

    @property
    def host_memory(self) -> bool:
        # A CPU runtime still keeps a separate cl.Buffer, so copies are real copies.
        return False


_devices: list[ClDevice] | None = None


def devices() -> list[ClDevice]:
    """Every device of every platform, in a stable global order."""
    global _devices
    with _lock:
        if _devices is None:
            lib = cl()
            found = []
            for plat in lib.get_platforms():
                try:
                    devs = plat.get_devices()
                except lib.Error:
                    continue
                for d in devs:
                    t = d.type
                    kind = ("gpu" if t & lib.device_type.GPU else
                            "accelerator" if t & lib.device_type.ACCELERATOR else "cpu")
                    found.append(ClDevice(len(found), d, plat, kind))
            _devices = found
        return _devices


class OpenCLBuffer(Buffer):
    """A tensor in a cl.Buffer on one OpenCL device; ``offset`` in elements."""

    __slots__ = ("device", "cl_buffer", "_shape", "_dtype", "offset")

    def __init__(self, device: Device, cl_buffer: Any, shape: tuple[int, ...], dtype: Any,
                 offset: int = 0):
        self.device = device
        self.cl_buffer = cl_buffer
        self._shape = tuple(shape)
        self._dtype = np.dtype(dtype)
        self.offset = offset

    def _to_host(self) -> np.ndarray:
        out = np.empty(self._shape, self._dtype)
        if out.size:
            q = self.device.backend.cl_device(self.device.info).queue
            cl().enqueue_copy(q, out, self.cl_buffer,
                              src_offset=self.offset * self._dtype.itemsize, is_blocking=True)
        return out


def allocate(cldev: ClDevice, nbytes: int):
    lib = cl()
    return lib.Buffer(cldev.context, lib.mem_flags.READ_WRITE, max(int(nbytes), 0) + SLACK_BYTES)


def upload(cldev: ClDevice, array: np.ndarray):
    """A new cl.Buffer holding ``array`` (with slack); the copy is queued, not waited on."""
    arr = np.ascontiguousarray(array)
    buf = allocate(cldev, arr.nbytes)
    if arr.nbytes:
        cl().enqueue_copy(cldev.queue, buf, arr, is_blocking=True)
    return buf
