"""Callbacks: small objects the loop calls at the end of each step and epoch.

A callback reads the run (``run.history``, ``run.step``, ``run.epoch``, ``run.losses``: the
last step's micro-batch losses, taken before its update), may stop it
(``run.stop = True``) or write a checkpoint (``run.save(path)``). Its ``state()`` goes into
each checkpoint, so a resumed run continues with the same counters.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hal.errors import OptionError

if TYPE_CHECKING:
    from hal.training.loop import Run


class Callback:
    def on_train_begin(self, run: Run) -> None:
        """Called once before the first step (after a resume, too)."""

    def on_step_end(self, run: Run) -> None:
        """Called after each optimizer update."""

    def on_epoch_end(self, run: Run, record: dict) -> None:
        """Called with the epoch's history record (loss, metrics, timing)."""

    def on_checkpoint(self, run: Run, path: Path) -> None:
        """Called after the epoch's checkpoint is written to ``path`` (with checkpoint_dir;
        on every process of a parallel run, though only rank 0 writes)."""

    def state(self) -> dict:
        """JSON values the callback needs to continue after a resume."""
        return {}

    def load_state(self, state: dict) -> None:
        pass


class Monitor(Callback):
    """A callback watching one number of the epoch records (``val_loss``, ``val_accuracy``,
    ``loss``...), lower is better unless ``mode="max"`` (auto: max for accuracies)."""

    def __init__(self, monitor: str | None = None, mode: str = "auto", min_delta: float = 0.0):
        if mode not in ("auto", "min", "max"):
            raise OptionError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.min_delta = min_delta
        self.best: float | None = None

    def on_train_begin(self, run: Run) -> None:
        if self.monitor is None:
            self.monitor = run.default_monitor
        if self.monitor not in run.record_keys:
            raise OptionError(f"{type(self).__name__} monitors {self.monitor!r}, which this run "
                              f"does not report; it reports {run.record_keys}"
                              + ("" if run.has_validation else
                                 " (pass validation= for val_ metrics)"))
        if self.mode == "auto":
            self.mode = "max" if self.monitor.endswith("accuracy") else "min"

    def improved(self, record: dict) -> bool:
        value = record[self.monitor]
        if value is None or math.isnan(value):
            return False
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                       else value > self.best + self.min_delta)
        if better:
            self.best = value
        return better

    def state(self) -> dict:
        return {"best": self.best, "mode": self.mode, "monitor": self.monitor}

    def load_state(self, state: dict) -> None:
        self.best, self.mode, self.monitor = state["best"], state["mode"], state["monitor"]


class EarlyStopping(Monitor):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str | None = None, patience: int = 3, min_delta: float = 0.0,
                 mode: str = "auto"):
        super().__init__(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise OptionError(f"patience must be a positive int, got {patience!r}")
        self.patience = patience
        self.waited = 0

    def on_epoch_end(self, run: Run, record: dict) -> None:
        self.waited = 0 if self.improved(record) else self.waited + 1
        if self.waited >= self.patience:
            run.stop = True

    def state(self) -> dict:
        return {**super().state(), "waited": self.waited}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.waited = state["waited"]


class BestCheckpoint(Monitor):
    """Write a checkpoint whenever ``monitor`` improves: ``path``, or best.safetensors in the
    run's checkpoint folder. ``TrainResult.best_checkpoint`` names it."""

    def __init__(self, monitor: str | None = None, mode: str = "auto",
                 path: str | os.PathLike | None = None):
        super().__init__(monitor, mode)
        self.path = Path(path) if path is not None else None

    def on_train_begin(self, run: Run) -> None:
        super().on_train_begin(run)
        if self.path is None:
            if run.checkpoint_dir is None:
                raise OptionError("BestCheckpoint needs a path= or hal.train(checkpoint_dir=...)")
            from hal.training.checkpoint import BEST

            self.path = run.checkpoint_dir / BEST
        run.best_checkpoint = self.path if self.path.exists() and self.best is not None else None

    def on_epoch_end(self, run: Run, record: dict) -> None:
        if self.improved(record):
            run.best_checkpoint = run.save(self.path)
