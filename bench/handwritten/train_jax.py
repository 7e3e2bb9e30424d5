"""A training step written directly in jax: a pure loss function, ``jax.value_and_grad``,
``optax.adamw``, the whole update in one ``jax.jit`` with the parameters and optimizer state
donated, as the jax and optax documentation write it.

``build(name, state_dict) -> step(batch) -> float`` (see ``train_torch``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax


def _dense(p, k, x):
    return x @ p[k + ".weight"].T + p[k + ".bias"]


def _conv(p, k, x):
    y = lax.conv_general_dilated(x, p[k + ".weight"], (1, 1), "VALID")
    return y + p[k + ".bias"][None, :, None, None]


def _maxpool2(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def lenet(p, x, key):
    x = _maxpool2(_conv(p, "2", _maxpool2(_conv(p, "0", x))))
    x = jax.nn.relu(_dense(p, "5", x.reshape(x.shape[0], -1)))
    return jax.nn.log_softmax(_dense(p, "7", x), axis=1)


def mlp(p, x, key, rate=0.1):
    x = jax.nn.relu(_dense(p, "0", x))
    x = jnp.where(jax.random.bernoulli(key, 1 - rate, x.shape), x / (1 - rate), 0)
    return jax.nn.softmax(_dense(p, "5", jnp.tanh(_dense(p, "3", x))), axis=1)


#: model -> (forward, whether its output is probabilities rather than log-probabilities)
MODELS = {"lenet": (lenet, False), "mlp": (mlp, True)}


def build(name: str, state_dict: dict, lr: float = 1e-3, weight_decay: float = 0.01):
    forward, probabilities = MODELS[name]
    tx = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)

    def loss_fn(params, x, y, key):
        out = forward(params, x, key)
        logp = jnp.log(out) if probabilities else out
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def update(params, opt_state, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    update = jax.jit(update, donate_argnums=(0, 1))
    params = {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in state_dict.items()}
    state = {"params": params, "opt": tx.init(params), "step": 0}
    base = jax.random.key(0)

    def step(batch: dict) -> float:
        key = jax.random.fold_in(base, state["step"])
        state["params"], state["opt"], loss = update(state["params"], state["opt"],
                                                     batch["input"],
                                                     batch["target"].astype(np.int32), key)
        state["step"] += 1
        return float(loss)

    return step
