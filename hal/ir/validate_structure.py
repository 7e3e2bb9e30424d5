"""The validator's structural checks, run before any per-op check reads a node.

A per-op check, a pass or a backend may index ``node.inputs[1]`` or read an attribute as an
int: these checks make that safe. Each node's inputs, outputs and attributes must match its
ONNX schema (count, required ones, attribute names and types), and no tensor — input, weight,
constant or intermediate, at the sizes known before running — may exceed
``HAL_MAX_TENSOR_BYTES``, so no backend is ever asked to allocate it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from hal.errors import ModelError
from hal.ir.limits import human, max_tensor_bytes
from hal.ir.schemas import FUSED_BASE, HAL_DOMAIN, ONNX_DOMAINS

#: attributes HAL's fused ops add to their ONNX base op
_FUSED_ATTRIBUTES = {"activation": onnx.AttributeProto.STRING,
                     "activation_params": onnx.AttributeProto.FLOATS}


def node_name(node: ir.Node) -> str:
    return f"node {node.name!r} ({node.op_type})" if node.name else f"an unnamed {node.op_type} node"


def _schema(node: ir.Node, opset: int) -> onnx.defs.OpSchema | None:
    op = FUSED_BASE.get(node.op_type) if node.domain == HAL_DOMAIN else node.op_type
    if op is None:
        return None
    try:
        return onnx.defs.get_schema(op, opset, "")
    except Exception:  # noqa: BLE001 - onnx raises SchemaError for an unknown op
        return None


def check_node(node: ir.Node, opset: int) -> None:
    """The node's inputs, outputs and attributes against its ONNX schema."""
    if node.domain not in ONNX_DOMAINS and node.domain != HAL_DOMAIN:
        return  # a custom domain: a backend that claims it checks it
    schema = _schema(node, opset)
    if schema is None:
        if node.domain in ONNX_DOMAINS:
            raise ModelError(f"{node_name(node)}: {node.op_type!r} is not an ONNX op at opset "
                             f"{opset}; check its spelling and the model's opset import")
        return
    _check_arity(node, schema)
    _check_attributes(node, schema)


def _check_arity(node: ir.Node, schema: onnx.defs.OpSchema) -> None:
    n_in = len(node.inputs)
    if not schema.min_input <= n_in <= schema.max_input:
        want = (f"{schema.min_input}" if schema.min_input == schema.max_input
                else f"{schema.min_input} to {schema.max_input}")
        names = ", ".join(p.name for p in schema.inputs)
        raise ModelError(f"{node_name(node)} has {n_in} inputs but {node.op_type} takes {want} "
                         f"({names}); the model is corrupt or was edited wrongly")
    optional = onnx.defs.OpSchema.FormalParameterOption.Optional
    for i, (param, v) in enumerate(zip(schema.inputs, node.inputs)):
        if v is None and param.option != optional:
            raise ModelError(f"{node_name(node)}: input #{i} ({param.name}) is required but "
                             f"left empty; connect it to a value")
    n_out = len(node.outputs)
    if not schema.min_output <= n_out <= schema.max_output:
        raise ModelError(f"{node_name(node)} has {n_out} outputs but {node.op_type} gives "
                         f"{schema.min_output} to {schema.max_output}")


def _check_attributes(node: ir.Node, schema: onnx.defs.OpSchema) -> None:
    known = {k: int(a.type) for k, a in schema.attributes.items()}
    if node.domain == HAL_DOMAIN:
        known.update(_FUSED_ATTRIBUTES)
    for name, attr in node.attributes.items():
        if name not in known:
            raise ModelError(f"{node_name(node)}: attribute {name!r} is not one {node.op_type} "
                             f"takes ({', '.join(sorted(known)) or 'none'}); remove it")
        if attr.is_ref():
            raise ModelError(f"{node_name(node)}: attribute {name!r} refers to a function "
                             f"attribute outside any function; the model is corrupt")
        if int(attr.type.value) != known[name]:
            want = onnx.AttributeProto.AttributeType.Name(known[name])
            raise ModelError(f"{node_name(node)}: attribute {name!r} is a {attr.type.name} but "
                             f"{node.op_type} takes a {want}")
    for name, a in schema.attributes.items():
        if a.required and name not in node.attributes:
            raise ModelError(f"{node_name(node)}: required attribute {name!r} is missing")


