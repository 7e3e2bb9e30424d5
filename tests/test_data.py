"""hal.data.digits: scikit-learn's digits, split once, resized, as numpy arrays."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

import hal.data
from hal.data import digits
from hal.errors import HalError, OptionError


@pytest.mark.parametrize("size, channels", [(8, 1), (28, 1), (32, 3)])
def test_shapes_dtypes_range_and_a_fixed_stratified_split(size, channels):
    xtr, ytr = digits("train", size, channels)
    xte, yte = digits("test", size, channels)
    assert xtr.shape == (1257, channels, size, size) and xte.shape == (540, channels, size, size)
    assert xtr.dtype == xte.dtype == np.float32 and ytr.dtype == yte.dtype == np.int64
    assert 0 <= xtr.min() and xtr.max() <= 1 and xtr.max() > 0.9
    # stratified: each class is within one image of 30% held out
    counts = np.bincount(yte, minlength=10) / (np.bincount(ytr, minlength=10) +
                                                np.bincount(yte, minlength=10))
    assert np.all(np.abs(counts - 0.3) < 0.01)
    again = digits("train", size, channels)
    np.testing.assert_array_equal(again[0], xtr)
    np.testing.assert_array_equal(again[1], ytr)


def test_native_size_is_the_zoo_models_split_and_resizing_keeps_the_images():
    from hal.models import digits as zoo_digits

    x8, y8 = digits("test")
    zx, zy = zoo_digits.dataset("test")
    np.testing.assert_array_equal(x8, zx)  # the zoo's digits model never saw this split
    np.testing.assert_array_equal(y8, zy)
    x32, y32 = digits("test", 32, 3)
    np.testing.assert_array_equal(y32, y8)
    np.testing.assert_array_equal(x32[:, 0], x32[:, 2])  # gray in every channel
    blocks = x32[:, :1].reshape(-1, 1, 8, 4, 8, 4).mean(axis=(3, 5))  # back to 8x8
    assert np.abs(blocks - x8).mean() < 0.1
    # a nearest-centroid classifier reads the resized digits as well as the 8x8 ones (~0.90)
    assert nearest_centroid_accuracy(28) >= nearest_centroid_accuracy(8) - 0.01 > 0.85


def nearest_centroid_accuracy(size):
    (xtr, ytr), (xte, yte) = digits("train", size), digits("test", size)
    centroids = np.stack([xtr[ytr == k].reshape(-1, size * size).mean(0) for k in range(10)])
    dist = ((xte.reshape(len(xte), 1, -1) - centroids[None]) ** 2).sum(-1)
    return (dist.argmin(1) == yte).mean()


def test_arrays_are_the_callers_own():
    x, y = digits("train", 28)
    x[:] = -1
    y[:] = -1
    x2, y2 = digits("train", 28)
    assert x2.min() >= 0 and y2.min() >= 0 and x2.flags.writeable


@pytest.mark.parametrize("kw, match", [({"split": "valid"}, "split 'valid' is not one of"),
                                       ({"size": 0}, "positive int"),
                                       ({"size": 2.5}, "positive int"),
                                       ({"channels": 2}, "channels must be 1 or 3")])
def test_bad_arguments(kw, match):
    with pytest.raises(OptionError, match=match):
        digits(**kw)


def test_without_scikit_learn_the_error_says_how_to_install(monkeypatch):
    hal.data._split.cache_clear()
    hal.data._resized.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    try:
        with pytest.raises(HalError, match="pip install scikit-learn"):
            digits("test")
    finally:
        hal.data._split.cache_clear()
        hal.data._resized.cache_clear()
