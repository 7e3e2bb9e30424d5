"""A readable listing of a graph: one line per node with its input and output shapes."""

from __future__ import annotations

from hal.ir import shapes as S
from hal.ir.model import Model


def node_rows(model: Model) -> list[dict]:
    info = S.infer(model.to_proto())
    inits = set(model.graph.initializers)
    rows = []
    for node in model.graph:
        def fmt(v):
            if v is None or not v.name:
                return "-"
            shape = info.get(v.name, (None, None))[0]
            tag = "const " if v.name in inits or v.const_value is not None else ""
            return f"{tag}{v.name}{S.fmt(shape)}"

        attrs = {k: a.value for k, a in node.attributes.items()
                 if not hasattr(a.value, "numpy")}
        rows.append({"node": node.name, "op": node.op_type if node.domain in ("", "ai.onnx")
                     else f"{node.domain}.{node.op_type}",
                     "inputs": [fmt(v) for v in node.inputs],
                     "outputs": [fmt(v) for v in node.outputs],
                     "attributes": {k: (list(v) if isinstance(v, (list, tuple)) else
                                        v.decode() if isinstance(v, bytes) else v)
                                    for k, v in attrs.items()}})
    return rows
