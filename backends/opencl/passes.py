"""The OpenCL flow: the shared passes, then the fusions only this backend's kernels run.

The shared passes fold BatchNorm, fuse biases (Conv, 2-D MatMul -> Gemm) and fuse
activations into Conv/Gemm (ai.hal FusedConv/FusedGemm). The OpenCL kernels also take a
bias in any MatMul and an activation in MatMul, the binary arithmetic ops and
BatchNormalization; the two passes here rewrite those into ``ai.hal.opencl`` ops
(``graph.py``). They fuse only nodes the backend runs (float32 tensors), so a fused node
never has to go to a fallback device. ``opt_level`` 0 runs none of them.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.backends.opencl.graph import ACTIVATION_HOSTS, OPENCL_DOMAIN
from hal.backends.opencl.support import limits, non_float
from hal.ir.graph import const, replace_value, sole_consumer
from hal.ir.schemas import ACTIVATIONS, is_onnx
from hal.passes import Flow, default_flow
from hal.passes.activation import activation_params
from hal.passes.base import HalPass


def opencl_flow(options) -> Flow:
    flow = default_flow("opencl", options, fuse_activations=True)
    if options.opt_level >= 1:
        flow.passes += [MatMulBiasFusion(), KernelActivationFusion()]
    return flow


def _fusable(*nodes: ir.Node) -> bool:
    """Whether the kernels take every one of ``nodes`` (so they take the fused node too)."""
    return all(non_float(n) is None and limits(n) is None for n in nodes)


def _fused_node(node: ir.Node, inputs: list, extra_attrs: list, name: str) -> ir.Node:
    op = node.op_type if node.domain == OPENCL_DOMAIN else "Fused" + node.op_type
    return ir.Node(OPENCL_DOMAIN, op, inputs, attributes=list(node.attributes.values())
                   + extra_attrs, name=name, version=1)


def _replace(graph: ir.Graph, old: list[ir.Node], fused: ir.Node) -> None:
    """Put ``fused`` in the place of the last of ``old`` (after every input of them all)
    and give it that node's output."""
    graph.insert_before(old[-1], fused)
    replace_value(old[-1].outputs[0], fused.outputs[0])
    graph.remove(old, safe=True)


def _bias_of(mm: ir.Node, add: ir.Node) -> ir.Value | None:
    """The constant Add operand that is a bias over the MatMul's last axis, or None."""
    a, b = add.inputs
    other = b if a is mm.outputs[0] else a
    if other is mm.outputs[0]:
        return None
    c = const(other)
    w = mm.inputs[1].shape
    if c is None or c.ndim > 1 or c.dtype.name != "float32" or w is None or len(w) < 2:
        return None
    n = w[-1]
    return other if c.size == 1 or (isinstance(n, int) and c.size == n) else None


class MatMulBiasFusion(HalPass):
    """MatMul (any rank, constant or computed B) -> Add(constant [N] or scalar) into one
    ai.hal.opencl FusedMatMul: the bias is added in the GEMM kernel's epilogue."""

    hal_name = "opencl.MatMulBiasFusion"

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        n = 0
        for mm in list(g):
            if not is_onnx(mm, "MatMul"):
                continue
            add = sole_consumer(mm.outputs[0])
            if add is None or not is_onnx(add, "Add") or not _fusable(mm, add):
                continue
            bias = _bias_of(mm, add)
            if bias is None:
                continue
            _replace(g, [mm, add], _fused_node(mm, [*mm.inputs, bias], [],
                                              f"{mm.name or 'matmul'}+bias"))
            n += 1
        if n:
            model.opset_imports[OPENCL_DOMAIN] = 1
        self.detail = f"fused {n} MatMul+Add into FusedMatMul" if n else ""
        return PassResult(model, bool(n))


class KernelActivationFusion(HalPass):
    """An activation after MatMul, Add/Sub/Mul/Div or BatchNormalization (the ones the
    shared ActivationFusion leaves: it fuses into Conv/Gemm) into the op's kernel, as
    ai.hal.opencl Fused<Op> with ``activation`` and ``activation_params``."""

    hal_name = "opencl.ActivationFusion"

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        counts: dict[str, int] = {}
        for node in list(g):
            if not self._host(node):
                continue
            act = sole_consumer(node.outputs[0])
            if act is None or not is_onnx(act, *ACTIVATIONS) or act.inputs[0] is not \
                    node.outputs[0] or not _fusable(node, act):
                continue
            params = activation_params(act)
            if params is None:
                continue
            attrs = [ir.AttrString("activation", act.op_type),
                     ir.AttrFloat32s("activation_params", params)]
            _replace(g, [node, act], _fused_node(node, list(node.inputs), attrs,
                                                 f"{node.name}+{act.op_type}"))
            key = f"{node.op_type.removeprefix('Fused')}+{act.op_type}"
            counts[key] = counts.get(key, 0) + 1
        n = sum(counts.values())
        if n:
            model.opset_imports[OPENCL_DOMAIN] = 1
        self.detail = (f"fused {n} activation(s): " + ", ".join(
            f"{k} x{v}" for k, v in sorted(counts.items()))) if n else ""
        return PassResult(model, bool(n))

    @staticmethod
    def _host(node: ir.Node) -> bool:
        """An op whose kernel can take the activation: one output read, none fused yet."""
        if node.domain == OPENCL_DOMAIN:
            ok = node.op_type == "FusedMatMul" and "activation" not in node.attributes
        else:
            ok = is_onnx(node, *ACTIVATION_HOSTS)
        return ok and all(not v.uses() and not v.is_graph_output() for v in node.outputs[1:])
