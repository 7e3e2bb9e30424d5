"""The training side of the backend vocabulary: what HAL's training loop asks of a backend.

HAL builds one training graph for every backend (``hal.training.graph``): the model's graph
with training-mode semantics plus its loss as ONNX operators. A backend that trains
(``Backend.trains``) compiles it with ``Backend.compile_training`` into a ``Trainer``, which
differentiates it with the framework's own autodiff and updates the weights with the
framework's own optimizer. The loop around it (data order, accumulation groups, epochs,
metrics, checkpoints, callbacks, progress) is HAL's and the same for every backend.

The training graph's contract (``TrainGraph``):

- inputs: the model's inputs, then ``target`` (int64 class indices [N] for the
  classification losses, float of the output's shape for ``mse``), then for the ``distill``
  loss ``teacher_logits`` (float, the output's shape);
- outputs: ``loss`` (a float32 scalar: the mean over the micro-batch's samples), then the
  model's outputs, then one output per running statistic that a step updates (BatchNorm's
  running mean and variance, in training mode), named in ``TrainGraph.updates``;
- BatchNormalization nodes have ``training_mode=1``; Dropout nodes get their
  ``training_mode`` input as the constant True. The trainer draws dropout masks from its own
  seeded generator (``TrainSpec.seed`` and the step number), so a run is repeatable and a
  resumed run draws what the uninterrupted one would have;
- quantization-aware training adds ``ai.hal`` ``FakeQuantize`` nodes
  (``backends/common/kernels/quant.py`` says what they compute; a backend that trains runs
  them);
- ``eval_model`` is the inference graph over the same initializer names (BatchNorm on its
  running statistics, Dropout off): ``Trainer.evaluate`` runs it on the current weights.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np

from hal.errors import InputError

if TYPE_CHECKING:
    import onnx_ir as ir


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer and its learning-rate schedule, by the names every backend shares.

    Each backend builds it from its framework's own implementation (torch.optim, optax,
    Keras optimizers) with these values, so the same spec means the same update everywhere.
    """

    #: "sgd", "adam" or "adamw"
    name: str = "adamw"
    lr: float = 1e-3
    #: sgd only
    momentum: float = 0.0
    nesterov: bool = False
    #: L2 added to the gradient (sgd, adam) or decoupled decay (adamw, default 0.01)
    weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    #: "constant", "step" (lr * gamma ** (step // step_size)), "cosine" (to 0 at total_steps)
    schedule: str = "constant"
    #: linear warm-up from 0 over this many updates, before the schedule (any schedule)
    warmup_steps: int = 0
    step_size: int = 1000
    gamma: float = 0.1
    #: updates in the whole run (cosine needs it; HAL's loop fills it in)
    total_steps: int = 0
    #: clip the gradients' global norm to this value before each update; None: no clipping
    clip_norm: float | None = None

    OPTIMIZERS: ClassVar[tuple[str, ...]] = ("sgd", "adam", "adamw")
    SCHEDULES: ClassVar[tuple[str, ...]] = ("constant", "step", "cosine")

    def check(self) -> OptimizerSpec:
        """Raise OptionError naming the first value no backend would accept; self when valid.
        ``hal.train`` checks the spec it builds and every trainer checks the one it gets, so
        the rules live here once."""
        from hal.errors import OptionError

        if self.name not in self.OPTIMIZERS:
            raise OptionError(f"unknown optimizer {self.name!r}; use one of {list(self.OPTIMIZERS)}")
        if self.schedule not in self.SCHEDULES:
            raise OptionError(f"unknown schedule {self.schedule!r}; use one of "
                              f"{list(self.SCHEDULES)}")
        if _number(self.lr) is None or self.lr < 0:
            raise OptionError(f"lr must be a number >= 0, got {self.lr!r}")
        for key in ("momentum", "weight_decay", "eps"):
            value = getattr(self, key)
            if value is not None and (_number(value) is None or value < 0):
                raise OptionError(f"{key} must be a number >= 0, got {value!r}")
        if (self.momentum or self.nesterov) and self.name != "sgd":
            raise OptionError(f"momentum and nesterov are sgd's options, not {self.name}'s")
        if self.nesterov and not self.momentum:
            raise OptionError("nesterov needs momentum > 0 (sgd's momentum=)")
        if len(self.betas) != 2 or not all(_number(b) is not None and 0 <= b < 1
                                           for b in self.betas):
            raise OptionError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        for key in ("warmup_steps", "step_size", "total_steps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise OptionError(f"{key} must be an int >= 0, got {value!r}")
        if self.schedule == "cosine" and self.total_steps <= self.warmup_steps:
            raise OptionError(f"the cosine schedule needs total_steps (the run's updates) above "
                              f"warmup_steps={self.warmup_steps}; got "
                              f"total_steps={self.total_steps}")
        if self.clip_norm is not None and (_number(self.clip_norm) is None or self.clip_norm <= 0):
            raise OptionError(f"clip_norm must be a number > 0 or None, got {self.clip_norm!r}")
        return self

    @property
    def decay(self) -> float:
        """The weight decay in effect (adamw's default is 0.01, the others' 0)."""
        if self.weight_decay is not None:
            return self.weight_decay
        return 0.01 if self.name == "adamw" else 0.0

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based): warm-up, then the schedule. Backends
        hand this to their framework's schedule objects or check theirs against it."""
        import math

        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        t = step - self.warmup_steps
        if self.schedule == "step":
            return self.lr * self.gamma ** (t // max(1, self.step_size))
        if self.schedule == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            return 0.5 * self.lr * (1 + math.cos(math.pi * min(t, span) / span))
        return self.lr


def _number(v) -> float | None:
    return None if isinstance(v, bool) or not isinstance(v, (int, float)) else float(v)


@dataclass
class TrainGraph:
    """A model prepared for training (see the module docstring for the contract)."""

    model: ir.Model  # the training graph
    eval_model: ir.Model  # the inference graph over the same initializers
    params: list[str]  # trainable float initializers, in graph order
    frozen: list[str]  # float initializers kept fixed (``freeze=`` patterns)
    updates: dict[str, str]  # training-graph output -> the initializer it replaces each step
    loss: str = "loss"
    target: str = "target"
    outputs: list[str] = field(default_factory=list)  # the model's own outputs


@dataclass(frozen=True)
class Parallel:
    """How one run spreads over several workers, on the framework's own engine.

    ``strategy``: "data" (the global batch split across ``workers``, gradients averaged by
    the engine: torch DistributedDataParallel, a jax device mesh, tf.distribute),
    "pipeline" (``stages`` consecutive pieces of the graph, micro-batched) or "tensor" (the
    largest weight matrices sharded over a mesh axis). ``rank``/``world``: this process's place
    among the processes of the run when the engine runs one process per worker (torch); a
    single-process engine (a jax mesh, MirroredStrategy) has rank 0 of world 1 and its
    ``workers`` devices inside the process. ``address``: the rendezvous ("host:port") of a
    multi-process run.
    """

    workers: int = 1
    strategy: str = "data"
    stages: int = 2
    rank: int = 0
    world: int = 1
    address: str = ""

    STRATEGIES: ClassVar[tuple[str, ...]] = ("data", "pipeline", "tensor")

    @property
    def active(self) -> bool:
        return self.workers > 1 or self.strategy != "data"


@dataclass(frozen=True)
class Launch:
    """What a backend needs to run a parallel training (``Backend.launch_training``):
    ``processes`` worker processes (1 for single-process engines), each started with ``env``
    added to its environment; ``here``: the current process can already host its part (the
    framework already sees the devices, or torchrun started it), so nothing is launched."""

    processes: int = 1
    env: dict = field(default_factory=dict)
    here: bool = True
    why: str = ""  # what the launch is for, in words (the run's report)


@dataclass(frozen=True)
class TrainSpec:
    """How to train: the optimizer, the precision and the seed of every random draw."""

    optimizer: OptimizerSpec = OptimizerSpec()
    #: "fp32"; "bf16" (fp32 master weights, bf16 compute); "fp16" (with dynamic loss scaling)
    precision: str = "fp32"
    seed: int = 0
    #: backend-specific training options (``hal.train(..., **options)``)
    extra: dict = field(default_factory=dict)
    #: several workers (``hal.train(..., workers=, strategy=)``); inactive by default
    parallel: Parallel = Parallel()

    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "bf16", "fp16")


