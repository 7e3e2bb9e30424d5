"""HAL's model validator: run before every compile.

ONNX shape inference lets real errors through (a Conv whose ``group`` does not
divide its input channels passes it), so HAL checks the graph itself and names
the node, the op, the attribute, the shapes, and a fix.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from hal.errors import ModelError
from hal.ir import shapes as S
from hal.ir.model import Model
from hal.ir.attributes import attribute as _attr
from hal.ir.schemas import ACTIVATIONS, HAL_DOMAIN, HAL_OPS
from hal.ir.validate_structure import (check_graph_io, check_initializers, check_node,
                                       check_sizes)


def _node_name(node: ir.Node) -> str:
    return f"node {node.name!r} ({node.op_type})" if node.name else f"an unnamed {node.op_type} node"


def _const(v: ir.Value | None) -> np.ndarray | None:
    if v is None or v.const_value is None:
        return None
    try:
        return v.const_value.numpy()
    except Exception:
        return None


class _Validator:
    def __init__(self, model: Model, known_ops: set[str] | None):
        self.model = model
        self.graph = model.graph
        self.known_ops = known_ops
        self.info = S.infer(model.to_proto())
        self.producer: dict[str, ir.Node] = {}

    def shape(self, v: ir.Value | None):
        if v is None:
            return None
        if v.const_value is not None:
            return tuple(v.const_value.shape.numpy() if hasattr(v.const_value.shape, "numpy")
                         else v.const_value.shape)
        return self.info.get(v.name, (None, None))[0]

    def fail(self, node: ir.Node, msg: str) -> None:
        raise ModelError(f"{_node_name(node)}: {msg}")

    def run(self) -> None:
        g = self.graph
        available = {v.name for v in g.inputs} | set(g.initializers)
        if not g.outputs:
            raise ModelError("the graph has no outputs; mark at least one value as an output")
        check_graph_io(g)
        check_initializers(g)
        check_sizes(self.info)
        for node in g:
            if self.known_ops is not None and node.domain in ("", "ai.onnx") \
                    and node.op_type not in self.known_ops:
                raise ModelError(f"{_node_name(node)}: op {node.op_type!r} is not known to any "
                                 f"registered backend; rewrite it with supported ops or install "
                                 f"a backend plugin that provides it (see `hal devices`)")
            if node.domain == HAL_DOMAIN and node.op_type not in HAL_OPS:
                raise ModelError(f"{_node_name(node)}: {node.op_type!r} is not one of HAL's own "
                                 f"{HAL_DOMAIN} ops {sorted(HAL_OPS)}; use a standard ONNX op")
            for i, v in enumerate(node.inputs):
                if v is None or not v.name:
                    continue
                if v.name not in available and v.const_value is None:
                    raise ModelError(
                        f"{_node_name(node)}: input #{i} {v.name!r} is neither a graph input, an "
                        f"initializer, nor the output of an earlier node (missing initializer or "
                        f"input); add it to the graph's inputs or initializers")
            check_node(node, self.model.opset)
            check = getattr(self, f"check_{node.op_type}", None)
            if check is not None:
                check(node)
            for v in node.outputs:
                if v.name:
                    if v.name in available:
                        self.fail(node, f"output {v.name!r} is already written by another node "
                                        f"or is a graph input; every value needs its own name")
                    available.add(v.name)
                    self.producer[v.name] = node
        for v in g.outputs:
            if v.name not in available:
                raise ModelError(f"graph output {v.name!r} is produced by no node and is no input")

    # -- per-op checks -------------------------------------------------------
    def check_Conv(self, node: ir.Node) -> None:
        x, w = self.shape(node.inputs[0]), self.shape(node.inputs[1])
        xs, ws = S.fmt(x), S.fmt(w)
        group = int(_attr(node, "group", 1))
        if group < 1:
            self.fail(node, f"attribute group={group} must be >= 1")
        if w is None or x is None:
            return
        for name, shape in ((node.inputs[0].name, x), (node.inputs[1].name, w)):
            if len(shape) < 3:
                self.fail(node, f"{name!r} has shape {S.fmt(shape)} (rank {len(shape)}); Conv "
                                f"takes [N, C, *spatial] inputs and [M, C/group, *kernel] weights "
                                f"with at least one spatial dim")
        if len(w) != len(x):
            self.fail(node, f"input {node.inputs[0].name!r} has shape {xs} (rank {len(x)}) but "
                            f"weight {node.inputs[1].name!r} has shape {ws} (rank {len(w)}); "
                            f"they must have the same rank [N, C, *spatial] / [M, C/group, *kernel]")
        c_in, m_out = x[1], w[0]
        if isinstance(c_in, int):
            if c_in % group:
                self.fail(node, f"attribute group={group} does not divide the {c_in} input channels "
                                f"of {node.inputs[0].name!r} {xs}; use a group that divides {c_in} "
                                f"(group={c_in} for depthwise) or feed a multiple of {group} "
                                f"channels")
            if isinstance(w[1], int) and w[1] * group != c_in:
                self.fail(node, f"weight {node.inputs[1].name!r} has shape {ws}: with group={group} "
                                f"and {c_in} input channels ({node.inputs[0].name!r} {xs}) it needs "
                                f"{c_in // group} input channels per group in dim 1, not {w[1]}")
        if isinstance(m_out, int) and m_out % group:
            self.fail(node, f"attribute group={group} does not divide the {m_out} output channels "
                            f"of weight {node.inputs[1].name!r} {ws}")
        ks = _attr(node, "kernel_shape")
        if ks is not None and tuple(ks) != tuple(w[2:]):
            self.fail(node, f"attribute kernel_shape={list(ks)} does not match weight "
                            f"{node.inputs[1].name!r} {ws}")
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            b = self.shape(node.inputs[2])
            if b is not None and isinstance(m_out, int) and tuple(b) != (m_out,):
                self.fail(node, f"bias {node.inputs[2].name!r} has shape {S.fmt(b)} but the weight "
                                f"{ws} has {m_out} output channels; the bias must be [{m_out}]")
        self._check_window(node, x, tuple(w[2:]))

    def check_FusedConv(self, node: ir.Node) -> None:  # ai.hal: a Conv plus an activation
        self._check_activation(node)
        self.check_Conv(node)

    def _check_activation(self, node: ir.Node) -> None:
        act = _attr(node, "activation", "")
        if act not in ACTIVATIONS:
            self.fail(node, f"attribute activation={act!r} is not one HAL fuses "
                            f"({', '.join(ACTIVATIONS)})")

    def _check_window(self, node: ir.Node, x, kernel) -> None:
        if _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return
        nsp = len(x) - 2
        if nsp < 1:
            self.fail(node, f"input {node.inputs[0].name!r} has shape {S.fmt(x)}; a window op "
                            f"takes [N, C, *spatial] with at least one spatial dim")
        pads = list(_attr(node, "pads", [0] * 2 * nsp))
        strides = list(_attr(node, "strides", [1] * nsp))
        dil = list(_attr(node, "dilations", [1] * nsp))
        for attr, values, n, low in (("pads", pads, 2 * nsp, 0), ("strides", strides, nsp, 1),
                                     ("dilations", dil, nsp, 1), ("kernel_shape", kernel, nsp, 1)):
            if len(values) != n:
                self.fail(node, f"attribute {attr}={list(values)} needs {n} values for the "
                                f"{nsp} spatial dims of {node.inputs[0].name!r} {S.fmt(x)}")
            if any(isinstance(v, int) and v < low for v in values):
                self.fail(node, f"attribute {attr}={list(values)} must be >= {low}")
        for i in range(nsp):
            size, k = x[2 + i], kernel[i] if i < len(kernel) else None
            if not (isinstance(size, int) and isinstance(k, int)):
                continue
            eff = (k - 1) * dil[i] + 1
            padded = size + pads[i] + pads[i + nsp]
            if eff > padded:
                self.fail(node, f"the {'x'.join(map(str, kernel))} window (dilated to {eff}) is "
                                f"larger than spatial dim {i} of {node.inputs[0].name!r} "
                                f"{S.fmt(x)} plus padding ({padded}); use a smaller kernel or "
                                f"more padding, or check the input size")

    def check_MaxPool(self, node: ir.Node) -> None:
        x = self.shape(node.inputs[0])
        ks = _attr(node, "kernel_shape")
        if x is not None and ks is not None:
            self._check_window(node, x, tuple(ks))

    check_AveragePool = check_MaxPool

    def _inner(self, node: ir.Node, a, b, a_name: str, b_name: str, ka, kb, how: str) -> None:
        if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
            src = self.producer.get(node.inputs[0].name)
            origin = ""
            if src is not None and src.op_type in ("Flatten", "Reshape"):
                origin = (f" It comes from {src.op_type} {src.name!r}: the flattened feature size "
                          f"{ka} does not match the {kb} input features the layer was built for; "
                          f"fix the layer's input size or the shape before the flatten.")
            self.fail(node, f"inner dimensions disagree: {a_name} has shape {S.fmt(a)} ({ka} "
                            f"{how}) but {b_name} has shape {S.fmt(b)} ({kb}).{origin}")

    def check_MatMul(self, node: ir.Node) -> None:
        a, b = self.shape(node.inputs[0]), self.shape(node.inputs[1])
        if a is None or b is None or not a or not b:
            return
        ka = a[-1]
        kb = b[-2] if len(b) >= 2 else b[0]
        self._inner(node, a, b, repr(node.inputs[0].name), repr(node.inputs[1].name), ka, kb,
                    "in its last dim vs the second-to-last dim of the right operand")

    def check_Gemm(self, node: ir.Node) -> None:
        a, b = self.shape(node.inputs[0]), self.shape(node.inputs[1])
        if a is None or b is None:
            return
        if len(a) != 2 or len(b) != 2:
            self.fail(node, f"Gemm takes 2-D operands; got {node.inputs[0].name!r} {S.fmt(a)} and "
                            f"{node.inputs[1].name!r} {S.fmt(b)}. Flatten the input first")
        ta, tb = int(_attr(node, "transA", 0)), int(_attr(node, "transB", 0))
        ka = a[0] if ta else a[1]
        kb = b[1] if tb else b[0]
        self._inner(node, a, b, f"input {node.inputs[0].name!r}" + (" (transA=1)" if ta else ""),
                    f"weight {node.inputs[1].name!r}" + (" (transB=1)" if tb else ""), ka, kb,
                    "features")

    def check_FusedGemm(self, node: ir.Node) -> None:
        self._check_activation(node)
        self.check_Gemm(node)

    def check_Reshape(self, node: ir.Node) -> None:
        x = self.shape(node.inputs[0])
        target = _const(node.inputs[1])
        if x is None or target is None:
            return
        target = [int(t) for t in target.reshape(-1)]
        allowzero = int(_attr(node, "allowzero", 0))
        dims = []
        for i, t in enumerate(target):
            if t == 0 and not allowzero:
                dims.append(x[i] if i < len(x) else None)
            else:
                dims.append(t)
        if sum(1 for d in dims if d == -1) > 1:
            self.fail(node, f"shape {target} has more than one -1")
        known_in = [d for d in x if isinstance(d, int)]
        known_out = [d for d in dims if isinstance(d, int) and d != -1]
        sym_in = [str(d) for d in x if not isinstance(d, int)]
        sym_out = [str(d) for d in dims if not isinstance(d, int)]
        for d in list(sym_in):  # a symbol kept by a 0 in the target cancels out
            if d in sym_out:
                sym_in.remove(d)
                sym_out.remove(d)
        n_in, n_out = int(np.prod(known_in)), int(np.prod(known_out))
        has_neg = -1 in dims
        bad = False
        if not sym_in and not sym_out:
            bad = (n_out == 0 or n_in % n_out != 0) if has_neg else n_in != n_out
        elif sym_in and not sym_out and has_neg:
            bad = n_out != 0 and n_in % n_out != 0  # would only work for some batch sizes
        if bad:
            self.fail(node, f"cannot reshape {node.inputs[0].name!r} of shape {S.fmt(x)} "
                            f"({n_in} elements) to {target}: the element count would change; "
                            f"pick a target shape with {n_in} elements (use -1 for one dim)")


def validate(model: Model, known_ops: set[str] | None = None) -> None:
    """Raise ModelError naming the first invalid node, op, attribute and shapes."""
    _Validator(model, known_ops).run()
