"""Building OpenCL programs once per (device, source, options), with a disk cache of binaries.

Every program gets the kernel codes of ``codes.defines()`` (activations, unary and binary
ops) as ``-D`` defines. A binary is keyed by the hash of the source (includes expanded), the
build options (defines included), the device name, its driver version and the platform
version; it lives in ``$HAL_CACHE_DIR/opencl/binaries`` (default ``~/.cache/hal/opencl``),
written and verified through ``hal.diskcache``: a binary that does not match its hash is
built again, and two processes building the same program build it once.
A build failure raises ``KernelBuildError`` carrying the compiler's log.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from importlib import resources

from hal import diskcache
from hal.backends.opencl import codes
from hal.backends.opencl.runtime import ClDevice, cache_dir, cl
from hal.errors import BackendError

_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.M)
_lock = threading.RLock()
_programs: dict[tuple, "Built"] = {}


class KernelBuildError(BackendError):
    """An OpenCL program failed to build; the message carries the build log."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


@dataclass
class Built:
    program: object
    cache: str  # "memory", "warm" (binary from disk) or "cold" (compiled from source)
    seconds: float
    key: str


def kernel_source(name: str) -> str:
    """A kernel file of this package, with its local includes expanded (so the hash covers them)."""
    root = resources.files("hal.backends.opencl") / "kernels"

    def expand(text: str, seen: set) -> str:
        def repl(m):
            inc = m.group(1)
            if inc in seen:
                return ""
            seen.add(inc)
            return expand((root / inc).read_text(), seen)

        return _INCLUDE.sub(repl, text)

    return expand((root / name).read_text(), set())


def _options_list(options: dict | None, extra: str) -> list[str]:
    opts = [f"-D{k}={v}" for k, v in sorted((options or {}).items())]
    return opts + (extra.split() if extra else [])


def build(dev: ClDevice, name: str, defines: dict | None = None, extra: str = "") -> Built:
    """The program ``kernels/<name>`` built for ``dev`` with the kernel codes and ``defines``
    as ``-D`` flags, then ``extra`` flags."""
    source = kernel_source(name)
    opts = _options_list({**codes.defines(), **(defines or {})}, extra)
    digest = hashlib.sha256("\0".join([source, " ".join(opts), dev.identity,
                                        cl().VERSION_TEXT]).encode()).hexdigest()[:32]
    mem_key = (dev.index, digest)
    with _lock:
        hit = _programs.get(mem_key)
        if hit is not None:
            return Built(hit.program, "memory", 0.0, digest)
        built = _build(dev, name, source, opts, digest)
        _programs[mem_key] = built
        return built


def _build(dev: ClDevice, name: str, source: str, opts: list[str], digest: str) -> Built:
    lib = cl()
    t0 = time.perf_counter()
    try:
        path = cache_dir() / "binaries" / f"{digest}.bin"
        path.parent.mkdir(mode=0o700, exist_ok=True)
    except OSError:  # an unwritable cache only costs a rebuild
        return _from_source(dev, name, source, opts, digest, None, t0)
    # the lock: a second process building the same program waits, then loads this binary
    with diskcache.locked(path):
        binary = diskcache.read_bytes(path)
        if binary is not None:
            try:
                prg = lib.Program(dev.context, [dev.device], [binary]).build(options=opts)
                return Built(prg, "warm", time.perf_counter() - t0, digest)
            except Exception:  # a binary the driver no longer takes: rebuild from source
                diskcache.discard(path)
        return _from_source(dev, name, source, opts, digest, path, t0)


def _from_source(dev: ClDevice, name: str, source: str, opts: list[str], digest: str,
                 path, t0: float) -> Built:
    lib = cl()
    try:
        prg = lib.Program(dev.context, source).build(options=opts)
    except Exception as exc:
        log = _build_log(exc)
        raise KernelBuildError(
            f"OpenCL program {name} failed to build for opencl:{dev.index} ({dev.name}) with "
            f"options {' '.join(opts) or '(none)'}:\n{log}\nCheck the `build_options` you passed "
            f"and whether the device supports what the kernel needs.", log) from None
    if path is not None:
        try:
            diskcache.write_bytes(path, prg.get_info(lib.program_info.BINARIES)[0])
        except OSError:
            pass  # an unwritable cache only costs the next process a rebuild
    return Built(prg, "cold", time.perf_counter() - t0, digest)


def _build_log(exc: Exception) -> str:
    text = str(exc)
    return text.strip() or type(exc).__name__


def try_build_snippet(dev: ClDevice, source: str, extra: str = "") -> str | None:
    """Build a tiny program; None if it builds, else the build log (capability probes)."""
    lib = cl()
    try:
        lib.Program(dev.context, source).build(options=extra.split())
        return None
    except Exception as exc:
        return _build_log(exc)
