"""The same models trained by Keras 3's own loop, ``model.fit``, on whichever backend
``KERAS_BACKEND`` names (set it before this module is imported).

``build(name, state_dict) -> Fit``; ``Fit.run(batches)`` trains on the micro-batches in order
with one ``model.fit`` call and returns the time of each step after the first (the interval
between the ends of consecutive steps, each closed by reading its loss back, as HAL's step
returns its loss) and the first step's loss.
"""

from __future__ import annotations

import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from keras import layers  # noqa: E402


def lenet() -> keras.Model:
    return keras.Sequential([
        keras.Input((1, 28, 28)), layers.Permute((2, 3, 1)),  # channels-last, as Keras works
        layers.Conv2D(20, 5), layers.MaxPooling2D(2), layers.Conv2D(50, 5),
        layers.MaxPooling2D(2), layers.Permute((3, 1, 2)),  # torch's flatten order
        layers.Flatten(), layers.Dense(500, activation="relu"), layers.Dense(10)])


def mlp() -> keras.Model:
    return keras.Sequential([
        keras.Input((784,)), layers.Dense(256, activation="relu"), layers.Dropout(0.1),
        layers.Dense(128, activation="tanh"), layers.Dense(10, activation="softmax")])


#: model -> (Keras model, whether its output is logits; the log-softmax goes into the loss)
MODELS = {"lenet": (lenet, True), "mlp": (mlp, False)}


def _set_weights(model: keras.Model, sd: dict) -> None:
    """The zoo's weights, in torch's layout ([out, in], OIHW), into Keras's layers in order."""
    pairs = [(sd[k], sd[k.replace(".weight", ".bias")]) for k in sd if k.endswith(".weight")]
    for layer in [la for la in model.layers if la.weights]:
        w, b = pairs.pop(0)
        kernel = np.transpose(w, (2, 3, 1, 0)) if w.ndim == 4 else w.T
        layer.set_weights([np.ascontiguousarray(kernel), b])


class StepClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends: list[float] = []
        self.first_loss: float | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])  # the host read closes the step
        if self.first_loss is None:
            self.first_loss = loss
        self.ends.append(time.perf_counter())


class Fit:
    def __init__(self, model: keras.Model):
        self.model = model

    def run(self, batches: list[dict]) -> tuple[list[float], float]:
        x = np.concatenate([b["input"] for b in batches])
        y = np.concatenate([b["target"] for b in batches])
        clock = StepClock()
        self.model.fit(x, y, batch_size=len(batches[0]["target"]), epochs=1, shuffle=False,
                       verbose=0, callbacks=[clock])
        return list(np.diff(clock.ends)), clock.first_loss


def build(name: str, state_dict: dict, lr: float = 1e-3, weight_decay: float = 0.01) -> Fit:
    make, logits = MODELS[name]
    model = make()
    _set_weights(model, {k: np.asarray(v, np.float32) for k, v in state_dict.items()})
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay,
                                                   beta_1=0.9, beta_2=0.999, epsilon=1e-8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits))
    return Fit(model)
