"""Shared graph optimizations: constant folding, BN folding, bias and activation fusion.

All but activation fusion keep the graph pure ONNX. Activation fusion makes
``ai.hal`` ``FusedConv``/``FusedGemm`` nodes (the Conv/Gemm inputs and attributes
plus ``activation``, the ONNX op type of the activation, and ``activation_params``:
[min, max] for Clip, [alpha] for LeakyRelu) for backends that declare them.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

HAL_DOMAIN = "ai.hal"
FOLD_LIMIT = 1 << 20  # elements: larger constants are not materialized by folding
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "Dropout"}


def _const(v: ir.Value | None) -> np.ndarray | None:
    if v is None:
        return None
    if v.const_value is not None:
        return v.const_value.numpy()
    return None


def _initializer(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    base, n = name, 0
    while name in graph.initializers:
        n += 1
        name = f"{base}_{n}"
    v = ir.Value(name=name, shape=ir.Shape(array.shape),
                 type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                 const_value=ir.tensor(np.ascontiguousarray(array), name=name))
    graph.register_initializer(v)
    return v


def _sole_consumer(v: ir.Value) -> ir.Node | None:
    users = v.consumers()
    if len(users) != 1 or v.is_graph_output():
        return None
    return users[0]


def _replace(old: ir.Value, new: ir.Value) -> None:
    """Make ``new`` take ``old``'s place (and its name, when it is a graph output)."""
    was_output = old.is_graph_output()
    name = old.name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if was_output:
        old.name = None
        new.name = name


class _Pass(InPlacePass):
    hal_name = ""

    def __init__(self) -> None:
        super().__init__()
        self.detail = ""


class ConstantFolding(_Pass):
    """Evaluate nodes whose inputs are all constants with the reference kernels."""

    hal_name = "ConstantFolding"

    def call(self, model: ir.Model) -> PassResult:
        from hal.backends.reference.executor import attribute_value
        from hal.backends.reference.ops import OPS

        g = model.graph
        folded = 0
        for node in list(g):
            if node.domain not in ("", "ai.onnx") or node.op_type in _NOT_FOLDED \
                    or node.op_type not in OPS:
                continue
            if node.op_type == "Constant":
                attr = node.attributes.get("value")
                if attr is None or len(node.outputs) != 1:
                    continue
                arrays = [attr.value.numpy()]
            else:
                args = [_const(v) if v is not None else None for v in node.inputs]
                if any(a is None and v is not None for a, v in zip(args, node.inputs)) \
                        or not node.inputs:
                    continue
                if sum(a.size for a in args if a is not None) > FOLD_LIMIT:
                    continue
                try:
                    attrs = {k: attribute_value(a) for k, a in node.attributes.items()}
                    with np.errstate(all="ignore"):
                        res = OPS[node.op_type](*args, **attrs)
                except Exception:
                    continue
                arrays = list(res) if isinstance(res, tuple) else [res]
            if any(np.asarray(a).size > FOLD_LIMIT for a in arrays):
                continue
            for out, arr in zip(node.outputs, arrays):
                if out.uses() or out.is_graph_output():
                    _replace(out, _initializer(g, np.asarray(arr), out.name or "folded"))
            g.remove(node, safe=True)
            folded += 1
        self.detail = f"folded {folded} node(s) into constants" if folded else ""
        return PassResult(model, bool(folded))


