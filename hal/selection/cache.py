"""The on-disk memory of measured selection: which backend won for a model on this machine.

An entry is one JSON file in ``$HAL_CACHE_DIR/selection`` (default ``~/.cache/hal/selection``,
created private, 0o700), named by the hash of its key. The key holds everything that can
change the answer: the model's content, the input shapes and dtypes timed, the compile
options, HAL's version, each candidate backend's runtime versions and the machine. A change
to any of them is a miss, so the choice is measured again. Entries are written atomically
(a temporary file, then ``os.replace``) with their SHA-256 (``hal.diskcache``); one that
cannot be read, has been altered or does not match its key is ignored (and measured
again), never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from hal import diskcache
from hal.backend import Backend
from hal.version import __version__

log = logging.getLogger("hal")

#: bumped when the entry's layout or the measuring method changes: older entries then miss
FORMAT = 2


def cache_dir() -> Path:
    """``$HAL_CACHE_DIR/selection``, or ``~/.cache/hal/selection``; created private."""
    return diskcache.folder("selection")


def model_hash(proto_bytes: bytes) -> str:
    return hashlib.sha256(proto_bytes).hexdigest()


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def runtime_versions(backend: Backend) -> dict[str, str]:
    """The installed version of each Python package ``backend`` names in ``requires`` (an
    upgrade of any of them invalidates the choices it took part in). Read from the package
    metadata: nothing is imported."""
    out = {}
    for module in backend.requires:
        top = module.split(".")[0]
        for dist in _distributions().get(top, [top]):
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[dist] = "not installed"
    return out


@functools.lru_cache(maxsize=1)
def machine_fingerprint() -> dict[str, Any]:
    """What about this machine can change which backend is fastest: the CPU model and
    its features, the CPUs this process may use, the OS and the Python."""
    cpu, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = (part.strip() for part in line.partition(":"))
                if name == "model name" and not cpu:
                    cpu = value
                elif name == "flags" and not flags:
                    flags = hashlib.sha256(value.encode()).hexdigest()[:16]
    except OSError:
        pass
    cpu = cpu or platform.processor()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"machine": platform.machine(), "system": platform.system(), "cpu": cpu,
            "cpu_flags": flags, "cpus": os.cpu_count() or 0, "usable_cpus": usable,
            "python": platform.python_version()}


def make_key(model_sha: str, shapes: list, options: dict, kind: str,
             backends: list[Backend]) -> dict:
    """The key of one decision (JSON-ready, compared in full on every read)."""
    return {"format": FORMAT, "hal": __version__, "model_sha256": model_sha,
            "inputs": shapes, "options": options, "kind": kind,
            "backends": {b.name: runtime_versions(b) for b in backends},
            "machine": machine_fingerprint()}


def _path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return cache_dir() / f"{digest[:32]}.json"


def load(key: dict) -> dict | None:
    """The stored decision for ``key``, or None (none yet, or an entry that is unreadable,
    altered or does not match: it is then measured again and overwritten)."""
    try:
        path = _path(key)
        with diskcache.locked(path):
            data = diskcache.read_bytes(path)
    except OSError as exc:
        log.warning("cannot read the selection cache (%s); measuring", exc)
        return None
    if data is None:
        return None
    try:
        entry = json.loads(data)
    except ValueError as exc:
        log.warning("ignoring the unreadable selection cache entry %s (%s); measuring again",
                    path.name, exc)
        return None
    stored = entry.get("key") if isinstance(entry, dict) else None
    if stored != json.loads(json.dumps(key, default=str)) or \
            not isinstance(entry.get("winner"), str) or \
            not isinstance(entry.get("candidates"), list):
        log.warning("ignoring the selection cache entry %s: it does not match its key or "
                    "lacks a winner; measuring again", path.name)
        return None
    return entry


def store(key: dict, decision: dict) -> Path:
    """Write ``decision`` for ``key`` atomically, with its hash; returns the entry's path."""
    path = _path(key)
    data = json.dumps({"key": key, **decision}, indent=1, default=str).encode()
    with diskcache.locked(path):
        diskcache.write_bytes(path, data)
    return path
