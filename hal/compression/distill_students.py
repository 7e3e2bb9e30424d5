"""Small students for distillation examples, tests and benchmarks."""

from __future__ import annotations

from hal import nn
from hal.ir.model import Model


def half_lenet(seed: int = 0) -> Model:
    """LeNet (``hal.models`` "lenet") at half its width: conv 1→10 5×5, max-pool, conv 10→25
    5×5, max-pool, fc 400→250, ReLU, fc 250→10, LogSoftmax; input [N, 1, 28, 28]; initial
    weights drawn from ``seed``."""
    with nn.seed(seed):
        net = nn.Sequential(
            nn.Conv2d(1, 10, 5), nn.MaxPool2d(2),
            nn.Conv2d(10, 25, 5), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(400, 250), nn.ReLU(), nn.Linear(250, 10),
            nn.LogSoftmax(dim=1),
        )
    return net.to_model((None, 1, 28, 28), name="half_lenet")
