"""A compiled model whose backend runs in a worker process (``isolate=True``)."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import onnx_ir as ir

from hal.backend import Buffer, Device, Transfers
from hal.ir.model import Model
from hal.partition import Segment

from hal.compiler.compiled import SIGNATURES, CompiledModel


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
                self._accepted = [new, *self._accepted[:SIGNATURES - 1]]
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

