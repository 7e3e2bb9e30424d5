"""PyTorch-like layers that build HAL IR. Weights are seeded numpy arrays."""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import OrderedDict
from typing import Iterator, Sequence

import numpy as np

from hal.errors import HalError, ModelError
from hal.nn import functional as F
from hal.nn.tracing import Tensor, scope, trace

_rng = np.random.default_rng(0)
#: the generator of a ``seed`` block, per thread: zoo models built in several threads at once
#: (``hal.compile("lenet")`` from a thread pool) each draw their own seeded weights
_block = threading.local()


def manual_seed(seed: int) -> None:
    """Seed the generator every layer draws its initial weights from (inside a ``seed``
    block, that block's generator until it ends)."""
    global _rng
    if getattr(_block, "rng", None) is not None:
        _block.rng = np.random.default_rng(seed)
    else:
        _rng = np.random.default_rng(seed)


@contextlib.contextmanager
def seed(value: int):
    """Build layers with weights drawn from ``value`` in this thread, then restore the
    previous generator."""
    prev = getattr(_block, "rng", None)
    _block.rng = np.random.default_rng(value)
    try:
        yield
    finally:
        _block.rng = prev


def _uniform(shape: Sequence[int], bound: float) -> np.ndarray:
    rng = getattr(_block, "rng", None) or _rng
    return rng.uniform(-bound, bound, size=tuple(shape)).astype(np.float32)


class Module:
    """Base class: holds parameters (numpy) and child modules; ``forward`` uses hal.nn ops."""

    def __init__(self) -> None:
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, Module):
            self._modules[name] = value
            value.__dict__["_scope_name"] = name  # nodes it records are named by this path
        elif isinstance(value, np.ndarray) and "_params" in self.__dict__:
            self._params[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *xs: Tensor):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *xs):
        if xs and isinstance(xs[0], np.ndarray):
            raise ModelError(f"{type(self).__name__} is called on symbolic tensors while tracing; "
                             f"to run it on arrays use hal.compile(module, device, "
                             f"input_shape=...) and call the compiled model")
        with scope(self.__dict__.get("_scope_name", "")):
            return self.forward(*xs)

    # -- parameters -----------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {}
        for path, m in self.named_modules():
            for name, p in m._params.items():
                out[f"{path}.{name}" if path else name] = p
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        mine = self.state_dict()
        missing = sorted(set(mine) - set(state))
        extra = sorted(set(state) - set(mine))
        if missing or extra:
            raise HalError(f"state dict does not match {type(self).__name__}: missing {missing}, "
                           f"unexpected {extra}")
        for path, m in self.named_modules():
            for name, p in list(m._params.items()):
                new = np.asarray(state[f"{path}.{name}" if path else name])
                if new.shape != p.shape:
                    raise HalError(f"parameter {path}.{name}: shape {new.shape} given, "
                                   f"{p.shape} expected")
                setattr(m, name, new.astype(p.dtype, copy=True))

    def save_weights(self, path: str | os.PathLike) -> None:
        np.savez(path, **self.state_dict())

    def load_weights(self, path: str | os.PathLike) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                self.load_state_dict({k: data[k] for k in data.files})
        except (OSError, ValueError) as exc:
            raise HalError(f"cannot read weights from {str(path)!r}: {exc}") from None

    def to_model(self, *input_shapes, input_names=None, dtype=np.float32, name=None):
        """Trace this module into a hal.Model; ``None`` marks the dynamic batch dim."""
        return trace(self._traced, *input_shapes, input_names=input_names, dtype=dtype,
                     name=name or type(self).__name__.lower())

    def _traced(self, *xs):
        return self.forward(*xs)


class Sequential(Module):
    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def forward(self, x):
        for name, m in self._modules.items():
            x = m(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)


class Conv2d(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ModelError(f"Conv2d({in_channels}, {out_channels}, groups={groups}): groups must "
                             f"divide both channel counts")
        k = F._pair(kernel_size)
        fan_in = in_channels // groups * k[0] * k[1]
        bound = 1 / math.sqrt(fan_in)
        self.weight = _uniform((out_channels, in_channels // groups, *k), bound)
        self.bias = _uniform((out_channels,), bound) if bias else None
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = _uniform((out_features, in_features), bound)
        self.bias = _uniform((out_features,), bound) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class BatchNorm2d(Module):
    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.weight = np.ones(num_features, np.float32)
        self.bias = np.zeros(num_features, np.float32)
        self.running_mean = np.zeros(num_features, np.float32)
        self.running_var = np.ones(num_features, np.float32)
        self.eps = eps

    def forward(self, x):
        return F.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                            self.eps)


class LayerNorm(Module):
    def __init__(self, normalized_shape: int, eps: float = 1e-5):
        super().__init__()
        self.weight = np.ones(normalized_shape, np.float32)
        self.bias = np.zeros(normalized_shape, np.float32)
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)


def _simple(name: str, fn, doc: str):
    def forward(self, x):
        return fn(x, **self.kw)

    def __init__(self, **kw):
        Module.__init__(self)
        self.kw = kw

    return type(name, (Module,), {"forward": forward, "__init__": __init__, "__doc__": doc})


ReLU = _simple("ReLU", F.relu, "max(x, 0)")
ReLU6 = _simple("ReLU6", F.relu6, "min(max(x, 0), 6)")
GELU = _simple("GELU", F.gelu, "Gaussian error linear unit (exact, erf form)")
Sigmoid = _simple("Sigmoid", F.sigmoid, "1 / (1 + exp(-x))")
Tanh = _simple("Tanh", F.tanh, "tanh(x)")
GlobalAvgPool = _simple("GlobalAvgPool", F.global_avg_pool, "mean over all spatial dims")


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)


class LogSoftmax(Softmax):
    def forward(self, x):
        return F.log_softmax(x, self.dim)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Flatten(Module):
    def __init__(self, start_dim: int = 1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p)


class Residual(Module):
    """``x + body(x)``, or ``shortcut(x) + body(x)`` when a shortcut module is given."""

    def __init__(self, body: Module, shortcut: Module | None = None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        y = self.body(x)
        s = self.shortcut(x) if self.shortcut is not None else x
        return y + s


class Concat(Module):
    """Runs each branch on the input and concatenates the results along ``dim``."""

    def __init__(self, *branches: Module, dim: int = 1):
        super().__init__()
        self.dim = dim
        for i, b in enumerate(branches):
            setattr(self, f"branch{i}", b)

    def forward(self, x):
        return F.concat([m(x) for m in self._modules.values()], self.dim)
