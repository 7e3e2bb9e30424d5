"""LeNet-style digits classifier trained on scikit-learn's 8×8 digits (weights shipped)."""

from pathlib import Path

from hal import nn

INPUT_SHAPE = (None, 1, 8, 8)
CLASSES = 10
WEIGHTS = Path(__file__).with_name("weights") / "digits.npz"
CALIBRATION_SOURCE = "images of the digits training split"


def architecture() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10),
    )


def build() -> nn.Module:
    net = architecture()
    net.load_weights(WEIGHTS)  # trained by models/train_digits.py
    return net


def dataset(split: str = "test"):
    """scikit-learn's bundled digits as float32 N×1×8×8 in [0, 1], and int labels.

    The split is fixed (stratified, seed 0, 30% held out) so figures are comparable.
    """
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.3, random_state=0,
                                          stratify=d.target)
    return (xtr, ytr) if split == "train" else (xte, yte)


def example_input(batch: int = 1, seed: int = 0):
    """``batch`` held-out images, picked with a seeded generator (repeats when batch > 540);
    seeded noise in the images' range [0, 1) where scikit-learn (not a core dependency, the
    data set's source) is not installed."""
    import numpy as np

    try:
        x, _ = dataset("test")
    except ImportError:
        return np.random.default_rng(seed).random((batch, *INPUT_SHAPE[1:]), dtype=np.float32)
    idx = np.random.default_rng(seed).choice(len(x), size=batch, replace=batch > len(x))
    return x[idx]


def calibration_data(batch: int | None = None):
    """int8 calibration inputs: the training split (never the test split accuracy is read on)."""
    x, _ = dataset("train")
    return x[:batch] if batch else x
