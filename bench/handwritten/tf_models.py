"""Zoo models written by hand in TensorFlow: the peer HAL's ``tf`` backend is measured against.

``build(name, hal_module)`` returns a callable ``f(x: np.ndarray) -> np.ndarray`` over a
``tf.function`` (``f.tf_function``) written the way a TensorFlow user would: channels-last
convolutions, weights from the hal.nn module's ``state_dict()`` as tf constants, batch norm
folded into a scale and shift. It takes the zoo's NCHW input and transposes it once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

MODELS = ("lenet", "mobilenet_lite", "resnet_lite", "tiny_transformer")


def build(name: str, hal_module, jit_compile: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """The zoo model ``name`` in plain TensorFlow, with ``hal_module``'s weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if name not in MODELS:
        raise ValueError(f"no hand-written TF model {name!r}; have {MODELS}")
    sd = {k: np.asarray(v, np.float32) for k, v in hal_module.state_dict().items()}
    forward, shape = {"lenet": _lenet, "mobilenet_lite": _mobilenet, "resnet_lite": _resnet,
                      "tiny_transformer": _transformer}[name](tf, sd)
    fn = tf.function(forward, jit_compile=jit_compile, autograph=False,
                     input_signature=[tf.TensorSpec([None, *shape], tf.float32)])
    concrete = fn.get_concrete_function()

    def run(x: np.ndarray) -> np.ndarray:
        return concrete(tf.constant(x)).numpy()

    run.tf_function = concrete
    return run


# -- pieces --------------------------------------------------------------------------------
def _conv_w(tf, w):  # [O, I, kh, kw] -> [kh, kw, I, O]
    return tf.constant(np.transpose(w, (2, 3, 1, 0)))


def _dw_w(tf, w):  # depthwise [C, 1, kh, kw] -> [kh, kw, C, 1]
    return tf.constant(np.transpose(w, (2, 3, 0, 1)))


def _bn(tf, sd, p, eps=1e-5):
    inv = sd[p + ".weight"] / np.sqrt(sd[p + ".running_var"] + eps)
    return tf.constant(inv), tf.constant(sd[p + ".bias"] - sd[p + ".running_mean"] * inv)


def _dense(tf, sd, p):
    return tf.constant(sd[p + ".weight"].T.copy()), tf.constant(sd[p + ".bias"])


def _lenet(tf, sd):
    w1, b1 = _conv_w(tf, sd["0.weight"]), tf.constant(sd["0.bias"])
    w2, b2 = _conv_w(tf, sd["2.weight"]), tf.constant(sd["2.bias"])
    f1, c1 = _dense(tf, sd, "5")
    f2, c2 = _dense(tf, sd, "7")

    def forward(x):
        x = tf.transpose(x, [0, 2, 3, 1])
        x = tf.nn.max_pool2d(tf.nn.bias_add(tf.nn.conv2d(x, w1, 1, "VALID"), b1), 2, 2, "VALID")
        x = tf.nn.max_pool2d(tf.nn.bias_add(tf.nn.conv2d(x, w2, 1, "VALID"), b2), 2, 2, "VALID")
        x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, 800])  # torch's flatten order
        x = tf.nn.relu(tf.matmul(x, f1) + c1)
        return tf.nn.log_softmax(tf.matmul(x, f2) + c2, axis=1)

    return forward, (1, 28, 28)


