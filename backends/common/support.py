"""What a tracing backend can claim beyond having the kernel: values it must know while tracing.

A shape-deciding input (``KernelTable.static_inputs``) must be a constant, a segment input
(read on the host, one trace per distinct value) or computed from those and from static
shapes; a value computed from runtime data cannot fix a shape inside a traced function.
"""

from __future__ import annotations

import onnx_ir as ir

from hal.backends.common.lowering import SHAPE_ONLY
from hal.backends.common.table import KernelTable


def tracing_support(node: ir.Node, table: KernelTable, backend: str,
                    dynamic_dims: bool) -> bool | str:
    """True, or why ``backend`` cannot trace ``node`` although it has its kernel.

    ``dynamic_dims``: the backend traces once for every size of a symbolic dim (tf), so a
    ``Shape`` is known while tracing only where the dims it reads are static.
    """
    if node.op_type == "Dropout" and len(node.inputs) > 2 and node.inputs[2] is not None:
        mode = node.inputs[2].const_value
        if mode is None or bool(mode.numpy()):
            return (f"{backend} runs Dropout for inference only (training_mode must be a "
                    f"constant false)")
    for i in table.static_inputs.get(node.op_type, ()):
        if i < len(node.inputs) and node.inputs[i] is not None and \
                not known_while_tracing(node.inputs[i], dynamic_dims):
            return (f"{backend} needs input #{i} of {node.op_type} while tracing, to fix "
                    f"shapes, but it is computed from runtime data")
    return True


def known_while_tracing(value: ir.Value, dynamic_dims: bool) -> bool:
    """A constant, a segment input, a static shape, or computed from those alone."""
    seen: dict[int, bool] = {}
    work = [value]
    while work:
        v = work[-1]
        if id(v) in seen:
            work.pop()
            continue
        node = v.producer()
        if v.const_value is not None or node is None or node.op_type == "Constant":
            seen[id(v)] = True
        elif node.op_type in SHAPE_ONLY:
            x = node.inputs[0] if node.inputs else None
            seen[id(v)] = not dynamic_dims or (x is not None and x.shape is not None and all(
                isinstance(d, int) for d in x.shape))
        else:
            todo = [u for u in node.inputs if u is not None and id(u) not in seen]
            if todo:
                work.extend(todo)
                continue
            seen[id(v)] = all(seen[id(u)] for u in node.inputs if u is not None)
        work.pop()
    return seen[id(value)]
