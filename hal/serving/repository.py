"""The models a server holds: how each is compiled, checked and (re)loaded. What each is
configured with, and how a repository folder says it, is ``hal.serving.config``.

``POST /v2/repository/index`` lists the repository folder again, ``POST
/v2/repository/models/NAME/load`` reads NAME's config again and compiles it, then swaps it in
while the old one finishes what it holds; ``.../unload`` takes it out.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hal.errors import HalError, InputError, OptionError
from hal.ir.model import TensorSpec
from hal.serving.batcher import Batcher
from hal.serving.config import OVERRIDE_KEYS, VERSION, ModelConfig, read_repository
from hal.serving.protocol import InferRequest, ServeError, bad, datatype_of

log = logging.getLogger("hal.serving")

# -- a loaded model -----------------------------------------------------------------------

@dataclass
class TensorMeta:
    name: str
    datatype: str
    dtype: np.dtype
    #: the shape clients see: -1 for a dynamic dim (the batch axis included)
    shape: list[int]
    #: the model's own dims: ints, or names of dynamic dims
    dims: tuple

    def describe(self) -> str:
        return f"{self.name!r} ({self.datatype} {self.shape})"

    def to_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def _meta(spec: TensorSpec) -> TensorMeta:
    dims = tuple(spec.shape)
    return TensorMeta(spec.name, datatype_of(spec.dtype), np.dtype(spec.dtype),
                      [d if isinstance(d, int) else -1 for d in dims], dims)


def compiled_specs(obj: Any) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
    """(inputs, outputs) of an already compiled model, or None if ``obj`` is not one."""
    from hal.compiler import CompiledModel

    if isinstance(obj, CompiledModel):
        outs = list(obj.model.outputs)
        if any(not s.shape for s in outs):  # a flow that ran no shape inference
            from hal.partition import shape_info

            info = shape_info(obj.model.to_proto())
            outs = [TensorSpec(s.name, tuple(info[s.name][0]), np.dtype(info[s.name][1]))
                    if info.get(s.name, (None, None))[0] is not None
                    and info[s.name][1] is not None else s for s in outs]
        return list(obj.inputs), outs
    ins, outs = getattr(obj, "inputs", None), getattr(obj, "outputs", None)
    specs = (list, tuple)
    if callable(obj) and isinstance(ins, specs) and isinstance(outs, specs) and ins and outs \
            and all(isinstance(s, TensorSpec) for s in (*ins, *outs)):
        return list(ins), list(outs)
    return None


def _device_of(obj: Any) -> str:
    dev = getattr(obj, "device", None)
    return getattr(dev, "string", None) or (dev if isinstance(dev, str) else "custom")


def compile_instances(cfg: ModelConfig) -> list[Any]:
    """``cfg.instances`` compiled copies of the model (or the compiled model it was given),
    each with its backend's ``serving_options`` where the model's options do not set them."""
    if compiled_specs(cfg.model) is not None:
        if cfg.instances != 1:
            raise OptionError(f"model {cfg.name!r} was given compiled; serve it with "
                              f"instances=1, or give its source to compile several copies")
        return [cfg.model]
    from hal import registry
    from hal.device import DeviceSpec
    from hal.frontends import to_model
    from hal.selection import compile

    source = to_model(cfg.model)
    options = dict(cfg.options)
    if cfg.precision is not None:
        options["precision"] = cfg.precision
    first = None
    if DeviceSpec.parse(cfg.device).backend is None:  # selection picks it: compile to learn
        first_opts = dict(options)
        if cfg.max_batch > 0 and "batch" not in options:
            first_opts["batch"] = cfg.max_batch  # measured selection times the served batch
        first = compile(source, cfg.device, **first_opts)
        device = first.device
        # the options the chosen candidate was measured with (e.g. one thread) go to every copy
        options.update((first.selection or {}).get("winner_options", {}))
    else:
        device = registry.device(cfg.device)
    serving = {k: v for k, v in device.backend.serving_options.items() if k not in options}
    if serving:  # a first copy compiled without them is not served
        options.update(serving)
        first = None
    # the copies take the device resolved above: nothing measured again
    copies = [] if first is None else [first]
    return copies + [compile(source, device.string, **options)
                     for _ in range(cfg.instances - len(copies))]


class Served:
    """A model compiled and ready: its tensors, its batcher, its metrics."""

    def __init__(self, cfg: ModelConfig, instances: list[Any], metrics=None):
        self.config = cfg
        self.name = cfg.name
        self.version = VERSION
        self.instances = instances
        ins, outs = compiled_specs(instances[0])
        self.device = _device_of(instances[0])
        try:
            self.inputs = [_meta(s) for s in ins]
            self.outputs = [_meta(s) for s in outs]
        except ValueError as exc:
            raise OptionError(f"model {cfg.name!r} cannot be served: {exc}") from None
        self._outputs_by_name = {o.name: i for i, o in enumerate(self.outputs)}
        self.batch_axis = _batch_axis(ins, outs)
        self.max_batch = cfg.max_batch if self.batch_axis else 0
        if cfg.max_batch and not self.batch_axis:
            log.info("model %r: no shared dynamic first axis on its inputs and outputs, so it "
                     "is served without batching (max_batch 0)", cfg.name)
        if self.max_batch:  # clients see the batch axis as -1
            for t in (*self.inputs, *self.outputs):
                t.shape[0] = -1
        self.metrics = metrics.child(cfg.name, self.device) if metrics is not None else None
        self.batcher = Batcher(cfg.name, _run, instances, max_batch=self.max_batch,
                               max_delay_s=cfg.max_delay_ms / 1e3, batching=cfg.batching,
                               queue=cfg.queue, metrics=self.metrics)

    # -- requests ---------------------------------------------------------------------------
    def check(self, req: InferRequest) -> tuple[list[np.ndarray], int, list[tuple[int, bool]]]:
        """The request's arrays in the model's input order, its rows, and the outputs to send
        as (index, binary); a 400 naming the tensor and what was expected otherwise."""
        given = {t.name: t for t in req.inputs}
        want = {m.name for m in self.inputs}
        takes = ", ".join(m.describe() for m in self.inputs)
        for name in given:
            if name not in want:
                raise bad(f"model {self.name!r} has no input {name!r}; it takes {takes}")
        arrays, rows, symbols = [], None, {}
        for m in self.inputs:
            t = given.get(m.name)
            if t is None:
                raise bad(f"model {self.name!r} needs input {m.describe()}; the request lacks "
                          f"it")
            if t.datatype != m.datatype:
                raise bad(f"input {m.name!r} of model {self.name!r} has datatype "
                          f"{t.datatype}, expected {m.datatype}")
            if len(t.shape) != len(m.shape) or any(e != -1 and e != d
                                                   for e, d in zip(m.shape, t.shape)):
                raise bad(f"input {m.name!r} of model {self.name!r} has shape {t.shape}, "
                          f"expected {m.shape} (-1: any size)")
            for i, (sym, d) in enumerate(zip(m.dims, t.shape)):
                if i == 0 and self.max_batch:
                    continue
                if not isinstance(sym, int) and sym is not None \
                        and symbols.setdefault(sym, (d, m.name))[0] != d:
                    raise bad(f"dynamic dim {sym!r} is {symbols[sym][0]} in input "
                              f"{symbols[sym][1]!r} and {d} in input {m.name!r}; it must be "
                              f"the same in every input")
            if self.max_batch:
                n = t.shape[0]
                if n < 1 or n > self.max_batch:
                    raise bad(f"input {m.name!r} of model {self.name!r} has {n} rows (shape "
                              f"{t.shape}); a request holds 1 to max_batch {self.max_batch}")
                if rows is not None and n != rows:
                    raise bad(f"input {m.name!r} has {n} rows and another input {rows}; every "
                              f"input of a request holds the same number of rows")
                rows = n
            arrays.append(t.array())
        if req.outputs is None:
            outs = [(i, req.binary_output) for i in range(len(self.outputs))]
        else:
            outs = []
            for name, binary in req.outputs:
                if name not in self._outputs_by_name:
                    has = ", ".join(repr(o.name) for o in self.outputs)
                    raise bad(f"model {self.name!r} has no output {name!r}; its outputs: {has}")
                outs.append((self._outputs_by_name[name], binary))
        return arrays, rows or 1, outs

    # -- descriptions -----------------------------------------------------------------------
    def metadata(self) -> dict:
        return {"name": self.name, "versions": [self.version], "platform": "hal",
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}

    def triton_config(self) -> dict:
        """The model's configuration in the shape of Triton's ``/config`` answer."""
        cfg = self.config
        skip = 1 if self.max_batch else 0

        def tensors(ts):
            return [{"name": t.name, "data_type": "TYPE_" + ("STRING" if t.datatype == "BYTES"
                                                              else t.datatype),
                     "dims": t.shape[skip:]} for t in ts]

        kind = self.device.split(":")[0].split("@")[0]
        out = {"name": self.name, "platform": "hal", "backend": "hal",
               "max_batch_size": self.max_batch, "input": tensors(self.inputs),
               "output": tensors(self.outputs),
               "instance_group": [{"count": len(self.instances),
                                   "kind": "KIND_CPU" if kind == "cpu" else "KIND_GPU"
                                   if kind in ("cuda", "gpu", "rocm") else "KIND_MODEL"}],
               "parameters": {"device": {"string_value": self.device},
                              **({"precision": {"string_value": cfg.precision}}
                                 if cfg.precision else {})},
               "hal": cfg.settings()}
        if self.batcher.batching:
            out["dynamic_batching"] = {
                "max_queue_delay_microseconds": int(cfg.max_delay_ms * 1000),
                "default_queue_policy": {"max_queue_size": cfg.queue,
                                         **({"default_timeout_microseconds":
                                             int(cfg.timeout_s * 1e6)} if cfg.timeout_s else {})}}
        return out


def _batch_axis(ins: list[TensorSpec], outs: list[TensorSpec]) -> bool:
    """Every input and output starts with the same dynamic dim: requests can be stacked."""
    firsts = {s.shape[0] if s.shape else 0 for s in (*ins, *outs)}
    return len(firsts) == 1 and isinstance(next(iter(firsts)), str)


def _run(instance: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
    try:
        return [np.asarray(o) for o in instance(*arrays)]
    except InputError as exc:
        raise bad(str(exc)) from None
    except HalError as exc:
        raise ServeError(500, f"{type(exc).__name__}: {exc}", reason="error") from None


def load(cfg: ModelConfig, metrics=None) -> Served:
    """Compile ``cfg`` and wrap it for serving (blocking: run it off the event loop)."""
    cfg.check()
    return Served(cfg, compile_instances(cfg), metrics)


# -- the repository ---------------------------------------------------------------------------

class Repository:
    """Every model the server knows: configured ones, and a repository folder's."""

    def __init__(self, configs: list[ModelConfig], path: str | Path | None = None,
                 defaults: dict | None = None, metrics=None):
        self.path = Path(path) if path is not None else None
        self.defaults = dict(defaults or {})
        self.metrics = metrics
        self.configs: dict[str, ModelConfig] = {}
        for cfg in configs:
            cfg.check()
            if cfg.name in self.configs:
                raise OptionError(f"two models are named {cfg.name!r}; serve the same model "
                                  f"twice (e.g. on two devices) from a repository folder, one "
                                  f"folder per name")
            self.configs[cfg.name] = cfg
        self.models: dict[str, Served] = {}
        self.states: dict[str, tuple[str, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing: list[asyncio.Task] = []

    def available(self) -> dict[str, Any]:
        """name -> ModelConfig (or why it cannot load): the configured models and the
        repository folder as it is now."""
        out: dict[str, Any] = {}
        if self.path is not None:
            out.update(read_repository(self.path, self.defaults))
        for name, cfg in self.configs.items():
            if name in out:
                raise OptionError(f"model {name!r} is both given and a folder of the "
                                  f"repository {str(self.path)!r}; give it once")
            out[name] = cfg
        return out

    def load_all(self, progress=None) -> None:
        """Compile every available model now (at start-up), failing on the first error."""
        for name, cfg in self.available().items():
            if isinstance(cfg, str):
                raise OptionError(cfg)
            if progress is not None:
                progress(cfg)
            self.models[name] = load(cfg, self.metrics)
            self.states[name] = ("READY", "")

    def get(self, name: str, version: str | None = None) -> Served:
        served = self.models.get(name)
        if served is None:
            state, reason = self.states.get(name, (None, ""))
            if state == "LOADING":
                raise ServeError(503, f"model {name!r} is loading; retry",
                                 {"Retry-After": "1"}, reason="unavailable")
            if state is not None:
                raise ServeError(404, f"model {name!r} is not loaded ({state.lower()}"
                                      f"{': ' + reason if reason else ''}); POST "
                                      f"/v2/repository/models/{name}/load loads it")
            known = ", ".join(sorted(self.models)) or "none"
            raise ServeError(404, f"unknown model {name!r}; this server serves: {known}")
        if version not in (None, "", served.version):
            raise ServeError(404, f"model {name!r} has no version {version!r}; it has version "
                                  f"{served.version!r}")
        return served

    def ready(self) -> bool:
        return all(state == "READY" for state in (s for s, _ in self.states.values())
                   if state != "UNAVAILABLE") and bool(self.models)

    def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: every model with its state and the reason."""
        try:
            names = set(self.available())
        except OptionError:
            names = set()
        names |= set(self.states)
        out = []
        for name in sorted(names):
            state, reason = self.states.get(name, ("UNAVAILABLE", "not loaded"))
            if ready_only and state != "READY":
                continue
            entry = {"name": name, "state": state}
            if state == "READY":
                entry["version"] = VERSION
            if reason:
                entry["reason"] = reason
            out.append(entry)
        return out

    async def load(self, name: str, override: dict | None = None) -> None:
        """(Re)compile ``name`` from its config (read again from the repository) and swap it
        in; the old one finishes its queue in the background."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                cfg = self.available().get(name)
            except OptionError as exc:
                raise ServeError(400, str(exc)) from None
            if cfg is None:
                where = f" nor a folder of {str(self.path)!r}" if self.path else ""
                raise ServeError(404, f"unknown model {name!r}: it is neither configured{where}")
            if isinstance(cfg, str):
                self.states[name] = ("UNAVAILABLE", cfg)
                raise ServeError(400, f"model {name!r} cannot load: {cfg}")
            if override:
                unknown = sorted(set(override) - set(OVERRIDE_KEYS))
                if unknown:
                    raise ServeError(400, f"the load request's config sets {unknown}; it may "
                                          f"set {', '.join(OVERRIDE_KEYS)}")
                try:
                    cfg = replace(cfg, **override).check()
                except (OptionError, TypeError) as exc:
                    raise ServeError(400, f"the load request's config: {exc}") from None
            old = self.models.get(name)
            if old is None:
                self.states[name] = ("LOADING", "")
            try:
                served = await asyncio.to_thread(load, cfg, self.metrics)
            except HalError as exc:
                if old is None:
                    self.states[name] = ("UNAVAILABLE", f"{type(exc).__name__}: {exc}")
                raise ServeError(400, f"model {name!r} failed to load: "
                                      f"{type(exc).__name__}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - a backend's own failure
                log.exception("loading model %r failed", name)
                if old is None:
                    self.states[name] = ("UNAVAILABLE", f"{type(exc).__name__}: {exc}")
                raise ServeError(500, f"model {name!r} failed to load: "
                                      f"{type(exc).__name__}: {exc}") from None
            self.models[name] = served
            self.states[name] = ("READY", "")
            if old is not None:
                self._retire(old)

    async def unload(self, name: str) -> None:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            served = self.models.pop(name, None)
            if served is None:
                if name in self.states or name in self.available():
                    return  # unloading what is not loaded: nothing to do, as in Triton
                raise ServeError(404, f"unknown model {name!r}")
            self.states[name] = ("UNAVAILABLE", "unloaded")
            self._retire(served)

    def _retire(self, served: Served) -> None:
        task = asyncio.get_running_loop().create_task(served.batcher.close())
        self._closing.append(task)
        task.add_done_callback(self._closing.remove)

    async def close(self) -> None:
        """Finish every queued request of every model, then stop (graceful shutdown)."""
        await asyncio.gather(*(m.batcher.close() for m in self.models.values()),
                             *list(self._closing), return_exceptions=True)


def request_timeout(req: InferRequest, served: Served) -> float | None:
    """The request's timeout in seconds: its ``timeout`` parameter (microseconds, as in
    Triton) or the model's ``timeout_s``, whichever is shorter."""
    own = req.parameters.get("timeout")
    if own is not None:
        if isinstance(own, bool) or not isinstance(own, (int, float)) or own <= 0 \
                or not math.isfinite(own):
            raise bad(f"the request's timeout parameter is in microseconds, > 0; got {own!r}")
        own = own / 1e6
    limits = [t for t in (own, served.config.timeout_s) if t is not None]
    return min(limits) if limits else None
