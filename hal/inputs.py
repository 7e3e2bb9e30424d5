"""Inputs for a model from outside it: deterministic example batches and calibration files.

Shared by ``hal run``, ``hal compare`` and the benchmarks, so every one of them feeds a model
the same arrays.
"""

from __future__ import annotations

import os

import numpy as np

from hal.errors import InputError
from hal.ir.model import Model


def example_inputs(model: Model, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Deterministic inputs for ``model``, dynamic dims taking ``batch``: a zoo model's own
    example input (real data where it has a data set), else seeded random arrays of each
    input's shape and dtype."""
    from hal import models

    if model.name in models.list() and len(model.inputs) == 1:
        return [models.example_input(model.name, batch, seed)]
    rng = np.random.default_rng(seed)
    out = []
    for spec in model.inputs:
        shape = tuple(d if isinstance(d, int) else batch for d in spec.shape)
        if np.issubdtype(spec.dtype, np.floating):
            out.append(rng.standard_normal(shape).astype(spec.dtype))
        elif spec.dtype == np.bool_:
            out.append(rng.integers(0, 2, shape).astype(bool))
        else:
            out.append(rng.integers(0, 10, shape).astype(spec.dtype))
    return out


def load_calibration(path: str | os.PathLike, model: Model) -> np.ndarray | dict:
    """int8 calibration inputs from a file, as ``hal.compile(..., calibration=)`` takes them:
    a .npy holds a batch of the single input; a .npz holds arrays by input name (a
    single-input model takes a file holding one array under any name)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"calibration file {path!r} does not exist")
    if not path.endswith((".npy", ".npz")):
        raise InputError(f"calibration file {path!r} must be a .npy (the single input) or .npz "
                         f"(arrays named by input: {', '.join(str(s) for s in model.inputs)})")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read calibration file {path!r}: {exc}") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        arrays = {k: data[k] for k in data.files}
    names = [s.name for s in model.inputs]
    if len(names) == 1 and len(arrays) == 1 and names[0] not in arrays:
        return next(iter(arrays.values()))
    return arrays


def samples(data: np.ndarray | dict) -> int:
    """How many samples calibration ``data`` (an array, or arrays by input name) holds."""
    if isinstance(data, np.ndarray):
        return len(data)
    return len(next(iter(data.values()), []))
