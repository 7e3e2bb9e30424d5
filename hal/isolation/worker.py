"""``python -m hal.isolation.worker SOCKET_FD LIFELINE_FD``: one compiled model in a process
of its own (``hal.compile(..., isolate=True)``; see ``hal.isolation``).

The parent sends one "compile" request, then "call", "report" and "sync" requests, each
answered with ("ok", value) or ("error", a HalError); before compiling, a ("note", device)
message says which device and backend the device string resolved to. The worker exits when
its lifeline pipe closes: the parent closed the model, or the parent died.

The compile function is named by the parent (``"hal.compiler:compile"``), like a function
multiprocessing sends by reference: this package hosts whatever compile it is handed and
depends on no layer above it.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import importlib
import os
import pickle
import select
import signal
import sys
import threading
import traceback
import warnings
from typing import Any


def main(argv: list[str]) -> int:
    faulthandler.enable(all_threads=False)  # a crash prints its stack: the parent quotes it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    sock_fd, life_fd = int(argv[1]), int(argv[2])
    threading.Thread(target=_watch, args=(life_fd, os.getppid()), daemon=True,
                     name="hal-isolation-lifeline").start()

    from multiprocessing.connection import Connection

    from hal.isolation.process import recv, send

    conn = Connection(sock_fd)
    compiled = None
    while True:
        try:
            op, *args = recv(conn)
        except EOFError:
            return 0
        try:
            if op == "compile":
                compiled, value = _compile(args[0], lambda note: send(conn, ("note", note)))
            elif compiled is None:
                raise RuntimeError(f"{op!r} before a model was compiled")
            elif op == "call":
                value = compiled(*args[0])
            elif op == "report":
                value = compiled.report()
            elif op == "sync":
                value = compiled.sync()
            elif op == "model":
                value = compiled.model.to_proto().SerializeToString()
            else:
                raise RuntimeError(f"unknown request {op!r}")
            reply = ("ok", value)
        except Exception as exc:  # noqa: BLE001 - every error goes back to the caller
            reply = ("error", _portable(exc))
        try:
            send(conn, reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            send(conn, ("error", _portable(exc, f"could not send the {op} result back")))


def _watch(fd: int, ppid: int) -> None:
    """Exit when the lifeline closes (the model was closed, or the parent died), or when the
    parent is gone (a process it forked may hold the lifeline open)."""
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready or os.getppid() != ppid:
            os._exit(0)


def _compile(spec: dict, note) -> tuple[Any, dict]:
    import onnx
    import onnx_ir as ir

    from hal.errors import DeviceNotFound
    from hal.ir.model import Model
    from hal.registry import REGISTRY

    # the parent's import path: plugins it can import (entry points included), this one can
    sys.path[:] = [*spec["sys_path"], *[p for p in sys.path if p not in spec["sys_path"]]]
    failed = _register(spec["register"])
    model = Model(ir.from_proto(onnx.ModelProto.FromString(spec["model"])), spec["name"],
                  _calibration(spec))
    try:
        dev = REGISTRY.resolve(spec["device"])
    except DeviceNotFound as exc:
        if failed:
            raise DeviceNotFound(f"{exc}; backends registered in the calling process that "
                                 f"this worker could not re-create: {'; '.join(failed)}") \
                from None
        raise
    rec = next((r for r in REGISTRY.records() if r.backend is dev.backend), None)
    note({"device": dev.info, "backend": dev.backend.name,
          "source": rec.source if rec is not None else type(dev.backend).__module__})
    module, _, name = spec["target"].partition(":")
    target = getattr(importlib.import_module(module), name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = target(model, dev.string, isolate=False, **spec["options"])
    # the caller has its calibration arrays: they are not sent back
    options = dataclasses.replace(compiled.options, calibration=None)
    return compiled, {
        "pid": os.getpid(), "device": compiled.device.info, "backend": compiled.device.backend.name,
        "source": rec.source if rec is not None else "", "options": options,
        "outputs": compiled.outputs,
        "placement": compiled.placement, "fallbacks": compiled.fallbacks,
        "flow": compiled.flow, "compile_s": compiled.compile_s,
        "devices": [d.info for d in compiled.devices],
        "backends": sorted({d.backend.name for d in compiled.devices}),
        "warnings": [(w.category.__module__, w.category.__qualname__, str(w.message))
                     for w in caught],
    }


def _register(entries: list[tuple[str, bytes | None, str]]) -> list[str]:
    """Re-create the backends the parent registered in-process (``hal.register_backend``);
    the reasons of those that cannot be (a class defined in a script's ``__main__``)."""
    from hal.registry import REGISTRY

    failed = []
    for name, blob, why in entries:
        try:
            if blob is None:
                raise RuntimeError(why)
            REGISTRY.register(pickle.loads(blob), replace=True)
        except Exception as exc:  # noqa: BLE001 - reported only if the compile needs it
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return failed


def _calibration(spec: dict):
    if spec.get("calibration") is not None:
        return pickle.loads(spec["calibration"])
    if spec.get("frozen_calibration") is not None:
        data, source = spec["frozen_calibration"]
        return lambda: (data, source)
    return None


def _portable(exc: BaseException, doing: str = "") -> Exception:
    """``exc`` as an error the parent can unpickle: a HalError as it is (if it pickles), any
    other as a BackendError with its type, message and where it was raised."""
    from hal.errors import BackendError, HalError

    prefix = f"{doing}: " if doing else ""
    if isinstance(exc, HalError) and not doing:
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001 - an odd subclass: sent as text below
            pass
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    return BackendError(f"{prefix}{type(exc).__name__}: {exc}{at}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
