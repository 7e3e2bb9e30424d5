"""Depthwise-separable CNN: depthwise 3×3 (groups = channels) then pointwise 1×1, twice."""

from hal import nn

INPUT_SHAPE = (None, 1, 28, 28)
CLASSES = 10


def _separable(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in), nn.ReLU(),  # depthwise
        nn.Conv2d(c_in, c_out, 1), nn.ReLU(),  # pointwise
    )


def build() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        _separable(16, 32), nn.MaxPool2d(2),
        _separable(32, 64), nn.MaxPool2d(2),
        nn.GlobalAvgPool(), nn.Flatten(), nn.Linear(64, 10),
    )