def _mobilenet(tf, sd):
    def cbr(p, stride=1, depthwise=False, act=True):
        w = _dw_w(tf, sd[p + ".0.weight"]) if depthwise else _conv_w(tf, sd[p + ".0.weight"])
        scale, shift = _bn(tf, sd, p + ".1")
        k = w.shape[0]

        def f(x):
            if k > 1:  # ONNX pads k//2 on each side (TF's SAME would pad after, at stride 2)
                x = tf.pad(x, [[0, 0], [k // 2, k // 2], [k // 2, k // 2], [0, 0]])
            if depthwise:
                y = tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "VALID")
            else:
                y = tf.nn.conv2d(x, w, stride, "VALID")
            y = y * scale + shift
            return tf.clip_by_value(y, 0.0, 6.0) if act else y

        return f

    def block(i, stride, residual):
        p = f"{i}.body"
        expand, dw = cbr(p + ".0"), cbr(p + ".1", stride, depthwise=True)
        project = cbr(p + ".2", act=False)

        def f(x):
            y = project(dw(expand(x)))
            return x + y if residual else y

        return f

    stem, head_conv = cbr("0", stride=2), cbr("4")
    blocks = [block(1, 1, True), block(2, 2, False), block(3, 1, True)]
    fw, fb = _dense(tf, sd, "7")

    def forward(x):
        x = stem(tf.transpose(x, [0, 2, 3, 1]))
        for b in blocks:
            x = b(x)
        x = tf.reduce_mean(head_conv(x), [1, 2])
        return tf.matmul(x, fw) + fb

    return forward, (3, 32, 32)


def _resnet(tf, sd):
    def conv_bn(p, stride=1):
        w = _conv_w(tf, sd[p + ".0.weight"])
        scale, shift = _bn(tf, sd, p + ".1")
        k = w.shape[0]

        def f(x):
            if k > 1:
                x = tf.pad(x, [[0, 0], [k // 2, k // 2], [k // 2, k // 2], [0, 0]])
            return tf.nn.conv2d(x, w, stride, "VALID") * scale + shift

        return f

    def block(i, stride, shortcut):
        c1, c2 = conv_bn(f"{i}.conv1", stride), conv_bn(f"{i}.conv2")
        sc = conv_bn(f"{i}.shortcut", stride) if shortcut else None

        def f(x):
            y = c2(tf.nn.relu(c1(x)))
            return tf.nn.relu(y + (sc(x) if sc else x))

        return f

    stem = conv_bn("0")
    blocks = [block(2, 1, False), block(3, 1, False), block(4, 2, True), block(5, 1, False)]
    fw, fb = _dense(tf, sd, "9")

    def forward(x):
        x = tf.nn.relu(stem(tf.transpose(x, [0, 2, 3, 1])))
        for b in blocks:
            x = b(x)
        return tf.matmul(tf.reduce_mean(x, [1, 2]), fw) + fb

    return forward, (3, 32, 32)


def _transformer(tf, sd):
    dim, heads = 64, 4
    hd = dim // heads

    def ln(p):
        g, b = tf.constant(sd[p + ".weight"]), tf.constant(sd[p + ".bias"])

        def f(x):
            mean, var = tf.nn.moments(x, [-1], keepdims=True)
            return (x - mean) * tf.math.rsqrt(var + 1e-5) * g + b

        return f

    def linear(p):
        w, b = _dense(tf, sd, p)
        return lambda x: tf.tensordot(x, w, 1) + b

    def layer(p):
        n1, n2 = ln(p + ".norm1"), ln(p + ".norm2")
        q, k, v, o = (linear(f"{p}.attn.{n}") for n in ("q", "k", "v", "out"))
        m1, m2 = linear(p + ".mlp.0"), linear(p + ".mlp.2")

        def split(t):
            n = tf.shape(t)[0]
            return tf.transpose(tf.reshape(t, [n, -1, heads, hd]), [0, 2, 1, 3])

        def f(x):
            h = n1(x)
            qh, kh, vh = split(q(h)), split(k(h)), split(v(h))
            att = tf.nn.softmax(tf.matmul(qh, kh, transpose_b=True) * (1.0 / math.sqrt(hd)), -1)
            y = tf.transpose(tf.matmul(att, vh), [0, 2, 1, 3])
            x = x + o(tf.reshape(y, [tf.shape(x)[0], -1, dim]))
            return x + m2(tf.nn.gelu(m1(n2(x)), approximate=False))

        return f

    l0, l1, norm, head = layer("layer0"), layer("layer1"), ln("norm"), linear("head")

    def forward(x):
        return head(tf.reduce_mean(norm(l1(l0(x))), 1))

    return forward, (16, 64)
