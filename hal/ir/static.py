"""What a tracing backend (jax, tf) must know before it traces: values that decide shapes.

Both lower the graph to a traced function in which shapes are Python constants, so inputs
such as Reshape's shape must be evaluated on the host first. These helpers find those values
and the ONNX dtype of every value; each backend supplies its own table of which inputs of
which op decide shapes.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir


def needed_static(nodes: list[ir.Node], static_inputs: dict[str, tuple[int, ...]],
                  shape_only: frozenset[str]) -> set[str]:
    """Names whose values must be known when tracing: shape-deciding inputs and their sources.

    ``static_inputs`` maps an op type to the positions of its shape-deciding inputs;
    ``shape_only`` ops (Shape, Size, Constant) end the walk since their results never depend
    on runtime data.
    """
    producer = {v.name: n for n in nodes for v in n.outputs if v is not None}
    work = [n.inputs[i].name for n in nodes for i in static_inputs.get(n.op_type, ())
            if i < len(n.inputs) and n.inputs[i] is not None]
    need: set[str] = set()
    while work:
        name = work.pop()
        if name in need:
            continue
        need.add(name)
        node = producer.get(name)
        if node is not None and node.op_type not in shape_only:
            work.extend(v.name for v in node.inputs if v is not None)
    return need


def value_dtypes(model: ir.Model) -> dict[str, Any]:
    """The numpy dtype of every value, from ONNX shape inference where the IR lacks it."""
    from hal.ir.shapes import infer

    try:
        info = infer(ir.serde.serialize_model(model))
    except Exception:  # noqa: BLE001 - best effort: the tracer finds dtypes itself
        info = {}
    out = {name: dt for name, (_, dt) in info.items() if dt is not None}
    for v in list(model.graph.inputs) + list(model.graph.outputs):
        if v.dtype is not None:
            out[v.name] = v.dtype.numpy()
    return out
