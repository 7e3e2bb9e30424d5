"""HAL: write a neural network once, run it on any registered device, compare devices.

    import hal
    model = hal.models.get("lenet")
    fast = hal.compile(model, "cpu")          # best usable CPU backend
    ref = hal.compile(model, "cpu@reference") # the numpy oracle
    y = fast(x)                               # list of numpy arrays
    results = hal.compare(models=["lenet"], devices=["cpu@reference", "cpu"])

This module imports no ML framework; backends import theirs when first used.
"""

from __future__ import annotations

from typing import Any

from hal import errors, nn
from hal.backend import Backend, Buffer, CompileOptions, Device, Executable, HostBuffer, Transfers
from hal.compiler import CompiledModel
from hal.device import DeviceInfo, DeviceSpec
from hal.errors import (BackendError, DeviceNotFound, HalError, InputError, ModelError,
                        OptionError, UnsupportedOp)
from hal.ir.model import DEFAULT_OPSET, Model, TensorSpec, load, save
from hal.registry import device, devices, register_backend
from hal.selection import compile
from hal.training import TrainResult, train
from hal.version import __version__


def from_torch(module: Any, example_input: Any, **kw: Any) -> Model:
    """A torch.nn.Module as a hal.Model (needs PyTorch)."""
    from hal.frontends.torch_frontend import from_torch as _from_torch

    return _from_torch(module, example_input, **kw)


def __getattr__(name: str):
    if name in ("models", "data"):  # the zoo and the data sets: loaded on first use
        import importlib

        return importlib.import_module(f"hal.{name}")
    if name in ("prune", "sparsify", "distill", "compress"):  # hal.compression, on first use
        import importlib

        return getattr(importlib.import_module("hal.compression"), name)
    if name == "compare":  # the function, never the module of that name (see hal/compare.py)
        from hal.comparison.harness import compare

        return compare
    if name == "serve":  # hal.serving, on first use (starlette and uvicorn when it starts)
        from hal.serving import serve

        return serve
    raise AttributeError(f"module 'hal' has no attribute {name!r}")


__all__ = ["DEFAULT_OPSET", "Backend", "BackendError", "Buffer", "CompileOptions", "CompiledModel",
           "Device", "DeviceInfo", "DeviceNotFound", "DeviceSpec", "Executable", "HalError",
           "HostBuffer", "InputError", "Model", "ModelError", "OptionError", "TensorSpec",
           "TrainResult", "Transfers", "UnsupportedOp", "__version__", "compare", "compile",
           "compress", "data", "device", "devices", "distill", "errors", "from_torch", "load",
           "nn", "prune", "register_backend", "save", "serve", "sparsify", "train"]
