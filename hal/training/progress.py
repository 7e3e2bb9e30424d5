"""The progress bar of a training run (rich, on stderr so stdout stays the caller's)."""

from __future__ import annotations


class Progress:
    """One bar per epoch with its loss and samples/s; does nothing when disabled."""

    def __init__(self, enabled: bool, epochs: int):
        self.bar = None
        self.epochs = epochs
        self.task = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[val]}"), TimeElapsedColumn(),
                console=Console(stderr=True))
            self.bar.start()

    def start_epoch(self, epoch: int, steps: int | None, done: int = 0) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task("", total=steps, completed=done,
                                          epoch=f"{epoch + 1}/{self.epochs}", loss="-",
                                          rate="", val="")

    def step(self, loss: float, samples_per_s: float) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=1, loss=f"{loss:.4f}",
                            rate=f"{samples_per_s:,.0f} samples/s")

    def end_epoch(self, record: dict) -> None:
        if self.task is not None:
            val = "  ".join(f"{k} {v:.4f}" for k, v in record.items()
                            if k.startswith("val_") and v is not None)
            self.bar.update(self.task, total=self.bar.tasks[-1].completed,
                            loss=f"{record['loss']:.4f}", val=val)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
