"""Small data sets for examples and tests: ``hal.data.digits``.

    x, y = hal.data.digits("train", size=28)      # float32 [N, 1, 28, 28] in [0, 1], int64 [N]
    x, y = hal.data.digits("test", size=32, channels=3)

The images are scikit-learn's bundled 8×8 handwritten digits (1,797 of them, no download),
split once with a fixed seed and resized for LeNet-style (28×28) and CIFAR-shaped (3×32×32)
models.
"""

from __future__ import annotations

import functools

import numpy as np

from hal.errors import HalError, OptionError

SPLITS = ("train", "test")
#: held-out fraction and seed of the stratified split; the same split as the zoo's ``digits``
#: model, so nothing it was trained on is in the test split
TEST_FRACTION = 0.3
SPLIT_SEED = 0
NATIVE_SIZE = 8


def digits(split: str = "train", size: int = 8, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: ``(x, y)``, x float32 [N, channels, size, size] in [0, 1], y int64
    class indices [N]. ``split`` is "train" (1,257 images) or "test" (540); ``size`` resizes
    the 8×8 images by linear interpolation (28 for LeNet, 32 for CIFAR-shaped models);
    ``channels`` 3 repeats the gray image in each. Each call returns new arrays."""
    if split not in SPLITS:
        raise OptionError(f"digits split {split!r} is not one of {list(SPLITS)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise OptionError(f"digits size must be a positive int (8, 28, 32, ...), got {size!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise OptionError(f"digits channels must be 1 or 3, got {channels!r}")
    x, y = _resized(split, int(size))
    x = np.repeat(x, channels, axis=1) if channels > 1 else x.copy()
    return x, y.copy()


@functools.lru_cache(maxsize=8)
def _resized(split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _split(split)
    if size != NATIVE_SIZE:
        from scipy import ndimage

        factor = size / NATIVE_SIZE
        x = ndimage.zoom(x, (1, 1, factor, factor), order=1, grid_mode=True, mode="nearest")
        x = np.clip(x, 0.0, 1.0)
    x.setflags(write=False)  # the cache hands out copies
    return x, y


@functools.lru_cache(maxsize=2)
def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise HalError("hal.data.digits needs scikit-learn (its bundled digits are the images): "
                       "pip install scikit-learn") from None
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=TEST_FRACTION,
                                          random_state=SPLIT_SEED, stratify=y)
    return (xtr, ytr) if split == "train" else (xte, yte)
