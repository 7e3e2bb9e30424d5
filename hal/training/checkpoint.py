"""Training checkpoints: safetensors files (named arrays, no pickle) written atomically and
verified before use.

A checkpoint holds the trainer's ``state()`` as tensors and, in the header's metadata, the
loop's own state (epoch, step, data position, the shuffling generator's state, history),
what it was made from (backend, model hash, parameter names and shapes, the run's settings)
and a digest of every tensor, so a truncated, corrupt or mismatched file is an error that
names the file and what does not match, never a silent restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hal.errors import HalError

FORMAT = "hal.training.checkpoint"
VERSION = "1"
LAST = "last.safetensors"
BEST = "best.safetensors"


class CheckpointError(HalError):
    """A checkpoint file is unreadable, corrupt or belongs to another run."""


@dataclass
class Checkpoint:
    path: Path
    tensors: dict[str, np.ndarray]
    meta: dict  # the JSON values of the header's metadata, by key


def digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.asarray(tensors[name], order="C")  # keeps 0-d arrays 0-d
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``tensors`` and ``meta`` (JSON values) to ``path`` atomically: a temporary file in
    the same folder, flushed to disk, then renamed over ``path``."""
    from safetensors.numpy import save as to_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}
    header = {k: json.dumps(v) for k, v in meta.items()}
    header.update(format=FORMAT, version=VERSION, digest=digest(arrays))
    data = to_bytes(arrays, metadata=header)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint; CheckpointError says what is wrong with which file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as from_bytes

    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        tensors = from_bytes(data)
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, struct.error) as exc:
        raise CheckpointError(f"{where} is truncated or corrupt (not a readable safetensors "
                              f"file: {exc}); delete it or resume from another one") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{where} is a safetensors file but not a HAL training "
                              f"checkpoint (no {FORMAT!r} metadata)")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{where} has checkpoint format version {header.get('version')!r}; "
                              f"this HAL reads version {VERSION}")
    if header.get("digest") != digest(tensors):
        raise CheckpointError(f"{where} is corrupt: its tensors do not match the digest written "
                              f"with them; delete it or resume from another one")
    try:
        meta = {k: json.loads(v) for k, v in header.items()
                if k not in ("format", "version", "digest")}
    except ValueError:
        raise CheckpointError(f"{where} is corrupt: its metadata is not valid JSON") from None
    return Checkpoint(path, tensors, meta)


def check_matches(ckpt: Checkpoint, expected: dict) -> None:
    """Raise CheckpointError naming the file and every entry of ``expected`` (metadata key ->
    this run's value) that the checkpoint disagrees with."""
    expected = json.loads(json.dumps(expected))  # as the file holds it (tuples are lists)
    wrong = [f"{key}: checkpoint {ckpt.meta.get(key)!r}, this run {value!r}"
             for key, value in expected.items() if ckpt.meta.get(key) != value]
    if wrong:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r} belongs to another run ("
                              + "; ".join(wrong) + "); resume with the same model, backend and "
                              "settings, or start anew with resume=False")
