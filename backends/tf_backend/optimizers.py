"""HAL's ``OptimizerSpec`` as Keras's own optimizers and schedules, in the spec's meaning.

- ``sgd``: ``keras.optimizers.SGD`` (momentum, Nesterov). Keras keeps the learning rate inside
  its velocity (``v = momentum * v - lr * g``), torch and optax outside it (``b = momentum *
  b + g``, step ``lr * b``): the same updates at a constant rate; under a schedule Keras's past
  steps keep the rate they were taken with.
- ``adam``, ``adamw``: ``keras.optimizers.Adam``, ``AdamW``. Keras adds ``epsilon`` to
  ``sqrt(v)`` before ``v``'s bias correction, torch and optax after it; HAL's ``eps`` means
  theirs, so ``epsilon`` is a variable that ``set_epsilon`` sets to ``eps * sqrt(1 - beta2 **
  t)`` before update ``t``, which makes Keras's update torch's exactly.
- Weight decay: sgd and adam add ``decay * w`` to the clipped gradient (torch's L2: the
  trainer does it, Keras's ``weight_decay`` is decoupled); adamw's is Keras's decoupled
  ``w -= lr * decay * w``, torch's AdamW.
- Schedules: Keras's ``ExponentialDecay(staircase=True)`` ("step"), ``CosineDecay``
  ("cosine"), a constant; HAL's linear warm-up (``WarmUp``) before any of them, so the rate of
  update ``t`` (Keras's ``iterations``) is ``OptimizerSpec.lr_at(t)``.
"""

from __future__ import annotations

from typing import Any

from hal.backends.tf_backend.framework import import_keras, tf
from hal.trainer import OptimizerSpec

keras = import_keras()


class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """``lr * (t + 1) / steps`` for the first ``steps`` updates, then ``after(t - steps)``."""

    def __init__(self, lr: float, steps: int, after: Any):
        self.lr = lr
        self.steps = steps
        self.after = after

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rest = _rate(self.after, tf.maximum(step - self.steps, 0.0))
        return tf.where(step < self.steps, self.lr * (step + 1) / self.steps, rest)

    def get_config(self) -> dict:
        return {"lr": self.lr, "steps": self.steps, "after": self.after}


def _rate(schedule: Any, step):
    if callable(schedule):
        return tf.cast(schedule(step), tf.float32)
    return tf.constant(schedule, tf.float32)


def schedule(spec: OptimizerSpec) -> Any:
    """The learning rate Keras is given: a float or a schedule of Keras's iterations."""
    spec.check()
    after: Any = spec.lr
    if spec.schedule == "step":
        after = keras.optimizers.schedules.ExponentialDecay(
            spec.lr, max(1, spec.step_size), spec.gamma, staircase=True)
    elif spec.schedule == "cosine":
        after = keras.optimizers.schedules.CosineDecay(
            spec.lr, spec.total_steps - spec.warmup_steps, alpha=0.0)
    return WarmUp(spec.lr, spec.warmup_steps, after) if spec.warmup_steps else after


def build(spec: OptimizerSpec, loss_scaling: bool = False) -> Any:
    """A Keras optimizer for ``spec`` (clipping and L2 are the trainer's, see the module),
    named by it: its variables' paths are the state's names, the same in every trainer.
    ``loss_scaling``: inside Keras's ``LossScaleOptimizer`` (dynamic loss scaling, fp16)."""
    spec.check()
    opt = _optimizer(spec, schedule(spec))
    if loss_scaling:
        return keras.optimizers.LossScaleOptimizer(opt, name="loss_scale")
    return opt


def _optimizer(spec: OptimizerSpec, lr: Any) -> Any:
    if spec.name == "sgd":
        return keras.optimizers.SGD(lr, momentum=spec.momentum, nesterov=spec.nesterov,
                                    name="sgd")
    b1, b2 = spec.betas
    if spec.name == "adam":
        opt = keras.optimizers.Adam(lr, beta_1=b1, beta_2=b2, name="adam")
    else:
        opt = keras.optimizers.AdamW(lr, weight_decay=spec.decay, beta_1=b1, beta_2=b2,
                                     name="adamw")
    opt.epsilon = tf.Variable(spec.eps, trainable=False, dtype=tf.float32, name="epsilon")
    return opt


def set_epsilon(opt: Any, spec: OptimizerSpec) -> None:
    """Before an update, inside the step function: Keras's epsilon for torch's ``eps``."""
    opt = getattr(opt, "inner_optimizer", opt)
    if isinstance(getattr(opt, "epsilon", None), tf.Variable):
        t = tf.cast(opt.iterations + 1, tf.float32)
        opt.epsilon.assign(spec.eps * tf.sqrt(1.0 - tf.pow(float(spec.betas[1]), t)))


def l2(spec: OptimizerSpec) -> float:
    """The decay the trainer adds to the gradient (sgd, adam); adamw decays in Keras."""
    return spec.decay if spec.name in ("sgd", "adam") else 0.0
