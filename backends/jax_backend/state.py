"""A trainer's state as named numpy arrays and back: pytrees (weights, optax's state)
flattened by ``jax.tree_util`` paths, ``opt/1/0/mu/conv.w``, and checked on the way back."""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.backends.jax_backend.framework import jax
from hal.errors import InputError


def pack(tree: Any) -> dict[str, np.ndarray]:
    """Each leaf of ``tree`` as a numpy array named by its path."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(path): np.asarray(leaf) for path, leaf in leaves}


def unpack(template: Any, state: dict[str, np.ndarray]) -> Any:
    """``template``'s structure with its leaves read from ``state`` (as ``pack`` named them).

    Raises InputError naming each missing, mis-shaped or mistyped entry, and the entries
    under ``template``'s top-level names that it does not have (another model's state).
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    problems, values, known = [], [], set()
    for path, leaf in leaves:
        name = path_name(path)
        known.add(name)
        if name not in state:
            problems.append(f"{name!r} is missing")
            continue
        a = np.asarray(state[name])
        shape, dtype = tuple(np.shape(leaf)), np.dtype(leaf.dtype)
        if a.shape != shape:
            problems.append(f"{name!r} has shape {list(a.shape)}, this model's {list(shape)}")
        elif not np.can_cast(a.dtype, dtype, "same_kind"):
            problems.append(f"{name!r} is {a.dtype}, this model's is {dtype}")
        values.append(a.astype(dtype))
    unknown = sorted(k for k in state if k.split("/")[0] in template and k not in known)
    problems += [f"{k!r} is not in this model" for k in unknown[:5]]
    if problems:
        raise InputError("the training state does not fit this trainer (another model, "
                         "optimizer or precision?): " + "; ".join(problems))
    return jax.tree_util.tree_unflatten(treedef, values)


def path_name(path: tuple) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)
