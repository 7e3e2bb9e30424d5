"""HAL's optimizer names in optax: the optimizers, schedules and clipping are optax's own.

What HAL adds is only the mapping (``OptimizerSpec`` -> an optax chain, meaning what
torch.optim means by the same names) and the dynamic loss scale of fp16 training, written
here because no maintained jax library holds one (jmp, DeepMind's, has had no release since
2023); it follows torch.cuda.amp.GradScaler's rule.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hal.backends.jax_backend.framework import jnp
from hal.errors import OptionError
from hal.trainer import OptimizerSpec


def optax_module() -> Any:
    try:
        import optax
    except ImportError as exc:
        raise OptionError("training on jax needs optax: pip install hal-accel[jax]") from exc
    return optax


def schedule(spec: OptimizerSpec) -> Any:
    """The learning rate by update step, as an optax schedule equal to ``spec.lr_at``."""
    optax = optax_module()
    spec.check()
    warm = spec.warmup_steps
    if spec.schedule == "step":
        main = optax.exponential_decay(spec.lr, max(1, spec.step_size), spec.gamma,
                                       staircase=True)
    elif spec.schedule == "cosine":
        main = optax.cosine_decay_schedule(spec.lr, spec.total_steps - warm)
    else:
        main = optax.constant_schedule(spec.lr)
    if warm <= 1:  # one warm-up step runs at lr * 1/1: no warm-up at all
        return main
    ramp = optax.linear_schedule(spec.lr / warm, spec.lr, warm - 1)
    return optax.join_schedules([ramp, main], [warm])


def optimizer(spec: OptimizerSpec) -> Any:
    """The optax transformation of ``spec``: clipping, then L2 or decoupled decay, then the
    update, as torch.optim's SGD, Adam and AdamW with the same arguments."""
    optax = optax_module()
    lr = schedule(spec)
    b1, b2 = spec.betas
    spec.check()
    if spec.name == "sgd":
        core = [optax.add_decayed_weights(spec.decay)] if spec.decay else []
        core.append(optax.sgd(lr, momentum=spec.momentum or None, nesterov=spec.nesterov))
    elif spec.name == "adam":
        core = [optax.add_decayed_weights(spec.decay)] if spec.decay else []
        core.append(optax.adam(lr, b1=b1, b2=b2, eps=spec.eps))
    elif spec.name == "adamw":
        core = [optax.adamw(lr, b1=b1, b2=b2, eps=spec.eps, weight_decay=spec.decay)]
    else:
        raise OptionError(f"optimizer {spec.name!r} is not one of "
                          f"{list(OptimizerSpec.OPTIMIZERS)}")
    clip = [optax.clip_by_global_norm(spec.clip_norm)] if spec.clip_norm is not None else []
    return optax.chain(*clip, *core)


class LossScale(NamedTuple):
    """fp16's dynamic loss scale: the loss is multiplied by ``scale`` before differentiating,
    the gradients divided by it after. An update whose gradients overflowed is skipped and
    the scale halved; after ``GROWTH_INTERVAL`` finite updates in a row it doubles."""

    scale: Any  # float32 scalar
    good_steps: Any  # int32 scalar: finite updates since the last change

    INITIAL = 2.0 ** 16
    GROWTH_INTERVAL = 2000

    @classmethod
    def start(cls) -> LossScale:
        return cls(jnp.asarray(cls.INITIAL, jnp.float32), jnp.asarray(0, jnp.int32))

    def adjust(self, finite: Any) -> LossScale:
        """The scale after an update whose gradients were ``finite`` (a traced bool)."""
        grow = finite & (self.good_steps + 1 >= self.GROWTH_INTERVAL)
        scale = jnp.where(finite, jnp.where(grow, self.scale * 2, self.scale),
                          jnp.maximum(self.scale / 2, 1.0))
        good = jnp.where(finite & ~grow, self.good_steps + 1, 0)
        return LossScale(scale.astype(jnp.float32), good.astype(jnp.int32))
