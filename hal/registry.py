"""Backend discovery (entry points), device probing, and device-string resolution.

Discovery is lazy: nothing is imported until a device is asked for. A backend
whose import, instantiation or probe raises is isolated: it is listed as broken
with its error, and every other device keeps working.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points

from hal.backend import Backend, Device
from hal.device import DeviceInfo, DeviceSpec
from hal.errors import BackendError, DeviceNotFound, HalError

log = logging.getLogger("hal")

GROUP = "hal.backends"


@dataclass
class BackendRecord:
    """One registered backend: loaded, or broken with the error that broke it."""

    name: str
    source: str  # "module:Class" of the entry point, or "in-process"
    backend: Backend | None = None
    error: str = ""
    devices: list[DeviceInfo] | None = None  # probe result, cached

    @property
    def broken(self) -> bool:
        return self.backend is None


class Registry:
    def __init__(self) -> None:
        self._records: dict[str, BackendRecord] | None = None
        self._lock = threading.RLock()
        self._resolved: dict[str, Device] = {}

    # -- discovery ---------------------------------------------------------
    def _discover(self) -> dict[str, BackendRecord]:
        with self._lock:
            if self._records is None:
                self._records = {}
                for ep in entry_points(group=GROUP):
                    if ep.name in self._records:
                        continue  # first one wins; duplicates are the same package seen twice
                    self._records[ep.name] = self._load(ep)
            return self._records

    @staticmethod
    def _load(ep) -> BackendRecord:
        rec = BackendRecord(name=ep.name, source=ep.value)
        try:
            cls = ep.load()
            backend = cls() if isinstance(cls, type) else cls
            _check_backend(backend, ep.name)
            rec.backend = backend
        except Exception as exc:  # a plugin must never take HAL down
            rec.error = f"failed to load {ep.value}: {type(exc).__name__}: {exc}"
            log.warning("backend %s is broken: %s", ep.name, rec.error)
            log.debug("%s", traceback.format_exc())
        return rec

    def register(self, backend: Backend | type[Backend], replace: bool = False) -> Backend:
        """Register a backend in this process (tests, notebooks)."""
        obj = backend() if isinstance(backend, type) else backend
        _check_backend(obj, getattr(obj, "name", "?"))
        with self._lock:
            records = self._discover()
            if obj.name in records and not replace:
                raise HalError(f"a backend named {obj.name!r} is already registered "
                               f"({records[obj.name].source}); pass replace=True to override it")
            records[obj.name] = BackendRecord(name=obj.name, source="in-process", backend=obj)
            self._resolved.clear()
        return obj

    def unregister(self, name: str) -> None:
        with self._lock:
            self._discover().pop(name, None)
            self._resolved.clear()

    def reset(self) -> None:
        """Forget everything discovered and probed (re-read entry points next time)."""
        with self._lock:
            self._records = None
            self._resolved.clear()

    def records(self) -> list[BackendRecord]:
        return list(self._discover().values())

    def backend(self, name: str) -> Backend:
        rec = self._discover().get(name)
        if rec is None:
            known = ", ".join(sorted(self._discover())) or "none"
            raise DeviceNotFound(f"no backend named {name!r} is registered (known: {known})")
        if rec.broken:
            raise BackendError(f"backend {name!r} is broken: {rec.error}")
        return rec.backend

    # -- probing -----------------------------------------------------------
    def _probe(self, rec: BackendRecord) -> list[DeviceInfo]:
        with self._lock:
            if rec.devices is not None:
                return rec.devices
            b = rec.backend
            if b is None:
                rec.devices = []
                return rec.devices
            missing = b.missing_requirements()
            if missing:
                hint = b.install_hint or f"pip install {' '.join(missing)}"
                rec.devices = [b.unusable(k, f"{', '.join(missing)} not installed: {hint}")
                               for k in b.kinds]
                return rec.devices
            try:
                found = list(b.probe())
                for d in found:
                    if not isinstance(d, DeviceInfo):
                        raise TypeError(f"probe() returned {type(d).__name__}, not DeviceInfo")
                    if d.backend not in b.variants:
                        d.backend = b.name
                    d.thread_safe = d.thread_safe and b.thread_safe
                rec.devices = found
            except Exception as exc:
                rec.error = f"probe failed: {type(exc).__name__}: {exc}"
                log.warning("backend %s is broken: %s", rec.name, rec.error)
                rec.devices = []
            return rec.devices

    def devices(self) -> list[DeviceInfo]:
        """Every known device, usable or not, plus one entry per broken backend."""
        out: list[DeviceInfo] = []
        for rec in self.records():
            devs = self._probe(rec)
            if rec.error:
                out.append(DeviceInfo(kind=(rec.backend.kinds[0] if rec.backend and rec.backend.kinds
                                            else "?"),
                                      index=0, backend=rec.name, usable=False,
                                      reason=f"broken plugin: {rec.error}",
                                      details={"broken": True, "source": rec.source}))
            out.extend(devs)
        return out

    def usable(self) -> list[DeviceInfo]:
        return [d for d in self.devices() if d.usable]

    # -- resolution --------------------------------------------------------
    def _order(self) -> list[BackendRecord]:
        """Backends that may serve a bare kind, best first (HAL_BACKENDS restricts and orders)."""
        recs = [r for r in self.records() if not r.broken]
        env = os.environ.get("HAL_BACKENDS", "").strip()
        if env:
            wanted = [n.strip() for n in env.split(",") if n.strip()]
            unknown = [n for n in wanted if n not in {r.name for r in recs}]
            if unknown:
                raise DeviceNotFound(f"HAL_BACKENDS names unknown or broken backends {unknown}; "
                                     f"known: {sorted(r.name for r in recs)}")
            by_name = {r.name: r for r in recs}
            return [by_name[n] for n in wanted]
        return sorted(recs, key=lambda r: -r.backend.priority)

    def serving(self, kind: str) -> list[Backend]:
        """The backends that may serve a bare ``kind``, best priority first (HAL_BACKENDS
        restricts and orders them), without probing any: measured selection
        (``hal.selection``) keys its cache on this list and probes only on a miss."""
        return [r.backend for r in self._order() if kind in r.backend.kinds]

    def resolve(self, device: str | Device | DeviceInfo) -> Device:
        """Turn a device string into a usable Device, or raise DeviceNotFound saying why."""
        if isinstance(device, Device):
            return device
        if isinstance(device, DeviceInfo):
            device = device.string
        spec = DeviceSpec.parse(device)
        key = str(spec)
        with self._lock:
            if key in self._resolved:
                return self._resolved[key]
            dev = self._resolve(spec, device)
            if dev.info.alias_of and dev.info.alias_of != dev.string:
                dev = self.resolve(dev.info.alias_of)
            # every spelling of one device is one object, so buffers and counters are shared
            dev = self._resolved.setdefault(dev.string, dev)
            self._resolved[key] = dev
            return dev

    def _resolve(self, spec: DeviceSpec, text: str) -> Device:
        index = spec.index or 0
        if spec.backend:
            # "fpga@emu": a backend whose devices carry the variant "emu" serves it; else the
            # backend named "emu"
            serving = [r for r in self.records() if not r.broken
                       and spec.backend in r.backend.variants and spec.kind in r.backend.kinds]
            rec = self._discover().get(spec.backend)
            if serving:
                candidates = serving
            elif rec is None:
                raise self._not_found(text, f"no backend named {spec.backend!r} is registered")
            elif rec.broken:
                raise self._not_found(text, f"backend {spec.backend!r} is broken: {rec.error}")
            else:
                candidates = [rec]
        else:
            candidates = [r for r in self._order() if spec.kind in r.backend.kinds]
            if not candidates:
                raise self._not_found(text, f"no registered backend serves kind {spec.kind!r}")
        reasons = []
        for rec in candidates:
            devs = [d for d in self._probe(rec) if d.kind == spec.kind
                    and (not spec.backend or d.backend == spec.backend)]
            if rec.error:
                reasons.append(f"{rec.name}: {rec.error}")
                continue
            match = [d for d in devs if d.index == index]
            usable = [d for d in match if d.usable]
            real = [d for d in usable if not d.simulated]
            if usable and spec.backend:
                return Device(rec.backend, usable[0])
            if real:
                return Device(rec.backend, real[0])
            reasons += [f"{d.string} is simulated and never serves a bare {spec.kind!r}; ask for "
                        f"it by name ({spec.kind}@{d.backend})" for d in usable]
            reasons += [f"{d.string}: {d.reason}" for d in match if not d.usable]
            if match:
                continue
            if devs:
                reasons.append(f"{rec.name}: no {spec.kind} device with index {index} "
                               f"(has {sorted(d.index for d in devs)})")
            else:
                reasons.append(f"{rec.name}: serves no {spec.kind!r} devices")
        raise self._not_found(text, "; ".join(reasons))

    def _not_found(self, text: str, why: str) -> DeviceNotFound:
        usable = [d.string + (" (simulated)" if d.simulated else "") for d in self.usable()]
        return DeviceNotFound(f"device {text!r} is not usable: {why}. "
                              f"Usable devices: {', '.join(usable) or 'none'}. "
                              f"Run `hal devices` to see every device and why it is or is not usable.")

    def known_ops(self) -> set[str]:
        ops: set[str] = set()
        for rec in self.records():
            if rec.backend is not None:
                ops |= set(rec.backend.ops)
        return ops


def _check_backend(b: object, name: str) -> None:
    if not isinstance(b, Backend):
        raise TypeError(f"{name}: {type(b).__name__} is not a hal.Backend subclass")
    if not b.name or not b.kinds:
        raise TypeError(f"{name}: a backend must set `name` and `kinds`")


REGISTRY = Registry()


def devices() -> list[DeviceInfo]:
    return REGISTRY.devices()


def device(text: str) -> Device:
    return REGISTRY.resolve(text)


def register_backend(backend: Backend | type[Backend], replace: bool = False) -> Backend:
    return REGISTRY.register(backend, replace=replace)
