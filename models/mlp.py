"""MLP on flattened 28×28 images: 784→256→128→10 with ReLU, Tanh and softmax."""

from hal import nn

INPUT_SHAPE = (None, 784)
CLASSES = 10


def build() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(256, 128), nn.Tanh(),
        nn.Linear(128, 10), nn.Softmax(dim=1),
    )
