"""``fpga@opencl``: hal_int8 as the OpenCL kernel ``hal_int8_layer`` through pyopencl.

The registers become the kernel's arguments (buffer addresses name ``cl.Buffer`` objects, the
scalars are passed as they are, ``status`` and ``cycles`` come back in one-element buffers),
``ap_start`` enqueues the kernel as a single work-item task. On an FPGA OpenCL platform (Xilinx
XRT, Intel FPGA) the program is the target's ``.xclbin``/``.aocx`` from the manifest; on a CPU
runtime (PoCL) it is the same ``.cl`` source built for the CPU, a simulation, labelled so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hal.errors import BackendError

from .. import manifest as M
from ..transport import Memory, Transport
from . import pick_target
from .model import Call, RegisterFile

BASE = 0x2_0000_0000
ALIGN = 4096
FPGA_PLATFORM_WORDS = ("xilinx", "intel(r) fpga", "altera", "fpga")


def is_fpga(cl_device) -> bool:
    """An OpenCL device that is an FPGA: an accelerator-type device of an FPGA vendor."""
    from hal.backends.opencl import runtime

    lib = runtime.cl()
    plat = cl_device.platform.name.lower()
    return bool(cl_device.device.type & lib.device_type.ACCELERATOR) and \
        any(w in plat for w in FPGA_PLATFORM_WORDS)


class ClMemory(Memory):
    def __init__(self, transport: OpenCLTransport, address: int, nbytes: int):
        lib = transport.lib
        self.transport, self.address, self.nbytes = transport, address, nbytes
        self.buffer = lib.Buffer(transport.context, lib.mem_flags.READ_WRITE, nbytes)

    def write(self, data: np.ndarray, offset: int = 0) -> None:
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if offset < 0 or offset + raw.size > self.nbytes:
            raise BackendError(f"write of {raw.size} bytes at offset {offset} overruns a "
                               f"{self.nbytes}-byte buffer")
        self.transport.lib.enqueue_copy(self.transport.queue, self.buffer, raw,
                                        dst_offset=offset, is_blocking=True)

    def read(self, dtype, count: int, offset: int = 0) -> np.ndarray:
        out = np.empty(count, dtype)
        if offset < 0 or offset + out.nbytes > self.nbytes:
            raise BackendError(f"read of {out.nbytes} bytes at offset {offset} overruns a "
                               f"{self.nbytes}-byte buffer")
        if out.nbytes:
            self.transport.lib.enqueue_copy(self.transport.queue, out, self.buffer,
                                            src_offset=offset, is_blocking=True)
        return out

    def free(self) -> None:
        self.transport.buffers.pop(self.address, None)
        self.buffer.release()


class OpenCLTransport(Transport):
    name = "opencl"

    def __init__(self, cl_device):
        from hal.backends.opencl import runtime

        self.lib = runtime.cl()
        self.cl_device = cl_device
        self.simulated = not is_fpga(cl_device)
        self.context, self.queue = cl_device.context, cl_device.queue
        self.buffers: dict[int, ClMemory] = {}
        self._next = BASE
        self.kernel = None
        self.program_source = ""
        self.registers = RegisterFile(self._start)
        self._status = self.lib.Buffer(self.context, self.lib.mem_flags.READ_WRITE, 4)
        self._cycles = self.lib.Buffer(self.context, self.lib.mem_flags.READ_WRITE, 8)

    def load(self, accelerator: Path, manifest: dict, target: str | None) -> None:
        lib = self.lib
        if self.simulated:
            src = accelerator / "opencl" / "hal_int8.cl"
            program = lib.Program(self.context, src.read_text()).build(
                options=["-I", str(accelerator / "hls")])  # hal_int8_params.h
            self.program_source = f"{src.name} built for {self.cl_device.name} (CPU runtime)"
        else:
            kind = "aocx" if "intel" in self.cl_device.platform.name.lower() else "xclbin"
            name = target or next((n for n, t in manifest.get("targets", {}).items()
                                   if t.get("transport") == "opencl" and t.get("kind") == kind),
                                  None) or pick_target(manifest, "opencl")
            binary = M.target_file(manifest, name, kind, accelerator)
            program = lib.Program(self.context, [self.cl_device.device],
                                  [binary.read_bytes()]).build()
            self.program_source = f"{binary.name} (target {name})"
        self.kernel = lib.Kernel(program, "hal_int8_layer")

    def describe(self) -> str:
        return f"OpenCL kernel {self.program_source}"

    def read_reg(self, offset: int) -> int:
        return self.registers.read(offset)

    def write_reg(self, offset: int, value: int) -> None:
        self.registers.write(offset, value)

    def allocate(self, nbytes: int) -> ClMemory:
        if nbytes < 1:
            raise BackendError(f"cannot allocate {nbytes} bytes")
        mem = ClMemory(self, self._next, nbytes)
        self._next += -(-nbytes // ALIGN) * ALIGN
        self.buffers[mem.address] = mem
        return mem

    def _start(self, call: Call) -> tuple[int, int]:
        if self.kernel is None:
            raise BackendError("fpga@opencl: ap_start before the program was loaded")
        bufs = []
        for k in ("x", "w", "bias", "mult", "shift", "y"):
            mem = self.buffers.get(call.addr[k])
            if mem is None:  # cl.Buffer objects have no addresses: only whole buffers exist
                raise BackendError(f"fpga@opencl: register {k} holds 0x{call.addr[k]:x}, which "
                                   f"is not the start of an allocated buffer (a driver bug)")
            bufs.append(mem.buffer)
        ints = [np.int32(call.args[k]) for k in ("op", "n", "c", "h", "wd", "o", "kh", "kw",
                                                  "stride", "pad", "groups", "act_min",
                                                  "act_max", "pool")]
        self.kernel(self.queue, (1,), (1,), *bufs, *ints, self._status, self._cycles)
        status, cycles = np.zeros(1, np.int32), np.zeros(1, np.int64)
        self.lib.enqueue_copy(self.queue, status, self._status)
        self.lib.enqueue_copy(self.queue, cycles, self._cycles, is_blocking=True)
        return int(status[0]), int(cycles[0])


def discover() -> list:
    import importlib.util

    from . import Found, self_test

    if importlib.util.find_spec("pyopencl") is None:
        return [Found(usable=False, reason="pyopencl not installed: pip install hal-accel[opencl]")]
    from hal.backends.opencl import runtime

    try:
        devs = runtime.devices()
    except Exception as exc:  # noqa: BLE001 - discovery never raises
        return [Found(usable=False, reason=f"no OpenCL platform could be listed: {exc}")]
    fpgas = [d for d in devs if is_fpga(d)]
    if fpgas:
        return [Found(i, f"{d.name} ({d.platform.name.strip()})", handle=d,
                      details={"platform": d.platform.name.strip()}) for i, d in enumerate(fpgas)]
    cpus = [d for d in devs if d.type_kind == "cpu"]
    if not cpus:
        return [Found(usable=False, reason="no FPGA OpenCL platform, and no CPU runtime to stand "
                                           "in for one")]
    d = cpus[0]
    try:
        from ..files import accelerator_dir

        t = OpenCLTransport(d)
        t.load(accelerator_dir(), {}, None)
        self_test(t)
    except Exception as exc:  # noqa: BLE001 - discovery never raises
        return [Found(usable=False, simulated=True,
                      reason=f"OpenCL stand-in self-test failed: {type(exc).__name__}: "
                             f"{str(exc)[:300]}")]
    return [Found(name=f"hal_int8.cl on {d.name} (CPU OpenCL runtime standing in for an FPGA "
                       f"platform)", simulated=True, handle=d,
                  details={"platform": d.platform.name.strip()})]


def connect(handle, **options) -> OpenCLTransport:
    return OpenCLTransport(handle)
