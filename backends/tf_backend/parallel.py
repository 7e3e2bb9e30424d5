"""Data-parallel training on tf: ``tf.distribute.MirroredStrategy`` in one process.

- Devices: N GPUs, or N logical CPU devices. TensorFlow splits a CPU into logical devices
  only before its runtime starts, so ``HAL_TF_CPU_DEVICES=N`` in the environment is applied
  where the tf backend first imports TensorFlow (``framework.import_tf``, before HAL's device
  probe initializes the runtime). ``launch`` (``TfBackend.launch_training``) answers
  ``here=True`` when the process already sees the devices, and otherwise asks HAL's training
  loop for one fresh process with that variable set. Logical CPU devices share the host's
  cores: they run the data-parallel computation, not faster (lenet, batch 64, a busy 2-core
  machine: 8.7 ms per step on one device, 9.8 ms on two).
- One process, ``rank`` 0 of ``world`` 1: the trainer (``training.TfTrainer``) receives the
  global micro-batches and spreads each over the replicas itself (``Replicas``).
  MultiWorkerMirroredStrategy (several hosts or processes) is out of scope: ``address``,
  ``rank`` and ``world`` are not used here.
- "pipeline" runs on torch and "tensor" on jax; tf refuses them (OptionError).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hal.backend import Device
from hal.errors import BackendError, InputError, OptionError
from hal.trainer import Launch, Parallel

ENV = "HAL_TF_CPU_DEVICES"

_OTHERS = {"pipeline": "torch (e.g. device 'cpu@torch' or 'cuda@torch')",
           "tensor": "jax (e.g. device 'cpu@jax' or 'gpu@jax')"}


def requested_cpu_devices() -> int | None:
    """``HAL_TF_CPU_DEVICES`` as a count, None when unset or empty."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise OptionError(f"{ENV}={text!r} must be a whole number >= 1 (the logical CPU "
                          f"devices TensorFlow makes for data-parallel training); unset it "
                          f"for one")
    return count


def configure_cpu_devices(tf: Any) -> None:
    """Split the CPU into ``HAL_TF_CPU_DEVICES`` logical devices, before TensorFlow's runtime
    starts (``framework.import_tf`` calls this once). A runtime already started with another
    count is a BackendError: the setting could not take effect."""
    count = requested_cpu_devices()
    if count is None:
        return
    cpus = tf.config.list_physical_devices("CPU")
    if not cpus:
        raise BackendError(f"{ENV}={count}: TensorFlow lists no CPU device to split")
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    try:
        tf.config.set_logical_device_configuration(cpus[0], wanted)
    except RuntimeError:  # the runtime started before HAL imported TensorFlow
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise BackendError(
                f"{ENV}={count} asks for {count} logical CPU devices, but TensorFlow's runtime "
                f"was started before HAL could configure it and has {have}; set {ENV} before "
                f"anything in the process runs TensorFlow (or let hal.train start the "
                f"process)") from None


def check(parallel: Parallel) -> None:
    """OptionError unless tf runs ``parallel``: "data" with an int ``workers`` >= 1."""
    workers = parallel.workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise OptionError(f"workers must be an int >= 1, got {workers!r}")
    if parallel.strategy in _OTHERS:
        raise OptionError(f"strategy {parallel.strategy!r} runs on "
                          f"{_OTHERS[parallel.strategy]}; tf runs strategy 'data' "
                          f"(tf.distribute.MirroredStrategy)")
    if parallel.strategy != "data":
        raise OptionError(f"unknown strategy {parallel.strategy!r}; use one of "
                          f"{list(Parallel.STRATEGIES)} (tf runs 'data')")


