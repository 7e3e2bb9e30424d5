"""One segment (an ir.Model) -> a ``Plan``: the steps a tracing backend runs, decided once.

Values fall in three groups, decided here and not per call:

- *static*: known while tracing, held as numpy: integer initializers (shapes, axes),
  ``Shape``/``Size``/``Constant`` results, graph inputs that decide a shape (a Reshape fed
  its shape at runtime: the executable reads it on the host and traces once per distinct
  value), and anything computed only from those. Nodes computed from constants alone are
  computed here, by the numpy oracle, and become constants; the other static steps are
  evaluated at trace time, so they cost nothing per call.
- *params*: float initializers a backend passes as arguments (jax: device arrays committed
  once); a backend that bakes weights into its graph (tf) keeps them static instead.
- *traced*: the rest, computed by the backend's kernels while the framework traces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection

import numpy as np
import onnx_ir as ir

from hal.backends.common.table import KernelTable
from hal.errors import BackendError
from hal.ir.attributes import attributes
from hal.ir.schemas import ONNX_DOMAINS
from hal.ir.static import needed_static, value_dtypes

#: ops whose result depends only on shapes and attributes, never on runtime data
SHAPE_ONLY = frozenset({"Shape", "Size", "Constant"})
FLOAT_TYPES = (np.float16, np.float32, np.float64)


@dataclass
class Step:
    node: ir.Node
    kernel: Callable
    inputs: list[str | None]
    outputs: list[str]  # "" for an output nobody asked for
    attrs: dict
    static: bool  # evaluated in numpy at trace time

    @property
    def op(self) -> str:
        return self.node.op_type


@dataclass
class Plan:
    """Everything an executable needs: the steps, which inputs are static, the weights."""

    input_names: list[str]
    input_specs: list[tuple[list | None, np.dtype]]  # shape (None: dynamic dim), dtype
    output_names: list[str]
    output_dtypes: list[Any]
    static_inputs: list[int]  # positions of graph inputs whose values decide shapes
    consts: dict[str, np.ndarray]
    param_names: list[str]
    param_values: list[np.ndarray]
    steps: list[Step]
    dtypes: dict[str, Any] = field(default_factory=dict)
    #: values computed while tracing hold 64-bit ints or floats
    wide_types: bool = False
    traces: int = 0

    @property
    def dynamic_inputs(self) -> list[int]:
        return [i for i in range(len(self.input_names)) if i not in self.static_inputs]


def lower(model: ir.Model, table: KernelTable, backend: str, params: bool,
          variables: Collection[str] = ()) -> Plan:
    """The plan of ``model`` on ``table``'s kernels; ``params``: float weights as arguments.

    ``variables``: initializers whose values change between calls (trained weights, running
    statistics): always parameters, never computed with at lowering, so nothing derived
    from them is frozen into a constant. One that must be known while tracing (it fixes a
    shape) is a constant all the same: ``Plan.param_names`` says which stayed parameters.
    """
    g = model.graph
    inits = {name: v.const_value.numpy() for name, v in g.initializers.items()
             if v.const_value is not None}
    inputs = [v for v in g.inputs if v.name not in inits]
    input_names = [v.name for v in inputs]
    kernels = {}
    for node in g:
        fn = table.lookup(node.domain, node.op_type)
        if fn is None:
            raise BackendError(f"{backend} has no kernel for {node.domain or 'ai.onnx'}::"
                               f"{node.op_type} (node {node.name!r})")
        kernels[node] = fn

    dtypes = value_dtypes(model)
    varying = {n: a for n, a in inits.items() if n in variables}
    values = {n: a for n, a in inits.items() if n not in varying}
    nodes = [node for node in g if not _fold(node, values, dtypes)]
    values.update(varying)
    need = needed_static(nodes, table.static_inputs, SHAPE_ONLY)
    static_inputs = [i for i, n in enumerate(input_names) if n in need]
    consts = {n: a for n, a in values.items() if n in need or (
        n not in varying and (not params or a.dtype.type not in FLOAT_TYPES))}
    param_names = [n for n in values if n not in consts]

    known = set(consts) | {input_names[i] for i in static_inputs}
    steps = []
    for node in nodes:
        ins = [v.name if v is not None else None for v in node.inputs]
        is_static = node.op_type in SHAPE_ONLY or all(n is None or n in known for n in ins)
        outs = [v.name if v is not None else "" for v in node.outputs]
        if is_static:
            known.update(o for o in outs if o)
        attrs = attributes(node)
        if node.op_type in table.wants_outputs:
            attrs["wanted"] = [bool(o) for o in outs]
        steps.append(Step(node, kernels[node], ins, outs, attrs, is_static))

    traced = [n for n in dtypes if n not in known] + [v.name for v in g.outputs]
    wide = any(dtypes.get(n) is not None and np.dtype(dtypes[n]).itemsize == 8
               and np.dtype(dtypes[n]).kind in "iuf" for n in traced)
    return Plan(input_names, [_spec(v) for v in inputs], [v.name for v in g.outputs],
                [dtypes.get(v.name) for v in g.outputs], static_inputs, consts, param_names,
                [values[n] for n in param_names], steps, dtypes, wide)


def _fold(node: ir.Node, values: dict[str, np.ndarray], dtypes: dict[str, Any]) -> bool:
    """Compute ``node`` now, with the oracle, if its inputs are all constants (weights made by
    ConstantOfShape, say): its results join ``values``, as weights do. False if it is not.

    Computed once here instead of at every trace, and a backend taking float weights as
    parameters gets these as parameters too: XLA on CPU miscompiled convolutions whose
    filter it saw as one broadcast constant (ONNX's light models' weights).
    """
    from hal.oracle import OPS

    if node.domain not in ONNX_DOMAINS or node.op_type not in OPS or node.op_type == "Dropout":
        return False  # Dropout: a training-mode mask is random, never a constant
    if any(v is not None and v.name not in values for v in node.inputs):
        return False
    try:
        res = OPS[node.op_type](*[None if v is None else values[v.name] for v in node.inputs],
                                **attributes(node))
    except Exception:  # noqa: BLE001 - left to the trace, which reports it against the node
        return False
    for v, r in zip(node.outputs, res if isinstance(res, (tuple, list)) else (res,)):
        if v is not None and v.name:
            r = np.asarray(r)
            values[v.name] = r if dtypes.get(v.name) is None else r.astype(dtypes[v.name])
    return True


def _spec(v: ir.Value) -> tuple[list | None, np.dtype]:
    shape = None if v.shape is None else [d if isinstance(d, int) else None for d in v.shape]
    return shape, (v.dtype.numpy() if v.dtype is not None else np.dtype(np.float32))
