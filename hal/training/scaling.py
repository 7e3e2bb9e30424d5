"""A cost model of data-parallel scaling beyond the machine at hand: a model, not a measurement.

From one worker's measured step time at a per-worker batch, the bytes of the gradients and a
network's bandwidth and latency, the step of N workers (each keeping its batch: weak scaling)
is the measured step plus a ring all-reduce of the gradients, which sends
``2 (N-1)/N * bytes`` over each link in ``2 (N-1)`` messages (Patarasuk and Yuan's bandwidth-
optimal all-reduce, as NCCL and gloo run it). Nothing overlaps in the model (the engines
overlap the all-reduce with the backward pass, so real steps can be shorter), and compute is
assumed to stay what it was on one worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hal.errors import OptionError

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_bandwidth(text: str) -> float:
    """Bits per second of ``"100Gbit"``, ``"25 Gb/s"``, ``"400Mbit"``, ``"12.5GB/s"`` (bytes)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(bit|b|B|byte)?(/s|ps)?\s*",
                     str(text))
    if not m or float(m.group(1)) <= 0:
        raise OptionError(f"bandwidth {text!r} is not a rate such as '100Gbit', '25Gb/s' or "
                          f"'12.5GB/s'")
    bits = float(m.group(1)) * _UNITS[m.group(2).lower()]
    return bits * 8 if m.group(3) in ("B", "byte") else bits


@dataclass(frozen=True)
class ScalingRow:
    workers: int
    step_s: float
    allreduce_s: float
    samples_per_s: float
    efficiency: float  # samples/s over workers x one worker's samples/s


def estimate(step_s: float, batch: int, grad_bytes: int, workers: list[int],
             bandwidth_bps: float, latency_s: float = 5e-6) -> list[ScalingRow]:
    """One row per worker count: the modelled step time, its all-reduce part, samples/s and
    scaling efficiency, for ``batch`` samples per worker and ``grad_bytes`` of gradients."""
    if step_s <= 0 or batch < 1 or grad_bytes < 0 or bandwidth_bps <= 0 or latency_s < 0:
        raise OptionError("the scaling estimate needs a positive step time, batch and "
                          "bandwidth and a non-negative gradient size and latency")
    rows = []
    for n in workers:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise OptionError(f"worker counts must be positive ints, got {n!r}")
        comm = 0.0 if n == 1 else (2 * (n - 1) / n * grad_bytes * 8 / bandwidth_bps
                                   + 2 * (n - 1) * latency_s)
        step = step_s + comm
        rows.append(ScalingRow(n, step, comm, n * batch / step, step_s / step))
    return rows


def parse_workers(text: str) -> list[int]:
    try:
        out = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or any(n < 1 for n in out):
        raise OptionError(f"--estimate-scaling takes worker counts such as 1,8,64,512, got "
                          f"{text!r}")
    return out


def measure_step(model, x, y, device: str, batch: int, optimizer: str = "adamw",
                 lr: float = 1e-3, loss: str = "cross_entropy", steps: int = 10,
                 warmup: int = 2) -> tuple[float, int]:
    """(the median seconds of one training step of ``batch`` samples on ``device``, the
    bytes of its fp32 gradients): what ``estimate`` starts from."""
    import statistics
    import time

    import numpy as np

    from hal.trainer import TrainSpec
    from hal.training.batches import TARGET
    from hal.training.graph import build
    from hal.training.settings import optimizer_spec, positive_int, train_spec, training_device

    positive_int("batch", batch)
    if len(y) < batch:
        raise OptionError(f"the scaling estimate times steps of {batch} samples; the data has "
                          f"{len(y)}")
    dev = training_device(device)
    tg = build(model, loss)
    spec: TrainSpec = train_spec(optimizer_spec(optimizer, lr, {}), None, "fp32", 0, {})
    trainer = dev.backend.compile_training(tg, dev, spec)
    name = model.inputs[0].name
    n = len(y) // batch
    times = []
    for i in range(warmup + steps):
        sl = slice((i % n) * batch, (i % n + 1) * batch)
        b = {name: np.asarray(x[sl]), TARGET: np.asarray(y[sl])}
        t = time.perf_counter()
        trainer.step([b], [1.0])
        if i >= warmup:
            times.append(time.perf_counter() - t)
    inits = tg.model.graph.initializers
    grad_bytes = sum(4 * int(np.prod(inits[p].shape)) for p in tg.params)
    return statistics.median(times), grad_bytes
