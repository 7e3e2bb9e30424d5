"""HAL's ``FakeQuantize`` (domain ``ai.hal``): quantization-aware training's rounding.

``FakeQuantize(x, scale?)`` computes ``clip(round(x / s), qmin, qmax) * s`` forward and lets
the gradient through unchanged where ``x`` is inside ``[qmin * s, qmax * s]`` (the clipped
straight-through estimator; a weight, whose scale comes from its own range, is never clipped,
so its largest element keeps its gradient whatever the framework does at the boundary). Without ``scale`` it is a weight's: ``s`` is ``max |x|`` over every
axis but ``axis``, over ``qmax`` (1 where that is 0), rounded to a power of two when
``power_of_two`` (of the two around it, the one with the smaller squared error), exactly as
``hal.passes.quantize`` scales the weight it writes as int8. No gradient flows into ``s``.
"""

from __future__ import annotations

from hal.backends.common.kernels import COMMON
from hal.ir.schemas import FAKE_QUANTIZE, HAL_DOMAIN


def _rounded(xp, x, s, qmin, qmax):
    return xp.clip(xp.round(x / s), qmin, qmax) * s


def _pow2(xp, x, s, qmax, other):
    """The power of two around ``s`` (per channel) with the smaller squared error on ``x``."""
    k = xp.ceil(xp.log(s) / 0.6931471805599453)
    up = xp.power(2.0 * xp.ones_like(s), k)
    up = xp.where(up < s, up * 2.0, xp.where(up / 2.0 >= s, up / 2.0, up))  # log's rounding
    down = up / 2.0

    def error(c):
        d = _rounded(xp, x, c, -qmax, qmax) - x
        return xp.sum(d * d, axis=other, keepdims=True)

    return xp.where(error(down) < error(up), down, up)


def weight_scale(xp, x, axis: int, qmax: int, power_of_two: bool):
    rank = len(x.shape)
    other = tuple(i for i in range(rank) if i != axis % rank)
    s = xp.max(xp.abs(x), axis=other, keepdims=True) / float(qmax)
    s = xp.where(s > 0, s, xp.ones_like(s))
    return _pow2(xp, x, s, qmax, other) if power_of_two else s


@COMMON.kernel(FAKE_QUANTIZE, domain=HAL_DOMAIN)
def fake_quantize(cx, x, scale=None, qmin=-128, qmax=127, axis=0, power_of_two=0):
    xp = cx.xp
    if scale is None:  # a weight: within its range by construction, so nothing to clip
        s = xp.stop_gradient(weight_scale(xp, x, int(axis), int(qmax), bool(power_of_two)))
        inside = x
    else:
        s = xp.stop_gradient(cx.const(scale, x))
        inside = xp.minimum(xp.maximum(x, s * float(qmin)), s * float(qmax))
    return inside + xp.stop_gradient(_rounded(xp, x, s, float(qmin), float(qmax)) - inside)
