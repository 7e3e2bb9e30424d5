"""Validation metrics: the training graph's own loss (its loss nodes run by the oracle on the
model's outputs) and accuracy, accumulated over batches."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx_ir as ir

from hal.errors import OptionError
from hal.oracle.interpreter import evaluate
from hal.trainer import TrainGraph
from hal.training.batches import TARGET

#: metric name -> what it needs
METRICS = {"accuracy": "class indices as target (the classification losses)"}


def loss_nodes(tg: TrainGraph) -> list[ir.Node]:
    """The nodes between the model's outputs (and the target) and the loss, in graph order."""
    stop = set(tg.outputs) | {tg.target}
    wanted, todo = set(), [tg.loss]
    producers = {v.name: n for n in tg.model.graph for v in n.outputs if v.name}
    while todo:
        name = todo.pop()
        node = producers.get(name)
        if name in stop or node is None or id(node) in wanted:
            continue
        wanted.add(id(node))
        todo.extend(v.name for v in node.inputs if v is not None)
    return [n for n in tg.model.graph if id(n) in wanted]


def check(metrics: Sequence[str], classification: bool) -> list[str]:
    """The metrics to report; "accuracy" only where the target is class indices."""
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise OptionError(f"unknown metrics {unknown}; known: {dict(METRICS)}")
    return [m for m in metrics if classification or m != "accuracy"]


class Evaluation:
    """Sums of the loss and metrics over validation batches, sample-weighted."""

    def __init__(self, tg: TrainGraph, output: int, metrics: Sequence[str]):
        self.tg = tg
        self.nodes = loss_nodes(tg)
        self.output = output
        self.metrics = list(metrics)
        self.sums = {"loss": 0.0, **{m: 0.0 for m in self.metrics}}
        self.samples = 0

    def add(self, outputs: Sequence[np.ndarray], batch: dict[str, np.ndarray]) -> None:
        n = len(batch[TARGET])
        self.sums["loss"] += self.loss(outputs, batch[TARGET], batch) * n
        if "accuracy" in self.metrics:
            pred = np.asarray(outputs[self.output]).argmax(axis=1)
            self.sums["accuracy"] += float((pred == batch[TARGET]).mean()) * n
        self.samples += n

    def loss(self, outputs: Sequence[np.ndarray], target: np.ndarray,
             inputs: dict[str, np.ndarray] | None = None) -> float:
        """The loss of ``outputs``; ``inputs``: the batch, for a loss that reads more than the
        target (the teacher's logits of loss "distill")."""
        env = {**(inputs or {}), **dict(zip(self.tg.outputs, outputs))}
        env[self.tg.target] = target
        for node in self.nodes:
            args = [None if v is None else env[v.name] if v.name in env else v.const_value.numpy()
                    for v in node.inputs]
            for v, value in zip(node.outputs, evaluate(node, args)):
                env[v.name] = value
        return float(env[self.tg.loss])

    def result(self, prefix: str = "val_") -> dict[str, float]:
        return {prefix + k: v / max(1, self.samples) for k, v in self.sums.items()}
