"""One segment (an ir.Model) -> a Python function of tf ops, traced once by ``tf.function``.

Done once per compile. Values fall in three groups, decided here and not per call:

- *static*: known while tracing, held as numpy: initializers (weights become graph
  constants on the device; integer ones hold shapes and axes), ``Shape``/``Size`` of
  static shapes, ``Constant`` results, graph inputs that decide a shape (read on the host,
  one trace per distinct value), and anything computed only from those (evaluated by the
  reference numpy kernels at trace time, so it costs nothing per call).
- *traced*: the rest, computed by the tf kernels inside the ``tf.function``.

The layout pass (``nhwc=True``): TensorFlow's CPU convolutions and pools only run
channels-last, so each would otherwise be wrapped in two transposes. With the pass, a
conv/pool/batch-norm result stays channels-last and flows as such through elementwise ops,
same-layout Add/Mul/..., and a Flatten of 1x1 maps; it is transposed back to channels-first
only where an op needs that layout, and at the segment's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir
import tensorflow as tf
from hal.ir.attributes import attribute_value
from hal.backends.tf_backend.kernels import KERNELS, NHWC, STATIC_INPUTS, Context
from hal.backends.tf_backend.kernels.elementwise import LAYOUT_FREE, LAYOUT_FREE_BINARY
from hal.backends.tf_backend.kernels.nn import to_first, to_last

from hal.errors import BackendError
from hal.ir.static import needed_static, value_dtypes

#: ops whose result depends only on shapes and attributes, never on runtime data
SHAPE_ONLY = frozenset({"Shape", "Size", "Constant"})


@dataclass
class Step:
    node: ir.Node
    op: str
    inputs: list[str | None]
    outputs: list[str]
    attrs: dict
    static: bool  # evaluated in numpy at trace time


@dataclass
class Lowered:
    """Everything the executable needs: the plan, which inputs are static, the specs."""

    input_names: list[str]
    input_specs: list[Any]  # (shape with None for dynamic dims, numpy dtype)
    output_names: list[str]
    output_dtypes: list[Any]
    static_inputs: list[int]  # positions of graph inputs whose values decide shapes
    consts: dict[str, np.ndarray]
    steps: list[Step]
    dtypes: dict[str, Any] = field(default_factory=dict)
    traces: int = 0

    @property
    def dynamic_inputs(self) -> list[int]:
        return [i for i in range(len(self.input_names)) if i not in self.static_inputs]

    def signature(self) -> list:
        return [tf.TensorSpec(self.input_specs[i][0], tf.as_dtype(self.input_specs[i][1]),
                              name=f"input_{i}") for i in self.dynamic_inputs]

    def function(self, cx: Context, static_values: dict[str, np.ndarray], tf_device: str,
                 nhwc: bool):
        """``f(*dynamic_inputs) -> tuple`` with the static inputs' values baked in."""
        dyn = [self.input_names[i] for i in self.dynamic_inputs]

        def f(*xs):
            self.traces += 1  # runs once per trace
            with tf.device(tf_device):
                env: dict[str, Any] = dict(self.consts)
                env.update(static_values)
                for name, x in zip(dyn, xs):
                    env[name] = tf.cast(x, cx.low) if cx.low is not None and \
                        x.dtype == tf.float32 else x
                last: dict[str, Any] = {}  # values held channels-last
                for step in self.steps:
                    _eval(step, env, last, cx, self.dtypes, nhwc)
                return tuple(_out(_first(n, env, last), dt)
                             for n, dt in zip(self.output_names, self.output_dtypes))

        return f


def lower(model: ir.Model) -> Lowered:
    g = model.graph
    inits = {name: v.const_value.numpy() for name, v in g.initializers.items()
             if v.const_value is not None}
    inputs = [v for v in g.inputs if v.name not in inits]
    input_names = [v.name for v in inputs]
    nodes = list(g)
    for node in nodes:
        if node.domain not in ("", "ai.onnx", "ai.hal") or node.op_type not in KERNELS:
            raise BackendError(f"tf has no kernel for {node.domain or 'ai.onnx'}::"
                               f"{node.op_type} (node {node.name!r})")

    need = needed_static(nodes, STATIC_INPUTS, SHAPE_ONLY)
    static_inputs = [i for i, n in enumerate(input_names) if n in need]
    known = set(inits) | {input_names[i] for i in static_inputs}
    steps = []
    for node in nodes:
        ins = [v.name if v is not None else None for v in node.inputs]
        is_static = node.op_type in SHAPE_ONLY or all(n is None or n in known for n in ins)
        outs = [v.name if v is not None else "" for v in node.outputs]
        if is_static:
            known.update(o for o in outs if o)
        attrs = {k: attribute_value(a) for k, a in node.attributes.items()}
        steps.append(Step(node, node.op_type, ins, outs, attrs, is_static))

    dtypes = value_dtypes(model)
    specs = []
    for v in inputs:
        shape = None if v.shape is None else [d if isinstance(d, int) else None for d in v.shape]
        dt = v.dtype.numpy() if v.dtype is not None else np.float32
        specs.append((shape, dt))
    out_dtypes = [dtypes.get(v.name) for v in g.outputs]
    return Lowered(input_names, specs, [v.name for v in g.outputs], out_dtypes, static_inputs,
                   inits, steps, dtypes)


