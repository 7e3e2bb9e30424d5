"""``hal.compile``: model -> validated IR -> flow -> partition -> one Executable per segment."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import fields, replace
from typing import Any

import onnx_ir as ir

from hal.backend import CompileOptions, Device, Serial, check_precision
from hal.compiler.compiled import CompiledModel
from hal.compiler.isolated import IsolatedModel
from hal.errors import BackendError, HalError, InputError, OptionError
from hal.ir.model import Model
from hal.ir.validate import validate
from hal.passes import default_flow
from hal.partition import place, segment_model, segments, shape_info
from hal.registry import REGISTRY

log = logging.getLogger("hal")

_CORE_OPTIONS = {f.name for f in fields(CompileOptions)} - {"extra"}
_MODEL_OPTIONS = {"input_shape", "example_input"}


def compile(model: Any, device: str | Device = "cpu", **options: Any) -> CompiledModel:
    """Compile ``model`` for ``device``.

    ``model``: a hal.Model, an .onnx path, bytes, an onnx.ModelProto, a zoo name, a
    hal.nn.Module (with ``input_shape=``) or a torch.nn.Module (with ``example_input=``).
    Options: ``precision`` ("fp32", "fp16", "bf16", "int8"; default the backend's
    ``default_precision``), ``opt_level`` (0-3), ``fallback`` (a device string, default
    "cpu"; None is strict), ``isolate`` (True: the backend compiles and runs in a worker
    process, so that a crash in it is a BackendError here, ``hal.isolation``; None, the
    default: the ``HAL_ISOLATE`` environment variable decides, per backend), plus options
    specific to the device's backend.
    int8 (``hal.passes.quantize``, the QDQ form): ``calibration`` (an array for the single
    input, a list of such batches, or dicts input name -> array; without it a model that
    brings its own, ``Model.calibration``, as zoo models do, calibrates on that),
    ``calibration_method`` ("minmax" or "percentile"), ``calibration_percentile`` (default
    99.99), ``power_of_two``. ``calibration="dynamic"`` (``hal.passes.dynamic_quantize``):
    int8 weights, activations quantized at run time, no calibration data; it runs on any
    device, whose backend runs the float parts when it lacks int8 (the integer ops fall back).
    """
    from hal.frontends import to_model

    t0 = time.perf_counter()
    model_kw = {k: options.pop(k) for k in list(options) if k in _MODEL_OPTIONS}
    hal_model = to_model(model, **model_kw)
    if _isolate(options.pop("isolate", None), device):
        return _compile_isolated(hal_model, device, options, t0)
    dev = REGISTRY.resolve(device)
    opts = _options(dev, {**options, "isolate": False})
    calibration = _calibration(hal_model, opts) if opts.precision == "int8" else None
    work = hal_model.copy()  # never touch the user's model
    validate(work, REGISTRY.known_ops())

    pass_log, flow_names = [], []
    if calibration is not None:
        from hal.passes import quantize_flow

        qflow = quantize_flow(opts, *calibration,
                              conv_integer="ConvInteger" in dev.backend.ops)
        ir_model, pass_log = qflow.run(work.ir)
        work = Model(ir_model, hal_model.name)
        flow_names.append(qflow.name)
    dev_opts = _backend_options(dev, opts)
    flow = dev.backend.flow(dev_opts) or default_flow(dev.backend.name, dev_opts)
    ir_model, flow_log = flow.run(work.ir)
    pass_log += flow_log
    flow_names.append(flow.name)
    work = Model(ir_model, hal_model.name)

    fb = REGISTRY.resolve(opts.fallback) if opts.fallback is not None else None

    def candidates() -> list[Device]:  # probing every backend is asked for only on an error
        return [REGISTRY.resolve(d.string) for d in REGISTRY.usable() if not d.alias_of]

    where, fallbacks = place(work.graph, dev, fb, candidates)
    segs = segments(work.graph, where)
    proto = work.to_proto()
    info = shape_info(proto)
    executables = []
    for seg in segs:
        seg.output_shapes = [info.get(n, (None, None))[0] for n in seg.outputs]
        seg_proto = segment_model(proto, info, seg, work.name)
        seg_model = ir.from_proto(seg_proto)
        seg_opts = dev_opts if seg.device is dev else CompileOptions(opt_level=opts.opt_level)
        try:
            with Serial([seg.device]):
                exe = seg.device.backend.compile(seg_model, seg.device, seg_opts)
        except HalError:
            raise
        except Exception as exc:
            raise BackendError(f"backend {seg.device.backend.name!r} failed to compile segment "
                               f"{seg.index} ({dict(seg.ops)}) for {seg.device.string}: "
                               f"{type(exc).__name__}: {exc}") from exc
        executables.append(exe)
    compiled = CompiledModel(hal_model, work, dev, opts, segs, executables, fallbacks,
                             {"flow": "+".join(flow_names),
                              "passes": [r.to_dict() for r in pass_log],
                              **({"calibration": calibration[1]} if calibration else {})},
                             time.perf_counter() - t0)
    if fallbacks:
        ops = sorted({f.op for f in fallbacks})
        msg = (f"{dev.string} cannot run {len(fallbacks)} node(s) of {hal_model.name!r} "
               f"(ops {', '.join(ops)}); they run on the fallback {fb.string}")
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    return compiled


def _isolate(isolate: Any, device: Any) -> bool:
    from hal.isolation import wanted

    return wanted(isolate, device)


def _compile_isolated(hal_model: Model, device: Any, options: dict,
                      t0: float) -> IsolatedModel:
    """``compile`` run by a worker process (``hal.isolation``): this very function there."""
    from hal.isolation import start, warning_category

    worker, summary = start(f"{__name__}:compile", hal_model, device, options)
    compiled = IsolatedModel(hal_model, worker, summary, options, time.perf_counter() - t0)
    for module, name, message in summary["warnings"]:
        log.warning(message)
        warnings.warn(message, warning_category(module, name), stacklevel=3)
    return compiled


def _calibration(hal_model: Model, opts: CompileOptions) -> tuple[list | None, str]:
    """(batches, where they came from) for int8: the caller's arrays, checked, else the
    model's own (``Model.calibration``, a zoo model's); (None, ...) for a model already in
    QDQ form, which runs as given, or for dynamic int8, which needs none."""
    from hal.frontends import is_zoo_name
    from hal.passes import is_dynamic
    from hal.passes.calibration import calibration_batches

    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in hal_model.graph):
        if opts.calibration is not None:
            raise OptionError(f"{hal_model.name!r} is already quantized (it has QuantizeLinear/"
                              f"DequantizeLinear nodes) and runs as given: leave out "
                              f"calibration=")
        return None, "the model's own QDQ nodes"
    if is_dynamic(opts):
        return None, "none: activations are quantized at run time (calibration='dynamic')"
    if opts.calibration is not None:
        batches = calibration_batches(hal_model.inputs, opts.calibration)
        return batches, "calibration= arrays"
    if hal_model.calibration is not None:
        data, source = hal_model.calibration()
        return calibration_batches(hal_model.inputs, data), source
    specs = ", ".join(str(s) for s in hal_model.inputs)
    hint = (f" (for the zoo model, calibration=hal.models.calibration_data({hal_model.name!r}))"
            if is_zoo_name(hal_model.name) else "")
    raise OptionError(f"precision='int8' needs calibration data to choose its scales: pass "
                      f"calibration= arrays of the model's inputs ({specs}), e.g. a batch of "
                      f"100 or more representative samples{hint}")


def _options(dev: Device, options: dict) -> CompileOptions:
    core = {k: options.pop(k) for k in list(options) if k in _CORE_OPTIONS}
    core.setdefault("precision", dev.backend.default_precision)
    extra = options
    unknown = sorted(set(extra) - set(dev.backend.options))
    if unknown:
        raise OptionError(f"unknown compile option(s) {unknown} for {dev.string}; HAL takes "
                          f"{sorted(_CORE_OPTIONS | _MODEL_OPTIONS)}"
                          + (f" and {dev.backend.name} also takes {sorted(dev.backend.options)}"
                             if dev.backend.options else ""))
    opts = CompileOptions(**core, extra=dict(extra))
    hint = ""
    if opts.precision == "int8" and "int8" not in dev.backend.precisions:
        able = sorted(d.string for d in REGISTRY.usable() if not d.alias_of
                      and "int8" in REGISTRY.resolve(d.string).backend.precisions)
        hint = f"; int8 (QuantizeLinear/DequantizeLinear) runs on {', '.join(able)}" if able else ""
        hint += " (calibration='dynamic' runs anywhere, its integer ops falling back)"
    check_precision(dev.backend, "fp32" if _runs_dynamic_as_float(dev, opts) else opts.precision,
                    dev.string, hint)
    _check_int8_options(opts, core)
    if not isinstance(opts.opt_level, int) or not 0 <= opts.opt_level <= 3:
        raise OptionError(f"opt_level must be an int from 0 to 3, got {opts.opt_level!r}")
    if opts.fallback is not None and not isinstance(opts.fallback, str):
        raise OptionError(f"fallback must be a device string or None, got {opts.fallback!r}")
    return opts


def _runs_dynamic_as_float(dev: Device, opts: CompileOptions) -> bool:
    """Dynamic int8 on a backend without int8: it runs the graph's float ops (Cast, Mul, Add
    and the rest) as fp32, and the integer ops fall back like any op it lacks."""
    from hal.passes import is_dynamic

    return opts.precision == "int8" and is_dynamic(opts) \
        and "int8" not in dev.backend.precisions


def _backend_options(dev: Device, opts: CompileOptions) -> CompileOptions:
    """The options ``dev``'s backend compiles its flow and segments with."""
    if _runs_dynamic_as_float(dev, opts):
        return replace(opts, precision="fp32", calibration=None)
    return opts