class Trainer(abc.ABC):
    """A training graph compiled on one device. All arrays in and out are numpy."""

    @abc.abstractmethod
    def step(self, batches: Sequence[dict[str, np.ndarray]],
             weights: Sequence[float]) -> list[float]:
        """One optimizer update from ``len(batches)`` micro-batches (dicts by input name,
        ``target`` included): the gradient is ``sum(weights[i] * grad(loss_i))`` (HAL passes
        ``n_i / sum(n)``, so a group of micro-batches makes the step of one large batch), then
        clipping, then the update; running statistics take each micro-batch's update in
        order. Returns each micro-batch's loss."""

    @abc.abstractmethod
    def evaluate(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The model's outputs in inference mode on the current weights."""

    @abc.abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Everything a resumed run needs, as named arrays: ``param/NAME``,
        ``update/NAME`` (running statistics), ``opt/...`` (the optimizer's state, its own
        names), ``step`` (updates done, int64 scalar), plus whatever else the backend's random
        draws or loss scaling need."""

    @abc.abstractmethod
    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from ``state()`` exactly; a missing or mis-shaped entry is a HalError
        naming it."""

    @property
    def description(self) -> dict:
        """How the trainer runs, for the run's report (its device; for a parallel run the
        mesh or process group, and where weights and batches went); {} when it adds nothing."""
        return {}

    @abc.abstractmethod
    def weights(self) -> dict[str, np.ndarray]:
        """The trained initializers (parameters and running statistics) by name, float32."""

    def set_params(self, arrays: dict[str, np.ndarray]) -> None:
        """Give the named parameters these values, the optimizer's state as it is (a pruning
        mask applied between updates). This default goes through ``state()`` and
        ``load_state()``; a backend writes only the parameters named."""
        state = self.state()
        unknown = [n for n in arrays if f"param/{n}" not in state]
        if unknown:
            raise InputError(f"no trainable parameter(s) {unknown} in this model")
        state.update((f"param/{n}", np.asarray(a)) for n, a in arrays.items())
        self.load_state(state)
