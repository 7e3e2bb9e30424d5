"""The OpenCL Executable: plans per input signature, runs them on device buffers."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import onnx_ir as ir

from hal.backend import Buffer, CompileOptions, Device, Executable
from hal.backends.opencl import graph as G
from hal.backends.opencl.ops import LOWER
from hal.backends.opencl.plan import Builder, Plan, T
from hal.backends.opencl.runtime import ClDevice, OpenCLBuffer
from hal.backends.opencl.tuning import parse_option, tuned
from hal.errors import BackendError, HalError


class OpenCLExecutable(Executable):
    def __init__(self, model: ir.Model, device: Device, cldev: ClDevice, options: CompileOptions):
        t0 = time.perf_counter()
        nodes, consts, inputs, outputs = G.prepare(model)
        super().__init__(device, inputs, outputs)
        self.cldev = cldev
        self.nodes = nodes
        self.consts = consts
        self.host_inputs = G.host_inputs(nodes, inputs)
        self._host_pos = [inputs.index(n) for n in self.host_inputs]
        extra = options.extra
        self.build_options = str(extra.get("build_options", "") or "")
        if "gemm_tile" in extra:
            self.gemm, tinfo = parse_option(extra["gemm_tile"]), {"source": "gemm_tile option"}
        else:
            self.gemm, tinfo = tuned(cldev, self.build_options, bool(extra.get("autotune", True)))
        self.plans: dict[tuple, Plan] = {}
        self.const_cache: dict = {}
        self.build_stats: dict = {}
        self.info.update({
            "device": f"opencl:{cldev.index} {cldev.name} ({cldev.platform.name.strip()}, "
                      f"driver {cldev.device.driver_version})",
            "nodes": len(nodes),
            "gemm": {**self.gemm.to_dict(), **tinfo},
            "programs": self.build_stats,
        })
        # Build every program this segment needs now, so a bad option or an unsupported
        # feature fails at compile time and --explain can show cold vs warm builds.
        self._prebuild()
        self.info["compile_s"] = round(time.perf_counter() - t0, 4)

    def _prebuild(self) -> None:
        b = self._builder()
        files = {"nn.cl", "elementwise.cl", "tensor.cl"}
        for f in sorted(files):
            b.program(f, {})
        b.program("gemm.cl", self.gemm.defines())

    def _builder(self) -> Builder:
        return Builder(self.cldev, self.gemm, self.build_options, self.build_stats,
                       self.const_cache)

    # -- planning ---------------------------------------------------------------------
    def _plan(self, shapes: tuple, host_values: list[np.ndarray]) -> Plan:
        t0 = time.perf_counter()
        b = self._builder()
        env: dict[str, Any] = dict(self.consts)
        in_tensors = []
        for name, shape in zip(self.input_names, shapes):
            t = b.tensor(shape)
            in_tensors.append(t)
            env[name] = t
        for name, value in zip(self.host_inputs, host_values):
            env[name] = value
        for node in self.nodes:
            fn = LOWER.get(node.op)
            if fn is None:
                raise BackendError(f"opencl has no kernel for {node.op} (node {node.name!r})")
            args = [env[n] if n else None for n in node.inputs]
            try:
                res = fn(b, node, *args)
            except HalError:
                raise
            except Exception as exc:
                shapes_in = [None if a is None else list(a.shape) for a in args]
                raise BackendError(f"opencl could not lower node {node.name!r} ({node.op}) for "
                                   f"input shapes {shapes_in}: {type(exc).__name__}: {exc}") \
                    from exc
            if not isinstance(res, tuple):
                res = (res,)
            for name, val in zip(node.outputs, res):
                if name:
                    env[name] = val
        outs = []
        for name in self.output_names:
            v = env[name]
            outs.append(v if isinstance(v, T) else b.const(np.asarray(v, np.float32)))
        plan = b.finish(in_tensors, outs)
        self.info["plans"] = len(self.plans) + 1
        self.info["last_plan_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        self.info["launches"] = len(plan.launches)
        return plan

    # -- running --------------------------------------------------------------------
    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        shapes = tuple(tuple(buf.shape) for buf in buffers)
        key = shapes
        host_values = []
        if self.host_inputs:
            host_values = [buffers[i].numpy() for i in self._host_pos]
            key = shapes + tuple((v.dtype.str, v.tobytes()) for v in host_values)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = self._plan(shapes, host_values)
        bufs = []
        for buf in buffers:
            if not isinstance(buf, OpenCLBuffer) or buf.offset:
                buf = self.device.put(buf.numpy())
            bufs.append(buf.cl_buffer)
        outs = plan.run(self.cldev, bufs)
        return [OpenCLBuffer(self.device, o, t.shape, np.float32, t.offset)
                for o, t in zip(outs, plan.output_tensors)]