def _check_int8_options(opts: CompileOptions, given: dict) -> None:
    from hal.passes import is_dynamic

    if isinstance(opts.calibration, str) and not is_dynamic(opts):
        # a bad calibration value is an InputError, as for arrays of the wrong shape
        raise InputError(f"calibration={opts.calibration!r} is neither data nor 'dynamic': "
                         f"give a numpy array of the model's input (or a list of them, or "
                         f"dicts input name -> array) for static int8, or "
                         f"calibration='dynamic' (weights int8, activations quantized at run "
                         f"time)")
    if is_dynamic(opts) and opts.precision != "int8":
        raise OptionError(f"calibration='dynamic' is dynamic int8 quantization; this compile is "
                          f"{opts.precision!r}: add precision='int8' or leave calibration out")
    if opts.precision != "int8":
        defaults = CompileOptions()
        stray = [k for k in CompileOptions.INT8_OPTIONS if k in given and given[k] is not None
                 and (k == "calibration" or given[k] != getattr(defaults, k))]
        if stray:
            raise OptionError(f"{', '.join(stray)} only apply to precision='int8' (this compile "
                              f"is {opts.precision!r}); add precision='int8' or leave them out")
        return
    from hal.passes.calibration import check_method

    if is_dynamic(opts):
        defaults = CompileOptions()
        static = [k for k in ("calibration_method", "calibration_percentile", "power_of_two")
                  if k in given and given[k] != getattr(defaults, k)]
        if static:
            raise OptionError(f"{', '.join(static)} choose(s) static int8 scales from "
                              f"calibration data; calibration='dynamic' chooses activation "
                              f"scales at run time: leave {', '.join(static)} out, or pass "
                              f"calibration= arrays for static int8")
        return
    check_method(opts.calibration_method, opts.calibration_percentile)
    if not isinstance(opts.power_of_two, bool):
        raise OptionError(f"power_of_two must be True or False, got {opts.power_of_two!r}")

