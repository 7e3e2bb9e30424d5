"""``cpu@reference``: the numpy oracle every other device is checked against.

The kernels and the interpreter are HAL's own (``hal.oracle``): this backend only puts
them behind the device interface. It runs the model as written, with no optimization.
"""

from __future__ import annotations

import numpy as np

from hal.backend import Backend, CompileOptions, Device, check_precision
from hal.device import DeviceInfo
from hal.ir.schemas import FUSED_OPS


class ReferenceBackend(Backend):
    name = "reference"
    kinds = ("cpu",)
    priority = 0  # the oracle, never the fastest choice for a bare "cpu"
    requires = ("numpy",)
    hal_ops = FUSED_OPS  # so it can take fused segments as fallback
    precisions = ("fp32", "int8")  # int8: the QDQ graph of hal.passes.quantize, run as written

    @property
    def ops(self) -> frozenset[str]:  # type: ignore[override]
        from hal.oracle import OPS

        return frozenset(OPS) - self.hal_ops

    def probe(self) -> list[DeviceInfo]:
        import numpy as np

        from hal.oracle import OPS

        ok = np.array_equal(OPS["Add"](np.ones(2, np.float32), np.ones(2, np.float32)), [2, 2])
        return [DeviceInfo("cpu", 0, self.name, name="numpy reference", usable=ok,
                           reason="" if ok else "numpy self-test failed")]

    def supports(self, node, device: DeviceInfo) -> bool | str:
        ok = super().supports(node, device)
        if ok is not True:
            return ok
        if node.op_type == "Constant" and "sparse_value" in node.attributes:
            return "reference runs dense Constant values only, not sparse_value"
        if node.op_type == "Cast":
            from hal.oracle.tensor import CAST_DTYPES

            kinds = {np.dtype(t).name for t in CAST_DTYPES.values()}
            odd = [v.dtype.name for v in (node.inputs[0], node.outputs[0])
                   if v is not None and v.dtype is not None
                   and _numpy_name(v.dtype) not in kinds]
            if odd:
                return f"reference casts between numeric numpy types only, not {odd[0]}"
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            from hal.oracle.quant import QUANT_DTYPES

            ints = node.outputs[0] if node.op_type == "QuantizeLinear" else node.inputs[0]
            if ints is not None and ints.dtype is not None \
                    and ints.dtype.numpy() not in QUANT_DTYPES:
                return (f"reference quantizes to int8/uint8/int16/uint16/int32 only, "
                        f"not {ints.dtype.name}")
        return True

    def flow(self, options: CompileOptions):
        from hal.passes import Flow, cleanup_passes

        return Flow("reference.exact", cleanup_passes())  # the oracle runs the model as written

    def compile(self, model, device: Device, options: CompileOptions):
        from .executor import ReferenceExecutable

        check_precision(self, options.precision)
        return ReferenceExecutable(model, device)


def _numpy_name(dtype) -> str | None:
    """numpy's name for an IR data type, None for one numpy lacks (strings, float8, ...)."""
    try:
        return np.dtype(dtype.numpy()).name
    except Exception:  # noqa: BLE001 - onnx_ir raises its own errors for such types
        return None
