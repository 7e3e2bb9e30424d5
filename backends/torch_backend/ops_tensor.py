"""Shape, data-movement and constant ops."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F
from hal.backends.torch_backend.lowering import (
    NodeView,
    attr,
    converter,
    supported_dtype,
    torch_dtype,
)
from hal.backends.torch_backend.ops_nn import pad_pairs
from hal.ir.attributes import attributes
from hal.oracle import OPS


def _ints(v) -> list[int]:
    """A shape/axes argument that is a list at lowering time or a tensor at run time."""
    return v if isinstance(v, list) else [int(i) for i in v.reshape(-1).tolist()]


def _constant_check(node):
    for name in ("sparse_value", "value_string", "value_strings"):
        if name in node.attributes:
            return f"Constant with {name} is not supported"
    v = node.attributes.get("value")
    if v is not None and not supported_dtype(v.value.dtype):
        return f"Constant of type {v.value.dtype.name} is not supported"
    return None


@converter("Constant", check=_constant_check)
def constant(n: NodeView) -> np.ndarray:
    return OPS["Constant"](**attributes(n.node))  # the oracle's own reading of the value


def _reshape(x, shape, allowzero):
    shape = _ints(shape)
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return torch.reshape(x, shape)


@converter("Reshape")
def reshape(n: NodeView):
    shape = n.ints(1)
    allowzero = int(n.attr("allowzero", 0))
    if isinstance(shape, list) and (allowzero or 0 not in shape):
        return n.call(torch.reshape, n.input(0), shape)
    return n.call(_reshape, n.input(0), shape, allowzero)


def _flatten(x, axis):
    axis = axis % x.ndim if x.ndim else 0
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@converter("Flatten")
def flatten(n: NodeView):
    axis = int(n.attr("axis", 1))
    return n.call(_flatten, n.input(0), axis)


@converter("Transpose")
def transpose(n: NodeView):
    perm = n.attr("perm")
    if perm is None:
        return n.call(_reverse_dims, n.input(0))
    return n.call(torch.permute, n.input(0), list(perm))


def _reverse_dims(x):
    return x.permute(*reversed(range(x.ndim)))


@converter("Concat")
def concat(n: NodeView):
    return n.call(torch.cat, [x for x in n.inputs() if x is not None], int(n.attr("axis")))


def _squeeze(x, axes):
    if axes is None:
        return torch.squeeze(x)
    axes = _ints(axes)
    return torch.squeeze(x, tuple(a % x.ndim for a in axes)) if axes else torch.squeeze(x)


@converter("Squeeze")
def squeeze(n: NodeView):
    return n.call(_squeeze, n.input(0), n.ints(1) if n.has(1) else None)


def _unsqueeze(x, axes):
    axes = _ints(axes)
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = torch.unsqueeze(x, a)
    return x


@converter("Unsqueeze")
def unsqueeze(n: NodeView):
    return n.call(_unsqueeze, n.input(0), n.ints(1))


def _shape(x, start, end):
    return torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device)


@converter("Shape")
def shape(n: NodeView):
    return n.call(_shape, n.input(0), int(n.attr("start", 0)), n.attr("end"))


def _size(x):
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@converter("Size")
def size(n: NodeView):
    return n.call(_size, n.input(0))


def _gather(x, idx, axis):
    axis = axis % x.ndim
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])


@converter("Gather")
def gather(n: NodeView):
    return n.call(_gather, n.input(0), n.input(1), int(n.attr("axis", 0)))


def _gather_elements(x, idx, axis):
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    return torch.gather(x, axis, idx)


@converter("GatherElements")
def gather_elements(n: NodeView):
    return n.call(_gather_elements, n.input(0), n.input(1), int(n.attr("axis", 0)))


def _slice(x, starts, ends, axes, steps):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    flips = []
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax %= x.ndim
        lo, hi, step = slice(st, en, sp).indices(x.shape[ax])
        if step > 0:
            index[ax] = slice(lo, hi, step)
        else:  # torch has no negative steps: take the indices explicitly
            index[ax] = torch.arange(lo, hi, step, device=x.device)
            flips.append(ax)
    if not flips:
        return x[tuple(index)]
    for ax in range(x.ndim):
        sl = index[ax]
        if isinstance(sl, slice):
            x = x[(slice(None),) * ax + (sl,)]
        else:
            x = torch.index_select(x, ax, sl)
    return x


@converter("Slice")
def slice_(n: NodeView):
    return n.call(_slice, n.input(0), n.ints(1), n.ints(2),
                  n.ints(3) if n.has(3) else None, n.ints(4) if n.has(4) else None)


def _split(x, sizes, axis, num):
    dim = x.shape[axis]
    if sizes is None:
        chunk = -(-dim // num)
        sizes = [chunk] * (num - 1) + [dim - chunk * (num - 1)]
    return torch.split(x, _ints(sizes), axis)


@converter("Split")
def split(n: NodeView):
    sizes = n.ints(1) if n.has(1) else None
    return n.call(_split, n.input(0), sizes, int(n.attr("axis", 0)),
                  int(n.attr("num_outputs", n.n_out)))


def _expand(x, shape):
    target = torch.broadcast_shapes(x.shape, tuple(_ints(shape)))
    return x.expand(target)


@converter("Expand")
def expand(n: NodeView):
    return n.call(_expand, n.input(0), n.ints(1))


def _tile(x, repeats):
    return x.repeat(_ints(repeats))


@converter("Tile")
def tile(n: NodeView):
    return n.call(_tile, n.input(0), n.ints(1))


def _pad_index(size, lo, hi, mode, device):
    idx = torch.arange(-lo, size + hi, device=device)
    if mode == "edge":
        return idx.clamp(0, size - 1)
    if mode == "wrap":
        return idx.remainder(size)
    period = 2 * (size - 1)  # reflect, the border itself not repeated
    if period == 0:
        return torch.zeros_like(idx)
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


def _pad(x, pads, value, axes, mode):
    pads = _ints(pads)
    nd = x.ndim
    axes = [a % nd for a in _ints(axes)] if axes is not None else list(range(nd))
    full = [0] * (2 * nd)
    for i, a in enumerate(axes):
        full[a], full[a + nd] = pads[i], pads[i + len(axes)]
    if mode == "constant":
        v = 0 if value is None else (value if isinstance(value, (int, float)) else value.item())
        return F.pad(x, pad_pairs(full), value=v)
    for a in range(nd):
        if full[a] or full[a + nd]:
            x = torch.index_select(x, a, _pad_index(x.shape[a], full[a], full[a + nd], mode,
                                                    x.device))
    return x


@converter("Pad")
def pad(n: NodeView):
    value = n.scalar(2) if n.has(2) else None
    return n.call(_pad, n.input(0), n.ints(1), value, n.ints(3) if n.has(3) else None,
                  n.attr("mode", "constant"))


def _cast_check(node):
    to = attr(node, "to")
    if to is not None and not supported_dtype(to):
        return f"Cast to {ir.DataType(to).name} is not supported"
    v = node.inputs[0]
    if v is not None and v.dtype is not None and not supported_dtype(v.dtype):
        return f"Cast from {v.dtype.name} is not supported"
    return None


@converter("Cast", check=_cast_check)
def cast(n: NodeView):
    return n.method("to", n.input(0), torch_dtype(n.attr("to")))


def _cast_like(x, like):
    return x.to(like.dtype)


@converter("CastLike", check=_cast_check)
def cast_like(n: NodeView):
    return n.call(_cast_like, n.input(0), n.input(1))


def _constant_of_shape(shape, value, dtype, device):
    return torch.full(_ints(shape), value, dtype=dtype, device=device)


@converter("ConstantOfShape")
def constant_of_shape(n: NodeView):
    v = n.attr("value")
    v = np.zeros(1, np.float32) if v is None else v
    shape = n.ints(0)
    if isinstance(shape, list):
        return n.lowering.buffer(n.node.outputs[0].name, np.full(shape, v.reshape(-1)[0], v.dtype))
    return n.call(_constant_of_shape, shape, v.reshape(-1)[0].item(),
                  torch.from_numpy(v).dtype, n.lowering.device)


def _range(start, limit, delta):
    dtype = start.dtype
    s, end, d = start.item(), limit.item(), delta.item()
    count = max(math.ceil((end - s) / d), 0)
    return (start + torch.arange(count, device=start.device, dtype=dtype) * delta).to(dtype)


@converter("Range")
def range_(n: NodeView):
    return n.call(_range, n.input(0), n.input(1), n.input(2))


def _trilu(x, k, upper):
    k = 0 if k is None else (k if isinstance(k, int) else int(k.item()))
    return torch.triu(x, k) if upper else torch.tril(x, k)


@converter("Trilu")
def trilu(n: NodeView):
    return n.call(_trilu, n.input(0), n.scalar(1) if n.has(1) else None, int(n.attr("upper", 1)))


def _topk(x, k, axis, largest, sorted_):
    k = int(_ints(k)[0])
    # a stable sort keeps equal values in index order, as ONNX asks
    values, indices = torch.sort(x, dim=axis, descending=bool(largest), stable=True)
    return values.narrow(axis, 0, k), indices.narrow(axis, 0, k)


@converter("TopK")
def topk(n: NodeView):
    return n.call(_topk, n.input(0), n.ints(1), int(n.attr("axis", -1)),
                  int(n.attr("largest", 1)), int(n.attr("sorted", 1)))


def _depth_to_space(x, b, mode):
    n, c, h, w = x.shape
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@converter("DepthToSpace")
def depth_to_space(n: NodeView):
    return n.call(_depth_to_space, n.input(0), int(n.attr("blocksize")), n.attr("mode", "DCR"))


def _space_to_depth(x, b):
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@converter("SpaceToDepth")
def space_to_depth(n: NodeView):
    return n.call(_space_to_depth, n.input(0), int(n.attr("blocksize")))


def _nonzero(x):
    return torch.nonzero(x).t().contiguous()


@converter("NonZero")
def nonzero(n: NodeView):
    return n.call(_nonzero, n.input(0))
