"""``hal compare --train``: a full training step per device and batch, measured the way
inference rows are, and the loss a fixed number of steps takes every device to.

Each (model, precision) is compiled once per device with ``Backend.compile_training``; each
batch size then starts from the trainer's initial state (the model's own weights, a fresh
optimizer), runs ``steps`` updates over fixed data and records their losses (the first is
the initial weights' loss, so devices must agree on it closely; later ones drift apart only
as far as their arithmetic does), then times one more step on one micro-batch until the
budget is spent. The optimizer is AdamW at lr 1e-3, the loss cross-entropy, the seed 0.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from hal import registry
from hal.backend import Device
from hal.comparison.row import Row, failure
from hal.comparison.timing import PeakMemory, Timing, timed_calls
from hal.errors import HalError, OptionError
from hal.ir.model import Model
from hal.trainer import OptimizerSpec, Trainer, TrainSpec

#: updates behind a training row's losses (its "loss after N steps")
TRAIN_STEPS = 20
OPTIMIZER = OptimizerSpec()  # AdamW, lr 1e-3, HAL's defaults on every backend
LOSS = "cross_entropy"
SEED = 0


def settings(steps: int) -> dict:
    """What every training row of a run shares (recorded in the environment)."""
    return {"steps": steps, "loss": LOSS, "optimizer": asdict(OPTIMIZER), "seed": SEED}


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise OptionError(f"train_steps must be a whole number >= 1, got {steps!r}")
    return steps


def check_precisions(precision: list[str]) -> list[str]:
    bad = [p for p in precision if p not in TrainSpec.PRECISIONS]
    if bad:
        raise OptionError(f"training runs in {list(TrainSpec.PRECISIONS)}, not {bad}; leave "
                          f"--precision out for fp32")
    return precision or ["fp32"]


def training_devices(devices: Sequence[str],
                     left_out: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(the devices among ``devices`` whose backend trains, ``left_out`` plus the others with
    why). A bare kind ("cpu") is its best backend that trains, as in ``hal.train``; a device
    string naming nothing usable raises DeviceNotFound, and OptionError when none can train."""
    from hal.device import DeviceSpec
    from hal.training import trainable_devices
    from hal.training.settings import training_device

    chosen, skipped = [], dict(left_out)
    for d in devices:
        if DeviceSpec.parse(d).backend is None:
            try:
                chosen.append(training_device(d).string)
            except OptionError:
                skipped[d] = "no usable backend of that kind trains"
            continue
        dev = registry.device(d)
        if dev.backend.trains:
            chosen.append(dev.string)
        else:
            skipped[dev.string] = (f"its backend {dev.backend.name!r} runs models but does not "
                                   f"train them (no autodiff)")
    for d in left_out:  # a slow simulation that cannot train either: say the latter
        if not registry.device(d).backend.trains:
            skipped[d] = f"its backend {registry.device(d).backend.name!r} does not train"
    if not chosen:
        can = [d.string for d in trainable_devices()]
        raise OptionError(f"none of {list(devices)} can train; devices that can: "
                          f"{', '.join(can) if can else 'none here (install torch, jax or tf)'}")
    return list(dict.fromkeys(chosen)), skipped


def training_data(model: Model, batch: int, steps: int) -> tuple[list[dict], str]:
    """``steps`` micro-batches of ``batch`` samples (dicts by input name plus ``target``), the
    same on every device, and what they are: scikit-learn's digits where they fit the model's
    single input ([N, 1 or 3, S, S] images, or [N, S*S] flattened) and its classes, else
    seeded noise with seeded labels."""
    classes = _classes(model)
    need = batch * steps
    fit = _digits_fit(model) if classes >= 10 else None
    if fit is not None:
        from hal.data import digits

        size, channels, flat = fit
        x, y = digits("train", size, channels)
        order = np.random.default_rng(SEED).permutation(len(y))
        take = order[np.arange(need) % len(y)]  # round the data set again if it is short
        x = x[take].reshape(need, -1) if flat else x[take]
        arrays = {model.inputs[0].name: x, "target": y[take]}
        what = f"digits {channels}x{size}x{size}" + (" flattened" if flat else "")
    else:
        from hal.inputs import example_inputs

        arrays = {s.name: a for s, a in zip(model.inputs, example_inputs(model, need, SEED))}
        rng = np.random.default_rng(SEED)
        arrays["target"] = rng.integers(0, classes, need).astype(np.int64)
        what = "seeded noise, seeded labels"
    return [{k: v[i * batch:(i + 1) * batch] for k, v in arrays.items()}
            for i in range(steps)], what


def _digits_fit(model: Model) -> tuple[int, int, bool] | None:
    """(size, channels, flattened) of the digits that fit the model's input, or None."""
    if len(model.inputs) != 1:
        return None
    shape = model.inputs[0].shape
    if len(shape) == 4 and shape[1] in (1, 3) and isinstance(shape[2], int) \
            and shape[2] == shape[3]:
        return shape[2], shape[1], False
    if len(shape) == 2 and isinstance(shape[1], int):
        side = round(shape[1] ** 0.5)
        if side * side == shape[1] and side >= 8:
            return side, 1, True
    return None


