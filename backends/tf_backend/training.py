"""The tf trainer: a training graph on the shared lowering, differentiated by
``tf.GradientTape`` and updated by Keras's optimizers (``optimizers``).

- Weights: trainable float initializers are ``tf.Variable``s (fp32 master weights: in bf16
  and fp16 the graph casts them to the compute type, so their gradients are fp32); running
  statistics are variables assigned the graph's updates after each micro-batch, in the same
  compiled call; frozen weights are constants.
- ``step``: one micro-batch is one call of one ``tf.function`` (gradient and update);
  several add each one's weighted gradient to a sum, one call each, then one update call.
  XLA (``jit_compile``) where the backend chose it: gpu and tpu by default, cpu on request
  (``TfBackend.compile_training`` says why).
- Dropout: stateless random ops keyed by (seed, update step, micro-batch, draw), so a resumed
  run draws the masks the uninterrupted one would have, with no generator state to save
  (XLA's stateless draws differ from the graph executor's: a run keeps one of them).
- fp16: Keras's ``LossScaleOptimizer`` (dynamic loss scaling). The gradient is that of the
  scaled loss; clipping and L2 act on it with the scale folded in (clip at ``clip * scale``,
  add ``decay * scale * w``), and the optimizer unscales it, skips an update that is not
  finite and adapts the scale.
- Data parallel (``spec.parallel``: strategy "data", workers > 1): a
  ``tf.distribute.MirroredStrategy`` over ``workers`` devices (``parallel.Replicas``). The
  variables and the Keras optimizer are made under its scope (mirrored). Each global
  micro-batch is split along its samples (``np.array_split``: a batch of 63 is 32 + 31) and
  handed to the replicas by ``experimental_distribute_values_from_function``; ``strategy.run``
  computes each replica's gradient of its own mean loss times its share of the samples
  (n_r / n) and the micro-batch's weight, and ``strategy.reduce(SUM)`` adds them: the
  gradient of the global micro-batch's mean loss, exactly. Clipping, L2 and the update then
  run once, in cross-replica context, on that sum: Keras's own all-reduce (a SUM, applied
  only when ``apply`` is called inside ``strategy.run``) never runs, so nothing is summed or
  averaged twice. The returned loss is the sample-weighted sum of the replicas' losses (the
  global mean). Without BatchNorm or Dropout the updates are the single-device ones (to
  float rounding: 20 steps of a tanh MLP stayed within 1e-6 relative, sgd and adam; a net
  with ReLU or MaxPool ties can flip one when the split batch rounds differently, and then
  drifts further). BatchNorm normalizes each replica by its own batch statistics (as torch
  DDP without SyncBatchNorm), and its running statistics take the sample-weighted mean of
  the replicas' updates: the running mean moves as the single-device one would toward the
  global batch's mean, the running variance misses the spread between the replicas' means.
  Dropout: each replica draws its own masks (the replica index in the key), repeatable,
  not the single-device masks. XLA is off (``TfBackend.compile_training`` refuses
  xla=True: on logical CPU devices XLA refused the other replicas' variables, whether
  compiling the whole step or each replica's part; not tried on GPUs), and fp16 (loss
  scaling under the strategy, untested) is refused. A replica left without samples (a
  micro-batch smaller than ``workers``) computes on one copied sample with share 0.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from hal.backend import Device
from hal.backends.common.lowering import lower
from hal.backends.common.trace import Trace, traced_function
from hal.backends.common.training import RandomSource, lower_training, training_function
from hal.backends.tf_backend import optimizers, parallel
from hal.backends.tf_backend.context import TfContext
from hal.backends.tf_backend.framework import tf
from hal.backends.tf_backend.kernels import TABLE
from hal.backends.tf_backend.layout import ChannelsLastTrace
from hal.errors import InputError, ModelError
from hal.trainer import Trainer, TrainGraph, TrainSpec


class StatelessRandom(RandomSource):
    """Draws of one micro-batch: ``key`` is (seed, update step, micro-batch index)."""

    def __init__(self, key: Any):
        super().__init__()
        self.key = tf.random.experimental.stateless_fold_in(key[:2], key[2])

    def draw(self, index: int, shape: list) -> Any:
        seed = tf.random.experimental.stateless_fold_in(self.key, index)
        size = tf.stack([tf.cast(d, tf.int32) for d in shape])
        return tf.random.stateless_uniform(size, seed, dtype=tf.float32)


class _Concrete:
    """A tf.function traced on its first call, then called as its concrete function: a step
    skips the polymorphic dispatch (about 0.25 ms of a 3 ms mlp step), and a function never
    called (accumulation's, without accumulate=) is never traced."""

    def __init__(self, fn: Any):
        self.fn, self.concrete = fn, None

    def __call__(self, *args):
        if self.concrete is None:
            self.concrete = self.fn.get_concrete_function()
        return self.concrete(*args)


class TfTrainer(Trainer):
    def __init__(self, device: Device, graph: TrainGraph, spec: TrainSpec, xla: bool,
                 nhwc: bool):
        self.device = device
        self.spec = spec
        self.tf_device = tf_device = device.backend.tf_device(device)
        self.tp = tp = lower_training(graph, TABLE, "tf")
        low = {"fp32": None, "bf16": tf.bfloat16, "fp16": tf.float16}[spec.precision]
        self.cx = TfContext(TABLE, low)
        self.trace = ChannelsLastTrace if nhwc else Trace
        self.loss_fn = training_function(tp, self.cx, self.trace)
        self.l2 = optimizers.l2(spec.optimizer)
        names = _variable_names(tp.params + tp.state)
        workers = spec.parallel.workers
        self.replicas = (parallel.Replicas(tf, device, workers)
                         if spec.parallel.strategy == "data" and workers > 1 else None)
        with self.replicas.strategy.scope() if self.replicas else tf.device(tf_device):
            self.params = {n: _variable(tp.initial[n], names[n], True) for n in tp.params}
            self.running = {n: _variable(tp.initial[n], names[n], False) for n in tp.state}
            self.opt = optimizers.build(spec.optimizer, loss_scaling=spec.precision == "fp16")
            self.opt.build(list(self.params.values()))
        with tf.device(tf_device):
            self.fixed = {n: tf.constant(tp.initial[n]) for n in tp.fixed}
            self.zeros = [tf.zeros_like(v) for v in self.params.values()]
        self.updates = 0
        self._compile(xla)
        self.evaluator = Evaluator(graph, self, xla)

    # -- the compiled calls -------------------------------------------------------------
    def _compile(self, xla: bool) -> None:
        inputs = {n: tf.TensorSpec(shape, tf.as_dtype(dtype), name=_tf_name(n))
                  for n, (shape, dtype) in zip(self.tp.plan.input_names,
                                               self.tp.plan.input_specs)}
        grads = [tf.TensorSpec(v.shape, v.dtype) for v in self.params.values()]
        key, weight = tf.TensorSpec([3], tf.int64), tf.TensorSpec([], tf.float32)

        def compiled(fn, *signature):
            def on_device(*args):
                with tf.device(self.tf_device):
                    return fn(*args)
            return _Concrete(tf.function(on_device, input_signature=list(signature),
                                         jit_compile=xla, autograph=False))

        if self.replicas:  # strategy.run places each replica's part on its own device
            count = self.replicas.count
            feeds = [inputs] * count
            keys, shares = tf.TensorSpec([count, 3], tf.int64), tf.TensorSpec([count],
                                                                              tf.float32)

            def replicated(fn, *signature):
                return _Concrete(tf.function(fn, input_signature=list(signature),
                                             autograph=False))

            self.fused = replicated(self._fused_replicated, feeds, keys, shares, weight)
            self.accumulate = replicated(self._accumulate_replicated, grads, feeds, keys,
                                         shares, weight)
            self.apply = replicated(self._apply, grads)
            return
        self.fused = compiled(self._fused, inputs, key, weight)
        self.accumulate = compiled(self._accumulate, grads, inputs, key, weight)
        self.apply = compiled(self._apply, grads)

    def _gradients(self, inputs: dict, key: Any, weight: Any) -> tuple:
        """(loss, the gradient of loss * weight, the running statistics' new values)."""
        trainable = list(self.params.values())
        with tf.GradientTape() as tape:
            loss, _, new_state = self.loss_fn({**self.params, **self.fixed}, self.running,
                                              inputs, StatelessRandom(key))
            objective = tf.cast(loss, tf.float32) * weight * self._scale()
        grads = tape.gradient(objective, trainable,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        new_state = {name: tf.cast(value, self.running[name].dtype)
                     for name, value in new_state.items()}
        return loss, grads, new_state

    def _assign_state(self, new_state: dict) -> None:
        for name, value in new_state.items():
            self.running[name].assign(value)

    def _fused(self, inputs: dict, key: Any, weight: Any):
        loss, grads, new_state = self._gradients(inputs, key, weight)
        self._assign_state(new_state)
        self._apply(grads)
        return loss

    def _accumulate(self, total: list, inputs: dict, key: Any, weight: Any):
        loss, grads, new_state = self._gradients(inputs, key, weight)
        self._assign_state(new_state)
        return loss, [t + g for t, g in zip(total, grads)]

    # -- data parallel (MirroredStrategy; see the module docstring) ----------------------
    def _replica(self, inputs: dict, key: Any, share: Any, weight: Any) -> tuple:
        """One replica's part: its loss, gradient and running statistics, each times its
        share of the micro-batch's samples, so that their sums over replicas are the global
        micro-batch's mean loss, its gradient (times ``weight``) and the weighted mean."""
        loss, grads, new_state = self._gradients(inputs, key, weight * share)
        return (tf.cast(loss, tf.float32) * share, grads,
                {name: value * tf.cast(share, value.dtype) for name, value in new_state.items()})

    def _replicated_gradients(self, feeds: list, keys: Any, shares: Any, weight: Any) -> tuple:
        replicas = self.replicas
        inputs, key, share = replicas.distribute(feeds, keys, shares)
        loss, grads, new_state = replicas.strategy.run(self._replica,
                                                       args=(inputs, key, share, weight))
        loss, grads, new_state = replicas.total((loss, list(grads), new_state))
        self._assign_state(new_state)
        return loss, grads

    def _fused_replicated(self, feeds: list, keys: Any, shares: Any, weight: Any):
        loss, grads = self._replicated_gradients(feeds, keys, shares, weight)
        self._apply(grads)
        return loss

    def _accumulate_replicated(self, total: list, feeds: list, keys: Any, shares: Any,
                               weight: Any):
        loss, grads = self._replicated_gradients(feeds, keys, shares, weight)
        return loss, [t + g for t, g in zip(total, grads)]

    def _apply(self, grads: list) -> None:
        spec = self.spec.optimizer
        trainable = list(self.params.values())
        scale = self._scale()
        if spec.clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, spec.clip_norm * scale)
        if self.l2:
            grads = [g + self.l2 * scale * w for g, w in zip(grads, trainable)]
        optimizers.set_epsilon(self.opt, spec)
        self.opt.apply(grads, trainable)

    def _scale(self):
        return self.opt.dynamic_scale if self.spec.precision == "fp16" else 1.0

    # -- Trainer ------------------------------------------------------------------------
    def step(self, batches: Sequence[dict[str, np.ndarray]],
             weights: Sequence[float]) -> list[float]:
        if len(batches) != len(weights) or not batches:
            raise InputError(f"step takes one weight per micro-batch and at least one; got "
                             f"{len(batches)} batches and {len(weights)} weights")
        if self.replicas:
            return self._step_replicated(batches, weights)
        with tf.device(self.tf_device):
            feeds = [self._feed(b) for b in batches]
            keys = [tf.constant([self.spec.seed, self.updates, i], tf.int64)
                    for i in range(len(batches))]
            ws = [tf.constant(w, tf.float32) for w in weights]
            if len(batches) == 1:
                losses = [self.fused(feeds[0], keys[0], ws[0])]
            else:
                total, losses = self.zeros, []
                for feed, key, w in zip(feeds, keys, ws):
                    loss, total = self.accumulate(total, feed, key, w)
                    losses.append(loss)
                self.apply(total)
        self.updates += 1
        _count_copies(self.device, [t for f in feeds for t in f.values()], losses)
        return [float(loss) for loss in losses]

    def _step_replicated(self, batches: Sequence[dict[str, np.ndarray]],
                         weights: Sequence[float]) -> list[float]:
        count = self.replicas.count
        sent, losses = [], []
        total = self.zeros
        for i, (batch, w) in enumerate(zip(batches, weights)):
            parts, shares = self.replicas.split(self._arrays(batch))
            sent += [t for part in parts for t in part.values()]
            with tf.device(self.tf_device):
                keys = tf.constant([[self.spec.seed, self.updates, i * count + r]
                                    for r in range(count)], tf.int64)
                args = (keys, tf.constant(shares, tf.float32), tf.constant(w, tf.float32))
            if len(batches) == 1:
                losses.append(self.fused(parts, *args))
            else:
                loss, total = self.accumulate(total, parts, *args)
                losses.append(loss)
        if len(batches) > 1:
            self.apply(total)
        self.updates += 1
        _count_copies(self.device, sent, losses)
        return [float(loss) for loss in losses]

    def _feed(self, batch: dict[str, np.ndarray]) -> dict:
        return {name: tf.constant(x) for name, x in self._arrays(batch).items()}

    def _arrays(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's inputs from ``batch``, checked, in the graph's dtypes."""
        missing = [n for n in self.tp.inputs if n not in batch]
        if missing:
            raise InputError(f"a training batch needs the inputs {self.tp.inputs}; "
                             f"{missing} missing (it has {sorted(batch)})")
        out = {}
        for name, (shape, dtype) in zip(self.tp.plan.input_names, self.tp.plan.input_specs):
            x = np.asarray(batch[name])
            if x.dtype != dtype and not (x.dtype.kind == dtype.kind and x.dtype.kind in "iu"):
                raise InputError(f"training input {name!r} is {x.dtype}, the graph takes {dtype}")
            if shape is not None and (len(shape) != x.ndim or any(
                    d is not None and d != s for d, s in zip(shape, x.shape))):
                raise InputError(f"training input {name!r} has shape {x.shape}, the graph "
                                 f"takes {['N' if d is None else d for d in shape]}")
            out[name] = x.astype(dtype, copy=False)
        return out

    def evaluate(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        xs, ys = self.evaluator(inputs)
        _count_copies(self.device, xs, ys)
        return [y.numpy() for y in ys]

    @property
    def description(self) -> dict:
        out = {"device": self.tf_device, "precision": self.spec.precision}
        if self.replicas:
            out["parallel"] = {"engine": "tf.distribute.MirroredStrategy",
                               "devices": list(self.replicas.devices)}
        return out

    def weights(self) -> dict[str, np.ndarray]:
        return {n: v.numpy().astype(np.float32)
                for n, v in {**self.params, **self.running}.items()}

    def set_params(self, arrays: dict[str, np.ndarray]) -> None:
        unknown = [n for n in arrays if n not in self.params]
        if unknown:
            raise InputError(f"no trainable parameter(s) {unknown} in this model")
        for name, a in arrays.items():
            v = self.params[name]
            v.assign(np.asarray(a, v.dtype.as_numpy_dtype))

    def _state_variables(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"param/{n}": v for n, v in self.params.items()}
        out.update((f"update/{n}", v) for n, v in self.running.items())
        out.update((f"opt/{v.path}", v) for v in self.opt.variables)
        return out

    def state(self) -> dict[str, np.ndarray]:
        out = {name: np.array(v.numpy()) for name, v in self._state_variables().items()}
        out["step"] = np.asarray(self.updates, np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        variables = self._state_variables()
        problems = [f"{name!r} is missing" for name in [*variables, "step"]
                    if name not in state]
        problems += [f"{name!r} has shape {np.shape(state[name])}, this model's is "
                     f"{tuple(v.shape)}" for name, v in variables.items()
                     if name in state and np.shape(state[name]) != tuple(v.shape)]
        problems += [f"{name!r} is not part of this model's training state" for name in state
                     if name.split("/")[0] in ("param", "update", "opt")
                     and name not in variables]
        if problems:
            raise InputError("the training state does not fit this trainer (tf, "
                             f"{self.spec.optimizer.name}): " + "; ".join(problems))
        for name, v in variables.items():
            v.assign(np.asarray(state[name]).astype(np.asarray(v.numpy()).dtype))
        self.updates = int(np.asarray(state["step"]))


class Evaluator:
    """The eval graph on the trainer's current weights, compiled once (weights read from the
    variables at each call)."""

    def __init__(self, graph: TrainGraph, trainer: TfTrainer, xla: bool):
        names = set(trainer.params) | set(trainer.running)
        plan = lower(graph.eval_model, TABLE, "tf", params=True, variables=names)
        if plan.static_inputs:
            raise ModelError("the eval graph's inputs fix shapes inside it; tf evaluates "
                             "graphs whose inputs are data")
        self.plan = plan
        current = {**trainer.params, **trainer.running}
        values = [current.get(n, v) for n, v in zip(plan.param_names, plan.param_values)]
        f = traced_function(plan, trainer.cx, {}, trainer.trace)

        def run(*xs):
            with tf.device(trainer.tf_device):
                return f(values, *xs)

        signature = [tf.TensorSpec(s, tf.as_dtype(d)) for s, d in plan.input_specs]
        self.fn = tf.function(run, input_signature=signature, jit_compile=xla, autograph=False)
        self.tf_device = trainer.tf_device

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[list, list]:
        """(the inputs on the device, the outputs there)."""
        missing = [n for n in self.plan.input_names if n not in inputs]
        if missing:
            raise InputError(f"evaluate needs the inputs {self.plan.input_names}; {missing} "
                             f"missing")
        with tf.device(self.tf_device):
            xs = [tf.constant(np.asarray(inputs[n], dtype))
                  for n, (_, dtype) in zip(self.plan.input_names, self.plan.input_specs)]
            return xs, list(self.fn(*xs))


def _count_copies(device: Device, sent: list, received: list) -> None:
    """The copies of tensors ``sent`` to ``device`` and ``received`` back, in its transfer
    counts, where it is not host memory."""
    if device.info.host_memory:
        return
    moved = device.transfers
    moved.h2d_count += len(sent)
    moved.h2d_bytes += sum(t.dtype.size * t.shape.num_elements() for t in sent)
    moved.d2h_count += len(received)
    moved.d2h_bytes += sum(t.dtype.size * t.shape.num_elements() for t in received)


def _variable(value: np.ndarray, name: str, trainable: bool):
    master = np.float64 if value.dtype == np.float64 else np.float32
    return tf.Variable(value.astype(master), trainable=trainable, name=name)


def _tf_name(name: str) -> str:
    """``name`` in the characters TensorFlow accepts in names."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
    return name if re.match(r"[A-Za-z0-9.]", name) else "v" + name


def _variable_names(names: list[str]) -> dict[str, str]:
    """Distinct TensorFlow names for ``names`` (Keras names its slots after them)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        base = candidate = _tf_name(name)
        i = 1
        while candidate in taken:
            candidate, i = f"{base}_{i}", i + 1
        taken.add(candidate)
        out[name] = candidate
    return out
