"""Lowering of each op to kernel launches, for concrete shapes.

``LOWER[op](b, node, *inputs) -> outputs``: inputs are plan tensors (``T``) or host
numpy constants; outputs are ``T`` (or a tuple of them). Conv is im2col + the
tiled GEMM (1x1 stride-1 convolutions read the input directly), depthwise Conv
has its own direct kernel; Reshape-like ops are views of the same buffer.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np

from hal.backends.opencl.codes import BINARY, UNARY, binary_code, unary_code
from hal.backends.opencl.graph import NO_ACTIVATION, LNode
from hal.backends.opencl.plan import F32, I32, I64, Builder, T
from hal.errors import BackendError
from hal.oracle.nn import conv_pads

LOWER: dict[str, Callable] = {}
#: Packing a dynamic B pays off once it no longer fits in cache.
PACK_BYTES = 1 << 20


def lower(*names):
    def reg(fn):
        for n in names:
            LOWER[n] = fn
        return fn
    return reg


def dev(b: Builder, v) -> T:
    if isinstance(v, T):
        return v
    return b.const(np.asarray(v, np.float32))


def host(v, what: str) -> np.ndarray:
    if isinstance(v, T):
        raise BackendError(f"{what} must be known when the model is planned (a constant or a "
                           f"model input), not computed on the device")
    return np.asarray(v)


def _act(node: LNode):
    code, p0, p1 = node.act
    return [I32(code), F32(p0), F32(p1)]


# -- GEMM ---------------------------------------------------------------------------
def b_operand(b: Builder, src, K: int, N: int, sxk: int = 0, sxn: int = 1, sxb: int = 0,
              batch: int = 1, x_off: int = 0):
    """B[k, n] as (tensor, b_off, sbp, sbk, sbb) in the layout gemm_f32 reads.

    A host constant (logical [batch, K, N] or [K, N]) is packed into panels once; a
    device tensor is read in place when its rows are contiguous and small, else packed
    by a kernel."""
    nr = b.gemm_cfg.nr
    npan = -(-N // nr)
    if not isinstance(src, T):
        arr = np.asarray(src, np.float32).reshape(-1, K, N)
        pad = np.zeros((arr.shape[0], K, npan * nr), np.float32)
        pad[:, :, :N] = arr
        panels = pad.reshape(arr.shape[0], K, npan, nr).transpose(0, 2, 1, 3)
        t = b.const(np.ascontiguousarray(panels))
        return t, 0, K * nr, nr, (npan * K * nr if arr.shape[0] > 1 else 0)
    if sxn == 1 and K * N * 4 <= PACK_BYTES:
        return src, src.offset + x_off, nr, sxk, sxb
    p = b.tensor((batch, npan, K, nr))
    b.launch("gemm.cl", "pack_panels_f32", (K, npan, batch), (64, 1, 1),
             [I32(K), I32(N), src, I64(src.offset + x_off), I32(sxk), I32(sxn), I64(sxb),
              p, I64(npan * K * nr)], b.gemm_cfg.defines())
    return p, 0, K * nr, nr, npan * K * nr


def gemm(b: Builder, M, N, K, a: T, a_off, sam, sak, sab, bop, c: T, c_off, ldc, scb, batch,
         bias: T | None = None, bsm=0, bsn=0, alpha=1.0, beta=1.0, act=NO_ACTIVATION):
    if M == 0 or N == 0 or batch == 0:
        return
    cfg = b.gemm_cfg
    if K == 0:  # nothing to accumulate: alpha * 0 + bias
        a_off, sam, sak = 0, 0, 0
    bt, b_off, sbp, sbk, sbb = bop
    if sak == 1 and sam % 1024 == 0 and M * K >= 1 << 18 and (batch == 1 or sab == 0):
        # Rows 4 KiB apart share L1 sets (and a page each): re-pitch A so they do not.
        lda = sam + 16
        ap = b.tensor((M, lda))
        b.launch("tensor.cl", "copy2d_f32", (K, M), (64, 1),
                 [I32(M), I32(K), a, I64(a.offset + a_off), I32(sam), ap, I64(0), I32(lda)])
        a, a_off, sam = ap, 0, lda
    npan, mt = -(-N // cfg.nr), -(-M // cfg.mr)
    # Few distinct local sizes (a CPU runtime compiles a kernel once per local size): each
    # side of the work-group is the tuned one, or 1 where the problem is narrower.
    local = (cfg.wg_n if npan >= cfg.wg_n else 1, cfg.wg_m if mt >= cfg.wg_m else 1, 1)
    bias_t = bias if bias is not None else b.dummy()
    b.launch("gemm.cl", "gemm_f32", (npan, mt, batch), local,
             [I32(M), I32(N), I32(K), a, I64(a.offset + a_off), I32(sam), I32(sak), I64(sab),
              bt, I64(b_off), I64(sbp), I32(sbk), I64(sbb),
              c, I64(c.offset + c_off), I32(ldc), I64(scb),
              bias_t, I32(bias is not None), I32(bsm), I32(bsn), F32(alpha), F32(beta),
              I32(act[0]), F32(act[1]), F32(act[2])], cfg.defines())


def _bias_strides(shape, M, N):
    """(bsm, bsn) of a bias broadcast to [M, N] (0 = broadcast), or None if it cannot be."""
    shape = (1,) * (2 - len(shape)) + tuple(shape)
    if len(shape) != 2 or shape[0] not in (1, M) or shape[1] not in (1, N):
        return None
    bsn = 1 if shape[1] == N and N != 1 else 0
    bsm = shape[1] if shape[0] == M and M != 1 else 0
    return bsm, bsn


@lower("Gemm")
def _gemm(b, node, A, B, C=None):
    ta, tb = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    a = dev(b, A)
    M, K = (a.shape[1], a.shape[0]) if ta else a.shape
    N = B.shape[0] if tb else B.shape[1]
    sam, sak = (1, M) if ta else (K, 1)
    if isinstance(B, T):
        bop = b_operand(b, B, K, N, *((1, K) if tb else (N, 1)))
    else:
        bop = b_operand(b, np.asarray(B).T if tb else B, K, N)
    y = b.tensor((M, N))
    bias, bsm, bsn = None, 0, 0
    if C is not None:
        st = _bias_strides(C.shape, M, N)
        if st is None:
            raise BackendError(f"Gemm bias of shape {list(C.shape)} does not broadcast to {[M, N]}")
        bias, (bsm, bsn) = dev(b, C), st
    gemm(b, M, N, K, a, 0, sam, sak, 0, bop, y, 0, N, 0, 1, bias, bsm, bsn, alpha, beta, node.act)
    return y


@lower("MatMul")
def _matmul(b, node, A, B, Bias=None):
    ash, bsh = tuple(A.shape), tuple(B.shape)
    a2 = ash if len(ash) > 1 else (1,) + ash
    b2 = bsh if len(bsh) > 1 else bsh + (1,)
    M, K = a2[-2:]
    N = b2[-1]
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    nb = math.prod(batch)
    out_shape = batch + ((M,) if len(ash) > 1 else ()) + ((N,) if len(bsh) > 1 else ())
    y = b.tensor(out_shape)
    # a bias (ai.hal.opencl FusedMatMul) is a scalar or runs along the last axis
    bias = None if Bias is None else _view(dev(b, Bias), (math.prod(Bias.shape),))
    bsn = int(bias is not None and bias.size > 1)
    a = dev(b, A)
    a_items, b_items = math.prod(a2[:-2]), math.prod(b2[:-2])
    abatch = (1,) * (len(batch) - len(a2) + 2) + a2[:-2]
    bbatch = (1,) * (len(batch) - len(b2) + 2) + b2[:-2]
    simple = abatch in (batch, (1,) * len(batch)) and bbatch in (batch, (1,) * len(batch))
    if not isinstance(B, T) and b_items == 1:
        bop = b_operand(b, np.asarray(B).reshape(K, N), K, N)
        if a_items == nb:  # batch of A folds into M: one big GEMM
            gemm(b, nb * M, N, K, a, 0, K, 1, 0, bop, y, 0, N, 0, 1, bias, 0, bsn,
                 act=node.act)
            return y
        gemm(b, M, N, K, a, 0, K, 1, 0, bop, y, 0, N, M * N, nb, bias, 0, bsn, act=node.act)
        return y
    bt = dev(b, B)
    if simple:
        sab = M * K if a_items > 1 else 0
        sbb = K * N if b_items > 1 else 0
        bop = b_operand(b, bt, K, N, N, 1, sbb, nb)
        gemm(b, M, N, K, a, 0, K, 1, sab, bop, y, 0, N, M * N, nb, bias, 0, bsn, act=node.act)
        return y
    # irregular broadcasting of batch dims: one launch per output batch item
    ab = np.broadcast_to(np.arange(a_items).reshape(abatch), batch)
    bb = np.broadcast_to(np.arange(b_items).reshape(bbatch), batch)
    for i, idx in enumerate(itertools.product(*[range(d) for d in batch])):
        bop = b_operand(b, bt, K, N, N, 1, 0, 1, int(bb[idx]) * K * N)
        gemm(b, M, N, K, a, int(ab[idx]) * M * K, K, 1, 0, bop, y, i * M * N, N, 0, 1, bias,
             0, bsn, act=node.act)
    return y


# -- convolution ------------------------------------------------------------------
def _pads(spatial, k, strides, dil, attrs):
    return conv_pads(spatial, k, strides, dil, attrs.get("pads"), attrs.get("auto_pad", "NOTSET"))


def _as_2d(x: T, spatial_rank: int) -> T:
    return x.view(x.shape[:2] + (1,) + x.shape[2:]) if spatial_rank == 1 else x


@lower("Conv")
def _conv(b, node, X, W, Bias=None):
    x = dev(b, X)
    rank = len(x.shape) - 2
    w_shape = tuple(W.shape)
    attrs = node.attrs
    k = list(w_shape[2:])
    strides = list(attrs.get("strides") or [1] * rank)
    dil = list(attrs.get("dilations") or [1] * rank)
    pads = _pads(x.shape[2:], k, strides, dil, attrs)
    if rank == 1:
        k, strides, dil, pads = [1] + k, [1] + strides, [1] + dil, [(0, 0)] + pads
        x = _as_2d(x, 1)
    N, C, H, Wd = x.shape
    CO, Cg = w_shape[:2]
    KH, KW = k
    G = int(attrs.get("group", 1))
    OH = (H + sum(pads[0]) - ((KH - 1) * dil[0] + 1)) // strides[0] + 1
    OW = (Wd + sum(pads[1]) - ((KW - 1) * dil[1] + 1)) // strides[1] + 1
    y = b.tensor((N, CO, OH, OW))
    geo = [I32(KH), I32(KW), I32(strides[0]), I32(strides[1]), I32(pads[0][0]),
           I32(pads[1][0]), I32(dil[0]), I32(dil[1]), I32(OH), I32(OW)]
    w = dev(b, W if not isinstance(W, T) else W)
    if y.size == 0:
        return y.view((N, CO) + ((OW,) if rank == 1 else (OH, OW)))
    if Cg == 1 and G == C and G > 1:
        bias = dev(b, Bias) if Bias is not None else b.dummy()
        b.launch("nn.cl", "depthwise_conv_f32", (OW, OH, N * CO), (16, 1, 1),
                 [I32(C), I32(H), I32(Wd), I32(CO), geo[0], geo[1], geo[2], geo[3], geo[4],
                  geo[5], geo[6], geo[7], geo[8], geo[9], I32(CO // C), x, I64(x.offset), w,
                  bias, I32(Bias is not None), y] + _act(node))
    else:
        Mg, Kg, P = CO // G, Cg * KH * KW, OH * OW
        nr = b.gemm_cfg.nr
        direct = KH == KW == 1 and strides == [1, 1] and sum(map(sum, pads)) == 0
        col = None if direct else b.tensor((N, Kg, -(-P // nr) * nr))
        fuse_bias = G == 1 and Bias is not None
        bias = dev(b, Bias) if fuse_bias else None
        act = node.act if G == 1 or Bias is None else NO_ACTIVATION
        for g in range(G):
            x_off = g * Cg * H * Wd
            if direct:
                bop = (x, x.offset + x_off, nr, H * Wd, C * H * Wd)
            else:
                ldc = col.shape[2]
                b.launch("nn.cl", "im2col_f32", (Kg, N), (16, 1),
                         [I32(Cg), I32(H), I32(Wd)] + geo + [x, I64(x.offset + x_off),
                                                             I64(C * H * Wd), col, I32(ldc),
                                                             I64(Kg * ldc)])
                bop = (col, 0, nr, ldc, Kg * ldc)
            gemm(b, Mg, P, Kg, w, g * Mg * Kg, Kg, 1, 0, bop, y, g * Mg * P, P, CO * P, N,
                 bias, 1, 0, act=act)
        if Bias is not None and not fuse_bias:
            y = _binary(b, "Add", y, dev(b, Bias).view((1, CO, 1, 1)), node.act)
    return y.view((N, CO) + ((OW,) if rank == 1 else (OH, OW)))


# -- pooling --------------------------------------------------------------------
def _pool(b, node, X, kind):
    x = dev(b, X)
    rank = len(x.shape) - 2
    if rank not in (1, 2):
        raise BackendError(f"{node.op} on {rank}-D input: only 1-D and 2-D pooling")
    a = node.attrs
    k = list(a["kernel_shape"])
    strides = list(a.get("strides") or [1] * rank)
    dil = list(a.get("dilations") or [1] * rank)
    pads = _pads(x.shape[2:], k, strides, dil, a)
    if rank == 1:
        k, strides, dil, pads = [1] + k, [1] + strides, [1] + dil, [(0, 0)] + pads
        x = _as_2d(x, 1)
    N, C, H, W = x.shape
    out = []
    for i, size in enumerate((H, W)):
        span = size + sum(pads[i]) - ((k[i] - 1) * dil[i] + 1)
        if a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-size // strides[i])
        elif a.get("ceil_mode", 0):
            o = -(-span // strides[i]) + 1
            if (o - 1) * strides[i] >= size + pads[i][0]:
                o -= 1
        else:
            o = span // strides[i] + 1
        out.append(o)
    OH, OW = out
    y = b.tensor((N, C, OH, OW))
    if y.size:
        b.launch("nn.cl", "pool2d_f32", (OW, OH, N * C), (16, 1, 1),
                 [I32(H), I32(W), I32(k[0]), I32(k[1]), I32(strides[0]), I32(strides[1]),
                  I32(pads[0][0]), I32(pads[1][0]), I32(dil[0]), I32(dil[1]), I32(OH), I32(OW),
                  I32(kind), I32(a.get("count_include_pad", 0)), x, I64(x.offset), y])
    return y.view((N, C) + ((OW,) if rank == 1 else (OH, OW)))


@lower("MaxPool")
def _maxpool(b, node, X):
    return _pool(b, node, X, 0)


@lower("AveragePool")
def _avgpool(b, node, X):
    return _pool(b, node, X, 1)


def _reduce3(b, x: T, outer, R, inner, op):
    y = b.tensor((outer * inner,))
    if y.size:
        b.launch_1d("nn.cl", "reduce_f32", outer * inner,
                    [I32(R), I32(inner), I32(outer * inner), I32(op), x, I64(x.offset), y])
    return y


@lower("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(b, node, X):
    x = dev(b, X)
    N, C = x.shape[:2]
    R = math.prod(x.shape[2:])
    y = _reduce3(b, x, N * C, R, 1, 0 if node.op == "GlobalAveragePool" else 2)
    return y.view((N, C) + (1,) * (len(x.shape) - 2))


REDUCE = {"ReduceMean": 0, "ReduceSum": 1, "ReduceMax": 2, "ReduceMin": 3}


@lower(*REDUCE)
def _reduce(b, node, X, axes=None):
    x = dev(b, X)
    r = len(x.shape)
    ax = [int(a) % r for a in host(axes, "reduce axes").reshape(-1)] if axes is not None else []
    if not ax:
        if node.attrs.get("noop_with_empty_axes", 0):
            return x
        ax = list(range(r))
    ax = sorted(set(ax))
    keep = node.attrs.get("keepdims", 1)
    out_shape = tuple(1 if i in ax else d for i, d in enumerate(x.shape)) if keep else \
        tuple(d for i, d in enumerate(x.shape) if i not in ax)
    if ax == list(range(ax[0], ax[-1] + 1)):
        outer = math.prod(x.shape[:ax[0]])
        R = math.prod(x.shape[ax[0]:ax[-1] + 1])
        inner = math.prod(x.shape[ax[-1] + 1:])
    else:
        perm = [i for i in range(r) if i not in ax] + ax
        x = _transpose(b, x, perm)
        outer, R, inner = math.prod(x.shape[:r - len(ax)]), math.prod(x.shape[r - len(ax):]), 1
    return _reduce3(b, x, outer, R, inner, REDUCE[node.op]).view(out_shape)


# -- elementwise ------------------------------------------------------------------
def _binary(b, op, A, B, act=NO_ACTIVATION):
    a, c = dev(b, A), dev(b, B)
    shape = tuple(np.broadcast_shapes(a.shape, c.shape))
    y = b.tensor(shape)
    total = y.size
    if total == 0:
        return y
    tail = [y] + [I32(act[0]), F32(act[1]), F32(act[2])]
    if a.shape == c.shape:
        b.launch_1d("elementwise.cl", "binary_same_f32", total,
                    [I32(total), I32(binary_code(op)), a, I64(a.offset), c, I64(c.offset)] + tail)
        return y
    meta = [len(shape)] + list(shape) + _bstrides(a.shape, shape) + _bstrides(c.shape, shape)
    b.launch_1d("elementwise.cl", "binary_f32", total,
                [I32(total), I32(binary_code(op)), b.meta(meta), a, I64(a.offset), c,
                 I64(c.offset)] + tail)
    return y


def _bstrides(shape, out):
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc if d != 1 else 0)
        acc *= d
    return list(reversed(strides))


@lower(*BINARY)
def _binary_node(b, node, *ins):
    ins = [v for v in ins if v is not None]
    if len(ins) == 1:
        return _copy(b, dev(b, ins[0]))
    y = ins[0]
    for i, v in enumerate(ins[1:]):
        y = _binary(b, node.op, y, v, node.act if i == len(ins) - 2 else NO_ACTIVATION)
    return y


@lower(*UNARY)
def _unary(b, node, X, *params):
    x = dev(b, X)
    code, p0, p1 = unary_code(node.op), 0.0, 0.0
    if node.op == "Clip":
        lo, hi = (list(params) + [None, None])[:2]
        p0 = float(host(lo, "Clip min").reshape(())) if lo is not None else -np.inf
        p1 = float(host(hi, "Clip max").reshape(())) if hi is not None else np.inf
    elif node.op == "LeakyRelu":
        p0 = float(node.attrs.get("alpha", 0.01))
    elif node.op == "Gelu" and node.attrs.get("approximate", "none") == "tanh":
        p0 = 1.0  # activation.h: the tanh approximation
    y = b.tensor(x.shape)
    if y.size:
        b.launch_1d("elementwise.cl", "unary_f32", y.size,
                    [I32(y.size), I32(code), F32(p0), F32(p1), x, I64(x.offset), y])
    return y


# -- normalization / softmax ------------------------------------------------------------
@lower("Softmax", "LogSoftmax")
def _softmax(b, node, X):
    x = dev(b, X)
    axis = int(node.attrs.get("axis", -1)) % len(x.shape)
    outer, R = math.prod(x.shape[:axis]), x.shape[axis]
    inner = math.prod(x.shape[axis + 1:])
    y = b.tensor(x.shape)
    if y.size:
        b.launch_1d("nn.cl", "softmax_f32", outer * inner,
                    [I32(R), I32(inner), I32(outer * inner), I32(node.op == "LogSoftmax"), x,
                     I64(x.offset), y], group=16)
    return y


@lower("LayerNormalization")
def _layernorm(b, node, X, scale, bias=None):
    x = dev(b, X)
    r = len(x.shape)
    axis = int(node.attrs.get("axis", -1)) % r
    rows, D = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])

    def param(v):
        if v is None:
            return b.dummy(), 0
        if math.prod(v.shape) in (D, 1) and (math.prod(v.shape) == 1 or
                                             tuple(v.shape)[-(r - axis):] == x.shape[axis:]
                                             or math.prod(v.shape) == D):
            return dev(b, v), int(math.prod(v.shape) == D)
        if isinstance(v, T):
            raise BackendError(f"LayerNormalization parameter of shape {list(v.shape)} must "
                               f"match the normalized shape {list(x.shape[axis:])}")
        return dev(b, np.broadcast_to(v, x.shape[axis:]).copy()), 1

    s, ss = param(scale)
    bb, bs = param(bias)
    y = b.tensor(x.shape)
    stats_shape = x.shape[:axis] + (1,) * (r - axis)
    mean, inv = b.tensor(stats_shape), b.tensor(stats_shape)
    if rows:
        b.launch_1d("nn.cl", "layernorm_f32", rows,
                    [I32(rows), I32(D), F32(node.attrs.get("epsilon", 1e-5)), x, I64(x.offset),
                     s, I32(ss), bb, I32(bs), I32(bias is not None), y, mean, inv, I32(1)],
                    group=16)
    return y, mean, inv


@lower("BatchNormalization")
def _batchnorm(b, node, X, scale, bias, mean, var):
    x = dev(b, X)
    C = x.shape[1]
    inner = math.prod(x.shape[2:])
    y = b.tensor(x.shape)
    if y.size:
        b.launch_1d("nn.cl", "batchnorm_f32", y.size,
                    [I32(C), I32(inner), I32(y.size), F32(node.attrs.get("epsilon", 1e-5)), x,
                     I64(x.offset), dev(b, scale), dev(b, bias), dev(b, mean), dev(b, var), y]
                    + _act(node))
    return y


# -- shape and data movement --------------------------------------------------------------
def _copy(b, x: T) -> T:
    y = b.tensor(x.shape)
    if y.size:
        b.launch("tensor.cl", "copy2d_f32", (y.size, 1), (64, 1),
                 [I32(1), I32(y.size), x, I64(x.offset), I32(y.size), y, I64(0), I32(y.size)])
    return y


def _view(X, shape):
    if isinstance(X, T):
        return X.view(shape)
    return np.asarray(X).reshape(shape)


@lower("Identity")
def _identity(b, node, X):
    return X


@lower("Reshape")
def _reshape(b, node, X, shape):
    spec = [int(s) for s in host(shape, "Reshape shape").reshape(-1)]
    src = tuple(X.shape)
    allow0 = node.attrs.get("allowzero", 0)
    out = [src[i] if s == 0 and not allow0 else s for i, s in enumerate(spec)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(src) // known if known else 0
    if math.prod(out) != math.prod(src):
        raise BackendError(f"cannot reshape {list(src)} to {spec}")
    return _view(X, out)


@lower("Flatten")
def _flatten(b, node, X):
    s = tuple(X.shape)
    axis = int(node.attrs.get("axis", 1))
    axis = axis % len(s) if axis < 0 else axis
    return _view(X, (math.prod(s[:axis]), math.prod(s[axis:])))


@lower("Squeeze")
def _squeeze(b, node, X, axes=None):
    s = tuple(X.shape)
    ax = {int(a) % len(s) for a in host(axes, "Squeeze axes").reshape(-1)} if axes is not None \
        else {i for i, d in enumerate(s) if d == 1}
    return _view(X, [d for i, d in enumerate(s) if i not in ax])


@lower("Unsqueeze")
def _unsqueeze(b, node, X, axes):
    s = list(X.shape)
    r = len(s) + host(axes, "Unsqueeze axes").size
    for a in sorted(int(a) % r for a in host(axes, "Unsqueeze axes").reshape(-1)):
        s.insert(a, 1)
    return _view(X, s)


def _transpose(b, x: T, perm) -> T:
    shape = x.shape
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    out = tuple(shape[p] for p in perm)
    y = b.tensor(out)
    if y.size:
        meta = [len(out)] + list(out) + [strides[p] for p in perm]
        b.launch_1d("tensor.cl", "strided_copy_f32", y.size,
                    [I32(y.size), b.meta(meta), x, I64(x.offset), y, I64(0)])
    return y


@lower("Transpose")
def _transpose_node(b, node, X):
    x = dev(b, X)
    perm = node.attrs.get("perm") or list(reversed(range(len(x.shape))))
    return _transpose(b, x, [int(p) for p in perm])


@lower("Concat")
def _concat(b, node, *ins):
    ts = [dev(b, v) for v in ins if v is not None]
    r = len(ts[0].shape)
    axis = int(node.attrs["axis"]) % r
    out = list(ts[0].shape)
    out[axis] = sum(t.shape[axis] for t in ts)
    y = b.tensor(out)
    rows = math.prod(out[:axis])
    inner = math.prod(out[axis + 1:])
    pos = 0
    for t in ts:
        cols = t.shape[axis] * inner
        if rows and cols:
            b.launch("tensor.cl", "copy2d_f32", (cols, rows), (64, 1),
                     [I32(rows), I32(cols), t, I64(t.offset), I32(cols), y, I64(pos * inner),
                      I32(out[axis] * inner)])
        pos += t.shape[axis]
    return y


# -- benchmark / tuning helper --------------------------------------------------------------
def gemm_benchmark_plan(cldev, cfg, a: np.ndarray, bmat: np.ndarray, build_options: str = ""):
    """A callable running C = A @ B (both on the device, B packed by a kernel when large)
    and waiting for it; used by the autotuner and bench/opencl.py."""
    from hal.backends.opencl.runtime import upload

    bld = Builder(cldev, cfg, build_options, {}, {})
    M, K = a.shape
    N = bmat.shape[1]
    ta, tb = bld.tensor((M, K)), bld.tensor((K, N))
    bld.slot_buffers[ta.slot] = upload(cldev, a)
    bld.slot_buffers[tb.slot] = upload(cldev, bmat)
    y = bld.tensor((M, N))
    gemm(bld, M, N, K, ta, 0, K, 1, 0, b_operand(bld, tb, K, N, N, 1), y, 0, N, 0, 1)
    plan = bld.finish([], [y])
    out = {}

    def run():
        out["c"] = plan.run(cldev, [])[0]
        cldev.queue.finish()
        return out["c"]

    return run
