"""Crash isolation: a backend's compile and calls in a worker process of their own.

``hal.compile(model, device, isolate=True)`` (or ``HAL_ISOLATE``) converts the model here,
then hands it to a worker (``python -m hal.isolation.worker``, a fresh interpreter: no fork
next to JAX's or TensorFlow's threads) that resolves the device, compiles and keeps the
compiled model. Each call sends the input arrays over a private socket and gets the outputs
back. A segfault, an abort or an out-of-memory kill in a plugin's compile or call ends only
the worker: the caller gets a ``BackendError`` naming the backend, its plugin and the signal
("SIGSEGV"), with the worker's last output (its Python stack, from faulthandler), and goes on.

The worker imports what this process can import: it is given this process's ``sys.path``
(entry-point plugins are found the same way) and re-creates the backends registered here with
``hal.register_backend`` (pickled: a class defined in an importable module, not a script's
``__main__``).

``HAL_ISOLATE``: unset, "0" or "false" isolates nothing; "1", "true" or "all" every compile;
else a comma-separated list of backend names (``HAL_ISOLATE=vendorx,tf``) isolates the
compiles on those backends: a device string naming one (``npu@vendorx``), or a bare kind
one of them may serve (``npu``; the parent does not probe to find out which would). The
``isolate=`` argument, when given, wins over it.

``HAL_ISOLATE_TIMEOUT`` (seconds; unset: no limit) bounds each request to a worker: a
plugin that hangs in a compile (the worker's start included) or a call has its worker
killed, and the request is a ``BackendError`` saying so ("did not answer within 30 s").
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

from hal.backend import Backend, Device
from hal.device import DeviceInfo, DeviceSpec
from hal.errors import BackendError, OptionError
from hal.ir.model import Model
from hal.isolation.process import Worker, WorkerGone, exit_text, tail, worker_env
from hal.registry import REGISTRY

ENV = "HAL_ISOLATE"
#: seconds each request to a worker (its compile, worker start included, or a call) may take
TIMEOUT_ENV = "HAL_ISOLATE_TIMEOUT"
WORKER = "hal.isolation.worker"
_YES = {"1", "true", "yes", "on", "all"}
_NO = {"", "0", "false", "no", "off"}


def wanted(isolate: Any, device: Any) -> bool:
    """Whether a compile on ``device`` runs in a worker: ``isolate`` when it is True or False,
    else what ``HAL_ISOLATE`` says. A value that is neither is an OptionError."""
    if isolate is not None:
        if not isinstance(isolate, bool):
            raise OptionError(f"isolate must be True (compile and run in a worker process), "
                              f"False or None (HAL_ISOLATE decides), got {isolate!r}")
        return isolate
    text = os.environ.get(ENV, "").strip()
    if text.lower() in _NO:
        return False
    if text.lower() in _YES:
        return True
    names = {n.strip() for n in text.split(",") if n.strip()}
    known = {r.name for r in REGISTRY.records()}
    unknown = sorted(names - known)
    if unknown:
        raise OptionError(f"{ENV}={text!r} names {unknown}, which no registered backend is "
                          f"called: give 1 (isolate every compile), 0 (none), or backend "
                          f"names from {sorted(known)}")
    return bool(names & may_serve(device))


def timeout_s() -> float | None:
    """``HAL_ISOLATE_TIMEOUT`` in seconds (unset or empty: no limit); a worker that takes
    longer over one request is killed, and the request is a BackendError saying so."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise OptionError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds > 0 (or unset: "
                          f"no limit)")
    return value


def may_serve(device: Any) -> set[str]:
    """The backends a compile on ``device`` may run on, found without probing any."""
    if isinstance(device, Device):
        return {device.backend.name}
    if isinstance(device, DeviceInfo):
        return {device.backend}
    spec = DeviceSpec.parse(device)
    if spec.backend:
        return {spec.backend} | {r.name for r in REGISTRY.records() if not r.broken
                                 and spec.backend in r.backend.variants}
    return {b.name for b in REGISTRY.serving(spec.kind)}


class WorkerBackend(Backend):
    """Stands in this process for the backend that runs in the worker: it names it, and its
    device holds the outputs ``run`` returns (host arrays). It compiles nothing here."""

    def __init__(self, name: str, kinds: tuple[str, ...]):
        self.name = name
        self.kinds = kinds

    def probe(self) -> list[DeviceInfo]:
        return []

    def compile(self, model, device, options):
        raise BackendError(f"backend {self.name!r} runs in an isolated worker process; "
                           f"compile with hal.compile(..., isolate=True)")


