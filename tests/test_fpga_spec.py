"""The int8 specification: rounding, saturation, multipliers, layers."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.fpga import spec


def test_rounding_is_half_up():
    acc = np.array([[5, 6, 7, -5, -6, -7, 2, -2]], np.int32).T  # divide by 4 (m=1, s=2)
    y = spec.requantize(acc, [1], [2], channel_axis=1)
    # 1.25->1, 1.5->2 (tie up), 1.75->2, -1.25->-1, -1.5->-1 (tie up), -1.75->-2, .5->1, -.5->0
    assert y.ravel().tolist() == [1, 2, 2, -1, -1, -2, 1, 0]


def test_saturation_and_activation_bounds():
    acc = np.array([[100000, -100000, 300, -300]], np.int32).T
    assert spec.requantize(acc, [1], [1], channel_axis=1).ravel().tolist() == [127, -128, 127, -128]
    relu6 = spec.requantize(acc, [1], [1], act_min=0, act_max=96, channel_axis=1)
    assert relu6.ravel().tolist() == [96, 0, 96, 0]


@pytest.mark.parametrize("real", [0.5, 0.001234, 3.7e-5, 0.9999999, 1e-9, 0.75])
def test_quantize_multiplier(real):
    m, s = spec.quantize_multiplier(real)
    assert 0 < m < 2 ** 31 and 1 <= s <= spec.MAX_SHIFT
    assert abs(m * 2.0 ** -s - real) <= real * 2 ** -30 + 2.0 ** -spec.MAX_SHIFT


def test_power_of_two_multiplier():
    assert spec.quantize_multiplier(1 / 64, power_of_two=True) == (1, 6)
    with pytest.raises(ValueError):
        spec.quantize_multiplier(-1.0)


def test_conv_matches_float_math_before_rounding():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (2, 4, 7, 7), dtype=np.int8)
    w = rng.integers(-128, 128, (6, 2, 3, 3), dtype=np.int8)
    b = rng.integers(-5000, 5000, 6, dtype=np.int32)
    acc = spec.conv2d_acc(x, w, b, stride=2, pad=1, groups=2)
    # float64 is exact for these magnitudes
    xf = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((2, 6, 4, 4))
    for o in range(6):
        g = o // 3
        for i in range(4):
            for j in range(4):
                ref[:, o, i, j] = (xf[:, 2 * g:2 * g + 2, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                                   * w[o]).sum(axis=(1, 2, 3)) + b[o]
    np.testing.assert_array_equal(acc, ref.astype(np.int32))


def test_max_k_guard():
    with pytest.raises(ValueError, match="MAX_K"):
        spec.gemm_acc(np.zeros((1, spec.MAX_K + 1), np.int8), np.zeros((1, spec.MAX_K + 1), np.int8),
                      [0])


def test_pool_after_requantize():
    y = spec.conv2d(np.ones((1, 1, 4, 4), np.int8), np.ones((1, 1, 1, 1), np.int8), [0], [1], [1],
                    pool=2)
    assert y.shape == (1, 1, 2, 2)
