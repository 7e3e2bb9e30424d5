"""Frameworks imported on first use, with their start-up chatter kept off stderr.

TensorFlow prints absl and oneDNN lines from C++ while it loads, whatever
``TF_CPP_MIN_LOG_LEVEL`` says, and jax may log about accelerators it does not find. HAL
sets each framework's quiet settings (never overriding what the user set) and sends the
process's stderr aside while the framework loads; what was said there is passed on if the
import fails. ``HAL_VERBOSE=1`` leaves stderr alone.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import types
from typing import Any, Callable, Iterator


def verbose() -> bool:
    return os.environ.get("HAL_VERBOSE", "") == "1"


@contextlib.contextmanager
def quiet_stderr(replay_on_error: bool = True) -> Iterator[None]:
    """Send what is written to the process's stderr (file descriptor 2) aside meanwhile.

    ``replay_on_error``: written back to stderr if the block raises, so a failing import
    still explains itself.
    """
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            if replay_on_error:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        else:
            _restore(saved)


def _restore(saved: int) -> None:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def import_quietly(name: str, env: dict[str, str] | None = None,
                   quiet_env: dict[str, str] | None = None) -> types.ModuleType:
    """``import name`` with stderr aside, after setting defaults in the environment.

    ``env``: settings the framework needs (always); ``quiet_env``: its log levels (unless
    ``HAL_VERBOSE=1``). Neither overrides a variable the user set.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    for key, value in {**(env or {}), **({} if verbose() else quiet_env or {})}.items():
        os.environ.setdefault(key, value)
    with quiet_stderr():
        return importlib.import_module(name)


class LazyModule:
    """A module imported by ``load`` on first attribute access.

    Kernel modules name their framework through one of these, so importing them (to read a
    backend's op list) never imports the framework.
    """

    def __init__(self, name: str, load: Callable[[], Any]):
        self._name = name
        self._load = load
        self._module: Any = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            self._load()
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r}, {state}>"


def lookup(root: Any, path: str) -> Any:
    """``root.a.b`` for ``path`` "a.b": how a backend's ``xp`` module finds its functions."""
    for part in path.split("."):
        root = getattr(root, part)
    return root


def import_openvino() -> Any:
    """``openvino``, imported without its usage telemetry.

    ``import openvino`` sends an event to Google Analytics from a forked process unless the
    user opted out through ``openvino_telemetry``'s own tool. HAL sends nothing without
    consent, and a fork next to JAX's or TensorFlow's threads can deadlock. With the telemetry
    package hidden while openvino loads, openvino takes its own no-op stub. A user who
    imported ``openvino_telemetry`` first keeps it.
    """
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    hide = "openvino_telemetry" not in sys.modules
    if hide:
        sys.modules["openvino_telemetry"] = None  # an ImportError for whoever imports it
    try:
        import openvino
    finally:
        if hide and sys.modules.get("openvino_telemetry", 0) is None:
            del sys.modules["openvino_telemetry"]
    return openvino
