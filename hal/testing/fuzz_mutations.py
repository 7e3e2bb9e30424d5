"""One-step mutations of a valid ONNX model, for fuzzing HAL's load, validate, compile and call.

Each mutation takes a model (never modified) and a ``random.Random`` and returns the mutated
model as an ``onnx.ModelProto``, or as ``bytes`` for the byte-level ones (truncation, flips,
random bytes). They break one thing at a time — a node dropped or rewired, a dim or attribute
changed, an op swapped, an initializer removed, a cycle, a wrong opset — so a finding names
what broke.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto

Mutation = Callable[[onnx.ModelProto, random.Random], "onnx.ModelProto | bytes"]

#: dims a fuzzer tries: empty, negative, one, ordinary, and sizes no machine holds
ODD_DIMS = (0, -1, -7, 1, 2, 3, 5, 17, 1 << 16, 1 << 31, 1 << 40, (1 << 63) - 1)
#: ints for attributes: bounds and off-by-ones
ODD_INTS = (-(1 << 62), -1000, -2, -1, 0, 1, 2, 3, 7, 100, 1 << 20, (1 << 62))
#: op types a node may be swapped to: common ones, and names no backend knows
SWAP_OPS = ("Relu", "Conv", "Gemm", "MatMul", "Add", "Mul", "Reshape", "Transpose", "Softmax",
            "MaxPool", "Concat", "Flatten", "Split", "Gather", "ReduceMean", "Cast", "Expand",
            "Tile", "ConstantOfShape", "Identity", "NoSuchOp", "BatchNormalization", "Pad")
DTYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8,
          TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING,
          TensorProto.UINT8, TensorProto.BFLOAT16, TensorProto.COMPLEX64, 0, 99)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _names(g: onnx.GraphProto) -> list[str]:
    names = [v.name for v in g.input] + [t.name for t in g.initializer]
    return names + [o for n in g.node for o in n.output if o]


def _pick_node(g: onnx.GraphProto, rng: random.Random) -> onnx.NodeProto | None:
    return rng.choice(g.node) if len(g.node) else None


def identity(model, rng):
    """No mutation: the model as it is, so the case fuzzes the call's inputs."""
    return _copy(model)


def drop_node(model, rng):
    m = _copy(model)
    if m.graph.node:
        del m.graph.node[rng.randrange(len(m.graph.node))]
    return m


def rewire_input(model, rng):
    """A node input pointed elsewhere: another value (maybe later: a cycle) or a dangling name."""
    m = _copy(model)
    node = _pick_node(m.graph, rng)
    if node is not None and node.input:
        i = rng.randrange(len(node.input))
        node.input[i] = rng.choice(_names(m.graph) + ["dangling_value", ""])
    return m


def drop_input(model, rng):
    m = _copy(model)
    node = _pick_node(m.graph, rng)
    if node is not None and node.input:
        del node.input[rng.randrange(len(node.input))]
    return m


def extra_input(model, rng):
    m = _copy(model)
    node = _pick_node(m.graph, rng)
    if node is not None:
        node.input.append(rng.choice(_names(m.graph)))
    return m


def make_cycle(model, rng):
    """An early node reads the output of a later one (a cycle, or an out-of-order graph)."""
    m = _copy(model)
    nodes = m.graph.node
    if len(nodes) >= 2:
        i = rng.randrange(len(nodes) - 1)
        j = rng.randrange(i + 1, len(nodes))
        if nodes[i].input and nodes[j].output:
            nodes[i].input[rng.randrange(len(nodes[i].input))] = nodes[j].output[0]
    return m


def duplicate_output(model, rng):
    """Two nodes write the same value name (ONNX graphs are single-assignment)."""
    m = _copy(model)
    nodes = m.graph.node
    if len(nodes) >= 2:
        a, b = rng.sample(range(len(nodes)), 2)
        if nodes[a].output and nodes[b].output:
            nodes[b].output[0] = nodes[a].output[0]
    return m


def swap_op(model, rng):
    m = _copy(model)
    node = _pick_node(m.graph, rng)
    if node is not None:
        node.op_type = rng.choice(SWAP_OPS)
    return m


def change_attribute(model, rng):
    """An attribute set to an odd value, emptied, removed, retyped, or a new unknown one."""
    m = _copy(model)
    node = _pick_node(m.graph, rng)
    if node is None:
        return m
    how = rng.randrange(5)
    if how == 0 or not node.attribute:
        node.attribute.append(onnx.helper.make_attribute(
            rng.choice(["bogus", "axis", "group", "perm", "kernel_shape"]), rng.choice(ODD_INTS)))
        return m
    a = rng.choice(node.attribute)
    if how == 1:
        node.attribute.remove(a)
    elif how == 2 and a.type == onnx.AttributeProto.INTS:
        n = rng.choice([0, 1, len(a.ints), len(a.ints) + 1])
        del a.ints[:]
        a.ints.extend(rng.choice(ODD_INTS) for _ in range(n))
    elif how == 3:
        a.CopyFrom(onnx.helper.make_attribute(a.name, rng.choice(
            [rng.choice(ODD_INTS), float("nan"), "text", [1.5, 2.5]])))
    else:
        if a.type == onnx.AttributeProto.INT:
            a.i = rng.choice(ODD_INTS)
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30])
        elif a.type == onnx.AttributeProto.INTS and a.ints:
            a.ints[rng.randrange(len(a.ints))] = rng.choice(ODD_INTS)
    return m


