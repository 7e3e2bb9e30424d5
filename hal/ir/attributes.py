"""Reading node attributes as plain Python values: the one reader every layer uses."""

from __future__ import annotations

from typing import Any

import onnx_ir as ir


def attribute_value(attr: ir.Attr) -> Any:
    """An ONNX attribute as a plain value: str for strings, lists for repeated fields,
    numpy arrays for tensors, the ir.Graph for a graph attribute."""
    t, v = attr.type, attr.value
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
    return v


def attribute(node: ir.Node, name: str, default: Any = None) -> Any:
    """Attribute ``name`` of ``node`` as a plain value, or ``default`` when it is not set."""
    a = node.attributes.get(name)
    return default if a is None else attribute_value(a)


def attributes(node: ir.Node) -> dict[str, Any]:
    """Every attribute of ``node`` as plain values, by name."""
    return {k: attribute_value(a) for k, a in node.attributes.items()}
