"""ONNX external data, read only from inside the model's own folder.

A tensor may keep its bytes in another file (``data_location = EXTERNAL``, ``location`` a
path relative to the .onnx file). A downloaded model must not make HAL read any other file on
the machine, so a location that is absolute, climbs out with ``..``, or resolves outside the
model's folder through a symlink is refused before anything is opened, and the offset and
length must lie inside the data file and match the tensor's size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from hal.errors import ModelError
from hal.ir.limits import human, max_tensor_bytes

_ALLOWED_KEYS = ("location", "offset", "length", "checksum", "basepath")


def tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers and attribute tensors, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from tensors(a.g)
            for g in a.graphs:
                yield from tensors(g)


def external(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]


def _info(t: onnx.TensorProto) -> dict[str, str]:
    info = {e.key: e.value for e in t.external_data}
    unknown = sorted(set(info) - set(_ALLOWED_KEYS))
    if unknown:
        raise ModelError(f"tensor {t.name!r}: unknown external data keys {unknown}; the model "
                         f"file is corrupt or written by a tool HAL does not know")
    return info


def resolve(t: onnx.TensorProto, folder: Path) -> Path:
    """The file holding ``t``'s bytes, refused unless it lies inside ``folder``."""
    location = _info(t).get("location", "")
    fix = ("keep the data file next to the .onnx file and name it by a relative path "
           "(onnx.save_model(..., save_as_external_data=True) does)")
    if not location:
        raise ModelError(f"tensor {t.name!r} keeps its data externally but names no location")
    if "\0" in location:
        raise ModelError(f"tensor {t.name!r}: external data location {location!r} holds a NUL "
                         f"byte; the model file is corrupt")
    if os.path.isabs(location) or Path(location).is_absolute() or location.startswith(("/", "\\")) \
            or (len(location) > 1 and location[1] == ":"):
        raise ModelError(f"tensor {t.name!r}: external data location {location!r} is an absolute "
                         f"path; HAL reads external data only from the model's folder: {fix}")
    if ".." in Path(location.replace("\\", "/")).parts:
        raise ModelError(f"tensor {t.name!r}: external data location {location!r} climbs out of "
                         f"the model's folder with '..'; refused: {fix}")
    root = folder.resolve()
    path = (folder / location).resolve()
    if path != root and root not in path.parents:
        raise ModelError(f"tensor {t.name!r}: external data location {location!r} resolves "
                         f"outside the model's folder (through a symlink); refused: {fix}")
    if not path.is_file():
        raise ModelError(f"tensor {t.name!r}: external data file {location!r} does not exist "
                         f"next to the model; copy it into the model's folder")
    return path


def _expected_bytes(t: onnx.TensorProto) -> int | None:
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:  # noqa: BLE001 - an unknown or string type: the size is not fixed
        return None
    if t.data_type in (onnx.TensorProto.STRING,) or any(d < 0 for d in t.dims):
        return None
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (int(np.prod(t.dims, dtype=object)) + 1) // 2
    return int(np.prod(t.dims, dtype=object)) * itemsize


def load_into(model: onnx.ModelProto, folder: Path | None, where: str) -> None:
    """Read every external tensor of ``model`` into memory, from files inside ``folder``."""
    found = external(model)
    if not found:
        return
    if folder is None:
        raise ModelError(f"{where} keeps tensor {found[0].name!r} (and {len(found) - 1} more) in "
                         f"external data files; load it from its .onnx path so HAL knows the "
                         f"folder those files are in")
    limit = max_tensor_bytes()
    for t in found:
        path = resolve(t, folder)
        info = _info(t)
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise ModelError(f"tensor {t.name!r}: external data offset/length are not integers "
                             f"({info.get('offset')!r}, {info.get('length')!r})") from None
        size = path.stat().st_size
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelError(f"tensor {t.name!r}: external data at offset {offset}, length "
                             f"{length} lies outside {path.name!r} ({size} bytes); the data file "
                             f"is truncated or belongs to another model")
        expected = _expected_bytes(t)
        if expected is not None and expected != length:
            raise ModelError(f"tensor {t.name!r} of shape {list(t.dims)} needs {expected} bytes "
                             f"but its external data holds {length}; the data file does not "
                             f"match the model")
        if length > limit:
            raise ModelError(f"tensor {t.name!r} holds {human(length)} of external data, more "
                             f"than HAL_MAX_TENSOR_BYTES ({human(limit)}); raise the limit if "
                             f"the model is trusted and this much memory is available")
        with open(path, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length)
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]
