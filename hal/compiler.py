"""``hal.compile``: model -> validated IR -> flow -> partition -> one Executable per segment."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import Counter
from dataclasses import fields, replace
from typing import Any, Sequence

import numpy as np
import onnx_ir as ir

from hal.backend import Buffer, CompileOptions, Device, Serial, Transfers, check_precision
from hal.errors import BackendError, HalError, InputError, OptionError
from hal.ir.model import Model
from hal.ir.validate import validate
from hal.passes import default_flow
from hal.partition import Fallback, Segment, place, segment_model, segments, shape_info
from hal.registry import REGISTRY

log = logging.getLogger("hal")

_CORE_OPTIONS = {f.name for f in fields(CompileOptions)} - {"extra"}
#: how many verified input signatures a compiled model remembers (numpy arrays and Buffers
#: of a few batch sizes, called alternately, all stay on the fast path)
_SIGNATURES = 8
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


class CompiledModel:
    """A model compiled for a device: call it with numpy arrays, or ``run`` it on Buffers."""

    def __init__(self, source: Model, model: Model, device: Device, options: CompileOptions,
                 segs: list[Segment], executables: list, fallbacks: list[Fallback],
                 flow: dict, compile_s: float):
        self.source = source
        self.model = model
        self.device = device
        self.options = options
        self.segments = segs
        self.executables = executables
        self.fallbacks = fallbacks
        self.flow = flow
        self.compile_s = compile_s
        self.inputs = source.inputs
        self.outputs = [v.name for v in model.graph.outputs]
        self.devices = list({id(s.device): s.device for s in segs}.values()) or [device]
        self.transfers = Transfers()
        self.last_transfers = Transfers()
        self.calls = 0
        #: how a bare kind chose this device (``hal.selection``), None when it was named
        self.selection: dict | None = None
        nodes = list(model.graph)
        self.placement = {nodes[i].name: s.device.string for s in segs for i in s.node_indices}
        self._prepare_calls()

    # -- running ------------------------------------------------------------
    def _prepare_checks(self) -> None:
        """What ``_check`` needs to check a call's inputs."""
        self._names = [s.name for s in self.inputs]
        self._expect = [(s.dtype, len(s.shape),
                         tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int)))
                        for s in self.inputs]
        self._n_in = len(self.inputs)
        self._symbolic = any(isinstance(d, str) for s in self.inputs for d in s.shape) \
            and len(self.inputs) > 1
        #: the input signatures ((type, shape, dtype) per input) of recent calls that passed
        #: every check, their outputs' included: a call whose inputs are alike skips them
        self._accepted: list[list[tuple]] = []

    def _prepare_calls(self) -> None:
        """Precompute what each call needs, so the per-call path stays a few microseconds."""
        self._prepare_checks()
        #: the locks of devices that are not thread-safe, held around each call (else None)
        self._serial = Serial(self.devices) or None
        # host-memory devices never copy, so there is nothing to count
        self._counting = any(not d.info.host_memory for d in self.devices)
        slots = {name: i for i, name in enumerate(self._names)}
        for seg in self.segments:
            for n in seg.outputs:
                slots.setdefault(n, len(slots))
        self._n_slots = len(slots)
        self._out_slots = [slots[n] for n in self.outputs]
        # a graph input that is also an output is the caller's array, not a Buffer
        self._outputs_buffers = all(i >= self._n_in for i in self._out_slots)
        self._plan = [(seg.device, [slots[n] for n in seg.inputs], [slots[n] for n in seg.outputs],
                       exe, seg, [_expect(shp) for shp in (seg.output_shapes
                                                           or [None] * len(seg.outputs))])
                      for seg, exe in zip(self.segments, self.executables)]
        # one segment taking the graph's inputs in order (most models): a verified call goes
        # straight to its executable, the outputs picked from what it returns
        self._direct = None
        if len(self._plan) == 1 and self._outputs_buffers and not self._counting \
                and not self._symbolic and self._plan[0][1] == list(range(self._n_in)):
            device, _, out_slots, exe, _, _ = self._plan[0]
            self._direct = (device, exe, [out_slots.index(i) for i in self._out_slots])

    def _check(self, arrays: Sequence[Any]) -> list[tuple] | None:
        """Raise InputError on a wrong input. None when the inputs are like a recent verified
        call's (checked already, outputs too); else their signature, which the caller keeps
        once this call's outputs have passed their checks."""
        try:
            sig = [(type(a), a.shape, a.dtype) for a in arrays]
        except AttributeError:
            sig = None
        if sig is not None and sig in self._accepted:
            return None
        if len(arrays) != self._n_in:
            names = ", ".join(str(s) for s in self.inputs)
            raise InputError(f"{self.source.name!r} takes {len(self.inputs)} input(s) ({names}), "
                             f"got {len(arrays)}")
        if sig is None or self._symbolic:
            self._explain_bad_inputs(arrays)
        for (dtype, rank, fixed), (cls, shape, got) in zip(self._expect, sig):
            if got != dtype or len(shape) != rank or any(shape[i] != d for i, d in fixed) \
                    or not issubclass(cls, (np.ndarray, Buffer)):
                self._explain_bad_inputs(arrays)
        return None if self._symbolic else sig

    def _explain_bad_inputs(self, arrays: Sequence[Any]) -> None:
        """The slow path: find the offending input and say exactly what is wrong."""
        symbols: dict[str, int] = {}
        for spec, a in zip(self.inputs, arrays):
            if not isinstance(a, (np.ndarray, Buffer)):
                raise InputError(f"input {spec.name!r} must be a numpy array or hal Buffer, "
                                 f"got {type(a).__name__}; expected {spec}")
            shape, dtype = tuple(a.shape), np.dtype(a.dtype)
            if dtype != spec.dtype:
                raise InputError(f"input {spec.name!r} has dtype {dtype}, expected {spec.dtype} "
                                 f"(shape {list(spec.shape)}); convert it with "
                                 f".astype(np.{spec.dtype})")
            if len(shape) != len(spec.shape) or any(
                    isinstance(e, int) and e != d for e, d in zip(spec.shape, shape)):
                raise InputError(f"input {spec.name!r} has shape {list(shape)}, expected "
                                 f"{list(spec.shape)} (names are dynamic dims)")
            for e, d in zip(spec.shape, shape):
                if isinstance(e, str) and symbols.setdefault(e, d) != d:
                    raise InputError(f"dynamic dim {e!r} is {symbols[e]} in one input and "
                                     f"{d} in {spec.name!r}; it must be the same everywhere")

    def _execute(self, inputs: Sequence[Any], verify: bool = True) -> list[Any]:
        """Run the segments in order. ``verify``: check what each backend returns (count,
        type, static dims); skipped for inputs like those of a call that was verified, as
        the same inputs give the same kinds of outputs."""
        values: list[Any] = [*inputs, *[None] * (self._n_slots - self._n_in)]
        for device, in_slots, out_slots, exe, seg, expect in self._plan:
            ins = [v.to(device) if isinstance(v, Buffer) else device.put(v)
                   for v in [values[i] for i in in_slots]]
            try:
                outs = exe.run(ins)
            except HalError:
                raise
            except Exception as exc:
                raise BackendError(f"{device.string} failed running segment {seg.index} of "
                                   f"{self.source.name!r}: {type(exc).__name__}: {exc}") from exc
            if verify:
                _verify_outputs(device, seg, outs, out_slots, expect)
            for slot, buf in zip(out_slots, outs):
                values[slot] = buf
        return values

    def _count(self, before: list[Transfers]) -> None:
        delta = Transfers()
        for d, b in zip(self.devices, before):
            delta = delta + (d.transfers - b)
        self.last_transfers = delta
        self.transfers = self.transfers + delta

    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        if self._serial is None:
            return self._call(arrays)
        with self._serial:
            return self._call(arrays)

    def _call(self, arrays: Sequence[Any]) -> list[np.ndarray]:
        new = self._check(arrays)
        if new is None and self._direct is not None:
            device, exe, picks = self._direct
            outs = self._run_direct(device, exe, arrays)
            self.calls += 1
            return [outs[j].numpy() for j in picks]
        before = [d.transfers.copy() for d in self.devices] if self._counting else None
        values = self._execute(arrays, new is not None or self._symbolic)
        if self._outputs_buffers:
            out = [values[i].numpy() for i in self._out_slots]
        else:
            out = [v.numpy() if isinstance(v, Buffer) else np.asarray(v)
                   for v in [values[i] for i in self._out_slots]]
        self._done(new, before)
        return out

    def run(self, buffers: Sequence[Any]) -> list[Buffer]:
        """Run on device buffers; outputs stay where they were computed (no host copy)."""
        if self._serial is None:
            return self._run(list(buffers))
        with self._serial:
            return self._run(list(buffers))

    def _run(self, buffers: list[Any]) -> list[Buffer]:
        new = self._check(buffers)
        if new is None and self._direct is not None:
            device, exe, picks = self._direct
            outs = self._run_direct(device, exe, buffers)
            self.calls += 1
            return [outs[j] for j in picks]
        before = [d.transfers.copy() for d in self.devices] if self._counting else None
        values = self._execute(buffers, new is not None or self._symbolic)
        if self._outputs_buffers:
            out = [values[i] for i in self._out_slots]
        else:
            out = [v if isinstance(v, Buffer) else self.device.put(v)
                   for v in [values[i] for i in self._out_slots]]
        self._done(new, before)
        return out

    def _run_direct(self, device: Device, exe: Any, inputs: Sequence[Any]) -> list:
        """``_execute`` for ``_direct``, on inputs like a verified call's (not counting copies:
        only for host-memory devices)."""
        try:
            return exe.run([v.to(device) if isinstance(v, Buffer) else device.put(v)
                            for v in inputs])
        except HalError:
            raise
        except Exception as exc:
            raise BackendError(f"{device.string} failed running segment 0 of "
                               f"{self.source.name!r}: {type(exc).__name__}: {exc}") from exc

    def _done(self, new: list[tuple] | None, before: list[Transfers] | None) -> None:
        self.calls += 1
        if new is not None:  # verified: the next calls like this one skip the checks
            self._accepted = [new, *self._accepted[:_SIGNATURES - 1]]
        if before is not None:
            self._count(before)

    def sync(self) -> None:
        for d in self.devices:
            d.sync()

    # -- reporting ----------------------------------------------------------
    def report(self) -> dict:
        segs = []
        for s, exe in zip(self.segments, self.executables):
            segs.append({"index": s.index, "device": s.device.string,
                         "backend": s.device.backend.name, "simulated": s.device.simulated,
                         "nodes": len(s.node_indices), "ops": dict(Counter(s.ops)),
                         "inputs": s.inputs, "outputs": s.outputs, "info": exe.info})
        return {
            "model": self.source.name, "device": self.device.string,
            "simulated": any(d.simulated for d in self.devices),
            "options": {"precision": self.options.precision, "opt_level": self.options.opt_level,
                        "fallback": self.options.fallback, **self._int8_options(),
                        **self.options.extra},
            "compile_s": round(self.compile_s, 4), **self.flow,
            **({"selection": self.selection} if self.selection is not None else {}),
            "segments": segs,
            "fallbacks": [f.to_dict() for f in self.fallbacks],
            "transfers": {"last_call": self.last_transfers.to_dict(),
                          "total": self.transfers.to_dict(), "calls": self.calls},
        }

    def _int8_options(self) -> dict:
        o = self.options
        if o.precision != "int8":
            return {}
        if isinstance(o.calibration, str):
            return {"calibration": o.calibration}
        return {"calibration_method": o.calibration_method, "power_of_two": o.power_of_two,
                **({"calibration_percentile": o.calibration_percentile}
                   if o.calibration_method == "percentile" else {})}

    def __repr__(self) -> str:
        where = ", ".join(f"{s.device.string}×{len(s.node_indices)}" for s in self.segments)
        return f"<hal.CompiledModel {self.source.name!r} on {self.device.string} [{where}]>"


