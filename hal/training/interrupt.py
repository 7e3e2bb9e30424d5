"""Ctrl-C during ``hal.train``: the step under way finishes, the run's state is written to a
checkpoint, and the run stops with ``TrainingInterrupted`` saying where it can resume.

A step stopped halfway leaves the weights updated and the optimizer's moments not (or the
reverse), so a checkpoint is only written between steps: the first Ctrl-C is held until the
step ends; a second one stops at once, without a checkpoint.

A run over several processes started by ``hal.training.launcher`` must stop after the same
step in every one, or the others wait for it forever in their next all-reduce. There the
workers ignore SIGINT (a terminal sends it to the whole process group) and the launching
process decides: on the first Ctrl-C it names a step no worker has passed yet in the run's
folder (``SharedBoundary``), and each worker stops at that step's boundary.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

#: in the folder of a launched run: rank 0's last finished step, and the step to stop after
STEP_FILE, STOP_FILE = "step", "stop"


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

    def check(self, step: int) -> None:
        if self.requested:
            raise KeyboardInterrupt


class SharedBoundary:
    """The step boundary of one worker of a launched run (see the module's docstring): SIGINT
    ignored while entered; ``check(step)``, between steps, records rank 0's step and raises
    KeyboardInterrupt once the step the launching process named is reached."""

    def __init__(self, folder: Path, rank: int):
        self.folder, self.rank = Path(folder), rank
        self.stop_at: int | None = None
        self._previous = None

    def __enter__(self) -> SharedBoundary:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def check(self, step: int) -> None:
        if self.rank == 0:
            _write_whole(self.folder / STEP_FILE, step)
        if self.stop_at is None:
            try:
                self.stop_at = int((self.folder / STOP_FILE).read_text())
            except (FileNotFoundError, ValueError):
                return
        if step >= self.stop_at:
            raise KeyboardInterrupt


def ask_to_stop(folder: Path, workers: int) -> int:
    """In the launching process: name the step every worker stops after, and return it. The
    workers of a data-parallel run meet in an all-reduce every step, so none is more than one
    step past rank 0: two past rank 0's last is a step nobody has finished."""
    try:
        done = int((Path(folder) / STEP_FILE).read_text())
    except (FileNotFoundError, ValueError):
        done = 0
    stop_at = done + 2
    _write_whole(Path(folder) / STOP_FILE, stop_at)
    print(f"\nhal.train: the {workers} workers stop after step {stop_at} to write a checkpoint "
          f"(Ctrl-C again stops them at once, without one)", file=sys.stderr)
    return stop_at


def _write_whole(path: Path, number: int) -> None:
    """``number`` into ``path``, replaced at once: the other process never reads half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(number))
    os.replace(tmp, path)
