"""TfExecutable and TfBuffer: a lowered segment as one ``tf.function``, run on device tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hal.backend import Buffer, Device, Executable
from hal.backends.common.backend import FrameworkBuffer
from hal.backends.common.lowering import Plan
from hal.backends.common.trace import Trace, traced_function
from hal.backends.tf_backend.context import TfContext
from hal.backends.tf_backend.framework import tf
from hal.backends.tf_backend.layout import ChannelsLastTrace


class TfBuffer(FrameworkBuffer):
    """A tf.Tensor on one device. Shape and dtype are read from the tensor."""

    def __init__(self, tensor: Any, device: Device):
        self.device = device
        self.tensor = tensor  # no Buffer.__init__: per-call cost matters on the run() path
        self._shape = None

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        if self._shape is None:  # building a TensorShape costs microseconds: once per buffer
            self._shape = tuple(self.tensor.shape.as_list())
        return self._shape

    @property
    def dtype(self) -> np.dtype:  # type: ignore[override]
        return np.dtype(self.tensor.dtype.as_numpy_dtype)

    def _to_host(self) -> np.ndarray:
        return self.tensor.numpy()  # a copy the user owns (TF never hands out its memory)

    def copy_to(self, device: Device) -> Buffer:
        with tf.device(device.backend.tf_device(device)):
            return TfBuffer(tf.identity(self.tensor), device)


class TracedSegment:
    """A lowered segment as ``tf.function``s on one device: one for the input signature,
    whose batch dims are None so that one trace serves every batch size (XLA still compiles
    once per distinct shape, on first use), and one per value of the inputs that decide
    shapes. Nothing in it changes once traced, so executables compiled from an identical
    segment share one, and with it TensorFlow's XLA executables (``reuse``)."""

    def __init__(self, plan: Plan, cx: TfContext, tf_device: str, xla: bool, nhwc: bool):
        self.plan = plan
        self.cx = cx
        self.tf_device = tf_device
        self.xla = xla
        self.nhwc = nhwc
        self.static = plan.static_inputs
        self.dynamic = plan.dynamic_inputs
        self._fns: dict[tuple, Any] = {}
        self.concrete: Any = None
        self.plain = self._make({}) if not self.static else None

    @property
    def weight_bytes(self) -> int:
        """The bytes of the weights baked into the functions as constants."""
        return sum(a.nbytes for a in self.plan.consts.values())

    def _make(self, static_values: dict):
        f = traced_function(self.plan, self.cx, static_values,
                            ChannelsLastTrace if self.nhwc else Trace)

        def on_device(*xs):
            with tf.device(self.tf_device):
                return f((), *xs)

        signature = [tf.TensorSpec(self.plan.input_specs[i][0],
                                   tf.as_dtype(self.plan.input_specs[i][1]), name=f"input_{i}")
                     for i in self.dynamic]
        fn = tf.function(on_device, input_signature=signature, jit_compile=self.xla,
                         autograph=False)
        self.concrete = fn.get_concrete_function()  # the public tf.function, for inspection
        return _fast_caller(self.concrete)

    def fn_for(self, tensors: list):
        """The function for these values of the static inputs, and the dynamic tensors."""
        key = tuple((tuple(t.shape), t.dtype.name, t.numpy().tobytes())
                    for t in (tensors[i] for i in self.static))
        fn = self._fns.get(key)
        if fn is None:
            values = {self.plan.input_names[i]: tensors[i].numpy() for i in self.static}
            fn = self._fns[key] = self._make(values)
        return fn, [tensors[i] for i in self.dynamic]


class TfExecutable(Executable):
    def __init__(self, device: Device, segment: TracedSegment):
        plan = segment.plan
        super().__init__(device, plan.input_names, plan.output_names)
        self.segment = segment
        self.plan = plan
        self._plain = segment.plain
        low = segment.cx.low
        self.info.update({
            "native": "tf.function(jit_compile=True) (XLA)" if segment.xla
            else "tf.function (graph)",
            "layout": "NHWC inside the segment" if segment.nhwc
            else "NCHW, transposes around each conv",
            "tf_device": segment.tf_device, "precision": low.name if low is not None else "fp32",
            "static_inputs": [plan.input_names[i] for i in segment.static]})

    @property
    def concrete(self):
        """The public ``tf.function`` traced last for this segment, for inspection."""
        return self.segment.concrete

    @property
    def traces(self) -> int:
        """How many times the segment was traced: once for the input signature, plus once
        per value of the static inputs; a compile of an identical segment adds none."""
        return self.plan.traces

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        dev = self.device
        tensors = [b.tensor if type(b) is TfBuffer and b.device is dev else _adopt(b, dev)
                   for b in buffers]
        if self._plain is not None:
            out = self._plain(*tensors)
        else:
            fn, tensors = self.segment.fn_for(tensors)
            out = fn(*tensors)
        return [TfBuffer(t, dev) for t in out]


def _fast_caller(concrete):
    """Call ``concrete`` without TensorFlow's per-call argument binding and type checks.

    ``ConcreteFunction.__call__`` re-binds and re-checks its arguments against the input
    signature on every call (about 70 us of Python on a slow CPU, more than the graph
    itself takes for a small model). HAL has already checked dtypes and shapes, so it calls
    the flat entry point with the tensors in signature order. Falls back to the public call
    where a TensorFlow version lacks that entry point.
    """
    flat = getattr(concrete, "_call_flat", None)
    if flat is None:
        return concrete
    captured = list(concrete.captured_inputs)
    return lambda *tensors: flat(list(tensors), captured)


def _adopt(buf: Buffer, device: Device):
    if isinstance(buf, TfBuffer):
        return buf.to(device).tensor
    return device.put(buf.numpy()).tensor
