"""Quantization-aware training: ``hal.train(model, data, quantize="int8")``.

``prepare`` runs what ``hal.compile(precision="int8")`` runs before its backend (cleanup,
constant and BatchNorm folding) and then HAL's quantizer in its training form
(``hal.passes.quantize``, ``fake=True``): the same Conv/Gemm/MatMul, the same per-channel
weight scales and the same calibrated activation scales, as ``ai.hal`` ``FakeQuantize`` nodes
that round forward and pass the gradient straight through. BatchNorm is folded into its
convolution first, so its statistics stay those of the model given (QAT fine-tunes a trained
model) and Dropout, removed by the cleanup as for inference, does not train either.

``convert`` takes the trained model back to HAL's int8 contract: the FakeQuantize nodes out,
then the quantizer with the activation scales training used, so the QDQ model runs on every
int8 device (``cpu@ort``, ``cpu@reference``, ``fpga@emu``...) computing what training rounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.backend import CompileOptions
from hal.errors import OptionError
from hal.ir.model import Model
from hal.ir.schemas import FAKE_QUANTIZE, HAL_DOMAIN

#: what ``quantize=`` takes
QUANTIZE = ("int8",)
#: hal.train keywords that configure the quantizer, as hal.compile names them
OPTIONS = ("calibration", "calibration_method", "calibration_percentile", "power_of_two")
#: samples of the training data that calibrate the activation scales when no calibration=
CALIBRATION_SAMPLES = 512


@dataclass
class Plan:
    model: Model  # the fake-quantized float model that trains
    scales: dict[str, float]  # activation value name -> scale, fixed during training
    power_of_two: bool
    detail: str  # the quantizer's report


def prepare(model: Model, quantize: str, data: Any, options: dict) -> Plan:
    """``model`` with fake quantization; ``options`` are the hal.train keywords in
    ``OPTIONS`` (popped by the caller). The model given is not modified."""
    from hal.passes import quantize_flow
    from hal.passes.calibration import calibration_batches, check_method

    if quantize not in QUANTIZE:
        raise OptionError(f"quantize={quantize!r}: quantization-aware training supports "
                          f"{list(QUANTIZE)}")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph):
        raise OptionError(f"{model.name!r} is already quantized (QuantizeLinear/"
                          f"DequantizeLinear nodes): quantization-aware training starts from "
                          f"the float model")
    opts = CompileOptions(precision="int8",
                          calibration_method=options.get("calibration_method", "minmax"),
                          calibration_percentile=options.get("calibration_percentile", 99.99),
                          power_of_two=bool(options.get("power_of_two", False)))
    check_method(opts.calibration_method, opts.calibration_percentile)
    calibration = options.get("calibration")
    if calibration is None:
        calibration, source = _from_data(model, data), \
            f"the first {CALIBRATION_SAMPLES} training samples"
    else:
        source = "calibration= arrays"
    batches = calibration_batches(model.inputs, calibration)
    flow = quantize_flow(opts, batches, source, fake=True)
    fake = flow.passes[-1]
    ir_model, _ = flow.run(model.copy().ir)
    if not fake.activation_scales:
        raise OptionError(f"quantize={quantize!r}: {model.name!r} has nothing to quantize "
                          f"({fake.detail})")
    return Plan(Model(ir_model, model.name), dict(fake.activation_scales), opts.power_of_two,
                fake.detail)


def _from_data(model: Model, data: Any) -> Any:
    names = [s.name for s in model.inputs]
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray) \
            and len(names) == 1:
        return np.ascontiguousarray(data[0][:CALIBRATION_SAMPLES], dtype=model.inputs[0].dtype)
    if isinstance(data, dict) and all(isinstance(data.get(n), np.ndarray) for n in names):
        return {n: np.ascontiguousarray(data[n][:CALIBRATION_SAMPLES]) for n in names}
    raise OptionError("quantize='int8' calibrates its activation scales on the training arrays; "
                      "with data given as batches, pass calibration= (arrays of the model's "
                      "inputs, as hal.compile takes them)")


def convert(plan: Plan, trained: Model) -> Model:
    """The trained fake-quantized model in HAL's QDQ int8 form."""
    from hal.passes.dead_code import DeadCodeElimination
    from hal.passes.quantize import Quantize

    work = trained.copy()
    g = work.graph
    for node in [n for n in g if n.domain == HAL_DOMAIN and n.op_type == FAKE_QUANTIZE]:
        x, y = node.inputs[0], node.outputs[0]
        y.replace_all_uses_with(x)
        for i, out in enumerate(g.outputs):
            if out is y:  # the quantizer renamed the float output; it gets its name back
                g.outputs[i] = x
                x.name = y.name
        scale = node.inputs[1] if len(node.inputs) > 1 else None
        g.remove(node, safe=True)
        if scale is not None and scale.name in g.initializers and not scale.uses():
            del g.initializers[scale.name]
    work.ir.opset_imports.pop(HAL_DOMAIN, None)
    quantizer = Quantize(None, power_of_two=plan.power_of_two, scales=plan.scales,
                         source="quantization-aware training")
    quantized = quantizer(work.ir).model
    return Model(DeadCodeElimination()(quantized).model, trained.name)  # float weights out
