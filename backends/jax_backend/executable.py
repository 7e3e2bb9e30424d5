"""JaxExecutable and JaxBuffer: a lowered segment, jit-compiled, run on device arrays.

Donation: none. ``run`` receives buffers the caller may use again, and on the CPU
``jax.device_put`` may hand jax the caller's memory, so donating an input could destroy
data the user still holds. Intermediate values between HAL segments are few and small
next to the weights, so nothing worth the risk is lost.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np

from hal.backend import Buffer, Device, Executable
from hal.backends.common.backend import FrameworkBuffer
from hal.backends.common.lowering import Plan
from hal.backends.common.trace import traced_function
from hal.backends.jax_backend.context import JaxContext
from hal.backends.jax_backend.framework import jax


class JaxBuffer(FrameworkBuffer):
    """A jax.Array committed to one device. Shape and dtype are read from the array.

    On a host-memory (CPU) device ``put`` keeps a private numpy copy and makes the
    jax.Array on first need: a buffer used once (every ``compiled(x)`` call) is handed to
    the jitted function as numpy, which jax's C++ dispatch places far more cheaply than
    ``jax.device_put`` does; a buffer used again is placed once and reused.
    """

    def __init__(self, array: Any, device: Device, jdev: Any = None, host: Any = None):
        self.device = device  # no Buffer.__init__: per-call cost matters on the run() path
        self._array = array
        self._host = host
        self._jdev = jdev
        self._used = False

    @property
    def array(self) -> Any:
        a = self._array
        if a is None:
            a = self._array = jax.device_put(self._host, self._jdev)
            self._host = None
        return a

    def _arg(self) -> Any:
        """What to pass to the jitted function: the jax.Array, or the host copy the first time."""
        a = self._array
        if a is not None:
            return a
        if not self._used:
            self._used = True
            return self._host
        return self.array

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        a = self._array if self._array is not None else self._host
        return tuple(a.shape)

    @property
    def dtype(self) -> np.dtype:  # type: ignore[override]
        a = self._array if self._array is not None else self._host
        return np.dtype(a.dtype)

    def _to_host(self) -> np.ndarray:
        if self._array is None:
            return self._host.copy()
        return np.array(self._array)  # a writable copy the user owns

    def copy_to(self, device: Device) -> Buffer:
        return JaxBuffer(jax.device_put(self.array, device.backend.jax_device(device)), device)


class JaxExecutable(Executable):
    def __init__(self, device: Device, plan: Plan, cx: JaxContext, jdev, jit: bool):
        super().__init__(device, plan.input_names, plan.output_names)
        self.plan = plan
        self.cx = cx
        self.jdev = jdev
        self.jit = jit
        self._x64 = (lambda: jax.enable_x64(True)) if plan.wide_types else contextlib.nullcontext
        with self._x64():
            params = []
            for a in plan.param_values:
                if cx.low is not None and a.dtype == np.float32:
                    a = a.astype(cx.low)
                params.append(jax.device_put(a, jdev))
        self.params = tuple(params)
        self._fns: dict[tuple, Any] = {}
        self._static = plan.static_inputs
        self._dynamic = plan.dynamic_inputs
        self._plain = self._make({}) if not self._static else None
        self.info.update({"native": "jax.jit" if jit else "eager jax.numpy (opt_level 0)",
                          "jax_device": str(jdev), "params": len(params),
                          "x64": plan.wide_types,
                          "static_inputs": [plan.input_names[i] for i in self._static],
                          "precision": str(cx.low.__name__ if cx.low is not None else "fp32")})

    def _make(self, static_values: dict):
        f = traced_function(self.plan, self.cx, static_values)
        if self.jit:
            return jax.jit(f)

        def eager(params, *xs):
            with jax.default_device(self.jdev):
                return f(params, *xs)

        return eager

    @property
    def traces(self) -> int:
        """How many times the segment was traced (once per new input shape when jitted)."""
        return self.plan.traces

    def _fn(self, arrays: list):
        key = tuple((a.shape, str(a.dtype), np.asarray(a).tobytes())
                    for a in (arrays[i] for i in self._static))
        fn = self._fns.get(key)
        if fn is None:
            values = {self.input_names[i]: np.asarray(arrays[i]) for i in self._static}
            fn = self._fns[key] = self._make(values)
        return fn, [arrays[i] for i in self._dynamic]

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        dev = self.device
        arrays = [b._arg() if type(b) is JaxBuffer and b.device is dev else _adopt(b, dev)
                  for b in buffers]
        if self._plain is not None and not self.plan.wide_types:
            out = self._plain(self.params, *arrays)  # the common case, kept short
        else:
            with self._x64():
                if self._plain is not None:
                    out = self._plain(self.params, *arrays)
                else:
                    fn, arrays = self._fn(arrays)
                    out = fn(self.params, *arrays)
        dev.__dict__["_jax_last"] = out  # what Backend.sync waits for
        return [JaxBuffer(a, dev) for a in out]


def _adopt(buf: Buffer, device: Device):
    if isinstance(buf, JaxBuffer):
        return buf.to(device).array
    return device.put(buf.numpy())._arg()
