"""ONNX -> IREE: import with IREE's own ONNX importer, compile with ``iree-compile``, cache.

- Import: ``iree.compiler.extras.onnx_importer`` (what ``iree-import-onnx`` runs), in this
  process, on the model after ONNX shape inference (the importer needs every value typed);
  the result is the ``torch.operator "onnx.*"`` form of torch-mlir.
- Compile: ``iree.compiler.compile_str`` (the ``iree-compile`` tool, in its own process, so a
  compiler crash is an error here, not the end of the caller), target ``llvm-cpu`` for the
  host's CPU (``--iree-llvmcpu-target-cpu=host``) on ``cpu@iree``; ``cuda`` / ``vulkan-spirv``
  on the GPU kinds.
- Cache: each module (.vmfb) is kept in ``$HAL_CACHE_DIR/iree`` (default ``~/.cache/hal/iree``,
  through ``hal.diskcache``: hashed, verified before use, locked while compiled),
  named by the SHA-256 of the model's bytes (its input shapes made concrete), the compiler's
  version, the flags and, for ``target-cpu=host``, this CPU's model and feature flags. A hit
  loads the file (memory-mapped by the runtime) and skips both steps.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import onnx

from hal import diskcache
from hal.errors import BackendError

#: the entry point's name in every module HAL compiles
FUNCTION = "main"
#: flags every compile gets (besides the target's): no debug info in the executables
COMMON_FLAGS = ("--iree-llvmcpu-debug-symbols=false",)
#: kind -> (iree-compile target backend, runtime driver, target flags)
TARGETS = {
    "cpu": ("llvm-cpu", "local-task", ("--iree-llvmcpu-target-cpu=host",)),
    "cuda": ("cuda", "cuda", ()),
    "vulkan": ("vulkan-spirv", "vulkan", ()),
}

_LOCK = threading.Lock()
_BUILDING: dict[str, threading.Lock] = {}


def cache_dir() -> Path:
    """``$HAL_CACHE_DIR/iree`` or ``~/.cache/hal/iree``, created private (hal.diskcache)."""
    return diskcache.folder("iree")


@functools.lru_cache(maxsize=1)
def compiler_version() -> str:
    from iree.compiler import version

    return version.VERSION


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    """This CPU's model name and feature flags: what ``target-cpu=host`` compiles for."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        import platform

        return platform.machine() + " " + platform.processor()
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(dict.fromkeys(keep))  # one line of each, in order


#: backend option channels_last=True: convolutions rewritten to NHWC before IREE's own flow
CHANNELS_LAST = ("--iree-preprocessing-pass-pipeline="
                 "builtin.module(util.func(iree-preprocessing-convert-conv-to-channels-last))")


def flags(kind: str, extra: tuple[str, ...] = ()) -> list[str]:
    target, _, target_flags = TARGETS[kind]
    return [f"--iree-hal-target-backends={target}", *COMMON_FLAGS, *target_flags, *extra]


@dataclass
class Module:
    """A compiled module: its file in the cache (or its bytes, where the cache cannot be
    written), and how it was obtained."""

    path: Path | None
    key: str
    cache: str  # "warm" (found on disk) or "cold" (compiled now)
    compile_s: float = 0.0
    vmfb: bytes | None = None


def key(data: bytes, kind: str, extra: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    h.update(f"iree {compiler_version()}\n{' '.join(flags(kind, extra))}\n".encode())
    if kind == "cpu":
        h.update(host_cpu().encode())
    h.update(data)
    return h.hexdigest()[:32]


def build(proto: onnx.ModelProto, kind: str, extra: tuple[str, ...] = ()) -> Module:
    """The module of ``proto`` for ``kind``: from the cache, or imported and compiled into it."""
    import time

    if proto.graph.name != FUNCTION:
        proto = _renamed(proto)
    data = proto.SerializeToString()
    k = key(data, kind, extra)
    with _LOCK:
        lock = _BUILDING.setdefault(k, threading.Lock())
    with lock:  # two threads asking for the same module compile it once
        path = _entry(k)
        # two processes too: the second waits, then finds the first one's module
        with diskcache.locked(path) if path else contextlib.nullcontext():
            if path is not None and diskcache.verified(path):  # checked: never a tampered one
                return Module(path, k, "warm")
            t0 = time.perf_counter()
            vmfb = compile_mlir(import_onnx(proto), kind, extra)
            seconds = time.perf_counter() - t0
            if path is not None and _store(path, vmfb):
                return Module(path, k, "cold", seconds)
            return Module(None, k, "cold", seconds, vmfb)


def _entry(k: str) -> Path | None:
    """Where the module ``k`` is cached, or None where the cache cannot be created."""
    try:
        return cache_dir() / f"{k}.vmfb"
    except OSError:
        return None


def _renamed(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph (the module's function) is called ``FUNCTION``."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    out.graph.name = FUNCTION
    return out


def import_onnx(proto: onnx.ModelProto) -> str:
    """The model as MLIR (torch-mlir's ONNX form), through IREE's ONNX importer."""
    from iree.compiler import ir
    from iree.compiler.extras import onnx_importer

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types
        raise BackendError(f"ONNX shape inference failed before the IREE import: "
                           f"{type(exc).__name__}: {exc}") from None
    try:
        context = ir.Context()
        info = onnx_importer.ModelInfo(inferred)
        module = info.create_module(context=context).operation
        onnx_importer.NodeImporter.define_function(info.main_graph, module).import_all()
        module.verify()
        return module.get_asm(assume_verified=True)
    except Exception as exc:  # noqa: BLE001 - the importer raises several types
        text = " ".join(str(exc).split())
        raise BackendError(f"IREE's ONNX importer refused the segment: "
                           f"{type(exc).__name__}: {text[:500]}") from None


def compile_mlir(asm: str, kind: str, extra: tuple[str, ...] = ()) -> bytes:
    from iree.compiler import compile_str
    from iree.compiler.tools import CompilerToolError

    target = TARGETS[kind][0]
    try:
        return compile_str(asm, target_backends=[target], input_type="onnx",
                           extra_args=[f for f in flags(kind, extra)
                                       if not f.startswith("--iree-hal-target-backends")])
    except CompilerToolError as exc:
        text = _first_error(str(exc))
        raise BackendError(f"iree-compile ({target}) failed: {text}") from None


def _first_error(text: str) -> str:
    """The compiler's first ``error:`` line (its full output is long), else the start."""
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()[:500]
    return " ".join(text.split())[:500]


def _store(path: Path, data: bytes) -> bool:
    """Write atomically with its hash (another process may be reading the same name); False
    when the cache cannot be written (the module is then kept in memory only)."""
    try:
        diskcache.write_bytes(path, data)
        return True
    except OSError:
        return False
