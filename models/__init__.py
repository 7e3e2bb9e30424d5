"""The model zoo: each model written once with hal.nn, with deterministic weights.

    hal.models.list()            -> ['dwsep', 'lenet', ...]
    hal.models.get("lenet")      -> hal.Model with a dynamic batch dim
    hal.models.build("lenet")    -> the hal.nn.Module itself
    hal.models.calibration_data("lenet") -> inputs to calibrate int8 quantization with
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np

from hal.errors import ModelError

_NAMES = ("lenet", "dwsep", "mlp", "resnet_lite", "mobilenet_lite", "tiny_transformer", "digits")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    input_shape: tuple  # None is the dynamic batch dim
    description: str
    classes: int  # size of the last axis scored by top-1 agreement


def _module(name: str):
    if name not in _NAMES:
        raise ModelError(f"no zoo model named {name!r}; available: {', '.join(sorted(_NAMES))}")
    return importlib.import_module(f"hal.models.{name}")


def list() -> list[str]:  # noqa: A001 - the public name the API promises
    return sorted(_NAMES)


def info(name: str) -> ZooEntry:
    m = _module(name)
    return ZooEntry(name, m.INPUT_SHAPE, m.__doc__.strip().splitlines()[0], m.CLASSES)


def build(name: str, seed: int = 0):
    """The model as a hal.nn.Module with weights drawn from ``seed``."""
    from hal import nn

    with nn.seed(seed):
        return _module(name).build()


def get(name: str, seed: int = 0):
    """The model as a hal.Model (dynamic batch), ready for hal.compile; it carries its own
    int8 calibration inputs (``calibration_data``) for a compile that passes none."""
    m = _module(name)
    model = build(name, seed).to_model(m.INPUT_SHAPE, name=name)
    model.calibration = functools.partial(own_calibration, name)
    return model


def example_input(name: str, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A deterministic input batch of the right shape and dtype (real data where the model
    has a data set, e.g. digits' held-out images; seeded noise otherwise)."""
    mod = _module(name)
    if hasattr(mod, "example_input"):
        return mod.example_input(batch, seed)
    shape = (batch, *mod.INPUT_SHAPE[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


#: seeded calibration inputs: how many, and a seed other than example_input's
CALIBRATION_BATCH = 32
CALIBRATION_SEED = 1


def calibration_data(name: str, batch: int | None = None) -> np.ndarray:
    """Inputs to calibrate ``precision="int8"`` with (``hal.compile(..., calibration=)``).

    A model with real data gives it (``digits``: its training split, all of it unless
    ``batch`` says how many); the others give ``batch`` (default 32) seeded standard-normal
    inputs, the distribution their ``example_input`` draws from, with another seed.
    """
    m = _module(name)
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ModelError(f"calibration batch must be a positive int, got {batch!r}")
    if hasattr(m, "calibration_data"):
        return m.calibration_data(batch)
    shape = (batch or CALIBRATION_BATCH, *m.INPUT_SHAPE[1:])
    return np.random.default_rng(CALIBRATION_SEED).standard_normal(shape).astype(np.float32)


def calibration_source(name: str, batch: int | None = None) -> str:
    """Where ``calibration_data(name, batch)`` comes from, in words (shown by --explain)."""
    m = _module(name)
    n = len(calibration_data(name, batch)) if hasattr(m, "calibration_data") else \
        batch or CALIBRATION_BATCH
    return _source(name, n)


def own_calibration(name: str) -> tuple[np.ndarray, str]:
    """``(calibration_data(name), calibration_source(name))`` with the data read once: what a
    zoo model's ``hal.Model.calibration`` returns."""
    data = calibration_data(name)
    return data, _source(name, len(data))


def _source(name: str, samples: int) -> str:
    what = getattr(_module(name), "CALIBRATION_SOURCE",
                   f"seeded standard-normal inputs (seed {CALIBRATION_SEED})")
    return f"zoo {name!r}: {samples} {what}"


def randomize_batchnorm(module, seed: int = 1) -> None:
    """Give every BatchNorm non-trivial statistics so BN folding is really exercised."""
    from hal import nn

    rng = np.random.default_rng(seed)
    for _, m in module.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.weight.shape[0]
            m.weight = rng.uniform(0.5, 1.5, c).astype(np.float32)
            m.bias = rng.normal(0, 0.1, c).astype(np.float32)
            m.running_mean = rng.normal(0, 0.1, c).astype(np.float32)
            m.running_var = rng.uniform(0.5, 1.5, c).astype(np.float32)
