"""One segment (an ir.Model) -> a pure function ``f(params, *inputs)`` of jax ops.

Done once per compile. Values fall in three groups, decided here and not per call:

- *static*: known while tracing, held as numpy: integer initializers (shapes, axes),
  ``Shape``/``Size``/``Constant`` results, graph inputs that decide a shape (a Reshape
  fed its shape at runtime: the executable reads it on the host and traces once per
  distinct value), and anything computed only from those. Static nodes are evaluated
  with the reference numpy kernels at trace time, so they cost nothing per call.
- *params*: every other initializer, a device array committed to the device.
- *traced*: the rest, computed by the jax kernels inside ``jax.jit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx_ir as ir
from hal.backends.jax_backend.kernels import KERNELS, STATIC_INPUTS, Context
from hal.ir.attributes import attribute_value

from hal.errors import BackendError
from hal.ir.static import needed_static, value_dtypes

#: ops whose result depends only on shapes and attributes, never on runtime data
SHAPE_ONLY = frozenset({"Shape", "Size", "Constant"})
FLOAT_TYPES = (np.float16, np.float32, np.float64)


@dataclass
class Step:
    node: ir.Node
    fn: Any
    inputs: list[str | None]
    outputs: list[str]
    attrs: dict
    static: bool  # evaluated in numpy at trace time


@dataclass
class Lowered:
    """Everything the executable needs: the plan, which inputs are static, the params."""

    input_names: list[str]
    output_names: list[str]
    output_dtypes: list[Any]
    static_inputs: list[int]  # positions of graph inputs whose values decide shapes
    consts: dict[str, np.ndarray]
    param_names: list[str]
    param_values: list[np.ndarray]
    steps: list[Step]
    x64: bool
    dtypes: dict[str, Any] = field(default_factory=dict)
    traces: int = 0

    def function(self, cx: Context, static_values: dict[str, np.ndarray]):
        """``f(params, *inputs)`` with the static inputs' values baked in."""
        dyn = [n for i, n in enumerate(self.input_names) if i not in self.static_inputs]
        low = cx.low

        def f(params, *xs):
            self.traces += 1  # runs once per trace, i.e. once per new input shape
            env: dict[str, Any] = dict(self.consts)
            env.update(static_values)
            env.update(zip(self.param_names, params))
            for name, x in zip(dyn, xs):
                env[name] = x.astype(low) if low is not None and x.dtype == jnp.float32 else x
            for step in self.steps:
                _eval(step, env, cx, self.dtypes)
            return tuple(_out(env[n], dt) for n, dt in zip(self.output_names, self.output_dtypes))

        return f


def lower(model: ir.Model) -> Lowered:
    g = model.graph
    inits = {name: v.const_value.numpy() for name, v in g.initializers.items()
             if v.const_value is not None}
    inputs = [v for v in g.inputs if v.name not in inits]
    input_names = [v.name for v in inputs]
    nodes = list(g)
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in KERNELS:
            raise BackendError(f"jax has no kernel for {node.domain or 'ai.onnx'}::"
                               f"{node.op_type} (node {node.name!r})")

    need = needed_static(nodes, STATIC_INPUTS, SHAPE_ONLY)
    static_inputs = [i for i, n in enumerate(input_names) if n in need]
    consts = {n: a for n, a in inits.items()
              if n in need or a.dtype.type not in FLOAT_TYPES}
    params = [n for n in inits if n not in consts]

    known = set(consts) | {input_names[i] for i in static_inputs}
    steps = []
    for node in nodes:
        ins = [v.name if v is not None else None for v in node.inputs]
        is_static = node.op_type in SHAPE_ONLY or all(n is None or n in known for n in ins)
        outs = [v.name if v is not None else "" for v in node.outputs]
        if is_static:
            known.update(o for o in outs if o)
        attrs = {k: attribute_value(a) for k, a in node.attributes.items()}
        if node.op_type == "MaxPool" and len(outs) > 1 and outs[1]:
            attrs["with_indices"] = True  # computed only when asked for
        steps.append(Step(node, KERNELS[node.op_type], ins, outs, attrs, is_static))

    dtypes = value_dtypes(model)
    out_dtypes = [dtypes.get(v.name) for v in g.outputs]
    traced = [n for n in dtypes if n not in known] + [v.name for v in g.outputs]
    x64 = any(dtypes.get(n) is not None and np.dtype(dtypes[n]).itemsize == 8
              and np.dtype(dtypes[n]).kind in "iuf" for n in traced)
    return Lowered(input_names, [v.name for v in g.outputs], out_dtypes, static_inputs, consts,
                   params, [inits[n] for n in params], steps, x64, dtypes)


def _eval(step: Step, env: dict, cx: Context, dtypes: dict) -> None:
    args = [env[n] if n else None for n in step.inputs]
    try:
        res = _static_eval(step, args, cx) if step.static else step.fn(cx, *args, **step.attrs)
    except BackendError:
        raise
    except Exception as exc:
        node = step.node
        shapes = [None if a is None else tuple(getattr(a, "shape", ())) for a in args]
        raise BackendError(f"jax failed in node {node.name!r} ({node.op_type}) on inputs of "
                           f"shapes {shapes}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(res, tuple):
        res = (res,)
    for name, val in zip(step.outputs, res):
        if name:
            if step.static and dtypes.get(name) is not None:
                val = np.asarray(val).astype(dtypes[name], copy=False)
            env[name] = val


def _static_eval(step: Step, args: list, cx: Context):
    """A node whose inputs are all known while tracing: computed in numpy, never traced."""
    from hal.oracle import OPS

    op = step.node.op_type
    if op in SHAPE_ONLY:
        return step.fn(cx, *args, **step.attrs)
    if op in OPS:
        return OPS[op](*args, **step.attrs)
    with jax.ensure_compile_time_eval():
        res = step.fn(cx, *args, **step.attrs)
    return tuple(np.asarray(r) for r in res) if isinstance(res, tuple) else np.asarray(res)


def _out(value, dtype):
    if dtype is None:
        return jnp.asarray(value)
    return jnp.asarray(value).astype(dtype) if value.dtype != dtype else jnp.asarray(value)