class BatchNormFolding(_Pass):
    """Conv -> BatchNormalization (inference) becomes one Conv with scaled weights and bias."""

    hal_name = "BatchNormFolding"

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        n = 0
        for conv in list(g):
            if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
                continue
            bn = _sole_consumer(conv.outputs[0])
            if bn is None or bn.op_type != "BatchNormalization" or len(
                    [o for o in bn.outputs if o.uses() or o.is_graph_output()]) != 1:
                continue
            if bn.attributes.get("training_mode") is not None and \
                    bn.attributes["training_mode"].value:
                continue
            w = _const(conv.inputs[1])
            b = _const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
            scale, bias, mean, var = (_const(v) for v in bn.inputs[1:5])
            if w is None or any(a is None for a in (scale, bias, mean, var)) or \
                    len(conv.inputs) > 2 and conv.inputs[2] is not None and b is None:
                continue
            eps = bn.attributes["epsilon"].value if "epsilon" in bn.attributes else 1e-5
            k = (scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps))
            w2 = (w * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
            b0 = b if b is not None else np.zeros(w.shape[0], w.dtype)
            b2 = ((b0 - mean) * k + bias).astype(w.dtype)
            prefix = conv.name or "conv"
            conv.replace_input_with(1, _initializer(g, w2, f"{prefix}.folded_weight"))
            bias_v = _initializer(g, b2, f"{prefix}.folded_bias")
            if len(conv.inputs) > 2:
                conv.replace_input_with(2, bias_v)
            else:
                conv.resize_inputs(3)
                conv.replace_input_with(2, bias_v)
            _replace(bn.outputs[0], conv.outputs[0])
            g.remove(bn, safe=True)
            n += 1
        self.detail = f"folded {n} BatchNormalization into Conv" if n else ""
        return PassResult(model, bool(n))


class BiasFusion(_Pass):
    """Conv -> Add(per-channel constant) into the Conv bias; 2-D MatMul -> Add into Gemm."""

    hal_name = "BiasFusion"

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        n = 0
        for node in list(g):
            if node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "MatMul"):
                continue
            add = _sole_consumer(node.outputs[0])
            if add is None or add.op_type != "Add":
                continue
            other = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
            c = _const(other)
            if c is None:
                continue
            if node.op_type == "Conv":
                w = _const(node.inputs[1])
                if w is None or c.size != w.shape[0] or c.dtype != w.dtype:
                    continue
                if c.ndim > 1 and c.shape[-(w.ndim - 1):] != (w.shape[0],) + (1,) * (w.ndim - 2) \
                        and c.shape not in ((w.shape[0],),):
                    continue
                b = _const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
                if len(node.inputs) > 2 and node.inputs[2] is not None and b is None:
                    continue
                new_b = c.reshape(-1) + (b if b is not None else 0)
                bias_v = _initializer(g, new_b.astype(w.dtype), f"{node.name or 'conv'}.bias")
                if len(node.inputs) < 3:
                    node.resize_inputs(3)
                node.replace_input_with(2, bias_v)
                _replace(add.outputs[0], node.outputs[0])
                g.remove(add, safe=True)
            else:
                x, wv = node.inputs
                w = _const(wv)
                shape = x.shape
                if w is None or w.ndim != 2 or shape is None or len(shape) != 2 \
                        or c.size != w.shape[1] or c.ndim > 2:
                    continue
                gemm = ir.Node("", "Gemm", [x, wv, _initializer(g, c.reshape(-1), f"{node.name}.bias")],
                               name=f"{node.name or 'matmul'}+bias")
                g.insert_before(node, gemm)
                gemm.outputs[0].type = add.outputs[0].type
                gemm.outputs[0].shape = add.outputs[0].shape
                _replace(add.outputs[0], gemm.outputs[0])
                if not gemm.outputs[0].name:
                    gemm.outputs[0].name = f"{gemm.name}.out"
                g.remove([add, node], safe=True)
            n += 1
        self.detail = f"fused {n} bias Add(s)" if n else ""
        return PassResult(model, bool(n))


_ACTIVATIONS = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip")


class ActivationFusion(_Pass):
    """Conv/Gemm -> activation into one ai.hal FusedConv/FusedGemm node."""

    hal_name = "ActivationFusion"

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        n = 0
        for node in list(g):
            if node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "Gemm"):
                continue
            act = _sole_consumer(node.outputs[0])
            if act is None or act.op_type not in _ACTIVATIONS or act.domain not in ("", "ai.onnx"):
                continue
            params: list[float] = []
            if act.op_type == "LeakyRelu":
                params = [float(act.attributes["alpha"].value) if "alpha" in act.attributes
                          else 0.01]
            if act.op_type == "Clip":
                lo = _const(act.inputs[1]) if len(act.inputs) > 1 and act.inputs[1] else None
                hi = _const(act.inputs[2]) if len(act.inputs) > 2 and act.inputs[2] else None
                if (len(act.inputs) > 1 and act.inputs[1] is not None and lo is None) or (
                        len(act.inputs) > 2 and act.inputs[2] is not None and hi is None):
                    continue
                if any(b is not None and b.size != 1 for b in (lo, hi)):
                    continue
                params = [float(lo.reshape(-1)[0]) if lo is not None else -np.inf,
                          float(hi.reshape(-1)[0]) if hi is not None else np.inf]
            attrs = list(node.attributes.values()) + [
                ir.AttrString("activation", act.op_type),
                ir.AttrFloat32s("activation_params", params)]
            fused = ir.Node(HAL_DOMAIN, "Fused" + node.op_type, list(node.inputs),
                            attributes=attrs, name=f"{node.name}+{act.op_type}", version=1)
            g.insert_before(node, fused)
            fused.outputs[0].type = act.outputs[0].type
            fused.outputs[0].shape = act.outputs[0].shape
            fused.outputs[0].name = f"{fused.name}.out"
            _replace(act.outputs[0], fused.outputs[0])
            g.remove([act, node], safe=True)
            n += 1
        if n:
            model.opset_imports[HAL_DOMAIN] = 1
        self.detail = f"fused {n} activation(s) into FusedConv/FusedGemm" if n else ""
        return PassResult(model, bool(n))
