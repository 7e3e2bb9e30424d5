"""Ctrl-C during ``hal.train``: the step under way finishes, the run's state is written to a
checkpoint, and the run stops with ``TrainingInterrupted`` saying where it can resume.

A step stopped halfway leaves the weights updated and the optimizer's moments not (or the
reverse), so a checkpoint is only written between steps: the first Ctrl-C is held until the
step ends; a second one stops at once, without a checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """What ``hal.train`` raises on Ctrl-C (SIGINT). ``checkpoint``: the file written where it
    stopped, from which ``resume=True`` (``hal train --resume``) continues at the same step
    with the same optimizer state; None when there is no ``checkpoint_dir`` or a second
    Ctrl-C stopped a step halfway. ``epoch``: epochs finished; ``step``: updates made. Being a
    KeyboardInterrupt, it stops code that does not look for it as any Ctrl-C does."""

    def __init__(self, checkpoint: Path | None, epoch: int, step: int):
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step
        where = f"training interrupted in epoch {epoch + 1} after {step} updates"
        if checkpoint is None:
            super().__init__(f"{where}; no checkpoint was written (pass checkpoint_dir= to "
                             f"make an interrupted run resumable)")
        else:
            super().__init__(f"{where}; resume=True with checkpoint_dir={str(checkpoint.parent)!r} "
                             f"continues from {str(checkpoint)!r}")


class StepBoundary:
    """While entered, the first SIGINT is held until ``check()`` (called between steps) turns
    it into a KeyboardInterrupt; a second one raises at once. Only the main thread can handle
    signals, and a handler someone else installed is left alone: there it changes nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> StepBoundary:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _hold(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nhal.train: stopping after this step to write a checkpoint (Ctrl-C again stops "
              "at once, without one)", file=sys.stderr)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt
