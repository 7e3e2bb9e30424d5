"""Long runs: compile -> call -> release, over and over, on one device, watching what the
process holds: resident memory, open file descriptors, temporary files and child processes.

After ``warmup`` cycles (frameworks fill their caches and thread pools once), nothing may
grow for good: resident memory stays within a few percent of its warm-up figure, and every
descriptor, temporary file and child process that appeared since is gone again. Each call's
output must equal the first cycle's.

With ``new_weights`` (``--new-weights``) each cycle compiles the model with other weights
(the zoo's seed is the cycle): what a runtime keeps of every distinct model it compiled
shows as growth, and outputs are not compared.

    python -m hal.testing.soak cpu@ort --cycles 1000 [--warmup 100] [--model lenet]
        [--new-weights] [--json]

``bench/soak.py`` (``make soak``) runs it for every usable CPU backend, each in a process of
its own with a temporary folder of its own; ``tests/test_soak.py`` runs a short one.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import hal
from hal.errors import OptionError

#: growth of resident memory from the end of warm-up to the last cycle that ``make soak``
#: accepts, in percent
MAX_GROWTH_PCT = 5.0
#: the environment of soak workers: glibc's malloc raises its mmap threshold to the size of
#: the largest block freed so far, so later blocks of that size stay in the heap once freed;
#: resident memory then steps up once, late in a run, without anything being held (cpu@iree:
#: +9 to +25 MiB between cycles 190 and 280, flat after; with the threshold fixed at glibc's
#: initial 128 KiB, flat throughout). Fixed, the soak sees what HAL and the runtimes hold.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}


@dataclass
class Held:
    """What the process holds at one moment."""

    cycle: int
    rss: int  # resident bytes
    fds: dict[int, str]  # descriptor -> what it points to
    tmp: set[str]  # entries of the temporary folder
    children: set[int]


@dataclass
class SoakResult:
    device: str
    model: str
    options: dict
    cycles: int
    warmup: int
    seconds: float
    rss_warm: int  # resident bytes over the cycles after warm-up (median of a window)
    rss_end: int  # ... over the last cycles
    leaked_fds: list[str] = field(default_factory=list)
    leaked_tmp: list[str] = field(default_factory=list)
    leaked_children: list[int] = field(default_factory=list)
    wrong_outputs: int = 0
    #: (cycle, resident MiB: the median of the cycles before it) along the run
    curve: list[tuple[int, float]] = field(default_factory=list)
    new_weights: bool = False  # each cycle compiled the model with other weights

    @property
    def growth_pct(self) -> float:
        return 100.0 * (self.rss_end - self.rss_warm) / self.rss_warm

    @property
    def leaked(self) -> bool:
        return bool(self.leaked_fds or self.leaked_tmp or self.leaked_children
                    or self.wrong_outputs)

    def ok(self, max_growth_pct: float = MAX_GROWTH_PCT) -> bool:
        return not self.leaked and self.growth_pct <= max_growth_pct

    @property
    def label(self) -> str:
        """The device and the compile options: ``cpu:0@tf xla=false``."""
        return " ".join([self.device, *(f"{k}={json.dumps(v)}" for k, v in self.options.items()),
                         *(["new-weights"] if self.new_weights else [])])

    def line(self) -> str:
        mib = 1 << 20
        return (f"{self.label:22} {self.cycles:5} cycles {self.seconds:7.1f} s  "
                f"RSS {self.rss_warm / mib:7.1f} MiB at cycle {self.warmup} -> "
                f"{self.rss_end / mib:7.1f} MiB ({self.growth_pct:+.1f}%)  "
                f"leaked: {len(self.leaked_fds)} fds, {len(self.leaked_tmp)} tmp files, "
                f"{len(self.leaked_children)} processes"
                + (f", {self.wrong_outputs} wrong outputs" if self.wrong_outputs else ""))

    def to_dict(self) -> dict:
        return {**asdict(self), "growth_pct": round(self.growth_pct, 2), "ok": self.ok()}

    @classmethod
    def from_dict(cls, d: dict) -> SoakResult:
        keep = {k: v for k, v in d.items() if k not in ("growth_pct", "ok")}
        return cls(**{**keep, "curve": [tuple(p) for p in keep.get("curve", [])]})


# -- what the process holds ---------------------------------------------------------------

def _glibc():
    """The C library where it has glibc's ``malloc_trim``; None elsewhere (musl, macOS)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def resident_bytes() -> int:
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


def open_descriptors() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor listing the folder itself, closed by now
            pass
    return out


def temp_entries() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