def _classes(model: Model) -> int:
    """The classes of the model's single output [N, classes]: from shape inference, else from
    one sample through cpu@reference (ONNX's inference stops at some nodes)."""
    from hal.compiler import compile
    from hal.inputs import example_inputs
    from hal.ir import shapes as S

    shape = None
    if len(model.outputs) == 1:
        shape = S.infer(model.to_proto()).get(model.outputs[0].name, (None, None))[0]
        if not S.static(shape[1:] if shape else None):
            shape = np.shape(compile(model, "cpu@reference")(*example_inputs(model, 1))[0])
    if not shape or len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 2:
        raise HalError(f"the training comparison trains classifiers (one output [N, classes], "
                       f"cross-entropy); {model.name!r} has outputs "
                       f"{[str(s) for s in model.outputs]}: train it with hal.train instead")
    return shape[1]


@dataclass
class Compiled:
    """One model's trainer on one device at one precision, and the state each batch starts
    from."""

    trainer: Trainer
    device: Device
    start: dict
    base_mb: float  # host memory before the compile
    compile_s: float


def run_training(job, models: dict[str, Model], tick=None,
                 mem_scope: str = "in-process") -> Iterator[Row]:
    """Training rows for one device (``job.task == "training"``): each model compiled once
    per precision, then measured at every batch from the same initial state."""
    for name in job.models:
        for prec in job.precision:
            rows = [Row(model=name, device=job.device, batch=b, precision=prec,
                        task="training", mem_scope=mem_scope) for b in job.batch]
            compiled, err = _compile(models[name], job.device, prec, rows)
            for row in rows:
                if tick:
                    tick.start(row)
                if compiled is None:
                    row.error = err
                else:
                    row.compile_s = compiled.compile_s
                    _measure(row, compiled, models[name], job.train_steps, job)
                if tick:
                    tick.done(row)
                yield row
            del compiled
            gc.collect()


def _compile(model: Model, device: str, prec: str,
             rows: list[Row]) -> tuple[Compiled | None, str | None]:
    from hal.training import build

    gc.collect()
    mem = PeakMemory()
    with mem:
        t0 = time.perf_counter()
        try:
            _classes(model)
            graph = build(model, LOSS)
            dev = registry.device(device)
            spec = TrainSpec(optimizer=OPTIMIZER, precision=prec, seed=SEED)
            trainer = dev.backend.compile_training(graph, dev, spec)
            start = trainer.state()
        except Exception as exc:  # a broken backend must not abort the comparison
            return None, failure(exc, f"compile training on {device}")
        compiled = Compiled(trainer, dev, start, mem.start_mb, time.perf_counter() - t0)
    nodes = len(list(graph.model.graph))
    for row in rows:
        row.device, row.backend = dev.string, dev.backend.name
        row.simulated, row.device_name = dev.simulated, dev.info.name
        row.placement = {dev.string: {"segments": 1, "nodes": nodes}}
        row.segments = [[dev.string, nodes]]
    return compiled, None


def _measure(row: Row, c: Compiled, model: Model, steps: int, job) -> None:
    """The losses of ``steps`` updates from the initial state, then timed steps."""
    mem = PeakMemory()
    try:
        batches, row.train_data = training_data(model, row.batch, steps)
        c.trainer.load_state(c.start)
        with mem:
            before = mem.start_mb
            t0 = time.perf_counter()
            losses = list(c.trainer.step(batches[:1], [1.0]))
            row.first_call_ms = (time.perf_counter() - t0) * 1e3
            for b in batches[1:]:  # these steps warm up too
                losses += c.trainer.step([b], [1.0])
            for _ in range(max(0, job.warmup - (steps - 1))):
                c.trainer.step(batches[:1], [1.0])
            times = timed_calls(lambda: c.trainer.step(batches[:1], [1.0]), job.budget_s,
                                job.max_runs, job.min_runs)
            moved = c.device.transfers.copy()
            c.trainer.step(batches[:1], [1.0])
        row.transfers = (c.device.transfers - moved).to_dict()
        for k, v in Timing(row.first_call_ms, times).stats().items():
            setattr(row, k, v)
        row.throughput_per_s = row.batch / (row.mean_ms / 1e3) if row.mean_ms else None
        row.peak_mem_mb = round(max(0.0, mem.peak_mb + before - c.base_mb), 2)
        row.train_steps, row.losses = len(losses), [float(v) for v in losses]
        row.loss_first, row.loss_last = row.losses[0], row.losses[-1]
        if not np.isfinite(row.losses).all():
            row.error = f"the loss is not finite within {steps} steps: {row.losses}"
    except Exception as exc:
        row.error = failure(exc, f"train on {row.device}")
