"""The teacher's side of distillation: its logits for the student's training data.

The teacher runs compiled on its own device (int8 on an FPGA, ONNX Runtime, any inference
device); what it returns are numpy arrays, so nothing ever differentiates it. Arrays get
their logits once per sample before training (the teacher is deterministic, so this equals
computing them per batch, and the epochs' shuffles carry them with their samples); an
iterable of batches gets them batch by batch, every epoch, as the loop draws it.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from hal.compiler import CompiledModel
from hal.training.batches import TARGET, ArrayData, Feed, source
from hal.training.graph import TEACHER_LOGITS

#: samples per call of the compiled teacher when it labels arrays
CHUNK = 256


class Teacher:
    """A compiled teacher that turns the student's batches into its logits."""

    def __init__(self, compiled: CompiledModel, input_names: list[str], probabilities: bool):
        self.compiled = compiled
        self.input_names = input_names  # the student's, in the teacher's input order
        self.probabilities = probabilities  # outputs from a Softmax: logits are their log

    def logits(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """float32 logits [N, classes, ...] of the samples in ``arrays`` (by input name)."""
        n = len(arrays[TARGET])
        parts = [self.compiled(*(arrays[name][i:i + CHUNK] for name in self.input_names))[0]
                 for i in range(0, n, CHUNK)]
        out = np.concatenate(parts).astype(np.float32, copy=False)
        if self.probabilities:
            out = np.log(np.maximum(out, np.finfo(np.float32).tiny))
        return out

    def labelled(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``arrays`` (not copied, never written to) and the teacher's logits."""
        return {**arrays, TEACHER_LOGITS: self.logits(arrays)}


class TeacherBatches:
    """The caller's iterable of batches, each with the teacher's logits added as it is drawn."""

    def __init__(self, iterable: Iterable, feed: Feed, teacher: Teacher, where: str):
        self.iterable, self.feed, self.teacher, self.where = iterable, feed, teacher, where

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]  # TypeError: no len, as the loop expects

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i, item in enumerate(self.iterable):
            yield self.teacher.labelled(self.feed.arrays(item, f"{self.where}, batch {i}"))


def with_teacher(data: Any, feed: Feed, teacher: Teacher, where: str) -> Any:
    """``data`` as ``hal.train`` takes it for loss "distill": a dict of arrays with the
    teacher's logits, or an iterable of such batches."""
    checked = source(data, feed, where)
    if isinstance(checked, ArrayData):
        return teacher.labelled(checked.arrays)
    return TeacherBatches(data, feed, teacher, where)


def accuracy(data: Any) -> float:
    """The teacher's accuracy on labelled ``data`` (what ``with_teacher`` returned)."""
    batches = [data] if isinstance(data, dict) else data
    right = total = 0
    for b in batches:
        right += int((b[TEACHER_LOGITS].argmax(axis=1) == b[TARGET]).sum())
        total += b[TARGET].size
    return right / max(1, total)
