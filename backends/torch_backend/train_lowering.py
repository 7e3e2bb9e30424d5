"""The training graph and its inference twin lowered over the trainer's own tensors.

The same fx lowering as inference, with two differences: the float initializers named in
``tensors`` are the trainer's ``nn.Parameter``s and running-statistic buffers (shared by the
training and the evaluation module, never baked in as constants), and a training-mode Dropout
draws its mask from a ``torch.Generator`` that the trainer passes as the module's last argument.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
import onnx_ir as ir
import torch
from torch import fx

from hal.backends.torch_backend import ops_math, ops_nn, ops_tensor  # noqa: F401 (registers)
from hal.backends.torch_backend.lowering import Lowering, NodeView, torch_dtype
from hal.errors import BackendError, ModelError


class SharedLowering(Lowering):
    """Lowers ``model`` with ``tensors`` (initializer name -> tensor) as its weights; with
    ``draws`` the module takes a generator after its inputs and Dropout trains."""

    def __init__(self, model: ir.Model, device: torch.device, tensors: dict[str, torch.Tensor],
                 draws: bool, cast_outputs: bool):
        super().__init__(model, device, cast_outputs=cast_outputs)
        self.tensors = tensors
        for name in tensors:
            self.consts.pop(name, None)  # a converter must not fold a weight into its code
        self.declared = {name: v.dtype for name, v in model.graph.initializers.items()}
        self.shared: dict[str, fx.Node] = {}
        self.rng = self.graph.placeholder("rng") if draws else None

    def value(self, v: ir.Value) -> fx.Node:
        if v.name in self.tensors and v.name not in self.env:
            return self.shared_value(v.name)
        return super().value(v)

    def shared_value(self, name: str) -> fx.Node:
        if name not in self.shared:
            attr_name = f"w{len(self.shared)}"
            t = self.tensors[name]
            if isinstance(t, torch.nn.Parameter):
                self.root.register_parameter(attr_name, t)
            else:
                self.root.register_buffer(attr_name, t)
            node = self.graph.get_attr(attr_name)
            declared = self.declared.get(name)
            if declared is not None and torch_dtype(declared) != t.dtype:  # fp32 master copy
                node = self.graph.call_method("to", (node, torch_dtype(declared)))
            self.shared[name] = node
        return self.shared[name]

    def converter_for(self, node: ir.Node) -> tuple[Callable, Callable | None]:
        if self.rng is not None and node.op_type == "Dropout" and node.domain in ("", "ai.onnx"):
            return dropout_training, None
        return super().converter_for(node)


def _dropout_draw(x, ratio, rng, want_mask):
    ratio = float(ratio)
    if ratio == 0.0:
        keep = torch.ones_like(x, dtype=torch.bool)
        return (x, keep) if want_mask else x
    with torch.no_grad():  # one scaled mask, so autograd records a single product
        scale = torch.empty_like(x).bernoulli_(1.0 - ratio, generator=rng).div_(1.0 - ratio)
    y = x * scale
    return (y, scale != 0) if want_mask else y


def dropout_training(n: NodeView):
    """ONNX Dropout whose ``training_mode`` is a constant: True keeps each element with
    probability 1-ratio (a Bernoulli draw from the trainer's generator) and scales it by
    1/(1-ratio); False (or absent) is the identity."""
    mode = n.const(2) if n.has(2) else np.array(False)
    if mode is None:
        raise BackendError(f"Dropout {n.node.name!r}: training_mode must be a constant for the "
                           f"torch trainer (HAL's training graph makes it the constant True)")
    ratio = n.scalar(1) if n.has(1) else 0.5
    if isinstance(ratio, float) and not 0.0 <= ratio < 1.0:
        raise ModelError(f"Dropout {n.node.name!r}: ratio must be in [0, 1), got {ratio}")
    if not bool(np.asarray(mode).reshape(-1)[0]):
        ratio = 0.0
    out = n.call(_dropout_draw, n.input(0), ratio, n.lowering.rng, n.wants(1))
    if n.wants(1):
        return [n.call(operator.getitem, out, 0), n.call(operator.getitem, out, 1)]
    return out
