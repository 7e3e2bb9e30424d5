"""Convolution, pooling and normalization."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from hal.ir.schemas import HAL_DOMAIN
from hal.backends.torch_backend.lowering import NodeView, attr, converter, torch_dtype

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _spatial_params(n: NodeView, k: list[int]):
    nd = len(k)
    strides = list(n.attr("strides") or [1] * nd)
    dilations = list(n.attr("dilations") or [1] * nd)
    pads = list(n.attr("pads") or [0] * (2 * nd))
    return strides, dilations, pads, n.attr("auto_pad", "NOTSET")


def same_pads(size, k, s, d, upper):
    """ONNX SAME_UPPER/SAME_LOWER padding for spatial ``size`` -> [begins..., ends...]."""
    begins, ends = [], []
    for i in range(len(k)):
        out = -(-size[i] // s[i])
        total = max(0, (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - size[i])
        lo = total // 2 if upper else total - total // 2
        begins.append(lo)
        ends.append(total - lo)
    return begins + ends


def pad_pairs(pads):
    """ONNX [b1, b2, e1, e2] -> F.pad's last-dim-first (b2, e2, b1, e1)."""
    nd = len(pads) // 2
    out = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[i + nd]]
    return out


def _conv_auto(x, w, b, strides, dilations, groups, auto_pad):
    k = w.shape[2:]
    pads = same_pads(x.shape[2:], k, strides, dilations, auto_pad == "SAME_UPPER")
    return _conv_padded(x, w, b, strides, pads, dilations, groups)


def _conv_padded(x, w, b, strides, pads, dilations, groups):
    x = F.pad(x, pad_pairs(pads))
    return _CONV[x.ndim - 2](x, w, b, strides, 0, dilations, groups)


def _conv_any(x, w, b, strides, pads, dilations, groups, auto_pad):
    """Conv whose kernel rank is only known at run time (a weight computed in the graph)."""
    nd = w.ndim - 2
    strides, dilations = strides or [1] * nd, dilations or [1] * nd
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _conv_auto(x, w, b, strides, dilations, groups, auto_pad)
    pads = [0] * (2 * nd) if auto_pad == "VALID" or not pads else pads
    return _conv_padded(x, w, b, strides, pads, dilations, groups)


def conv_call(n: NodeView, x, w, b):
    """Emit the conv of node ``n`` (Conv or FusedConv) and return its fx node."""
    ws = n.static_shape(1)
    k = list(n.attr("kernel_shape") or (ws[2:] if ws is not None else []))
    groups = int(n.attr("group", 1))
    if not k:
        return n.call(_conv_any, x, w, b, n.attr("strides"), n.attr("pads"),
                      n.attr("dilations"), groups, n.attr("auto_pad", "NOTSET"))
    nd = len(k)
    strides, dilations, pads, auto_pad = _spatial_params(n, k)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return n.call(_conv_auto, x, w, b, strides, dilations, groups, auto_pad)
    if auto_pad == "VALID":
        pads = [0] * (2 * nd)
    if pads[:nd] == pads[nd:]:
        return n.call(_CONV[nd], x, w, b, strides, pads[:nd], dilations, groups)
    return n.call(_conv_padded, x, w, b, strides, pads, dilations, groups)


def _conv_check(node):
    if node.inputs[1] is not None and node.inputs[1].const_value is None:
        return None
    w = node.inputs[1].const_value
    if w is not None and len(w.shape) - 2 not in _CONV:
        return f"{len(w.shape) - 2}-D convolution is not supported (1-D to 3-D are)"
    return None


@converter("Conv", check=_conv_check)
def conv(n: NodeView):
    return conv_call(n, n.input(0), n.input(1), n.input(2))


