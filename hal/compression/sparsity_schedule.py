"""``Sparsity``: a ``hal.train`` callback that prunes while training, on every backend.

Gradual pruning follows TF-MOT's ``PolynomialDecay``: the sparsity rises from ``initial`` to
``target`` between ``begin_step`` and ``end_step``,

    s(t) = target + (initial - target) * (1 - (t - begin_step) / (end_step - begin_step)) ** power

the masks are recomputed by magnitude every ``frequency`` updates (and at ``end_step``, so
the run reaches ``target`` exactly), and applied after every update so pruned weights stay
zero; a weight once pruned stays pruned. ``schedule="constant"`` (TF-MOT's
``ConstantSparsity``) prunes to ``target`` from ``begin_step`` on. ``keep=True`` fixes the
masks to the zeros the model already has (fine-tuning a ``hal.sparsify`` model).

The callback speaks to the trainer only through ``Trainer.weights()`` and
``set_params()`` (and ``state()`` once, when it begins), so it is the same on cpu@torch,
cpu@jax and cpu@tf. A resumed run
rebuilds its masks from the checkpoint's zeros (a kept weight that is exactly 0.0 then counts
as pruned, which float training all but never produces).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Iterable

import numpy as np

from hal.compression.sparsity_report import SparsityReport
from hal.errors import OptionError
from hal.passes.sparsity import (PrunableWeight, check_scope, check_sparsity, compute_masks,
                                 nm_unfit, parse_pattern, prunable_weights, select)
from hal.training.callbacks import Callback

if TYPE_CHECKING:
    from hal.training.loop import Run

log = logging.getLogger("hal")
SCHEDULES = ("polynomial", "constant")


def polynomial_sparsity(step: int, initial: float, target: float, begin_step: int,
                        end_step: int, power: float) -> float:
    """TF-MOT's PolynomialDecay sparsity at ``step`` (held at ``initial`` before
    ``begin_step`` and at ``target`` after ``end_step``)."""
    progress = min(1.0, max(0.0, (step - begin_step) / max(1, end_step - begin_step)))
    return target + (initial - target) * (1.0 - progress) ** power


def _zeros_fraction(masks: dict[str, np.ndarray]) -> float:
    size = sum(m.size for m in masks.values())
    return sum(int(m.size - m.sum()) for m in masks.values()) / max(size, 1)


def _step_option(name: str, value: object, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise OptionError(f"{name} must be an int >= 0 (an optimizer update count), got "
                          f"{value!r}")
    return int(value)


class Sparsity(Callback):
    """Prune the model's Conv/Gemm/MatMul weights during ``hal.train`` (see the module
    docstring). ``target``: the final sparsity in [0, 1) (default 0.5; 1 - N/M with
    ``pattern``); ``end_step``: default the run's last update; ``scope``/``pattern``/
    ``exclude``: as ``hal.sparsify``'s (an N:M pattern is applied whole at each update: the
    schedule only says when). ``report``: the masks' sparsity per weight, after the latest
    update; ``seconds``: the time spent reading and writing the weights."""

    def __init__(self, target: float | None = None, schedule: str = "polynomial",
                 begin_step: int = 0, end_step: int | None = None, frequency: int = 100,
                 power: float = 3, initial: float = 0.0, pattern: str | None = None,
                 scope: str = "global", exclude: Iterable[str] = (), keep: bool = False):
        if schedule not in SCHEDULES:
            raise OptionError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        if keep and (target is not None or pattern is not None):
            raise OptionError("keep=True keeps the zeros the model already has: pass no "
                              "target= or pattern= with it")
        self.nm = parse_pattern(pattern)
        implied = None if self.nm is None else 1 - self.nm[0] / self.nm[1]
        if implied is not None and target is not None and abs(target - implied) > 1e-9:
            raise OptionError(f"pattern {pattern!r} prunes {implied:.4g} of the weights, but "
                              f"target={target!r} was asked: pass one or the other")
        self.target = check_sparsity(target if target is not None else implied or 0.5,
                                     "target")
        self.initial = check_sparsity(initial, "initial")
        if self.initial > self.target:
            raise OptionError(f"initial={initial!r} is above target={self.target!r}: the "
                              f"sparsity only rises")
        self.begin_step = _step_option("begin_step", begin_step)
        self.end_step = _step_option("end_step", end_step, allow_none=True)
        if _step_option("frequency", frequency) == 0:
            raise OptionError("frequency must be an int >= 1 (updates between mask updates)")
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise OptionError(f"power must be a number > 0, got {power!r}")
        self.schedule, self.frequency, self.power = schedule, int(frequency), float(power)
        self.pattern, self.scope, self.keep = pattern, check_scope(scope), bool(keep)
        self.exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        self.weights: list[PrunableWeight] = []
        self.skipped: dict[str, str] = {}
        self.masks: dict[str, np.ndarray] = {}
        self.sparsity_now = 0.0
        self.end = 0  # the update that reaches the target (end_step, or the run's last)
        self.seconds = 0.0
        self.report: SparsityReport | None = None
        self._loaded: dict | None = None

    # -- the run ------------------------------------------------------------------------
    def on_train_begin(self, run: Run) -> None:
        self.weights = self._weights(run)
        self.end = self._end(run)
        self.masks, self.sparsity_now, self.seconds = {}, 0.0, 0.0
        loaded, self._loaded = self._loaded, None
        if self.keep or (loaded and loaded.get("masked")):
            state = run.trainer.state()
            masks = {w.name: state[f"param/{w.name}"] != 0 for w in self.weights}
            self.masks = {name: m for name, m in masks.items() if not m.all()}
            self.sparsity_now = loaded["sparsity"] if loaded else _zeros_fraction(masks)
            if self.keep and not self.masks:
                raise OptionError("Sparsity(keep=True) keeps the zeros of the model's weights, "
                                  "but they have none: sparsify it first (hal.sparsify) or "
                                  "pass target=")
            self._update_report()

    def on_step_end(self, run: Run) -> None:
        start = time.perf_counter()
        step = run.step
        update = not self.keep and self.begin_step <= step <= self.end and (
            (step - self.begin_step) % self.frequency == 0 or step == self.end)
        if not update and not self.masks:
            return
        params = run.trainer.weights()  # only the parameters: the optimizer's state stays
        arrays = {w.name: self._masked(w.name, params[w.name]) for w in self.weights}
        if update:
            self.sparsity_now = self._scheduled(step)
            self.masks = compute_masks(arrays, self._fitting(), self.sparsity_now, self.scope,
                                       self.nm)
            arrays = {n: self._masked(n, a) for n, a in arrays.items()}
            self._update_report()
        run.trainer.set_params({name: arrays[name] for name in self.masks})
        self.seconds += time.perf_counter() - start

    def state(self) -> dict:
        return {"masked": bool(self.masks), "sparsity": self.sparsity_now}

    def load_state(self, state: dict) -> None:
        self._loaded = dict(state)

    # -- helpers --------------------------------------------------------------------------
    def _weights(self, run: Run) -> list[PrunableWeight]:
        weights = select(prunable_weights(run.model.graph), self.exclude)
        frozen = [w.name for w in weights if w.name in run.tg.frozen]
        if frozen:
            raise OptionError(f"Sparsity would prune {frozen[:5]}, which this run keeps frozen "
                              f"(freeze=): add them to the callback's exclude=, or unfreeze "
                              f"them")
        weights = [w for w in weights if w.name in run.tg.params]
        if self.nm is not None:
            self.skipped = {w.name: why for w in weights
                            if (why := nm_unfit(w, self.nm)) is not None}
            for name, why in self.skipped.items():
                log.warning("Sparsity(pattern=%r) leaves %s dense: %s", self.pattern, name, why)
        return weights

    def _fitting(self) -> list[PrunableWeight]:
        return [w for w in self.weights if w.name not in self.skipped]

    def _end(self, run: Run) -> int:
        total = None if run.steps_per_epoch is None else run.steps_per_epoch * run.epochs
        end = self.end_step if self.end_step is not None else total
        if end is None:
            raise OptionError("Sparsity needs end_step= when the run's length is unknown (the "
                              "data is a stream of batches)")
        if total is not None and end > total:
            raise OptionError(f"Sparsity(end_step={end}) is past this run's last update "
                              f"({total}): the model would not reach target={self.target}; "
                              f"pass end_step <= {total} or train longer")
        if not self.keep and end < self.begin_step:
            raise OptionError(f"end_step={end} comes before begin_step={self.begin_step}")
        return end

    def _scheduled(self, step: int) -> float:
        if self.schedule == "constant":
            return self.target
        return polynomial_sparsity(step, self.initial, self.target, self.begin_step, self.end,
                                   self.power)

    def _masked(self, name: str, array: np.ndarray) -> np.ndarray:
        mask = self.masks.get(name)
        return array if mask is None else np.where(mask, array, 0).astype(array.dtype)

    def _update_report(self) -> None:
        rows = []
        for w in self.weights:
            mask = self.masks.get(w.name)
            zeros = 0 if mask is None else int(mask.size - mask.sum())
            size = int(np.prod(w.shape))
            note = f"dense: {self.skipped[w.name]}" if w.name in self.skipped else ""
            rows.append({"layer": w.node, "weight": w.name, "op": w.op, "shape": list(w.shape),
                         "count": size, "zeros": zeros, "sparsity": zeros / max(size, 1),
                         "note": note})
        self.report = SparsityReport(rows, {"target": self.target, "scope": self.scope,
                                            "pattern": self.pattern, "keep": self.keep,
                                            "now": round(self.sparsity_now, 6)})