def _value_infos(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    return list(g.input) + list(g.output) + list(g.value_info)


def change_dims(model, rng):
    """A declared dim of an input, output or intermediate set to an odd or huge size."""
    m = _copy(model)
    infos = [v for v in _value_infos(m.graph) if v.type.tensor_type.shape.dim]
    if infos:
        v = rng.choice(infos)
        dims = v.type.tensor_type.shape.dim
        d = dims[rng.randrange(len(dims))]
        d.dim_value = rng.choice(ODD_DIMS) if rng.random() < 0.9 else 0
        if rng.random() < 0.2:
            d.dim_param = "fuzz"
    return m


def change_rank(model, rng):
    m = _copy(model)
    infos = [v for v in m.graph.input if v.type.HasField("tensor_type")]
    if infos:
        shape = rng.choice(infos).type.tensor_type.shape
        if shape.dim and rng.random() < 0.5:
            del shape.dim[rng.randrange(len(shape.dim))]
        else:
            shape.dim.add().dim_value = rng.choice((1, 3, 1 << 20))
    return m


def change_dtype(model, rng):
    """An input's, output's or initializer's element type changed (the data left as it was)."""
    m = _copy(model)
    if m.graph.initializer and rng.random() < 0.5:
        rng.choice(m.graph.initializer).data_type = rng.choice(DTYPES)
    else:
        infos = [v for v in _value_infos(m.graph) if v.type.HasField("tensor_type")]
        if infos:
            rng.choice(infos).type.tensor_type.elem_type = rng.choice(DTYPES)
    return m


def remove_initializer(model, rng):
    m = _copy(model)
    if m.graph.initializer:
        del m.graph.initializer[rng.randrange(len(m.graph.initializer))]
    return m


def reshape_initializer(model, rng):
    """An initializer's dims changed so they disagree with its data, or grow huge."""
    m = _copy(model)
    if m.graph.initializer:
        t = rng.choice(m.graph.initializer)
        if t.dims and rng.random() < 0.7:
            t.dims[rng.randrange(len(t.dims))] = rng.choice(ODD_DIMS)
        else:
            t.dims.append(rng.choice(ODD_DIMS))
    return m


def shape_constant(model, rng):
    """An int64 initializer (a Reshape target, a Pad or Slice amount) set to odd or huge values."""
    m = _copy(model)
    ints = [t for t in m.graph.initializer if t.data_type == TensorProto.INT64]
    if ints:
        t = rng.choice(ints)
        a = onnx.numpy_helper.to_array(t).copy()
        if a.size:
            a.reshape(-1)[rng.randrange(a.size)] = rng.choice(ODD_DIMS)
            t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
    return m


def nonfinite_weights(model, rng):
    """NaN or infinite weights: a valid model that computes NaN, never a crash."""
    m = _copy(model)
    floats = [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT]
    if floats:
        t = rng.choice(floats)
        a = onnx.numpy_helper.to_array(t).copy()
        if a.size:
            flat = a.reshape(-1)
            idx = rng.sample(range(a.size), max(1, min(a.size, rng.choice([1, a.size]))))
            flat[idx] = rng.choice([np.nan, np.inf, -np.inf])
            t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
    return m


def wrong_opset(model, rng):
    m = _copy(model)
    how = rng.randrange(3)
    if how == 0:
        del m.opset_import[:]
    elif how == 1:
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = rng.choice([-1, 0, 1, 6, 8, 9, 12, 17, 22, 23, 99, 1 << 40])
    else:
        m.opset_import.add(domain="com.fuzz.unknown", version=1)
        node = _pick_node(m.graph, rng)
        if node is not None:
            node.domain = rng.choice(["com.fuzz.unknown", "ai.hal", "com.microsoft"])
    m.ir_version = rng.choice([m.ir_version, m.ir_version, 0, 3, 99])
    return m


def drop_graph_io(model, rng):
    m = _copy(model)
    fields = [f for f in (m.graph.input, m.graph.output) if len(f)]
    if fields:
        f = rng.choice(fields)
        if rng.random() < 0.5:
            del f[rng.randrange(len(f))]
        else:
            f[rng.randrange(len(f))].name = "renamed_" + str(rng.randrange(100))
    return m


def truncate(model, rng) -> bytes:
    data = model.SerializeToString()
    return data[:rng.randrange(len(data))]


def flip_bytes(model, rng) -> bytes:
    data = bytearray(model.SerializeToString())
    for _ in range(rng.choice([1, 2, 8, 64])):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def random_bytes(model, rng) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.choice([1, 16, 300, 4096])))


MUTATIONS: dict[str, Mutation] = {f.__name__: f for f in (
    identity, drop_node, rewire_input, drop_input, extra_input, make_cycle, duplicate_output, swap_op,
    change_attribute, change_dims, change_rank, change_dtype, remove_initializer,
    reshape_initializer, shape_constant, nonfinite_weights, wrong_opset, drop_graph_io,
    truncate, flip_bytes, random_bytes)}