def _conv_transpose(x, w, b, strides, pads, dilations, groups, output_padding, output_shape,
                    auto_pad):
    nd = x.ndim - 2
    k = w.shape[2:]
    strides, dilations = strides or [1] * nd, dilations or [1] * nd
    pads, output_padding = pads or [0] * (2 * nd), (output_padding or [0] * nd)[:nd]
    output_shape = list(output_shape)[-nd:] if output_shape else None
    full = [(x.shape[2 + i] - 1) * strides[i] + (k[i] - 1) * dilations[i] + 1 for i in range(nd)]
    # follows the ONNX reference: SAME_* splits the padding, an output_shape crops at the end
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = output_shape or [x.shape[2 + i] * strides[i] for i in range(nd)]
        total = [full[i] + output_padding[i] - out[i] for i in range(nd)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        pads = begin + [t - b for t, b in zip(total, begin)]
    elif output_shape is not None:
        begin = list(pads[:nd])
        pads = begin + [full[i] + output_padding[i] - begin[i] - output_shape[i]
                        for i in range(nd)]
    y = _CONV_T[nd](x, w, None, strides, 0, 0, groups, dilations)
    y = F.pad(y, pad_pairs([0] * nd + list(output_padding)))
    y = F.pad(y, pad_pairs([-p for p in pads]))  # negative padding crops
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return y


@converter("ConvTranspose", check=_conv_check)
def conv_transpose(n: NodeView):
    return n.call(_conv_transpose, n.input(0), n.input(1), n.input(2), n.attr("strides"),
                  n.attr("pads"), n.attr("dilations"), int(n.attr("group", 1)),
                  n.attr("output_padding"), n.attr("output_shape"), n.attr("auto_pad", "NOTSET"))


# -- pooling ---------------------------------------------------------------------------------

def _pool_pads(size, k, s, d, pads, auto_pad, ceil_mode):
    """Explicit [begins..., ends...] that make a plain (floor-mode) pool match ONNX exactly."""
    nd = len(k)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = same_pads(size, k, s, d, auto_pad == "SAME_UPPER")
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    ends = list(pads[nd:])
    if ceil_mode:
        for i in range(nd):
            eff = (k[i] - 1) * d[i] + 1
            padded = size[i] + pads[i] + pads[i + nd]
            out = -(-(padded - eff) // s[i]) + 1
            if (out - 1) * s[i] >= size[i] + pads[i]:
                out -= 1  # the last window must start inside the input or the left padding
            ends[i] = max(ends[i], (out - 1) * s[i] + eff - size[i] - pads[i])
    return list(pads[:nd]) + ends


def _max_pool(x, k, s, d, pads, auto_pad, ceil_mode):
    pads = _pool_pads(x.shape[2:], k, s, d, pads, auto_pad, ceil_mode)
    fill = -math.inf if x.is_floating_point() else torch.iinfo(x.dtype).min
    xp = F.pad(x, pad_pairs(pads), value=fill)
    return _MAX_POOL[len(k)](xp, k, s, 0, d)


def _pool_check(node):
    nd = len(attr(node, "kernel_shape") or [])
    if nd not in _MAX_POOL:
        return f"{nd}-D pooling is not supported (1-D to 3-D are)"
    return None


def _max_pool_indices(x, k, s, d, pads, auto_pad, ceil_mode, storage_order):
    """MaxPool with ONNX Indices: flat over the whole unpadded tensor, row- or column-major."""
    nd = len(k)
    pads = _pool_pads(x.shape[2:], k, s, d, pads, auto_pad, ceil_mode)
    fill = -math.inf if x.is_floating_point() else torch.iinfo(x.dtype).min
    xp = F.pad(x, pad_pairs(pads), value=fill)
    y, idx = _MAX_POOL[nd](xp, k, s, 0, d, return_indices=True)
    coords, rem = [], idx
    for i in reversed(range(nd)):
        coords.insert(0, rem % xp.shape[2 + i] - pads[i])
        rem = rem // xp.shape[2 + i]
    size = x.shape[2:]
    order = range(nd) if storage_order == 0 else reversed(range(nd))
    flat = torch.zeros_like(idx)
    for i in order:
        flat = flat * size[i] + coords[i]
    planes = torch.arange(x.shape[0] * x.shape[1], device=x.device).reshape(
        x.shape[0], x.shape[1], *([1] * nd))
    return y, flat + planes * math.prod(size)


@converter("MaxPool", check=_pool_check)
def max_pool(n: NodeView):
    k = list(n.attr("kernel_shape"))
    nd = len(k)
    s, d, pads, auto_pad = _spatial_params(n, k)
    ceil_mode = int(n.attr("ceil_mode", 0))
    if n.wants(1):
        return n.call(_max_pool_indices, n.input(0), k, s, d, pads, auto_pad, ceil_mode,
                      int(n.attr("storage_order", 0)))
    symmetric = pads[:nd] == pads[nd:] and all(2 * p <= kk for p, kk in zip(pads[:nd], k))
    if auto_pad == "NOTSET" and symmetric and not ceil_mode:
        return n.call(_MAX_POOL[nd], n.input(0), k, s, pads[:nd], d)
    return n.call(_max_pool, n.input(0), k, s, d, pads, auto_pad, ceil_mode)


def _avg_pool(x, k, s, d, pads, auto_pad, ceil_mode, count_include_pad):
    """General average pool: window sums and counts through a depthwise conv of ones."""
    nd = len(k)
    size = x.shape[2:]
    explicit = pads if auto_pad == "NOTSET" else (
        same_pads(size, k, s, d, auto_pad == "SAME_UPPER") if auto_pad != "VALID"
        else [0] * (2 * nd))
    full = _pool_pads(size, k, s, d, explicit, "NOTSET", ceil_mode)
    n, c = x.shape[:2]
    flat = x.reshape(n * c, 1, *size)
    ones_k = torch.ones((1, 1, *k), dtype=x.dtype, device=x.device)
    sums = _CONV[nd](F.pad(flat, pad_pairs(full)), ones_k, None, s, 0, d)
    mask = torch.ones((1, 1, *size), dtype=x.dtype, device=x.device)
    mask = F.pad(mask, pad_pairs(explicit), value=float(count_include_pad))
    extra = [0] * nd + [f - e for f, e in zip(full[nd:], explicit[nd:])]
    mask = F.pad(mask, pad_pairs(extra))
    counts = _CONV[nd](mask, ones_k, None, s, 0, d)
    return (sums / counts).reshape(n, c, *sums.shape[2:])


@converter("AveragePool", check=_pool_check)
def average_pool(n: NodeView):
    k = list(n.attr("kernel_shape"))
    nd = len(k)
    s, d, pads, auto_pad = _spatial_params(n, k)
    ceil_mode = int(n.attr("ceil_mode", 0))
    cip = int(n.attr("count_include_pad", 0))
    simple = auto_pad == "NOTSET" and pads[:nd] == pads[nd:] and d == [1] * nd and \
        all(2 * p <= kk for p, kk in zip(pads[:nd], k)) and not ceil_mode
    if simple:
        return n.call(_AVG_POOL[nd], n.input(0), k, s, pads[:nd], False, bool(cip))
    return n.call(_avg_pool, n.input(0), k, s, d, pads, auto_pad, ceil_mode, cip)


def _global_pool(kind, x):
    if kind == "GlobalMaxPool":
        return torch.amax(x, dim=tuple(range(2, x.ndim)), keepdim=True)
    if x.ndim == 4:
        # a whole-plane avg_pool2d reduces every channel in the same order; mean and
        # adaptive_avg_pool2d on a channels-last tensor sum the channels past the last full
        # vector in another order, so equal channels come out an ulp apart (a softmax over
        # the 1e10-sized logits of ONNX's light_squeezenet turns that into a wrong answer)
        return F.avg_pool2d(x, x.shape[2:])
    return torch.mean(x, dim=tuple(range(2, x.ndim)), keepdim=True)


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(n: NodeView):
    return n.call(_global_pool, n.op, n.input(0))


# -- normalization ---------------------------------------------------------------------------

def _bn_training(x, scale, bias, mean, var, eps, momentum):
    """ONNX training-mode BatchNormalization: batch statistics, updated running ones. Under
    autocast the statistics and the normalization are computed in fp32 (a bf16 mean of a
    large batch loses the running statistics' precision). The running statistics carry no
    gradient: the optimizer never trains them."""
    dims = (0,) + tuple(range(2, x.ndim))
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = F.batch_norm(xf, None, None, scale, bias, True, 0.0, eps).to(x.dtype)
    xd = xf.detach()
    batch_mean = xd.mean(dim=dims)
    batch_var = xd.var(dim=dims, unbiased=False)
    return (y, mean * momentum + batch_mean * (1 - momentum),
            var * momentum + batch_var * (1 - momentum))


@converter("BatchNormalization")
def batch_norm(n: NodeView):
    x, scale, bias, mean, var = n.inputs()[:5]
    eps = float(n.attr("epsilon", 1e-5))
    if int(n.attr("training_mode", 0)):
        return n.call(_bn_training, x, scale, bias, mean, var, eps,
                      float(n.attr("momentum", 0.9)))
    return n.call(F.batch_norm, x, mean, var, scale, bias, False, 0.0, eps)


def _layer_norm(x, scale, bias, axis, eps):
    shp = x.shape[axis:]
    if scale.shape == shp and (bias is None or bias.shape == shp):
        return F.layer_norm(x, shp, scale, bias, eps)
    return _layer_norm_stats(x, scale, bias, axis, eps)[0]


def _layer_norm_stats(x, scale, bias, axis, eps):
    axis = axis % x.ndim
    dims = tuple(range(axis, x.ndim))
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=dims, keepdim=True)
    d = xf - mean
    inv = torch.rsqrt((d * d).mean(dim=dims, keepdim=True) + eps)
    y = d * inv * scale
    if bias is not None:
        y = y + bias
    return y.to(x.dtype), mean, inv


@converter("LayerNormalization")
def layer_norm(n: NodeView):
    x, scale, bias = n.input(0), n.input(1), n.input(2)
    axis, eps = int(n.attr("axis", -1)), float(n.attr("epsilon", 1e-5))
    if n.wants(1) or n.wants(2):
        return n.call(_layer_norm_stats, x, scale, bias, axis, eps)
    return n.call(_layer_norm, x, scale, bias, axis, eps)


@converter("InstanceNormalization")
def instance_norm(n: NodeView):
    return n.call(F.instance_norm, n.input(0), None, None, n.input(1), n.input(2), True, 0.0,
                  float(n.attr("epsilon", 1e-5)))


def _lp_norm(x, axis, p):
    norm = torch.linalg.vector_norm(x, ord=p, dim=axis, keepdim=True)
    return torch.where(norm == 0, torch.zeros_like(x), x / norm)  # 0/0 is 0, as in ONNX


@converter("LpNormalization")
def lp_norm(n: NodeView):
    return n.call(_lp_norm, n.input(0), int(n.attr("axis", -1)), int(n.attr("p", 2)))


def _lrn(x, size, alpha, beta, bias):
    # ONNX's window is floor((size-1)/2) channels before and ceil((size-1)/2) after;
    # F.local_response_norm pads the other way round, which differs for an even size
    n, c = x.shape[:2]
    sq = F.pad((x * x).reshape(n, 1, c, -1), (0, 0, (size - 1) // 2, size // 2))
    mean = F.avg_pool2d(sq, (size, 1), stride=1).reshape(x.shape)
    return x / (bias + alpha * mean) ** beta


@converter("LRN")
def lrn(n: NodeView):
    return n.call(_lrn, n.input(0), int(n.attr("size")), float(n.attr("alpha", 1e-4)),
                  float(n.attr("beta", 0.75)), float(n.attr("bias", 1.0)))


def _dropout_check(node):
    ins = node.inputs
    if len(ins) > 2 and ins[2] is not None:
        c = ins[2].const_value
        if c is None or bool(c.numpy().reshape(-1)[0]):
            return "Dropout in training mode is not supported (inference only)"
    return None


def _dropout(x, want_mask):
    if want_mask:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


@converter("Dropout", check=_dropout_check)
def dropout(n: NodeView):
    if n.wants(1):
        out = n.call(_dropout, n.input(0), True)
        return [n.call(operator.getitem, out, 0), n.call(operator.getitem, out, 1)]
    return n.input(0)


# -- losses: mean over the samples not ignored, weighted by their class's weight -------------

def _nll(log_prob, target, weight, reduction, ignore_index, dtype):
    lp = log_prob.float() if log_prob.dtype in (torch.float16, torch.bfloat16) else log_prob
    w = None if weight is None else weight.to(lp.dtype)
    return F.nll_loss(lp, target.long(), w, ignore_index=ignore_index,
                      reduction=reduction).to(dtype)


def _softmax_cross_entropy(scores, target, weight, reduction, ignore_index, dtype):
    s = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    log_prob = F.log_softmax(s, dim=1)
    return (_nll(log_prob, target, weight, reduction, ignore_index, dtype), log_prob.to(dtype))


def _loss_args(n: NodeView) -> tuple:
    # torch ignores -100 by default; ONNX ignores nothing unless told, so nothing is ignored
    # unless the node names a class (an int64 label never equals torch's sentinel below)
    ignore = n.attr("ignore_index")
    return (n.input(0), n.input(1), n.input(2), n.attr("reduction", "mean"),
            int(ignore) if ignore is not None else -(2 ** 63),
            torch_dtype(n.node.outputs[0].dtype or n.node.inputs[0].dtype))


@converter("NegativeLogLikelihoodLoss")
def nll_loss(n: NodeView):
    return n.call(_nll, *_loss_args(n))


@converter("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(n: NodeView):
    out = n.call(_softmax_cross_entropy, *_loss_args(n))
    return [n.call(operator.getitem, out, 0),
            n.call(operator.getitem, out, 1) if n.wants(1) else None]


# -- HAL's fused ops ("ai.hal"): Conv/Gemm attributes plus ``activation`` and its params ---------

def _clip_act(y, lo=-math.inf, hi=math.inf):
    return torch.clamp(y, lo, hi)


def _leaky(y, alpha=0.01):
    return F.leaky_relu(y, alpha)


def _hard_sigmoid(y, alpha=0.2, beta=0.5):
    return torch.clamp(alpha * y + beta, 0, 1)


#: activation name (the ONNX op it stands for) -> torch function of (y, *activation_params)
ACTIVATIONS = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
               "Clip": _clip_act, "LeakyRelu": _leaky, "HardSigmoid": _hard_sigmoid,
               "Gelu": F.gelu, "Identity": None, "": None}


def _fused_check(node):
    act = attr(node, "activation", "") or ""
    if act not in ACTIVATIONS:
        return f"fused activation {act!r} is not supported (have {sorted(a for a in ACTIVATIONS if a)})"
    return _conv_check(node) if node.op_type == "FusedConv" else None


def _activate(n: NodeView, y):
    fn = ACTIVATIONS[n.attr("activation", "") or ""]
    if fn is None:
        return y
    return n.call(fn, y, *[float(p) for p in n.attr("activation_params") or []])


@converter("FusedConv", domain=HAL_DOMAIN, check=_fused_check)
def fused_conv(n: NodeView):
    return _activate(n, conv_call(n, n.input(0), n.input(1), n.input(2)))


@converter("FusedGemm", domain=HAL_DOMAIN, check=_fused_check)
def fused_gemm(n: NodeView):
    from hal.backends.torch_backend.ops_math import gemm

    return _activate(n, gemm(n))


# -- HAL's FakeQuantize ("ai.hal"): quantization-aware training (backends/common/kernels/quant.py)

def _weight_scale(x, axis: int, qmax: int, power_of_two: bool):
    other = [i for i in range(x.dim()) if i != axis % x.dim()]
    s = x.abs().amax(dim=other, keepdim=True) / float(qmax)
    s = torch.where(s > 0, s, torch.ones_like(s))
    if not power_of_two:
        return s
    up = torch.exp2(torch.ceil(torch.log2(s.double()))).float()
    down = up / 2

    def error(c):
        d = torch.clamp(torch.round(x / c), -qmax, qmax) * c - x
        return (d * d).sum(dim=other, keepdim=True)

    return torch.where(error(down) < error(up), down, up)


def _fake_quantize(x, scale, qmin: float, qmax: float, axis: int, power_of_two: bool):
    with torch.no_grad():
        s = _weight_scale(x, axis, int(qmax), power_of_two) if scale is None else scale
        rounded = torch.clamp(torch.round(x / s), qmin, qmax) * s
    inside = x if scale is None else torch.minimum(torch.maximum(x, s * qmin), s * qmax)
    return inside + (rounded - inside).detach()


@converter("FakeQuantize", domain=HAL_DOMAIN)
def fake_quantize(n: NodeView):
    return n.call(_fake_quantize, n.input(0), n.input(1), float(n.attr("qmin", -128)),
                  float(n.attr("qmax", 127)), int(n.attr("axis", 0)),
                  bool(n.attr("power_of_two", 0)))
