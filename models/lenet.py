"""LeNet: conv 1→20 5×5, max-pool, conv 20→50 5×5, max-pool, fc 800→500, ReLU, fc 500→10."""

from hal import nn

INPUT_SHAPE = (None, 1, 28, 28)
CLASSES = 10


def build() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10), nn.LogSoftmax(dim=1),
    )