# -- evaluation (at trace time) -------------------------------------------------------------
def _first(name: str, env: dict, last: dict):
    """The channels-first (ONNX layout) value of ``name``, transposing back once if needed."""
    if name in env:
        return env[name]
    v = env[name] = to_first(last[name])
    return v


def _last(name: str, env: dict, last: dict):
    if name in last:
        return last[name]
    v = last[name] = to_last(env[name])
    return v


def _scalar(v) -> bool:
    return v is None or (isinstance(v, np.ndarray) and v.size == 1 and v.ndim == 0) or \
        (isinstance(v, tf.Tensor) and v.shape.rank == 0)


def _layout_step(step: Step, env: dict, last: dict, cx: Context):
    """Run ``step`` channels-last if the layout pass lets it; None if it must not."""
    op, ins = step.op, step.inputs
    x = ins[0] if ins else None
    if op in NHWC:
        v = last[x] if x in last else env.get(x)
        if not isinstance(v, tf.Tensor) or v.shape.rank is None or v.shape.rank < 3:
            return None
        spatial = v.shape.as_list()[1:-1] if x in last else v.shape.as_list()[2:]
        if any(d is None for d in spatial) or step.attrs.get("training_mode"):
            return None
        rest = [env[n] if n else None for n in ins[1:]]
        return NHWC[op](cx, _last(x, env, last), *rest, **step.attrs)
    if x not in last or x in env:
        return None  # only values that exist channels-last alone stay that way
    if op in LAYOUT_FREE:
        rest = [env[n] if n else None for n in ins[1:]]
        if all(_scalar(r) for r in rest):
            return KERNELS[op](cx, last[x], *rest, **step.attrs)
        return None
    if op in LAYOUT_FREE_BINARY and len(ins) == 2:
        other = ins[1]
        if other in last and other not in env and \
                last[other].shape.rank == last[x].shape.rank:
            return KERNELS[op](cx, last[x], last[other])
        if other in env and _scalar(env[other]):
            return KERNELS[op](cx, last[x], env[other])
        return None
    if op == "Flatten" and step.attrs.get("axis", 1) == 1:
        v = last[x]
        if v.shape.as_list()[1:-1] and all(d == 1 for d in v.shape.as_list()[1:-1]):
            return tf.reshape(v, [-1, v.shape[-1]])
    return None


def _eval(step: Step, env: dict, last: dict, cx: Context, dtypes: dict, nhwc: bool) -> None:
    if step.static:
        args = [_first(n, env, last) if n else None for n in step.inputs]
        res = _run(step, args, cx, static=True)
        _store(step, res, env, dtypes, static=True)
        return
    if nhwc:
        try:
            y = _layout_step(step, env, last, cx)
        except Exception as exc:
            raise _error(step, [last.get(n, env.get(n)) for n in step.inputs if n], exc) from exc
        if y is not None:
            last[step.outputs[0]] = y
            return
    args = [_first(n, env, last) if n else None for n in step.inputs]
    _store(step, _run(step, args, cx, static=False), env, dtypes, static=False)


def _run(step: Step, args: list, cx: Context, static: bool):
    try:
        if static:
            return _static_eval(step, args, cx)
        return KERNELS[step.op](cx, *args, **step.attrs)
    except BackendError:
        raise
    except Exception as exc:
        raise _error(step, args, exc) from exc


def _error(step: Step, args: list, exc: Exception) -> BackendError:
    shapes = [None if a is None else tuple(getattr(a, "shape", ())) for a in args]
    return BackendError(f"tf failed in node {step.node.name!r} ({step.op}) on inputs of "
                        f"shapes {shapes}: {type(exc).__name__}: {exc}")


def _store(step: Step, res, env: dict, dtypes: dict, static: bool) -> None:
    if not isinstance(res, tuple):
        res = (res,)
    for name, val in zip(step.outputs, res):
        if name:
            if static and dtypes.get(name) is not None and isinstance(val, np.ndarray):
                val = val.astype(dtypes[name], copy=False)
            env[name] = val


def _static_eval(step: Step, args: list, cx: Context):
    """A node whose inputs are all known while tracing: computed in numpy, never traced."""
    from hal.oracle import OPS

    op = step.op
    if op in SHAPE_ONLY or any(isinstance(a, tf.Tensor) for a in args):
        # a Shape of a dynamic dim is a traced tensor: what depends on it is traced too
        return KERNELS[op](cx, *args, **step.attrs)
    if op in OPS:
        return OPS[op](*args, **step.attrs)
    with tf.init_scope():  # eager, outside the trace: the result stays a numpy value
        res = KERNELS[op](cx, *args, **step.attrs)
        return tuple(_numpy(r) for r in res) if isinstance(res, (tuple, list)) else _numpy(res)


def _numpy(value):
    return value.numpy() if isinstance(value, tf.Tensor) else value


def _out(value, dtype):
    value = value if isinstance(value, tf.Tensor) else tf.constant(np.asarray(value))
    if dtype is None:
        return tf.identity(value)
    want = tf.as_dtype(dtype)
    return tf.cast(value, want) if value.dtype != want else tf.identity(value)
