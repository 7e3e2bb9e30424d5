"""A training step written directly in TensorFlow: ``tf.Variable`` weights (channels-last
kernels, as TensorFlow's CPU convolutions want them), ``tf.GradientTape`` and a Keras
``AdamW`` inside one ``tf.function`` (XLA on request).

``build(name, state_dict, jit_compile=False) -> step(batch) -> float`` (see ``train_torch``).
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def _dense(sd, k):
    return (tf.Variable(np.ascontiguousarray(sd[k + ".weight"].T)),
            tf.Variable(sd[k + ".bias"]))


def lenet(sd):
    w1 = tf.Variable(np.transpose(sd["0.weight"], (2, 3, 1, 0)))  # OIHW -> HWIO
    w2 = tf.Variable(np.transpose(sd["2.weight"], (2, 3, 1, 0)))
    b1, b2 = tf.Variable(sd["0.bias"]), tf.Variable(sd["2.bias"])
    (f1, c1), (f2, c2) = _dense(sd, "5"), _dense(sd, "7")

    def forward(x, seed):
        x = tf.transpose(x, [0, 2, 3, 1])
        x = tf.nn.max_pool2d(tf.nn.bias_add(tf.nn.conv2d(x, w1, 1, "VALID"), b1), 2, 2, "VALID")
        x = tf.nn.max_pool2d(tf.nn.bias_add(tf.nn.conv2d(x, w2, 1, "VALID"), b2), 2, 2, "VALID")
        x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, 800])  # torch's flatten order
        return tf.nn.log_softmax(tf.nn.relu(x @ f1 + c1) @ f2 + c2, axis=1)

    return [w1, b1, w2, b2, f1, c1, f2, c2], forward


def mlp(sd, rate=0.1):
    (w1, b1), (w2, b2), (w3, b3) = _dense(sd, "0"), _dense(sd, "3"), _dense(sd, "5")

    def forward(x, seed):
        x = tf.nn.experimental.stateless_dropout(tf.nn.relu(x @ w1 + b1), rate, seed)
        return tf.nn.softmax(tf.tanh(x @ w2 + b2) @ w3 + b3, axis=1)

    return [w1, b1, w2, b2, w3, b3], forward


#: model -> (weights and forward, whether its output is probabilities, not log-probabilities)
MODELS = {"lenet": (lenet, False), "mlp": (mlp, True)}


def build(name: str, state_dict: dict, lr: float = 1e-3, weight_decay: float = 0.01,
          jit_compile: bool = False):
    make, probabilities = MODELS[name]
    variables, forward = make({k: np.asarray(v, np.float32) for k, v in state_dict.items()})
    opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay, beta_1=0.9,
                                 beta_2=0.999, epsilon=1e-8)
    opt.build(variables)

    @tf.function(jit_compile=jit_compile)
    def update(x, y, seed):
        with tf.GradientTape() as tape:
            out = forward(x, seed)
            logp = tf.math.log(out) if probabilities else out
            loss = -tf.reduce_mean(tf.gather(logp, y, batch_dims=1))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    steps = [0]

    def step(batch: dict) -> float:
        seed = tf.constant([0, steps[0]], tf.int64)
        loss = update(tf.constant(batch["input"]), tf.constant(batch["target"]), seed)
        steps[0] += 1
        return float(loss)

    return step
