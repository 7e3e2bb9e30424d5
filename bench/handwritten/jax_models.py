"""The zoo written directly in jax, as a jax user would: ``build(name, module) -> jitted fn``.

Parameters come from the hal.nn module's ``state_dict()``, so the outputs match HAL's
for the same weights. Batch norm is applied in inference form (scale and shift from the
running statistics, computed once here), layouts are the models' own NCHW, and matmuls
and convolutions use fp32 at HIGHEST precision, the same contract as HAL's fp32.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

MODELS = ("lenet", "mobilenet_lite", "resnet_lite", "tiny_transformer")


def build(name: str, hal_module) -> Callable:
    """A jitted ``f(x) -> logits`` for zoo model ``name`` with ``hal_module``'s weights."""
    import jax

    if name not in MODELS:
        raise KeyError(f"no hand-written jax model for {name!r}; have {list(MODELS)}")
    sd = {k: jax.device_put(np.asarray(v)) for k, v in hal_module.state_dict().items()}
    forward = globals()[f"_{name}"]
    params = _prepare(name, sd)
    fn = jax.jit(forward)
    return lambda x: fn(params, x)


def _prepare(name: str, sd: dict) -> dict:
    """Fold each BatchNorm's running statistics into a per-channel scale and shift."""
    out = dict(sd)
    for key in [k for k in sd if k.endswith(".running_var")]:
        p = key[: -len(".running_var")]
        scale = sd[p + ".weight"] / np.sqrt(np.asarray(sd[key]) + 1e-5)
        out[p + ".scale"] = scale
        out[p + ".shift"] = sd[p + ".bias"] - sd[p + ".running_mean"] * scale
    return out


def _conv(x, w, b=None, stride=1, pad=0, groups=1):
    from jax import lax

    y = lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                 feature_group_count=groups, precision=lax.Precision.HIGHEST)
    return y if b is None else y + b[None, :, None, None]


def _linear(x, p, k):
    import jax.numpy as jnp
    from jax import lax

    return jnp.matmul(x, p[k + ".weight"].T, precision=lax.Precision.HIGHEST) + p[k + ".bias"]


def _bn(x, p, k):
    return x * p[k + ".scale"][None, :, None, None] + p[k + ".shift"][None, :, None, None]


def _maxpool2(x):
    import jax.numpy as jnp
    from jax import lax

    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def _lenet(p, x):
    import jax
    import jax.numpy as jnp

    x = _maxpool2(_conv(x, p["0.weight"], p["0.bias"]))
    x = _maxpool2(_conv(x, p["2.weight"], p["2.bias"]))
    x = jnp.maximum(_linear(x.reshape(x.shape[0], -1), p, "5"), 0)
    return jax.nn.log_softmax(_linear(x, p, "7"), axis=1)


def _cbr(x, p, k, stride=1, groups=1, act=True):
    import jax.numpy as jnp

    w = p[k + ".0.weight"]
    y = _bn(_conv(x, w, None, stride, w.shape[2] // 2, groups), p, k + ".1")
    return jnp.clip(y, 0, 6) if act else y


def _mobilenet_lite(p, x):
    x = _cbr(x, p, "0", stride=2)
    for i, stride, residual in (("1", 1, True), ("2", 2, False), ("3", 1, True)):
        y = _cbr(x, p, f"{i}.body.0")
        y = _cbr(y, p, f"{i}.body.1", stride=stride, groups=y.shape[1])
        y = _cbr(y, p, f"{i}.body.2", act=False)
        x = x + y if residual else y
    x = _cbr(x, p, "4")
    return _linear(x.mean(axis=(2, 3)), p, "7")


def _resnet_lite(p, x):
    import jax.numpy as jnp

    def conv_bn(x, k, stride=1):
        w = p[k + ".0.weight"]
        return _bn(_conv(x, w, None, stride, w.shape[2] // 2), p, k + ".1")

    x = jnp.maximum(conv_bn(x, "0"), 0)
    for i, stride in (("2", 1), ("3", 1), ("4", 2), ("5", 1)):
        y = conv_bn(jnp.maximum(conv_bn(x, f"{i}.conv1", stride), 0), f"{i}.conv2")
        s = conv_bn(x, f"{i}.shortcut", stride) if f"{i}.shortcut.0.weight" in p else x
        x = jnp.maximum(y + s, 0)
    return _linear(x.mean(axis=(2, 3)), p, "9")  # 8 is the Dropout


def _layer_norm(x, p, k):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    import jax

    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p[k + ".weight"] + p[k + ".bias"]


def _tiny_transformer(p, x, heads=4):
    import jax
    import jax.numpy as jnp
    from jax import lax

    n, t, d = x.shape
    hd = d // heads

    def split(y):
        return y.reshape(n, t, heads, hd).transpose(0, 2, 1, 3)

    for layer in ("layer0", "layer1"):
        h = _layer_norm(x, p, f"{layer}.norm1")
        q, k, v = (split(_linear(h, p, f"{layer}.attn.{w}")) for w in "qkv")
        s = jnp.einsum("nhtd,nhsd->nhts", q, k, precision=lax.Precision.HIGHEST) / math.sqrt(hd)
        a = jnp.einsum("nhts,nhsd->nhtd", jax.nn.softmax(s, -1), v,
                       precision=lax.Precision.HIGHEST)
        x = x + _linear(a.transpose(0, 2, 1, 3).reshape(n, t, d), p, f"{layer}.attn.out")
        h = _layer_norm(x, p, f"{layer}.norm2")
        h = jax.nn.gelu(_linear(h, p, f"{layer}.mlp.0"), approximate=False)
        x = x + _linear(h, p, f"{layer}.mlp.2")
    x = _layer_norm(x, p, "norm")
    return _linear(x.mean(axis=1), p, "head")