def child_processes() -> set[int]:
    """This process's living descendants (zombies are reaped by their parents, not held)."""
    try:
        import psutil
    except ImportError:
        return _descendants(os.getpid())
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE}


def _descendants(pid: int) -> set[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            parents.setdefault(int(ppid), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def collect() -> None:
    """Free what Python's cycles hold, and give the allocator's free pages back to the system:
    glibc keeps freed heap memory resident, and blocks allocated later reuse it without
    resident memory growing, so a leak could hide in what an earlier step freed (most of the
    test backend's 4 MiB per compile did, in a process that had run tf's tests before)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def held(cycle: int) -> Held:
    collect()
    return Held(cycle, resident_bytes(), open_descriptors(), temp_entries(), child_processes())


# -- the run --------------------------------------------------------------------------------

def soak(device: str, cycles: int, warmup: int = 100, model: str = "lenet",
         progress: Callable[[int, int], None] | None = None, new_weights: bool = False,
         **options) -> SoakResult:
    """``cycles`` compiles of the zoo ``model`` on ``device`` (with compile ``options``), each
    called once and released; what the process holds compared between the end of warm-up and
    the end. ``new_weights``: the model with the cycle's seed each time."""
    if not os.path.isdir("/proc/self/fd"):
        raise OptionError("the soak test reads /proc/self (descriptors, memory, children): "
                          "run it on Linux")
    if not 0 < warmup < cycles:
        raise OptionError(f"warmup ({warmup}) must be at least 1 and below cycles ({cycles})")
    dev = hal.device(device)
    precision = "fp32" if "fp32" in dev.backend.precisions else "int8"
    source = hal.models.get(model)
    x = hal.models.example_input(model, batch=2)
    every = max(1, (cycles - warmup) // 100)  # ~100 samples of memory after warm-up
    first, wrong, rss, warm = None, 0, [], None
    t0 = time.perf_counter()
    for cycle in range(1, cycles + 1):
        if new_weights:
            source = hal.models.get(model, seed=cycle)
        compiled = hal.compile(source, dev, **{"precision": precision, **options})
        y = compiled(x)[0]
        del compiled
        if first is None:
            first = y
        elif not new_weights and not np.array_equal(y, first):
            wrong += 1
        if cycle == warmup:
            warm = held(cycle)
            rss.append((cycle, warm.rss))
        elif cycle > warmup and (cycle - warmup) % every == 0:
            collect()
            rss.append((cycle, resident_bytes()))
        if progress is not None and rss and rss[-1][0] == cycle and \
                (cycle == warmup or cycle % max(cycles // 10, 1) == 0):
            progress(cycle, rss[-1][1])
    end = held(cycles)
    # resident memory moves by a few MiB from sample to sample (the allocator keeps and
    # returns pages): each end of the run is the median of a tenth of the samples
    window = max(len(rss) // 10, 1)
    mib = 1 << 20
    curve = [(c, round(float(np.median([r for _, r in rss[max(i - window, 0):i + 1]])) / mib, 1))
             for i, (c, _) in enumerate(rss) if i % window == 0 or i == len(rss) - 1]
    return SoakResult(
        dev.string, model, options, cycles, warmup, round(time.perf_counter() - t0, 2),
        int(np.median([r for _, r in rss[:window]])), int(np.median([r for _, r in rss[-window:]])),
        leaked_fds=sorted(f"{fd} -> {target}" for fd, target in end.fds.items()
                          if warm.fds.get(fd) != target),
        leaked_tmp=sorted(end.tmp - warm.tmp),
        leaked_children=sorted(end.children - warm.children),
        wrong_outputs=wrong, curve=curve, new_weights=new_weights)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hal.testing.soak",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("device")
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a compile option (VALUE read as JSON when it is: xla=false)")
    ap.add_argument("--new-weights", action="store_true",
                    help="compile the model with other weights each cycle (seed = cycle)")
    ap.add_argument("--json", action="store_true", help="the result as one line of JSON")
    args = ap.parse_args(argv)
    options = dict(_option(o) for o in args.option)

    def progress(cycle: int, rss: int) -> None:
        print(f"{args.device}: cycle {cycle}, RSS {rss / (1 << 20):.1f} MiB", file=sys.stderr,
              flush=True)

    result = soak(args.device, args.cycles, args.warmup, args.model,
                  None if args.json else progress, args.new_weights, **options)
    print(json.dumps(result.to_dict()) if args.json else result.line())
    return 0 if result.ok() else 1


def _option(text: str) -> tuple[str, object]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise OptionError(f"--option takes KEY=VALUE (e.g. xla=false), got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


if __name__ == "__main__":
    sys.exit(main())