class ModelWorker(Worker):
    """The worker of one compiled model; its errors name the backend, plugin and device."""

    def __init__(self, device: str, model: str):
        self.device = device
        spec = DeviceSpec.parse(device)
        self.backend = spec.backend or ""
        self.source = ""
        self.model = model
        self.crash: str | None = None
        super().__init__(WORKER, f"{device}")

    def on_note(self, note: dict) -> None:
        self.device = note["device"].string
        self.backend = note["backend"]
        self.source = note["source"]

    def who(self) -> str:
        plugin = f", plugin {self.source}" if self.source and self.source != "in-process" else ""
        what = f"backend {self.backend!r} ({self.device}{plugin})" if self.backend \
            else f"device {self.device!r}"
        return f"the isolated worker (pid {self.pid}) of {what}"

    def ask(self, op: str, *args: Any, doing: str) -> Any:
        """Request ``op``; its error raised here as it was there (a HalError), a crash as a
        BackendError saying how the worker ended while ``doing`` what."""
        if self.crash is not None:
            raise BackendError(f"{self.model!r} on {self.device} cannot run: {self.crash}. "
                               f"The worker is gone: compile the model again (hal.compile) "
                               f"to start a new one")
        if self.dead is not None:  # closed, or interrupted (Ctrl-C) mid-request
            raise BackendError(f"{self.model!r} on {self.device} cannot run: its isolated "
                               f"worker {self.dead}; compile the model again to run it")
        try:
            kind, value = self.request((op, *args), timeout_s())
        except WorkerGone as gone:
            self.crash = f"{self.who()} {gone.how} while {doing}"
            said = f"\nThe worker's last output:\n{gone.output}" if gone.output else ""
            raise BackendError(f"{self.crash}; this process is unaffected. Compile again "
                               f"to start a new worker, or use another device.{said}") \
                from None
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise BackendError(f"could not exchange {op!r} with {self.who()}: "
                               f"{type(exc).__name__}: {exc}") from None
        if kind == "error":
            raise value
        return value


def start(target: str, model: Model, device: Any, options: dict) -> tuple[ModelWorker, dict]:
    """A worker that compiled ``model`` for ``device`` with ``options`` by calling ``target``
    ("module:function", the compile to host), and the summary it sent of the result."""
    text = device.string if isinstance(device, (Device, DeviceInfo)) else device
    DeviceSpec.parse(text)  # a malformed string fails here, before any process starts
    for name, value in options.items():
        try:
            pickle.dumps(value, protocol=5)
        except Exception as exc:  # noqa: BLE001 - whatever pickle raises, the option is bad
            raise OptionError(f"option {name}= cannot be sent to the isolated worker "
                              f"({type(exc).__name__}: {exc}); pass numpy arrays, numbers "
                              f"and strings, or compile without isolate") from None
    spec = {"target": target, "model": model.to_proto().SerializeToString(),
            "name": model.name, "device": text, "options": options,
            "sys_path": [os.path.abspath(p) if p else os.getcwd() for p in sys.path],
            "register": _registered(), **_calibration(model, options)}
    worker = ModelWorker(text, model.name)
    try:
        summary = worker.ask("compile", spec, doing=f"compiling {model.name!r}")
    except BaseException:
        worker.close()
        raise
    return worker, summary


def _registered() -> list[tuple[str, bytes | None, str]]:
    """The backends registered in this process (``hal.register_backend``), pickled for the
    worker to re-create: (name, pickle, ""), or (name, None, why it does not pickle). A
    compile there that needs one it could not re-create says so."""
    out = []
    for rec in REGISTRY.records():
        if rec.source != "in-process" or rec.backend is None:
            continue
        try:
            out.append((rec.name, pickle.dumps(rec.backend, protocol=5), ""))
        except Exception as exc:  # noqa: BLE001 - only matters if the compile needs it
            out.append((rec.name, None, f"{type(exc).__name__}: {exc}"))
    return out


def _calibration(model: Model, options: dict) -> dict:
    """The model's own calibration (a zoo model's) for the worker: the function itself when
    it pickles by reference to an importable module, else, when this compile needs it
    (int8 without calibration=), its data, computed here."""
    cal = model.calibration
    if cal is None:
        return {}
    try:
        blob = pickle.dumps(cal, protocol=5)
        if b"__main__" not in blob:
            return {"calibration": blob}
    except Exception:  # noqa: BLE001 - a lambda or a closure: its data instead
        pass
    if options.get("precision") == "int8" and options.get("calibration") is None:
        return {"frozen_calibration": cal()}
    return {}


def warning_category(module: str, qualname: str) -> type[Warning]:
    """The warning class a worker reported, when it is one this process has imported."""
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and issubclass(obj, Warning) else UserWarning


__all__ = ["ENV", "ModelWorker", "Worker", "WorkerBackend", "WorkerGone", "exit_text",
           "may_serve", "start", "tail", "wanted", "warning_category", "worker_env"]