class IsolatedModel(CompiledModel):
    """A CompiledModel whose backend compiled, and runs, in a worker process of its own
    (``hal.compile(..., isolate=True)``, ``hal.isolation``).

    Called as any compiled model: the inputs are checked here, sent to the worker, and its
    outputs come back as numpy arrays. ``run(buffers)`` takes Buffers or arrays and returns
    host Buffers (a device's memory cannot cross processes). A crash of the worker is a
    BackendError naming the backend and the signal; the model is then gone, and every later
    call says so (compile it again for a new worker). ``close()`` (or ``with``, or garbage
    collection) ends the worker. Calls from several threads take turns.
    """

    def __init__(self, source: Model, worker: Any, summary: dict, options: dict,
                 compile_s: float):
        from hal.isolation import WorkerBackend

        info = summary["device"]
        self.source = source
        self._worker = worker
        self._model: Model | None = None
        self.device = Device(WorkerBackend(summary["backend"], (info.kind,)), info)
        self.options = replace(summary["options"], calibration=options.get("calibration"),
                               isolate=True)
        self.segments: list[Segment] = []
        self.executables: list = []
        self.fallbacks = summary["fallbacks"]
        self.flow = summary["flow"]
        self.compile_s = compile_s
        self.worker_compile_s = summary["compile_s"]
        self.inputs = source.inputs
        self.outputs = summary["outputs"]
        self.devices = [self.device]
        self.transfers = Transfers()
        self.last_transfers = Transfers()
        self.calls = 0
        self.selection = None
        self.placement = summary["placement"]
        self.pid = summary["pid"]
        self._backends = summary["backends"]
        self._turn = threading.Lock()
        self._prepare_checks()

    @property
    def model(self) -> Model:  # type: ignore[override]
        """The model as compiled (after the flow), fetched from the worker when first asked."""
        if self._model is None:
            import onnx

            data = self._worker.ask("model", doing=f"sending {self.source.name!r} back")
            self._model = Model(ir.from_proto(onnx.ModelProto.FromString(data)),
                                self.source.name)
        return self._model

    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        with self._turn:  # one request at a time on the one connection
            new = self._check(arrays)
            outs = self._worker.ask("call", [a.numpy() if isinstance(a, Buffer) else a
                                             for a in arrays],
                                    doing=f"running call {self.calls + 1} of "
                                          f"{self.source.name!r}")
            self.calls += 1
            if new is not None:
                self._accepted = [new, *self._accepted[:_SIGNATURES - 1]]
            return outs

    def run(self, buffers: Sequence[Any]) -> list[Buffer]:
        """Run on Buffers (or arrays); the outputs are host Buffers of this process."""
        from hal.backend import HostBuffer

        return [HostBuffer(y, self.device) for y in self(*buffers)]

    def sync(self) -> None:
        self._worker.ask("sync", doing=f"synchronizing {self.device.string}")

    def report(self) -> dict:
        rep = self._worker.ask("report", doing=f"reporting on {self.source.name!r}")
        rep["compile_s"] = round(self.compile_s, 4)
        rep["options"]["isolate"] = True
        rep["isolated"] = {"pid": self.pid, "worker": "python -m hal.isolation.worker",
                           "backends": self._backends,
                           "compile_s_in_worker": round(self.worker_compile_s, 4)}
        if self.selection is not None:
            rep["selection"] = self.selection
        return rep

    @property
    def alive(self) -> bool:
        """Whether the worker is running (False once it crashed or was closed)."""
        return self._worker.alive

    def close(self) -> None:
        """End the worker; calls after this raise a BackendError."""
        self._worker.close()

    def __enter__(self) -> IsolatedModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<hal.CompiledModel {self.source.name!r} on {self.device.string} "
                f"[isolated: worker pid {self.pid}]>")


