"""Turn whatever the user hands in into a hal.Model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx

from hal.errors import ModelError
from hal.ir.model import Model, load


def to_model(obj: Any, input_shape=None, example_input=None) -> Model:
    """``obj`` as a hal.Model: a hal.Model itself, a hal.nn.Module (with ``input_shape``), a
    torch.nn.Module (with ``example_input``), a zoo name (``hal.models.get``: the model with
    its own calibration inputs), an .onnx path, bytes or an onnx.ModelProto."""
    from hal.nn import Module

    if isinstance(obj, Model):
        return obj
    if isinstance(obj, Module):
        if input_shape is None:
            raise ModelError(f"compiling a hal.nn.Module ({type(obj).__name__}) needs its input "
                             f"shape: hal.compile(net, device, input_shape=(None, 1, 28, 28))")
        shapes = input_shape if input_shape and isinstance(input_shape[0], (tuple, list)) \
            else (input_shape,)
        return obj.to_model(*shapes)
    if _is_torch_module(obj):
        from hal.frontends.torch_frontend import from_torch

        if example_input is None:
            raise ModelError("compiling a torch.nn.Module needs example_input= (a tensor or "
                             "array of the input's shape)")
        return from_torch(obj, example_input)
    if isinstance(obj, str) and not obj.endswith(".onnx") and not os.path.exists(obj):
        from hal import models

        if is_zoo_name(obj):
            return models.get(obj)
        raise ModelError(f"{obj!r} is neither a zoo model ({', '.join(models.list())}) nor an "
                         f"existing .onnx file")
    if isinstance(obj, (str, os.PathLike, bytes, bytearray, onnx.ModelProto)):
        return load(obj)
    if isinstance(obj, Path):
        return load(obj)
    raise ModelError(f"cannot compile a {type(obj).__name__}: pass a hal.Model, an .onnx path, "
                     f"an onnx.ModelProto, a zoo name, a hal.nn.Module or a torch.nn.Module")


def is_zoo_name(obj: Any) -> bool:
    """``obj`` names a zoo model the way ``to_model`` reads it (a file of that name wins)."""
    from hal import models

    return isinstance(obj, str) and obj in models.list() and not os.path.exists(obj)


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module"
               for c in type(obj).__mro__)
