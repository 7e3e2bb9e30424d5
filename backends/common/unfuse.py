"""HAL's fused ops as standard ONNX, for backends that run ONNX files (onnxruntime,
OpenVINO, IREE): the ``supports`` they share, the rewrite, and the thread count such a
runtime should take."""

from __future__ import annotations

import os

import numpy as np

from hal.errors import BackendError
from hal.ir.attributes import attribute
from hal.ir.schemas import FUSED_OPS, HAL_DOMAIN


def default_threads() -> int:
    """0 (the runtime's own default, one per physical core) unless this process may use
    fewer CPUs than the machine has (affinity, taskset): then exactly those."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        return 0
    return usable if usable < (os.cpu_count() or usable) else 0


class RunsOnnxFiles:
    """Mixed into a ``Backend`` whose runtime reads standard ONNX: it takes HAL's fused ops
    where ``expand_hal_ops`` (called in its ``compile``) can rebuild them, and refuses a
    standard op for the reason its ``refusal`` gives."""

    hal_ops = FUSED_OPS

    def supports(self, node, device) -> bool | str:
        ok = super().supports(node, device)
        if ok is not True:
            return ok
        if node.domain == HAL_DOMAIN:
            return expandable(node, self.name)
        why = self.refusal(node)
        return True if why is None else why

    def refusal(self, node) -> str | None:
        """Why this runtime cannot run standard ``node`` here, or None."""
        return None


#: the fused activations rebuilt as standard ONNX ops
ACTIVATIONS = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip")


def expandable(node, backend: str) -> bool | str:
    """True, or why ``backend`` cannot run ai.hal ``node`` as standard ONNX ops."""
    name = attribute(node, "activation")
    if name not in ACTIVATIONS:
        return f"{backend} cannot expand ai.hal {node.op_type} with activation {name!r}"
    return True


def expand_hal_ops(model) -> int:
    """Rewrite FusedConv/FusedGemm as Conv/Gemm + the activation; returns how many."""
    import onnx_ir as ir

    g = model.graph
    n = 0
    for node in list(g):
        if node.domain != HAL_DOMAIN:
            continue
        why = expandable(node, "HAL")
        if why is not True:
            raise BackendError(why)
        attrs = node.attributes
        act = attrs["activation"].value
        params = list(attrs["activation_params"].value) if "activation_params" in attrs else []
        base = ir.Node("", node.op_type.removeprefix("Fused"), list(node.inputs),
                       attributes=[a for k, a in attrs.items()
                                   if k not in ("activation", "activation_params")],
                       name=f"{node.name}.base")
        old = node.outputs[0]
        base.outputs[0].type, base.outputs[0].shape = old.type, old.shape
        base.outputs[0].name = f"{node.name}.pre"
        inputs = [base.outputs[0]]
        act_attrs = []
        if act == "LeakyRelu":
            act_attrs = [ir.AttrFloat32("alpha", params[0] if params else 0.01)]
        if act == "Clip":
            dtype = (old.dtype or ir.DataType.FLOAT).numpy()
            for i, bound in enumerate(params[:2] or [-np.inf, np.inf]):
                if np.isfinite(bound):
                    v = ir.Value(name=f"{node.name}.{('min', 'max')[i]}", shape=ir.Shape([]),
                                 type=ir.TensorType(ir.DataType.from_numpy(dtype)),
                                 const_value=ir.tensor(np.array(bound, dtype)))
                    g.register_initializer(v)
                    inputs.append(v)
                else:
                    inputs.append(None)
            while inputs[-1] is None:
                inputs.pop()
        activation = ir.Node("", act, inputs, attributes=act_attrs, name=f"{node.name}.act")
        g.insert_before(node, [base, activation])
        out = activation.outputs[0]
        out.type, out.shape = old.type, old.shape
        name, was_output = old.name, old.is_graph_output()
        old.replace_all_uses_with(out, replace_graph_outputs=True)
        if was_output:
            old.name = None
        out.name = name
        g.remove(node, safe=True)
        n += 1
    if n:
        model.opset_imports.pop(HAL_DOMAIN, None)
    return n