def _verify_outputs(device: Device, seg: Segment, outs: Sequence[Any], out_slots: list[int],
                    expect: list) -> None:
    """A backend's outputs for one segment: as many as the graph says, hal Buffers, of the
    static dims shape inference gave; else a BackendError blaming the backend."""
    if len(outs) != len(out_slots):
        raise BackendError(f"{device.backend.name} returned {len(outs)} outputs for "
                           f"segment {seg.index}, expected {len(out_slots)}")
    for k, (buf, exp) in enumerate(zip(outs, expect)):
        if not isinstance(buf, Buffer):
            raise BackendError(f"{device.backend.name} returned a {type(buf).__name__} in "
                               f"segment {seg.index}; an Executable must return hal Buffers")
        if exp is not None and buf.shape != exp[2]:
            shp = buf.shape
            if len(shp) != exp[0] or any(shp[i] != d for i, d in exp[1]):
                raise BackendError(
                    f"{device.backend.name} returned shape {list(shp)} for output #{k} of "
                    f"segment {seg.index} on {device.string}; the graph says "
                    f"{_fmt_expect(exp)}. The backend is wrong: report it to its authors, or "
                    f"use another device")


def _fmt_expect(exp: tuple) -> str:
    rank, fixed, _ = exp
    dims = dict(fixed)
    return "[" + ", ".join(str(dims.get(i, "?")) for i in range(rank)) + "]"


def _expect(shape) -> tuple | None:
    """(rank, ((axis, size), ...), the whole shape when every dim is static, else None) of
    an inferred shape, or None."""
    if shape is None:
        return None
    full = tuple(shape) if all(isinstance(d, int) for d in shape) else None
    return len(shape), tuple((i, d) for i, d in enumerate(shape) if isinstance(d, int)), full
