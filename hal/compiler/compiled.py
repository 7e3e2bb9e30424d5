"""A model compiled for a device: its calls, its checks, its report."""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from hal.backend import Buffer, CompileOptions, Device, Serial, Transfers
from hal.errors import BackendError, HalError, InputError
from hal.ir.model import Model
from hal.partition import Fallback, Segment

#: how many verified input signatures a compiled model remembers (numpy arrays and Buffers
#: of a few batch sizes, called alternately, all stay on the fast path)
SIGNATURES = 8


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
            self._accepted = [new, *self._accepted[:SIGNATURES - 1]]
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
