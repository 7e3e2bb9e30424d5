"""``hal.train``'s arguments checked and turned into the contract's objects: the device that
trains, the OptimizerSpec, the TrainSpec."""

from __future__ import annotations

import os
from dataclasses import fields, replace
from typing import Any

from hal.backend import Backend, Device
from hal.device import DeviceInfo, DeviceSpec
from hal.errors import OptionError
from hal.registry import REGISTRY
from hal.trainer import Launch, OptimizerSpec, Parallel, TrainSpec

#: OptimizerSpec fields set by keyword (``hal.train(..., momentum=0.9)``)
OPTIMIZER_OPTIONS = tuple(f.name for f in fields(OptimizerSpec) if f.name not in ("name", "lr"))


def _backend_of(info: DeviceInfo) -> Backend | None:
    for rec in REGISTRY.records():
        b = rec.backend
        if b is not None and not rec.broken and (rec.name == info.backend
                                                  or info.backend in b.variants):
            return b
    return None


def trainable_devices() -> list[DeviceInfo]:
    """Usable devices whose backend trains, best first (the backends' priority)."""
    found = []
    for d in REGISTRY.usable():
        b = _backend_of(d)
        if b is not None and b.trains and not d.alias_of:
            found.append((-b.priority, len(found), d))
    return [d for *_, d in sorted(found, key=lambda t: t[:2])]


def training_device(device: str | Device) -> Device:
    """The device that trains: ``device`` itself if its backend trains; for a bare kind
    ("cpu", "cuda:1") the best usable backend of that kind that trains. Anything else is
    refused with the devices that can train."""
    if isinstance(device, Device):
        if device.backend.trains:
            return device
        raise OptionError(_refusal(device.string, device.backend.name))
    spec = DeviceSpec.parse(device)
    if spec.backend is None:
        for d in trainable_devices():
            if d.kind == spec.kind and (spec.index is None or d.index == spec.index):
                return REGISTRY.resolve(d.string)
        raise OptionError(_refusal(device, None))
    dev = REGISTRY.resolve(device)
    if not dev.backend.trains:
        raise OptionError(_refusal(device, dev.backend.name))
    return dev


def _refusal(device: str, backend: str | None) -> str:
    why = (f"its backend {backend!r} runs models but does not train them (it has no autodiff)"
           if backend else "no usable backend of that kind trains")
    can = [d.string for d in trainable_devices()]
    where = (f"devices that can train: {', '.join(can)}" if can else
             "no usable device can train here: install a framework that does, e.g. "
             "pip install 'hal-accel[torch]' (or [jax], [tf])")
    return f"device {device!r} cannot train: {why}; {where}"


def optimizer_spec(name: str, lr: float, options: dict[str, Any]) -> OptimizerSpec:
    """The OptimizerSpec of ``name`` and ``lr`` with the optimizer options taken out of
    ``options`` (the rest stays there)."""
    _positive("lr", lr, float)
    kw = {k: options.pop(k) for k in list(options) if k in OPTIMIZER_OPTIONS}
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    return OptimizerSpec(name=name, lr=float(lr), **kw)  # checked by train_spec, once whole


def train_spec(optimizer: OptimizerSpec, total_steps: int | None, precision: str, seed: int,
               extra: dict, parallel: Parallel = Parallel()) -> TrainSpec:
    if precision not in TrainSpec.PRECISIONS:
        raise OptionError(f"precision {precision!r} is not one of {list(TrainSpec.PRECISIONS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OptionError(f"seed must be an int >= 0, got {seed!r}")
    if not optimizer.total_steps and total_steps:
        optimizer = replace(optimizer, total_steps=total_steps)
    if optimizer.schedule == "cosine" and not optimizer.total_steps:
        raise OptionError("the cosine schedule needs the run's number of updates: the data is an "
                          "iterable without len(), so pass total_steps=")
    optimizer.check()
    return TrainSpec(optimizer=optimizer, precision=precision, seed=seed, extra=dict(extra),
                     parallel=parallel)


def parallel_spec(workers: Any, strategy: Any, stages: Any) -> Parallel:
    positive_int("workers", workers)
    positive_int("stages", stages)
    if strategy not in Parallel.STRATEGIES:
        raise OptionError(f"strategy {strategy!r} is not one of {list(Parallel.STRATEGIES)}")
    return Parallel(workers=workers, strategy=strategy, stages=stages)


def joined(parallel: Parallel, launch: Launch) -> Parallel:
    """``parallel`` as this process takes part in it: its rank among ``launch.processes``
    from torch's rendezvous variables (set by HAL's launcher or by torchrun)."""
    if launch.processes <= 1:
        return parallel
    env = os.environ
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
    except (KeyError, ValueError):
        raise OptionError(f"a run of {launch.processes} processes needs RANK and WORLD_SIZE in "
                          f"the environment (HAL's launcher or torchrun sets them)") from None
    if world != launch.processes or not 0 <= rank < world:
        raise OptionError(f"WORLD_SIZE={world}, RANK={rank} in the environment do not fit a run "
                          f"of {launch.processes} processes")
    address = f"{env.get('MASTER_ADDR', '127.0.0.1')}:{env.get('MASTER_PORT', '29500')}"
    return replace(parallel, rank=rank, world=world, address=address)


def check_shards(parallel: Parallel, batch_size: int, samples: int | None) -> None:
    """Every process must get at least one sample of every micro-batch."""
    short = samples % batch_size if samples else 0
    for n, what in ((batch_size, "batch_size"), (short, "the last micro-batch of an epoch")):
        if 0 < n < parallel.world:
            raise OptionError(f"{what} has {n} samples, fewer than the {parallel.world} worker "
                              f"processes that split it; choose a batch_size that leaves each "
                              f"process at least one sample (samples={samples})")


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive int, got {value!r}")
    return value


def _positive(name: str, value: Any, kind: type) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise OptionError(f"{name} must be a positive number, got {value!r}")
