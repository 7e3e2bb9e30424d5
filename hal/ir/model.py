"""``hal.Model``: a validated-on-compile ONNX graph held with onnx_ir, plus load/save."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnx_ir as ir

from hal.errors import ModelError
from hal.ir import external_data
from hal.ir.limits import human, max_model_bytes

#: The one opset HAL's IR speaks; older models are converted to it on load.
DEFAULT_OPSET = 21
#: The oldest opset HAL converts from.
MIN_OPSET = 9
IR_VERSION = 10
#: ``Model.calibration``: returns (int8 calibration inputs, where they come from in words)
Calibration = Callable[[], tuple[Any, str]]


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings for symbolic dims such as the batch) and dtype."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


def _value_spec(v: ir.Value) -> TensorSpec:
    shape: tuple[int | str | None, ...] = ()
    if v.shape is not None:
        shape = tuple(d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None)
                      for d in v.shape)
    dtype = np.dtype(v.dtype.numpy()) if v.dtype is not None else np.dtype("float32")
    return TensorSpec(v.name or "", shape, dtype)


class Model:
    """A neural network in HAL's IR. Compile it with ``hal.compile``.

    ``Model`` owns its ``ir.Model``; HAL's passes always work on a copy, so a
    model a user holds is never modified by compiling it.

    ``calibration``: inputs the model brings to calibrate ``precision="int8"`` with when the
    caller passes none (a zoo model's own, set by ``hal.models.get``), or None. It is a
    function of no argument returning ``(arrays, source)``: the arrays as ``calibration=``
    takes them, and where they come from in words (``hal run --explain`` shows it). It is
    called only when needed, so a model whose calibration set is a data set loads it then.

    ``compression``: what ``hal.prune``/``hal.sparsify``/``hal.distill`` did to make this
    model (a report object whose ``str()`` is a table), or None.
    """

    def __init__(self, ir_model: ir.Model, name: str | None = None,
                 calibration: Calibration | None = None):
        self.ir = ir_model
        self.name = name or ir_model.graph.name or "model"
        self.calibration = calibration
        self.compression: Any = None

    @property
    def graph(self) -> ir.Graph:
        return self.ir.graph

    @property
    def opset(self) -> int:
        return self.ir.opset_imports.get("", DEFAULT_OPSET)

    @property
    def inputs(self) -> list[TensorSpec]:
        inits = set(self.graph.initializers)
        return [_value_spec(v) for v in self.graph.inputs if v.name not in inits]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_value_spec(v) for v in self.graph.outputs]

    def to_proto(self) -> onnx.ModelProto:
        return ir.to_proto(self.ir)

    def copy(self) -> Model:
        return Model(ir.from_proto(self.to_proto()), self.name, self.calibration)

    def digest(self) -> str:
        """A content hash (graph and weights), stable across processes."""
        return hashlib.sha256(self.to_proto().SerializeToString(deterministic=True)).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> None:
        save(self, path)

    def summary(self) -> str:
        return ir.to_onnx_text(self.ir) if hasattr(ir, "to_onnx_text") else str(self.ir)

    def __repr__(self) -> str:
        ins = ", ".join(str(s) for s in self.inputs)
        return f"<hal.Model {self.name!r} opset {self.opset}, {len(self.graph)} nodes, inputs ({ins})>"


def _read_proto(source: Any) -> onnx.ModelProto:
    limit = max_model_bytes()
    folder = None
    if isinstance(source, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)  # never touch what the user passed in
        external_data.load_into(proto, None, "the onnx.ModelProto")
        return proto
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        where = "the given bytes"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ModelError(f"model file {str(path)!r} does not exist")
        if path.is_dir():
            raise ModelError(f"{str(path)!r} is a directory; pass the path of an .onnx file")
        where = f"file {str(path)!r}"
        size = path.stat().st_size
        if size > limit:
            raise ModelError(f"{where} is {human(size)}, more than HAL_MAX_MODEL_BYTES "
                             f"({human(limit)}); raise the limit if the file is trusted")
        data = path.read_bytes()
        folder = path.parent
    else:
        raise ModelError(f"cannot load a model from {type(source).__name__}; pass an .onnx path, "
                         f"bytes, an onnx.ModelProto, a hal.Model or a hal.nn.Module")
    if not data:
        raise ModelError(f"{where} is empty; it is not an ONNX model")
    if len(data) > limit:
        raise ModelError(f"{where} hold {human(len(data))}, more than HAL_MAX_MODEL_BYTES "
                         f"({human(limit)}); raise the limit if the model is trusted")
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:
        raise ModelError(f"{where} is not a valid ONNX model (corrupt or truncated?): "
                         f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if not proto.HasField("graph") or len(proto.graph.node) == 0 and not proto.graph.output:
        raise ModelError(f"{where} parsed but holds no graph; it is corrupt or not an ONNX model")
    external_data.load_into(proto, folder, where)
    return proto


def _convert_opset(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    versions = {o.domain: o.version for o in proto.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        raise ModelError(f"{where} imports no default-domain opset; HAL needs ONNX opset "
                         f"{MIN_OPSET}..{DEFAULT_OPSET}")
    if version == DEFAULT_OPSET:
        return proto
    if version < MIN_OPSET:
        raise ModelError(f"{where} uses opset {version}; HAL converts opset {MIN_OPSET} and newer. "
                         f"Re-export the model at opset {DEFAULT_OPSET}")
    from onnx import version_converter

    _check_before_converting(proto, version, where)
    try:
        return version_converter.convert_version(proto, DEFAULT_OPSET)
    except Exception as exc:
        direction = "down" if version > DEFAULT_OPSET else "up"
        raise ModelError(f"{where} uses opset {version} and could not be converted {direction} to "
                         f"HAL's opset {DEFAULT_OPSET}: {str(exc).splitlines()[0][:300]}. "
                         f"Re-export the model at opset {DEFAULT_OPSET}") from None


def _root_cause(exc: BaseException) -> str:
    """The innermost error of a chain: onnx_ir wraps the one that says what is wrong."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _check_before_converting(proto: onnx.ModelProto, version: int, where: str) -> None:
    """onnx's version converter assumes well-formed nodes and crashes the process on some
    others (an attribute of the wrong type), so each node is checked against its schema at the
    model's own opset first."""
    from hal.ir.validate_structure import check_node

    try:
        graph = ir.from_proto(proto).graph
    except Exception as exc:
        raise ModelError(f"{where} could not be read: {_root_cause(exc)}") from None
    for node in graph:
        try:
            check_node(node, version)
        except ModelError as exc:
            raise ModelError(f"{where} uses opset {version} and cannot be converted to HAL's "
                             f"opset {DEFAULT_OPSET}: {exc}") from None


def from_proto(proto: onnx.ModelProto, name: str | None = None, where: str = "the model") -> Model:
    proto = _convert_opset(proto, where)
    try:
        model = ir.from_proto(proto)
    except Exception as exc:
        raise ModelError(f"{where} could not be read into HAL's IR: {_root_cause(exc)}") from None
    try:  # what HAL read it must be able to write back (every compile copies the model)
        ir.to_proto(model)
    except Exception as exc:
        raise ModelError(f"{where} holds something HAL cannot write back (a corrupt string or "
                         f"tensor?): {_root_cause(exc)}") from None
    return Model(model, name or proto.graph.name or None)


def load(source: Any, name: str | None = None) -> Model:
    """Load an ONNX model (path, bytes or ModelProto), converting it to HAL's opset."""
    if isinstance(source, Model):
        return source.copy()
    if callable(getattr(source, "to_model", None)):  # a hal.nn.Module (the builder's, a layer up)
        raise ModelError("a hal.nn.Module needs its input shape: call module.to_model(shape) "
                         "or hal.compile(module, device, input_shape=...)")
    where = f"file {str(source)!r}" if isinstance(source, (str, os.PathLike)) else "the model"
    proto = _read_proto(source)
    if name is None and isinstance(source, (str, os.PathLike)):
        name = Path(source).stem
    return from_proto(proto, name, where)


def save(model: Model, path: str | os.PathLike | io.IOBase) -> None:
    """Write ``model`` as an .onnx file."""
    if not isinstance(model, Model):
        raise ModelError(f"hal.save expects a hal.Model, got {type(model).__name__}")
    data = model.to_proto().SerializeToString()
    if isinstance(path, io.IOBase):
        path.write(data)
        return
    Path(path).write_bytes(data)
