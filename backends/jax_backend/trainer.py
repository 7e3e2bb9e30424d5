"""JaxTrainer: a training graph on jax: ``jax.value_and_grad`` of the shared training
function (``hal.backends.common.training``), jitted, and an optax update.

Weights are fp32 masters; bf16 and fp16 cast them to the compute type inside the
differentiated function. An update from one micro-batch is one jitted call (gradient and
update fused); a group of micro-batches adds each one's weighted gradient, one call per
micro-batch (jitted once per shape), then updates once. Dropout's masks come from
``jax.random`` keys folded from the seed, the update step and the micro-batch's position,
so a resumed run (same backend and jax version) draws the masks the uninterrupted one would
have.

With ``spec.parallel`` active (``workers > 1``, strategy "data" or "tensor") the same jitted
functions run SPMD over a device mesh of this process (``parallel.Layout``): the trainer still
receives the global micro-batches and spreads each over the devices itself.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np

from hal.backend import Device
from hal.backends.common.lowering import lower
from hal.backends.common.training import RandomSource, lower_training, training_function
from hal.backends.jax_backend.context import JaxContext
from hal.backends.jax_backend.executable import JaxExecutable
from hal.backends.jax_backend.framework import jax, jnp
from hal.backends.jax_backend.kernels import TABLE
from hal.backends.jax_backend.optim import LossScale, optax_module, optimizer
from hal.backends.jax_backend.parallel import Layout
from hal.backends.jax_backend.state import pack, unpack
from hal.errors import InputError
from hal.trainer import Trainer, TrainGraph, TrainSpec


class JaxRandom(RandomSource):
    """Draws from one ``jax.random`` key: the n-th draw of a call uses ``fold_in(key, n)``."""

    def __init__(self, key: Any):
        super().__init__()
        self.key = key

    def draw(self, index: int, shape: list) -> Any:
        return jax.random.uniform(jax.random.fold_in(self.key, index), tuple(shape), jnp.float32)


class JaxTrainer(Trainer):
    def __init__(self, device: Device, graph: TrainGraph, spec: TrainSpec, jdev: Any,
                 low: Any = None):
        self.device, self.graph, self.spec, self.jdev = device, graph, spec, jdev
        self.tx = optimizer(spec.optimizer)
        self.tp = tp = lower_training(graph, TABLE, "jax")
        # fp32 means fp32: no TF32 on GPUs, no bf16 passes on TPUs
        prec = jax.lax.Precision.HIGHEST if low is None else jax.lax.Precision.DEFAULT
        self.cx = JaxContext(TABLE, prec, low)
        self.fn = training_function(tp, self.cx)
        self._x64 = (lambda: jax.enable_x64(True)) if tp.wide_types else contextlib.nullcontext
        #: the device mesh of a parallel run (None on one device)
        self.layout = Layout(spec.parallel, jdev, graph,
                             {n: tp.initial[n].shape for n in tp.params}) \
            if spec.parallel.active else None
        self._put = (lambda tree: jax.device_put(tree, jdev)) if self.layout is None \
            else self.layout.put
        with self._x64():
            def put(names, dtype=None):
                return self._put({n: tp.initial[n].astype(dtype or tp.initial[n].dtype)
                                  for n in names})

            self.params = put(tp.params, np.float32)
            self.fixed = put(tp.fixed)
            self.stats = put(tp.state)
            # committed to the device as the steps return them: jit compiles once, not twice
            self.opt_state = self._put(self.tx.init(self.params))
            self.scaler = self._put(LossScale.start()) if spec.precision == "fp16" else None
        self.seed = spec.seed
        self.steps = 0
        self._one = jax.jit(self._update_one, donate_argnums=(0, 1))
        self._add = jax.jit(self._accumulate, donate_argnums=(3,))
        self._apply = jax.jit(self._apply_grads, donate_argnums=(0, 1))
        self._zeros = jax.jit(self._zeros_like)
        self._eval: JaxExecutable | None = None

    # -- the jitted pieces ------------------------------------------------------------
    def _grads(self, params, fixed, stats, inputs, seed, step, index, weight, scaler):
        # "rbg": keys derived as threefry does, bits from XLA's RngBitGenerator: the same on
        # one backend and jax version (what resuming needs), and threefry's bit generation
        # took seconds more to compile on CPU per step shape
        key = jax.random.key(seed, impl="rbg")
        key = jax.random.fold_in(jax.random.fold_in(key, step), index)

        def objective(p):
            loss, _, new_stats = self.fn({**p, **fixed}, stats, inputs, JaxRandom(key))
            scaled = loss * weight if scaler is None else loss * weight * scaler.scale
            return scaled, (loss, new_stats)

        (_, (loss, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return loss, grads, new_stats

    def _accumulate(self, params, fixed, stats, acc, inputs, seed, step, index, weight, scaler):
        loss, grads, new_stats = self._grads(params, fixed, stats, inputs, seed, step, index,
                                             weight, scaler)
        return self._pin((loss, jax.tree_util.tree_map(jnp.add, acc, grads), new_stats))

    def _pin(self, tree):
        """Outputs where the parallel layout keeps them (as they came: XLA's partitioner
        could otherwise return a weight in another sharding); unchanged on one device."""
        return tree if self.layout is None else self.layout.pin(tree)

    def _zeros_like(self, tree):
        return self._pin(jax.tree_util.tree_map(jnp.zeros_like, tree))

    def _apply_grads(self, params, opt_state, grads, scaler):
        optax = optax_module()
        if scaler is not None:
            grads = jax.tree_util.tree_map(lambda g: g / scaler.scale, grads)
            finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g))
                                          for g in jax.tree_util.tree_leaves(grads)]))
        updates, new_opt = self.tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if scaler is not None:  # an overflowed update is skipped, its scale halved
            def keep(new, old):
                return jnp.where(finite, new, old)

            new_params = jax.tree_util.tree_map(keep, new_params, params)
            new_opt = jax.tree_util.tree_map(keep, new_opt, opt_state)
            scaler = scaler.adjust(finite)
        return self._pin((new_params, new_opt, scaler))

    def _update_one(self, params, opt_state, fixed, stats, inputs, seed, step, weight, scaler):
        loss, grads, new_stats = self._grads(params, fixed, stats, inputs, seed, step, 0,
                                             weight, scaler)
        params, opt_state, scaler = self._apply_grads(params, opt_state, grads, scaler)
        return self._pin((loss, params, opt_state, new_stats, scaler))

    # -- Trainer ----------------------------------------------------------------------
    def step(self, batches: Sequence[dict[str, np.ndarray]],
             weights: Sequence[float]) -> list[float]:
        if not batches or len(batches) != len(weights):
            raise InputError(f"step needs one weight per micro-batch and at least one; got "
                             f"{len(batches)} batches and {len(weights)} weights")
        feeds = [self._feed(b) for b in batches]
        self._count(feeds)
        if self.layout is not None:
            with self._x64():
                feeds = [self.layout.feed(f) for f in feeds]
        seed, step = np.uint32(self.seed % 2 ** 32), np.int32(self.steps)
        with self._x64():
            if len(feeds) == 1:
                loss, self.params, self.opt_state, self.stats, self.scaler = self._one(
                    self.params, self.opt_state, self.fixed, self.stats, feeds[0], seed, step,
                    np.float32(weights[0]), self.scaler)
                losses = [loss]
            else:
                acc = jax.tree_util.tree_map(jnp.zeros_like, self.params) \
                    if self.layout is None else self._zeros(self.params)
                losses = []
                for i, (feed, w) in enumerate(zip(feeds, weights)):
                    loss, acc, self.stats = self._add(self.params, self.fixed, self.stats, acc,
                                                      feed, seed, step, np.int32(i),
                                                      np.float32(w), self.scaler)
                    losses.append(loss)
                self.params, self.opt_state, self.scaler = self._apply(
                    self.params, self.opt_state, acc, self.scaler)
        self.steps += 1
        return [float(x) for x in losses]

    def _count(self, feeds: list[dict[str, np.ndarray]]) -> None:
        """The batches' copies to a device that is not host memory, and the losses' back."""
        if self.device.info.host_memory:
            return
        moved = self.device.transfers
        arrays = [a for feed in feeds for a in feed.values()]
        moved.h2d_count += len(arrays)
        moved.h2d_bytes += sum(a.nbytes for a in arrays)
        moved.d2h_count += len(feeds)
        moved.d2h_bytes += 4 * len(feeds)

    def _feed(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        plan = self.tp.plan
        missing = [n for n in plan.input_names if n not in batch]
        unknown = [n for n in batch if n not in plan.input_names]
        if missing or unknown:
            raise InputError(f"a training batch needs the inputs {plan.input_names}; "
                             f"missing {missing}, unknown {unknown}")
        return {name: _as_input(name, batch[name], shape, dtype, self.tp.wide_types)
                for name, (shape, dtype) in zip(plan.input_names, plan.input_specs)}

    def evaluate(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        exe = self._eval
        if exe is None:
            names = set(self.tp.params) | set(self.tp.state)
            plan = lower(self.graph.eval_model, TABLE, "jax", params=True, variables=names)
            exe = self._eval = JaxExecutable(self.device, plan, self.cx, self.jdev, jit=True)
            self._eval_params = exe.params
            if self.layout is not None:  # on the mesh with the weights
                with self._x64():
                    self._eval_params = tuple(self.layout.put(p) for p in exe.params)
        current = {**self.params, **self.stats}
        low = self.cx.low
        exe.params = tuple(
            (current[n].astype(low) if low is not None and current[n].dtype == jnp.float32
             else current[n]) if n in current else p
            for n, p in zip(exe.plan.param_names, self._eval_params))
        missing = [n for n in exe.input_names if n not in inputs]
        if missing:
            raise InputError(f"evaluate needs the inputs {exe.input_names}; missing {missing}")
        return exe(*[np.asarray(inputs[n]) for n in exe.input_names])

    def _tree(self) -> dict[str, Any]:
        """Everything ``state`` holds, as one pytree (its paths are the names)."""
        tree = {"param": self.params, "update": self.stats, "opt": self.opt_state,
                "step": np.asarray(self.steps, np.int64),
                "rng": {"seed": np.asarray(self.seed, np.int64)}}
        if self.scaler is not None:
            tree["scale"] = self.scaler._asdict()
        return tree

    def state(self) -> dict[str, np.ndarray]:
        return pack(self._tree())

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        loaded = unpack(self._tree(), state)
        with self._x64():
            self.params, self.stats, self.opt_state = (
                self._put(loaded[k]) for k in ("param", "update", "opt"))
            if self.scaler is not None:
                self.scaler = LossScale(**self._put(loaded["scale"]))
        self.steps = int(loaded["step"])
        self.seed = int(loaded["rng"]["seed"])

    @property
    def description(self) -> dict[str, Any]:
        """How the trainer runs, for a run's report: the device, and for a parallel run its
        mesh, the micro-batches split over it and those run replicated (a size that does not
        divide by the workers), or (tensor) where each weight went."""
        out: dict[str, Any] = {"device": str(self.jdev), "precision": self.spec.precision}
        if self.layout is not None:
            out["parallel"] = self.layout.describe()
        return out

    @property
    def placement(self) -> dict[str, str]:
        """Each trainable weight's place on the mesh (tensor parallel); empty otherwise."""
        return {} if self.layout is None else dict(self.layout.placement)

    def weights(self) -> dict[str, np.ndarray]:
        out = {n: np.asarray(v, np.float32) for n, v in self.params.items()}
        out.update((n, np.asarray(v, np.float32)) for n, v in self.stats.items())
        return out


def _as_input(name: str, value: Any, shape: list | None, dtype: np.dtype,
              wide: bool) -> np.ndarray:
    """A batch's array as the training graph takes it, or an InputError saying why not."""
    a = np.asarray(value)
    if (a.dtype.kind in "iu") != (np.dtype(dtype).kind in "iu") or a.dtype.kind not in "iufb":
        raise InputError(f"training input {name!r} must be {np.dtype(dtype)}, got {a.dtype}")
    if shape is not None and (len(shape) != a.ndim or any(
            d is not None and d != n for d, n in zip(shape, a.shape))):
        want = ["?" if d is None else d for d in shape]
        raise InputError(f"training input {name!r} must have shape {want}, got {list(a.shape)}")
    if np.dtype(dtype) == np.int64 and not wide:  # class indices: jax runs without int64
        if a.size and (a.min() < -2 ** 31 or a.max() >= 2 ** 31):
            raise InputError(f"training input {name!r} holds values beyond 32 bits")
        return a.astype(np.int32)
    return a.astype(dtype, copy=False)
