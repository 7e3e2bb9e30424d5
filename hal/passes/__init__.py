"""The pass manager and flows: named, ordered lists of IR passes per backend.

Passes are onnx_ir passes (``ir.passes.PassBase``); HAL runs them one by one so
that ``--explain`` can show what each changed and how long it took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import onnx_ir as ir
from onnx_ir.passes import common

from hal.errors import HalError


@dataclass
class PassRecord:
    name: str
    modified: bool
    ms: float
    nodes_before: int
    nodes_after: int
    detail: str = ""

    def to_dict(self) -> dict:
        return {"pass": self.name, "modified": self.modified, "ms": round(self.ms, 3),
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "detail": self.detail}


@dataclass
class Flow:
    """A backend's named pipeline, e.g. ``reference.default`` or ``torch.max``."""

    name: str
    passes: list = field(default_factory=list)

    def run(self, model: ir.Model) -> tuple[ir.Model, list[PassRecord]]:
        records = []
        for p in self.passes:
            before = len(model.graph)
            t0 = time.perf_counter()
            try:
                result = p(model)
            except Exception as exc:
                raise HalError(f"pass {type(p).__name__} of flow {self.name!r} failed: "
                               f"{type(exc).__name__}: {exc}") from exc
            model = result.model
            records.append(PassRecord(_pass_name(p), bool(result.modified),
                                      (time.perf_counter() - t0) * 1e3, before, len(model.graph),
                                      getattr(p, "detail", "")))
        return model, records


def _pass_name(p) -> str:
    return getattr(p, "hal_name", None) or type(p).__name__.removesuffix("Pass")


def cleanup_passes() -> list:
    """Structure-only passes every flow starts with."""
    from hal.passes.dropout import InferenceDropoutElimination

    return [common.IdentityEliminationPass(), InferenceDropoutElimination(),
            common.RemoveUnusedNodesPass(), common.TopologicalSortPass()]


class ShapeInference(common.ShapeInferencePass):
    """onnx_ir's shape inference, without its warning traceback when ONNX's inference gives
    up on a graph (HAL validates models itself; the passes after it cope with missing shapes)."""

    hal_name = "ShapeInference"

    def call(self, model):
        import logging

        log = logging.getLogger("onnx_ir.passes.common.shape_inference")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            return super().call(model)
        finally:
            log.setLevel(level)


def optimize_passes(options, fuse_activations: bool = False) -> list:
    """Shared graph optimizations for ``options.opt_level``: none at 0; from 1 on constant
    folding, dead code, BN folding, bias fusion and, for backends that run ai.hal fused ops
    (``fuse_activations``), activation fusion. int8 (a QDQ graph from ``quantize_flow``)
    keeps its DequantizeLinear weights and gets no bias or activation fusion: the QDQ
    pattern must stay visible to the backend."""
    from hal.passes.activation import ActivationFusion
    from hal.passes.batchnorm import BatchNormFolding
    from hal.passes.bias import BiasFusion
    from hal.passes.constant_folding import ConstantFolding
    from hal.passes.dead_code import DeadCodeElimination

    if options.opt_level < 1:
        return []
    int8 = options.precision == "int8"
    # shapes first: Shape folding and the 2-D check of MatMul -> Gemm read them
    passes = [ShapeInference(strict_mode=False), ConstantFolding(keep_dequantize=int8),
              DeadCodeElimination(), BatchNormFolding()]
    if not int8:
        passes.append(BiasFusion())
        if fuse_activations:
            passes.append(ActivationFusion())
    return passes + [DeadCodeElimination()]  # the weights folding replaced


def quantize_flow(options, batches: list | None, source: str = "",
                  conv_integer: bool = True, fake: bool = False) -> Flow:
    """What ``hal.compile`` runs for ``precision="int8"`` before the backend's own flow:
    cleanup, constant folding, BatchNorm folding, then ``Quantize`` (calibrated on
    ``batches`` through cpu@reference) into the QDQ form of HAL's int8 contract.
    ``batches`` None: the model is already QDQ and ``Quantize`` keeps it as given.
    ``options.calibration == "dynamic"``: ``DynamicQuantize`` instead (weights int8 now,
    activations at run time; Conv too when ``conv_integer``), no batches needed. ``fake``:
    the quantizer's training form (FakeQuantize nodes, quantization-aware training)."""
    from hal.passes.batchnorm import BatchNormFolding
    from hal.passes.constant_folding import ConstantFolding
    from hal.passes.dead_code import DeadCodeElimination

    prepare = cleanup_passes() + [
        ShapeInference(strict_mode=False), ConstantFolding(keep_dequantize=True),
        DeadCodeElimination(), BatchNormFolding(), DeadCodeElimination()]
    if is_dynamic(options):
        from hal.passes.dynamic_quantize import DynamicQuantize

        return Flow("int8.dynamic", prepare + [DynamicQuantize(conv_integer),
                                               DeadCodeElimination()])
    from hal.passes.quantize import Quantize

    quantize = Quantize(batches, options.calibration_method, options.calibration_percentile,
                        options.power_of_two, source, fake=fake)
    return Flow("int8.fake_quantize" if fake else "int8.quantize", prepare + [quantize])


def is_dynamic(options) -> bool:
    """Whether ``options`` ask for dynamic int8 (``calibration="dynamic"``)."""
    return isinstance(options.calibration, str) and options.calibration == "dynamic"


def default_flow(backend: str, options, fuse_activations: bool = False) -> Flow:
    """The shared flow: cleanup, then the shared optimizations when ``opt_level`` >= 1."""
    passes = cleanup_passes() + optimize_passes(options, fuse_activations)
    return Flow(f"{backend}.default" if options.opt_level >= 1 else f"{backend}.plain", passes)
