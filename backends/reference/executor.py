"""Interprets an IR graph node by node with the numpy kernels in ``ops``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx_ir as ir

from hal.backend import Buffer, Device, Executable, HostBuffer
from hal.errors import BackendError


def attribute_value(attr: ir.Attr) -> Any:
    """An ONNX attribute as a plain Python / numpy value."""
    t = attr.type
    v = attr.value
    if t == ir.AttributeType.TENSOR:
        return v.numpy()
    if t == ir.AttributeType.TENSORS:
        return [x.numpy() for x in v]
    if t == ir.AttributeType.STRING:
        return v.decode() if isinstance(v, bytes) else v
    if t == ir.AttributeType.STRINGS:
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    if t in (ir.AttributeType.INTS, ir.AttributeType.FLOATS):
        return list(v)
    if t == ir.AttributeType.GRAPH:
        return v
    return v


class ReferenceExecutable(Executable):
    def __init__(self, model: ir.Model, device: Device):
        from hal.backends.reference.ops import OPS

        g = model.graph
        super().__init__(device, [v.name for v in g.inputs if v.name not in g.initializers],
                         [v.name for v in g.outputs])
        self.constants = {name: v.const_value.numpy() for name, v in g.initializers.items()
                          if v.const_value is not None}
        self.plan = []
        for node in g:
            fn = OPS.get(node.op_type)
            if fn is None:
                raise BackendError(f"cpu@reference has no kernel for {node.op_type} "
                                   f"(node {node.name!r})")
            attrs = {k: attribute_value(a) for k, a in node.attributes.items()}
            ins = [v.name if v is not None else None for v in node.inputs]
            outs = [v.name for v in node.outputs]
            self.plan.append((node, fn, ins, outs, attrs))

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        env: dict[str, np.ndarray] = dict(self.constants)
        for name, buf in zip(self.input_names, buffers):
            env[name] = buf.numpy() if not isinstance(buf, HostBuffer) else buf.array
        for node, fn, ins, outs, attrs in self.plan:
            args = [env[n] if n else None for n in ins]
            try:
                res = fn(*args, **attrs)
            except BackendError:
                raise
            except Exception as exc:
                shapes = [None if a is None else getattr(a, "shape", None) for a in args]
                raise BackendError(f"cpu@reference failed in node {node.name!r} ({node.op_type}) "
                                   f"on inputs of shapes {shapes}: {type(exc).__name__}: {exc}") \
                    from exc
            if not isinstance(res, tuple):
                res = (res,)
            for name, val in zip(outs, res):
                if name:
                    env[name] = val
        return [HostBuffer(np.asarray(env[n]), self.device) for n in self.output_names]