def launch(device: Device, parallel: Parallel) -> Launch:
    """``TfBackend.launch_training``: here when the process sees ``workers`` devices of
    ``device``'s kind; on CPU otherwise one process with ``HAL_TF_CPU_DEVICES=workers``."""
    from hal.backends.tf_backend.framework import import_tf

    check(parallel)
    workers = parallel.workers
    if workers == 1:
        return Launch()
    kind = device.info.kind
    tf = import_tf()
    if kind == "cpu":
        have = len(tf.config.list_logical_devices("CPU"))
        if have >= workers:
            return Launch(why=f"tf.distribute.MirroredStrategy over {workers} of this "
                              f"process's {have} logical CPU devices")
        if requested_cpu_devices() == workers:
            raise BackendError(f"{ENV}={workers} is set but TensorFlow shows {have} logical "
                               f"CPU device(s); something configured TensorFlow's CPU before "
                               f"HAL did")
        return Launch(processes=1, env={ENV: str(workers)}, here=False,
                      why=f"tf's MirroredStrategy needs {workers} logical CPU devices, which "
                          f"TensorFlow makes only before it starts: one process with "
                          f"{ENV}={workers}")
    if kind == "gpu":
        chosen = devices(tf, device, workers)  # enough GPUs, or OptionError
        return Launch(why=f"tf.distribute.MirroredStrategy over {', '.join(chosen)} in this "
                          f"process")
    raise OptionError(f"data-parallel training on tf runs on cpu and gpu devices "
                      f"(MirroredStrategy), not on {device.string}")


def devices(tf: Any, device: Device, workers: int) -> list[str]:
    """The ``workers`` TensorFlow devices the replicas run on: logical CPUs 0.., or GPUs from
    ``device``'s index on."""
    kind = device.info.kind
    if kind not in ("cpu", "gpu"):
        raise OptionError(f"data-parallel training on tf runs on cpu and gpu devices "
                          f"(MirroredStrategy), not on {device.string}")
    logical = [d.name for d in tf.config.list_logical_devices(kind.upper())]
    start = device.info.index if kind == "gpu" else 0
    chosen = logical[start:start + workers]
    if len(chosen) < workers:
        if kind == "gpu":
            raise OptionError(f"workers={workers} on {device.string} needs {workers} GPUs from "
                              f"gpu:{start} on; TensorFlow sees {len(logical)} GPU(s): use "
                              f"workers <= {max(1, len(logical) - start)}")
        raise OptionError(f"workers={workers} on {device.string} needs {workers} logical CPU "
                          f"devices; TensorFlow has {len(logical)}: set {ENV}={workers} "
                          f"before TensorFlow starts (hal.train does it by starting a process)")
    return chosen


class Replicas:
    """A MirroredStrategy over ``workers`` devices and the split of a global micro-batch."""

    def __init__(self, tf: Any, device: Device, workers: int):
        self.tf = tf
        self.devices = devices(tf, device, workers)
        self.count = workers
        self.strategy = tf.distribute.MirroredStrategy(devices=self.devices)

    def split(self, arrays: dict[str, np.ndarray]) -> tuple[list[dict], list[float]]:
        """``arrays`` (one micro-batch, samples along axis 0) as one dict of tensors per
        replica, on its device (``np.array_split``: sizes differ by at most one), and each
        replica's share of the samples. A replica left without samples (fewer samples than
        replicas) gets the first sample with share 0, so it adds nothing."""
        sizes = {name: x.shape[0] if x.ndim else None for name, x in arrays.items()}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise InputError(f"data-parallel training splits every input along its first "
                             f"axis, so they need the same number of samples; got {sizes}")
        total = next(iter(sizes.values()))
        if total < 1:
            raise InputError("a training micro-batch needs at least one sample")
        parts: list[dict] = [{} for _ in range(self.count)]
        shares = [0.0] * self.count
        for name, x in arrays.items():
            for r, piece in enumerate(np.array_split(x, self.count)):
                if len(piece) == 0:
                    piece = x[:1]
                else:
                    shares[r] = len(piece) / total
                with self.tf.device(self.devices[r]):
                    parts[r][name] = self.tf.constant(piece)
        return parts, shares

    def distribute(self, parts: list, *per_replica: Any) -> Any:
        """Inside a step function: (inputs, then each of ``per_replica``'s rows) as
        distributed values, replica r's from ``parts[r]`` and row r."""
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: (parts[ctx.replica_id_in_sync_group],
                         *(v[ctx.replica_id_in_sync_group] for v in per_replica)))

    def total(self, value: Any) -> Any:
        """The sum over replicas of a per-replica value (nested structures too)."""
        op = self.tf.distribute.ReduceOp.SUM
        return self.tf.nest.map_structure(
            lambda v: self.strategy.reduce(op, v, axis=None), value)
