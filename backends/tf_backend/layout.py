"""The layout pass of the tf backend: a trace that keeps tensors channels-last.

TensorFlow's CPU convolutions and pools only run channels-last, so each would otherwise be
wrapped in two transposes. In this trace a conv/pool/batch-norm result stays channels-last
and flows as such through elementwise ops, same-layout Add/Mul/..., and a Flatten of 1x1
maps; it is transposed back to channels-first only where an op needs that layout, and at
the segment's outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.backends.common.lowering import Step
from hal.backends.common.trace import Trace
from hal.backends.tf_backend.framework import tf
from hal.backends.tf_backend.kernels import CHANNELS_LAST
from hal.backends.tf_backend.kernels.nn import to_first, to_last

#: unary ops that act on each element alone: channels-last tensors go through them
LAYOUT_FREE = {"Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt", "Floor", "Ceil",
               "Round", "Sign", "Erf", "Softsign", "Reciprocal", "Identity", "Softplus", "Mish",
               "HardSwish", "LeakyRelu", "Elu", "Celu", "Selu", "ThresholdedRelu", "HardSigmoid",
               "Shrink", "Gelu", "Clip", "Sin", "Cos", "Dropout"}
#: binary ops run on two channels-last operands of the same rank
LAYOUT_FREE_BINARY = {"Add", "Sub", "Mul", "Div"}


def _scalar(v) -> bool:
    return v is None or (isinstance(v, np.ndarray) and v.size == 1 and v.ndim == 0) or \
        (isinstance(v, tf.Tensor) and v.shape.rank == 0)


class ChannelsLastTrace(Trace):
    """``env`` holds values channels-first (ONNX's layout), ``last`` channels-last; a value
    is transposed to the other layout once, where first needed in it."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.last: dict[str, Any] = {}

    def value(self, name: str) -> Any:
        if name not in self.env:
            self.env[name] = to_first(self.last[name])
        return self.env[name]

    def channels_last(self, name: str) -> Any:
        if name not in self.last:
            self.last[name] = to_last(self.env[name])
        return self.last[name]

    def step(self, step: Step) -> None:
        if not step.static:
            try:
                y = self.step_channels_last(step)
            except Exception as exc:
                args = [self.last.get(n, self.env.get(n)) for n in step.inputs if n]
                raise self.error(step, args, exc) from exc
            if y is not None:
                if isinstance(y, tuple):  # BatchNormalization in training: + running stats
                    y, *stats = y
                    self.env.update((n, v) for n, v in zip(step.outputs[1:], stats) if n)
                self.last[step.outputs[0]] = y
                return
        super().step(step)

    def step_channels_last(self, step: Step) -> Any:
        """``step`` run channels-last where the layout lets it; None where it must not."""
        op, ins, cx = step.op, step.inputs, self.cx
        x = ins[0] if ins else None
        if op in CHANNELS_LAST.kernels:
            v = self.last[x] if x in self.last else self.env.get(x)
            if not isinstance(v, tf.Tensor) or v.shape.rank is None or v.shape.rank < 3:
                return None
            spatial = v.shape.as_list()[1:-1] if x in self.last else v.shape.as_list()[2:]
            if any(d is None for d in spatial):
                return None
            rest = [self.env[n] if n else None for n in ins[1:]]
            return CHANNELS_LAST.kernels[op](cx, self.channels_last(x), *rest, **step.attrs)
        if x not in self.last or x in self.env:
            return None  # only values that exist channels-last alone stay that way
        if op in LAYOUT_FREE and len([o for o in step.outputs if o]) == 1:
            rest = [self.env[n] if n else None for n in ins[1:]]
            if all(_scalar(r) for r in rest):
                y = step.kernel(cx, self.last[x], *rest, **step.attrs)
                return y[0] if isinstance(y, tuple) else y
            return None
        if op in LAYOUT_FREE_BINARY and len(ins) == 2:
            other = ins[1]
            if other in self.last and other not in self.env and \
                    self.last[other].shape.rank == self.last[x].shape.rank:
                return step.kernel(cx, self.last[x], self.last[other])
            if other in self.env and _scalar(self.env[other]):
                return step.kernel(cx, self.last[x], self.env[other])
            return None
        if op == "Flatten" and step.attrs.get("axis", 1) == 1:
            v = self.last[x]
            if v.shape.as_list()[1:-1] and all(d == 1 for d in v.shape.as_list()[1:-1]):
                return tf.reshape(v, [-1, v.shape[-1]])
        return None
