"""TfExecutable and TfBuffer: a lowered segment as one ``tf.function``, run on device tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hal.backend import Buffer, Device, Executable


class TfBuffer(Buffer):
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

    def to(self, device: Device) -> Buffer:
        if device is self.device:
            return self
        target = getattr(device.backend, "tf_device", None)
        if target is None:
            return super().to(device)
        import tensorflow as tf

        # device to device inside TF; counted as one copy out and one in
        if not self.device.info.host_memory:
            self.device.transfers.d2h_count += 1
            self.device.transfers.d2h_bytes += self.nbytes
        if not device.info.host_memory:
            device.transfers.h2d_count += 1
            device.transfers.h2d_bytes += self.nbytes
        with tf.device(target(device)):
            return TfBuffer(tf.identity(self.tensor), device)


class TfExecutable(Executable):
    def __init__(self, device: Device, lowered, cx, tf_device: str, xla: bool, nhwc: bool):
        super().__init__(device, lowered.input_names, lowered.output_names)
        self.lowered = lowered
        self.cx = cx
        self.tf_device = tf_device
        self.xla = xla
        self.nhwc = nhwc
        self._static = lowered.static_inputs
        self._dynamic = lowered.dynamic_inputs
        self._fns: dict[tuple, Any] = {}
        # a concrete function for the input signature: batch dims are None, so one trace
        # serves every batch size (XLA still compiles once per distinct shape, on first use)
        self._plain = self._make({}) if not self._static else None
        self.info.update({
            "native": "tf.function(jit_compile=True) (XLA)" if xla else "tf.function (graph)",
            "layout": "NHWC inside the segment" if nhwc else "NCHW, transposes around each conv",
            "tf_device": tf_device, "precision": cx.low.name if cx.low is not None else "fp32",
            "static_inputs": [lowered.input_names[i] for i in self._static]})

    def _make(self, static_values: dict):
        import tensorflow as tf

        f = self.lowered.function(self.cx, static_values, self.tf_device, self.nhwc)
        fn = tf.function(f, input_signature=self.lowered.signature(), jit_compile=self.xla,
                         autograph=False)
        self.concrete = fn.get_concrete_function()  # the public tf.function, for inspection
        return _fast_caller(self.concrete)

    @property
    def traces(self) -> int:
        """How many times the segment was traced (once per compile, plus static-input values)."""
        return self.lowered.traces

    def _fn(self, tensors: list):
        key = tuple((tuple(t.shape), t.dtype.name, t.numpy().tobytes())
                    for t in (tensors[i] for i in self._static))
        fn = self._fns.get(key)
        if fn is None:
            values = {self.input_names[i]: tensors[i].numpy() for i in self._static}
            fn = self._fns[key] = self._make(values)
        return fn, [tensors[i] for i in self._dynamic]

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        dev = self.device
        tensors = [b.tensor if type(b) is TfBuffer and b.device is dev else _adopt(b, dev)
                   for b in buffers]
        if self._plain is not None:
            out = self._plain(*tensors)
        else:
            fn, tensors = self._fn(tensors)
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
