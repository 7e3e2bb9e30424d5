"""A plan: the kernel launches of one segment for one set of input shapes.

Planning happens once per input signature; a call then only sets the buffer
arguments that change (inputs, outputs) and enqueues the launches on the
device's in-order queue, without waiting: the host blocks only when it reads
a result back.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hal.backends.opencl import programs
from hal.backends.opencl.runtime import ClDevice, allocate, cl, upload
from hal.backends.opencl.tuning import GemmConfig

I32, I64, F32 = np.int32, np.int64, np.float32


@dataclass
class T:
    """A tensor while planning: a buffer slot, a shape and an element offset."""

    slot: int
    shape: tuple[int, ...]
    offset: int = 0
    dtype: Any = np.float32

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def view(self, shape) -> T:
        return T(self.slot, tuple(int(d) for d in shape), self.offset, self.dtype)


@dataclass
class Launch:
    kernel: Any
    gsize: tuple[int, ...]
    lsize: tuple[int, ...] | None
    dyn: list[tuple[int, int]]  # (argument index, slot) set on every call


@dataclass
class Plan:
    launches: list[Launch]
    input_slots: list[int]
    output_tensors: list[T]
    per_call: dict[int, tuple[int, Any]]  # slot -> (nbytes, dtype) allocated on every call
    temps: dict[int, Any] = field(default_factory=dict)
    #: a call sets its buffers as the kernels' arguments, then queues them: another thread's
    #: call must not set its own in between (nor share the plan's temporaries meanwhile)
    lock: Any = field(default_factory=threading.Lock)

    def run(self, cldev: ClDevice, inputs: list[Any]) -> list[Any]:
        lib = cl()
        bufs = dict(zip(self.input_slots, inputs))
        for slot, (nbytes, _) in self.per_call.items():
            if slot not in bufs:
                bufs[slot] = allocate(cldev, nbytes)
        q = cldev.queue
        enqueue = lib.enqueue_nd_range_kernel
        with self.lock:
            for ln in self.launches:
                for idx, slot in ln.dyn:
                    ln.kernel.set_arg(idx, bufs[slot])
                enqueue(q, ln.kernel, ln.gsize, ln.lsize)
        return [bufs[t.slot] for t in self.output_tensors]


#: the kernels of plans that are gone, by (program, kernel name), for the next plans to take:
#: pyopencl writes each new Kernel's argument-setting code anew and keeps its source in
#: ``linecache`` for good (about 2 KB a kernel), so a process compiling over and over would
#: grow without end (18 KB per LeNet compile)
_spare: dict[tuple[Any, str], list] = {}
_spare_lock = threading.RLock()  # re-entrant: a collection may give kernels back meanwhile


def _kernel(program: Any, name: str) -> Any:
    with _spare_lock:
        spare = _spare.get((program, name))
        if spare:
            return spare.pop()
    return cl().Kernel(program, name)


def _give_back(kernels: list[tuple[tuple[Any, str], Any]]) -> None:
    with _spare_lock:
        for key, kernel in kernels:
            _spare.setdefault(key, []).append(kernel)


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


class Builder:
    """Collects launches and slots while a segment is lowered for concrete shapes."""

    def __init__(self, cldev: ClDevice, gemm: GemmConfig, build_options: str, stats: dict,
                 const_cache: dict):
        self.cldev = cldev
        self.gemm_cfg = gemm
        self.build_options = build_options
        self.stats = stats
        self.const_cache = const_cache
        self.nslots = 0
        self.slot_buffers: dict[int, Any] = {}   # constants and temporaries
        self.slot_bytes: dict[int, int] = {}
        self.launches: list[tuple[str, str, dict, tuple, tuple | None, list]] = []

    # -- slots ----------------------------------------------------------------
    def new_slot(self) -> int:
        self.nslots += 1
        return self.nslots - 1

    def tensor(self, shape, dtype=np.float32) -> T:
        shape = tuple(int(d) for d in shape)
        t = T(self.new_slot(), shape, 0, dtype)
        self.slot_bytes[t.slot] = t.size * np.dtype(dtype).itemsize
        return t

    def const(self, array: np.ndarray, key: Any = None) -> T:
        """A host constant on the device (uploaded once per executable)."""
        arr = np.ascontiguousarray(array)
        key = key if key is not None else (arr.dtype.str, arr.shape, arr.tobytes())
        hit = self.const_cache.get(key)
        if hit is None:
            hit = upload(self.cldev, arr)
            self.const_cache[key] = hit
        slot = self.new_slot()
        self.slot_buffers[slot] = hit
        return T(slot, arr.shape, 0, arr.dtype)

    def dummy(self) -> T:
        """A placeholder for an absent optional buffer argument."""
        return self.const(np.zeros(1, np.float32), key="dummy")

    def meta(self, values) -> T:
        return self.const(np.asarray(values, np.int32))

    # -- launches ---------------------------------------------------------------
    def launch(self, file: str, kernel: str, gsize, lsize, args, defines: dict | None = None):
        """Queue ``kernel`` of ``kernels/<file>``; T arguments become buffers (offsets are
        passed explicitly by the caller). The global size is rounded up to the local size."""
        if lsize is not None:
            gsize = tuple(_round_up(max(g, 1), lo) for g, lo in zip(gsize, lsize))
        else:
            gsize = tuple(max(int(g), 1) for g in gsize)
        self.launches.append((file, kernel, defines or {}, gsize, lsize, list(args)))

    def launch_1d(self, file: str, kernel: str, total: int, args, group: int = 64):
        self.launch(file, kernel, (total,), (group,), args)

    def program(self, file: str, defines: dict):
        built = programs.build(self.cldev, file, defines, self.build_options)
        label = file if not defines else f"{file} {' '.join(f'{k}={v}' for k, v in sorted(defines.items()))}"
        if label not in self.stats:
            self.stats[label] = {"cache": built.cache, "s": round(built.seconds, 4)}
        return built.program

    def finish(self, inputs: list[T], outputs: list[T]) -> Plan:
        """Create the kernels and set every argument that does not change between calls."""
        input_slots = [t.slot for t in inputs]
        per_call = {}
        for t in outputs:
            if t.slot not in input_slots and t.slot not in self.slot_buffers:
                per_call[t.slot] = (self.slot_bytes.get(t.slot, 0), t.dtype)
        for slot, nbytes in self.slot_bytes.items():
            if slot not in per_call and slot not in self.slot_buffers:
                self.slot_buffers[slot] = allocate(self.cldev, nbytes)
        dynamic = set(input_slots) | set(per_call)
        launches, taken = [], []
        for file, name, defines, gsize, lsize, args in self.launches:
            program = self.program(file, defines)
            kernel = _kernel(program, name)
            taken.append(((program, name), kernel))
            dyn = []
            for i, a in enumerate(args):
                if isinstance(a, T):
                    if a.slot in dynamic:
                        dyn.append((i, a.slot))
                        continue
                    a = self.slot_buffers[a.slot]
                kernel.set_arg(i, a)
            launches.append(Launch(kernel, gsize, lsize, dyn))
        plan = Plan(launches, input_slots, outputs, per_call, self.slot_buffers)
        weakref.finalize(plan, _give_back, taken)
        return plan
