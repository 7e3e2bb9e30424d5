"""``supports(node, device)``: which nodes the OpenCL kernels can run, and why not."""

from __future__ import annotations

import onnx_ir as ir

from hal.ir.attributes import attribute
from hal.backends.opencl.graph import HOST_INPUTS, OPENCL_DOMAIN, OPENCL_OPS, base_op
from hal.ir.schemas import HAL_DOMAIN, ONNX_DOMAINS

_FLOAT = ir.DataType.FLOAT
_HALF = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)
_SPATIAL = {"Conv", "MaxPool", "AveragePool"}


def non_float(node: ir.Node) -> ir.Value | None:
    """The first tensor of ``node`` that is not float32 (host-side inputs aside), or None."""
    host_idx = HOST_INPUTS.get(base_op(node), ())
    values = [v for i, v in enumerate(node.inputs) if v is not None and i not in host_idx]
    values += [v for v in node.outputs if v is not None]
    return next((v for v in values if v.dtype is not None and v.dtype != _FLOAT), None)


def check(backend, node: ir.Node, device) -> bool | str:
    if node.domain == HAL_DOMAIN:
        if node.op_type not in backend.hal_ops:
            return f"opencl has no kernel for ai.hal {node.op_type}"
    elif node.domain == OPENCL_DOMAIN:
        if node.op_type not in OPENCL_OPS:
            return f"opencl has no kernel for {OPENCL_DOMAIN} {node.op_type}"
    elif node.domain not in ONNX_DOMAINS:
        return f"op domain {node.domain!r} is not supported by opencl"
    elif node.op_type not in backend.ops:
        return f"opencl has no kernel for {node.op_type}"
    v = non_float(node)
    if v is not None and v.dtype in _HALF:
        log = backend.fp16_build_log(device)
        why = (f"the device cannot build fp16 kernels (build log: {log.strip()[:400]})"
               if log else "HAL's OpenCL kernels are fp32 only")
        return f"{node.op_type} on {v.dtype.name} tensor {v.name!r}: {why}"
    if v is not None:
        return (f"{node.op_type} on {v.dtype.name} tensor {v.name!r}: the opencl kernels "
                f"run float32 graphs (int8 has its own API, hal.backends.opencl.int8)")
    return limits(node) or True


def limits(node: ir.Node) -> str | None:
    """Why the kernels of ``node``'s op cannot take this node (attributes, ranks, inputs
    computed on the device), or None."""
    op = base_op(node)
    for i in HOST_INPUTS.get(op, ()):
        if i < len(node.inputs) and node.inputs[i] is not None:
            src = node.inputs[i].producer()
            if src is not None and src.op_type != "Constant":
                return (f"{op} input {i} ({node.inputs[i].name!r}) is computed by "
                        f"{src.op_type}; opencl needs it constant or a model input")
    if op in _SPATIAL:
        shape = node.inputs[0].shape
        rank = len(shape) if shape is not None else None
        if rank is None and op != "Conv" and "kernel_shape" in node.attributes:
            rank = len(attribute(node, "kernel_shape")) + 2
        if rank is not None and rank not in (3, 4):
            return f"{op} on a {rank}-D tensor: opencl runs 1-D and 2-D {op} only"
    if op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1] is not None \
            and node.outputs[1].name:
        return "MaxPool with the Indices output is not supported by opencl"
    if op == "MaxPool" and attribute(node, "storage_order", 0):
        return "MaxPool storage_order=1 is not supported by opencl"
    if op == "BatchNormalization" and attribute(node, "training_mode", 0):
        return "BatchNormalization in training mode is not supported by opencl"
    return None