def tensor_bytes(shape, dtype: np.dtype | None) -> int | None:
    """Bytes of a tensor of ``shape`` at its smallest (each symbolic dim taken as 1)."""
    if shape is None:
        return None
    itemsize = np.dtype(dtype).itemsize if dtype is not None else 1
    n = 1
    for d in shape:
        if isinstance(d, int):
            n *= d
    return n * itemsize


def check_sizes(info: dict, limit: int | None = None) -> None:
    """No value in ``info`` (name -> (shape, dtype)) has a negative dim or exceeds the limit."""
    limit = max_tensor_bytes() if limit is None else limit
    for name, (shape, dtype) in info.items():
        if shape is None:
            continue
        if any(isinstance(d, int) and d < 0 for d in shape):
            raise ModelError(f"value {name!r} has shape {list(shape)} with a negative dim; the "
                             f"model's shapes are corrupt")
        nbytes = tensor_bytes(shape, dtype)
        if nbytes is not None and nbytes > limit:
            raise ModelError(
                f"value {name!r} of shape {list(shape)} ({dtype}) would need {human(nbytes)}, "
                f"more than HAL_MAX_TENSOR_BYTES ({human(limit)}); check the shapes that lead "
                f"to it, or raise HAL_MAX_TENSOR_BYTES if the machine has the memory")


def check_initializers(graph: ir.Graph, limit: int | None = None) -> None:
    """Each weight's data matches its declared shape and dtype, and fits the limit."""
    limit = max_tensor_bytes() if limit is None else limit
    for name, v in graph.initializers.items():
        t = v.const_value
        if t is None:
            raise ModelError(f"initializer {name!r} holds no data; the model is corrupt")
        dims = tuple(t.shape)
        if any(not isinstance(d, int) or d < 0 for d in dims):
            raise ModelError(f"initializer {name!r} has shape {list(dims)}; weights need fixed, "
                             f"non-negative dims")
        try:
            itemsize = np.dtype(t.dtype.numpy()).itemsize
        except Exception:  # noqa: BLE001 - onnx_ir has no numpy type for it
            raise ModelError(f"initializer {name!r} has element type {t.dtype.name}, which HAL "
                             f"cannot hold in memory") from None
        nbytes = int(np.prod(dims, dtype=object)) * itemsize
        if nbytes > limit:
            raise ModelError(f"initializer {name!r} of shape {list(dims)} declares "
                             f"{human(nbytes)}, more than HAL_MAX_TENSOR_BYTES ({human(limit)})")
        try:
            array = t.numpy()
        except Exception as exc:  # noqa: BLE001 - the data and the dims disagree
            raise ModelError(f"initializer {name!r} of shape {list(dims)} and type "
                             f"{t.dtype.name}: its data does not match ({type(exc).__name__}: "
                             f"{str(exc)[:120]}); the model is corrupt") from None
        if tuple(array.shape) != dims:
            raise ModelError(f"initializer {name!r} declares shape {list(dims)} but its data has "
                             f"shape {list(array.shape)}; the model is corrupt")


def check_graph_io(graph: ir.Graph) -> None:
    """Every graph input and output declares an element type HAL can hold in an array."""
    for kind, values in (("input", graph.inputs), ("output", graph.outputs)):
        for v in values:
            if v.dtype is None:
                continue
            try:
                np.dtype(v.dtype.numpy())
            except Exception:  # noqa: BLE001 - UNDEFINED, or a type numpy has no array for
                raise ModelError(f"graph {kind} {v.name!r} has element type {v.dtype.name}, "
                                 f"which HAL cannot hold in an array; declare a numeric type "
                                 f"such as FLOAT") from None
