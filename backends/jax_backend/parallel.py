"""Data- and tensor-parallel training on jax's own engine: one process, a device mesh.

``hal.train(..., workers=N, strategy="data")`` on a jax device runs in one process over a
``jax.sharding.Mesh`` of ``N`` devices of the device's platform (axis ``"data"``): the
weights, running statistics and optimizer state are replicated (``PartitionSpec()``), each
micro-batch's inputs and targets are split on axis 0 (``PartitionSpec("data")``), and the
trainer's jitted step and update functions run SPMD: XLA's partitioner inserts the
all-reduce of the gradients (and of BatchNorm's batch statistics), so the step computes the
single-device step of the global micro-batch. A micro-batch whose size does not divide by
``N`` (the short last batch of an epoch) runs replicated on every device instead, the same
math, and is counted (``Layout.replicated_batches``).

``strategy="tensor"`` uses the same mesh with the axis ``"model"``: the 2-D weight matrices
that Gemm and MatMul nodes read, of at least ``MIN_SHARDED`` elements, are split over the
axis on their larger dimension (the other one when only it divides by ``N``); everything else
is replicated, batches included, and XLA's partitioner does the rest. ``Layout.placement``
says where each weight went.

On a CPU, XLA's host platform has one device unless ``--xla_force_host_platform_device_count``
is in ``XLA_FLAGS`` when jax initializes (HAL's device probes initialize it), so
``launch`` asks HAL's training loop for a fresh process with that flag. Multi-host runs
(``jax.distributed.initialize``, one process per host) are not supported: every worker is a
device of this process.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from hal.backend import Device
from hal.backends.jax_backend.framework import jax
from hal.errors import OptionError
from hal.trainer import Launch, Parallel, TrainGraph

#: the XLA flag that gives the host platform several devices
COUNT_FLAG = "--xla_force_host_platform_device_count"
#: tensor parallelism splits 2-D weight matrices of at least this many elements
MIN_SHARDED = 1024
STRATEGIES = ("data", "tensor")
AXIS = {"data": "data", "tensor": "model"}


def check(parallel: Parallel) -> None:
    """Raise OptionError unless jax runs ``parallel`` (workers, strategy, one process)."""
    workers = parallel.workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise OptionError(f"workers must be an int >= 1, got {workers!r}")
    if parallel.strategy == "pipeline":
        raise OptionError("jax trains with strategy='data' or 'tensor' (a device mesh); "
                          "pipeline parallelism runs on cpu@torch and cuda@torch")
    if parallel.strategy not in STRATEGIES:
        raise OptionError(f"unknown strategy {parallel.strategy!r}; jax runs one of "
                          f"{list(STRATEGIES)}")
    if parallel.world != 1 or parallel.rank != 0:
        raise OptionError(f"jax runs a parallel training in one process (rank 0 of world 1), "
                          f"its workers being devices of that process; got rank={parallel.rank} "
                          f"world={parallel.world} (multi-host jax is not supported)")


def platform_devices(platform: str) -> list:
    try:
        return list(jax.devices(platform))
    except RuntimeError:
        return []


def launch(device: Device, parallel: Parallel) -> Launch:
    """``Backend.launch_training`` for jax (see the module docstring)."""
    check(parallel)
    n, kind = parallel.workers, device.info.kind
    have = len(platform_devices(kind))
    why = f"{parallel.strategy}-parallel training over {n} {kind} devices in one jax process"
    if have >= n:
        return Launch(processes=1, here=True, why=why)
    if kind != "cpu":
        raise OptionError(f"workers={n} needs {n} {kind} devices; jax sees {have} here. "
                          f"Use workers <= {have}")
    flags = with_device_count(os.environ.get("XLA_FLAGS", ""), n)
    return Launch(processes=1, env={"XLA_FLAGS": flags}, here=False,
                  why=f"{why}: XLA's host device count ({have} now) is fixed when jax "
                      f"initializes, so the run starts in a fresh process with "
                      f"{COUNT_FLAG}={n}")


def with_device_count(flags: str, n: int) -> str:
    """``flags`` (an XLA_FLAGS value) with the host device count set to ``n`` (an earlier
    count removed, every other flag kept)."""
    kept = re.sub(rf"{COUNT_FLAG}(=\S*)?", "", flags).split()
    return " ".join([*kept, f"{COUNT_FLAG}={n}"])


class Layout:
    """Where a parallel trainer's arrays live: the mesh, each weight's sharding, the batches'.

    ``put`` places a pytree (weights, optimizer state, statistics) by the rule ``sharding``;
    ``pin`` constrains a traced pytree the same way inside a jitted function, so the steps
    return their weights where they came from; ``feed`` places a micro-batch.
    """

    def __init__(self, parallel: Parallel, jdev: Any, graph: TrainGraph,
                 shapes: dict[str, tuple]):
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        check(parallel)
        self.strategy, self.workers = parallel.strategy, parallel.workers
        self.axis = AXIS[self.strategy]
        found = platform_devices(jdev.platform)
        devices = [jdev] + [d for d in found if d != jdev]
        if len(devices) < self.workers:
            hint = (f"set XLA_FLAGS={COUNT_FLAG}={self.workers} before jax starts, or train "
                    f"through hal.train(..., workers={self.workers}), which does"
                    if jdev.platform == "cpu" else f"use workers <= {len(devices)}")
            raise OptionError(f"workers={self.workers} needs {self.workers} {jdev.platform} "
                              f"devices; jax sees {len(found)} here: {hint}")
        self.devices = devices[:self.workers]
        self.mesh = Mesh(np.array(self.devices), (self.axis,))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.split = NamedSharding(self.mesh, PartitionSpec(self.axis))
        self.sharded_batches = 0
        self.replicated_batches = 0
        self._specs: dict[str, Any] = {}  # weight name -> its NamedSharding, when split
        self._shapes = shapes
        self.placement: dict[str, str] = {}
        if self.strategy == "tensor":
            self._place_matrices(graph, shapes, NamedSharding, PartitionSpec)

    # -- tensor parallelism -----------------------------------------------------------
    def _place_matrices(self, graph: TrainGraph, shapes: dict[str, tuple], named, spec) -> None:
        matrices = set()
        for node in graph.model.graph:
            if node.op_type in ("Gemm", "MatMul"):
                matrices.update(v.name for v in list(node.inputs)[:2] if v is not None)
        n = self.workers
        for name, shape in shapes.items():
            if name not in matrices or len(shape) != 2:
                self.placement[name] = "replicated"
                continue
            size = int(np.prod(shape))
            dims = [d for d in sorted(range(2), key=lambda d: -shape[d]) if shape[d] % n == 0]
            if size < MIN_SHARDED or not dims:
                why = (f"fewer than {MIN_SHARDED} elements" if size < MIN_SHARDED else
                       f"no dimension divides by {n}")
                self.placement[name] = f"replicated ({why})"
                continue
            d = dims[0]
            parts = [None, None]
            parts[d] = self.axis
            self._specs[name] = named(self.mesh, spec(*parts))
            piece = list(shape)
            piece[d] //= n
            self.placement[name] = (f"split on dim {d} over {self.axis!r}: {list(shape)} -> "
                                    f"{piece} per device")

    # -- placing ----------------------------------------------------------------------
    def sharding(self, path: tuple, leaf: Any) -> Any:
        """The sharding of a leaf found at ``path`` in a pytree of the trainer (weights,
        gradients, optimizer moments are keyed by the weight's name)."""
        for key in reversed(path):
            name = getattr(key, "key", None)
            if isinstance(name, str):
                spec = self._specs.get(name)
                if spec is not None and tuple(np.shape(leaf)) == tuple(self._shapes[name]):
                    return spec
                break
        return self.replicated

    def put(self, tree: Any) -> Any:
        shardings = jax.tree_util.tree_map_with_path(self.sharding, tree)
        return jax.device_put(tree, shardings)

    def pin(self, tree: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: jax.lax.with_sharding_constraint(leaf, self.sharding(path, leaf)),
            tree)

    def feed(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        """A micro-batch on the mesh: split on axis 0 (data parallel, when its size divides
        by the workers), else replicated."""
        if self.strategy == "data":
            sizes = {a.shape[0] if a.ndim else None for a in feed.values()}
            if len(sizes) == 1 and None not in sizes and sizes.pop() % self.workers == 0:
                self.sharded_batches += 1
                return jax.device_put(feed, self.split)
            self.replicated_batches += 1
        return jax.device_put(feed, self.replicated)

    def describe(self) -> dict[str, Any]:
        """The layout in words and counts, for a run's report."""
        out: dict[str, Any] = {
            "strategy": self.strategy, "workers": self.workers,
            "mesh": f"{self.axis}: {self.workers} x {self.devices[0].platform}",
            "devices": [str(d) for d in self.devices]}
        if self.strategy == "data":
            out.update(sharded_batches=self.sharded_batches,
                       replicated_batches=self.replicated_batches,
                       note=f"a micro-batch whose size does not divide by {self.workers} runs "
                            f"replicated on every device (the same math, no speed-up)")
        else:
            out["placement"] = dict(self.placement)
        return out
