"""Sizes HAL refuses before memory is touched: a model file, and any one tensor.

Both are read from the environment each time they are asked for, so a process can raise them
(``HAL_MAX_MODEL_BYTES=8GiB``) without touching code. A size is a number of bytes, optionally
with a unit: ``4GiB``, ``512MiB``, ``1e9``.
"""

from __future__ import annotations

import os
import re

from hal.errors import ModelError

#: the largest .onnx file HAL parses: protobuf's own limit, so a bigger file gets a clear message
DEFAULT_MAX_MODEL_BYTES = 2 << 30
#: the largest tensor (input, weight, constant or intermediate) a model may declare
DEFAULT_MAX_TENSOR_BYTES = 4 << 30

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str, what: str) -> int:
    """``text`` ("4GiB", "1e9", "512 MiB") as a number of bytes; ModelError if it is none."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    try:
        value = float(m.group(1)) * _UNITS[unit] if m else -1
    except (KeyError, ValueError):
        value = -1
    if not value > 0:
        raise ModelError(f"{what}={text!r} is not a size; write bytes, e.g. 4294967296 or 4GiB")
    return int(value)


def _from_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    return default if text in (None, "") else parse_size(text, name)


def max_model_bytes() -> int:
    """The largest model file HAL reads (``HAL_MAX_MODEL_BYTES``, default 2 GiB)."""
    return _from_env("HAL_MAX_MODEL_BYTES", DEFAULT_MAX_MODEL_BYTES)


def max_tensor_bytes() -> int:
    """The largest tensor a model may declare (``HAL_MAX_TENSOR_BYTES``, default 4 GiB)."""
    return _from_env("HAL_MAX_TENSOR_BYTES", DEFAULT_MAX_TENSOR_BYTES)


def human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} bytes"
