"""The Open Inference Protocol (KServe v2) over HTTP/REST, with Triton's binary tensor extension.

An inference request is JSON, optionally followed by raw tensor bytes: the header
``Inference-Header-Content-Length`` says how many leading bytes of the body are JSON, and an
input whose ``parameters`` hold ``binary_data_size`` takes that many bytes of what follows,
in the order the inputs are listed. A response is built the same way: an output asked for
with ``"parameters": {"binary_data": true}`` (or every output, when the request's
``parameters`` hold ``binary_data_output: true``) comes back as raw bytes after the JSON.

This module only turns bytes into arrays and arrays into bytes; what a model accepts is
checked in ``hal.serving.repository``. Every problem is a ``ServeError`` with the HTTP status
and a message naming the tensor and what was expected.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Open Inference Protocol datatypes and the numpy dtypes they travel as
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items() if k != "BYTES"}

HEADER_LENGTH = "Inference-Header-Content-Length"


class ServeError(Exception):
    """A request the server answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        #: the failure label of the metrics (invalid, unknown_model, overloaded, ...)
        self.reason = reason or {400: "invalid", 401: "unauthorized", 404: "not_found",
                                 413: "too_large", 503: "unavailable",
                                 504: "timeout"}.get(status, "error")


def bad(message: str) -> ServeError:
    return ServeError(400, message)


def datatype_of(dtype: Any) -> str:
    """The protocol's name for a numpy dtype (``BYTES`` for strings and objects)."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    try:
        return _BY_DTYPE[dt.newbyteorder("=")]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no Open Inference Protocol datatype "
                         f"(they are {', '.join(DATATYPES)})") from None


@dataclass
class Tensor:
    """One input of a request: its name, datatype and shape, and its data as sent (a JSON
    list, or a chunk of the binary part); ``array()`` decodes and checks it."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    binary: bool

    def array(self) -> np.ndarray:
        """The data as a numpy array of ``shape`` (a 400 when it does not hold that many)."""
        dtype, count = DATATYPES[self.datatype], math.prod(self.shape)
        if not self.binary:
            return _json_array(self.data, self.name, self.datatype, dtype, count) \
                .reshape(self.shape)
        if self.datatype == "BYTES":
            return _bytes_elements(self.data, self.name, count).reshape(self.shape)
        if len(self.data) != count * dtype.itemsize:
            raise bad(f"input {self.name!r} has shape {self.shape} and datatype "
                      f"{self.datatype}: {count} values of {dtype.itemsize} byte(s) make "
                      f"{count * dtype.itemsize} bytes, but its binary_data_size is "
                      f"{len(self.data)}")
        return np.frombuffer(self.data, dtype=dtype.newbyteorder("<")).reshape(self.shape)


@dataclass
class InferRequest:
    id: str | None
    parameters: dict
    inputs: list[Tensor]
    #: the outputs asked for, as (name, binary); None: every output
    outputs: list[tuple[str, bool]] | None
    #: how an output not listed in ``outputs`` is returned (``binary_data_output``)
    binary_output: bool = False
    extra: dict = field(default_factory=dict)


# -- bodies -----------------------------------------------------------------------------------

def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body under ``Content-Encoding`` gzip or deflate (refused past ``limit`` bytes)."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    enc = encoding.strip().lower()
    if enc not in ("gzip", "deflate"):
        raise ServeError(415, f"Content-Encoding {encoding!r} is not supported; send the body "
                              f"as is, gzip or deflate")
    d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise bad(f"the body is not valid {enc} data: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ServeError(413, f"the request body decompresses to more than the limit of "
                              f"{limit:,} bytes", reason="too_large")
    return out


#: responses smaller than this go as they are, whatever the client accepts: most HTTP
#: clients accept gzip by default, and compressing small tensors costs more CPU than the
#: bytes it saves take to send
COMPRESS_MIN_BYTES = 64 << 10


def compress(body: bytes, accept: str | None,
             min_bytes: int = COMPRESS_MIN_BYTES) -> tuple[bytes, str | None]:
    """``body`` compressed as the client's ``Accept-Encoding`` asks (gzip, then deflate),
    when it is at least ``min_bytes`` long."""
    if not accept or len(body) < min_bytes:
        return body, None
    tokens = {t.split(";")[0].strip().lower() for t in accept.split(",")}
    if "gzip" in tokens:
        c = zlib.compressobj(1, wbits=31)
        return c.compress(body) + c.flush(), "gzip"
    if "deflate" in tokens:
        return zlib.compress(body, 1), "deflate"
    return body, None


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """An inference request from its body and its ``Inference-Header-Content-Length``."""
    if header_length is None:
        head, rest = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise bad(f"{HEADER_LENGTH} is {header_length!r}; it must be the length in bytes "
                      f"of the JSON at the start of the body (0 to {len(body)})")
        head, rest = body[:n], memoryview(body)[n:]
    try:
        doc = json.loads(head)
    except RecursionError:
        raise bad("the request's JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        hint = "" if header_length is not None or not _looks_binary(head) else \
            f" (a body with binary tensor data needs the {HEADER_LENGTH} header)"
        raise bad(f"the request is not valid JSON: {exc}{hint}") from None
    if not isinstance(doc, dict):
        raise bad(f"the request must be a JSON object with \"inputs\", got "
                  f"{type(doc).__name__}")
    params = _params(doc.get("parameters"), "the request")
    if "classification" in params:
        raise bad("the classification extension is not supported: ask for the output tensor "
                  "and take its top classes on the client")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad("the request must have \"inputs\": a non-empty list of tensors, each with "
                  "\"name\", \"shape\", \"datatype\" and \"data\" (or binary data)")
    inputs, offset, seen = [], 0, set()
    for i, raw in enumerate(raw_inputs):
        t, offset = _input(raw, i, rest, offset)
        if t.name in seen:
            raise bad(f"input {t.name!r} appears more than once in the request")
        seen.add(t.name)
        inputs.append(t)
    if offset != len(rest):
        raise bad(f"{len(rest) - offset} byte(s) of binary data follow the JSON that no "
                  f"input's binary_data_size accounts for ({offset} of {len(rest)} used)")
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise bad("\"outputs\" must be a list of {\"name\": ..., \"parameters\": "
                      "{\"binary_data\": true|false}}")
        outputs, names = [], set()
        for raw in doc["outputs"]:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise bad(f"each requested output needs a \"name\", got {raw!r:.100}")
            p = _params(raw.get("parameters"), f"output {raw['name']!r}")
            if "classification" in p:
                raise bad(f"output {raw['name']!r}: the classification extension is not "
                          f"supported")
            if raw["name"] in names:
                raise bad(f"output {raw['name']!r} is asked for more than once")
            names.add(raw["name"])
            outputs.append((raw["name"], _flag(p, "binary_data", f"output {raw['name']!r}",
                                               _flag(params, "binary_data_output",
                                                     "the request", False))))
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise bad(f"\"id\" must be a string, got {type(rid).__name__}")
    return InferRequest(rid, params, inputs, outputs,
                        _flag(params, "binary_data_output", "the request", False))


def _looks_binary(head: bytes) -> bool:
    return b"binary_data_size" in head[:65536]


def _params(p: Any, what: str) -> dict:
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise bad(f"\"parameters\" of {what} must be a JSON object, got {type(p).__name__}")
    return p


def _flag(p: dict, key: str, what: str, default: bool) -> bool:
    v = p.get(key, default)
    if not isinstance(v, bool):
        raise bad(f"parameter {key!r} of {what} must be true or false, got {v!r}")
    return v


def _input(raw: Any, i: int, rest: memoryview | bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise bad(f"input #{i} needs a \"name\" (a string), got {str(raw)[:100]}")
    name = raw["name"]
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and d >= 0 for d in shape):
        raise bad(f"input {name!r} needs a \"shape\": a list of sizes >= 0, got {shape!r}")
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise bad(f"input {name!r} has datatype {datatype!r}; the protocol's datatypes are "
                  f"{', '.join(DATATYPES)}")
    params = _params(raw.get("parameters"), f"input {name!r}")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"binary_data_size of input {name!r} must be a byte count >= 0, got "
                      f"{size!r}")
        if "data" in raw:
            raise bad(f"input {name!r} has both \"data\" and binary_data_size; send one")
        if offset + size > len(rest):
            raise bad(f"input {name!r} declares binary_data_size {size} but only "
                      f"{len(rest) - offset} byte(s) of binary data remain after the JSON")
        return Tensor(name, datatype, shape, rest[offset:offset + size], True), offset + size
    if "data" not in raw:
        raise bad(f"input {name!r} has no \"data\" and no binary_data_size parameter")
    return Tensor(name, datatype, shape, raw["data"], False), offset


def _json_array(data: Any, name: str, datatype: str, dtype: np.dtype, count: int) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object).ravel()
            array = np.array([v.encode() if isinstance(v, str) else v for v in flat],
                             dtype=object)
            if any(not isinstance(v, bytes) for v in array):
                raise ValueError("BYTES data must be strings")
        else:
            array = np.asarray(data)
            if array.dtype == object or array.dtype.kind not in "biuf":
                raise ValueError(f"values of type {array.dtype} are not numbers")
            if datatype == "BOOL" and array.dtype.kind != "b":
                raise ValueError("BOOL data must be true or false")
            if dtype.kind in "iu" and array.size and array.dtype.kind == "f":
                raise ValueError(f"{datatype} data must be integers")
            if dtype.kind in "iu" and array.size and (
                    array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max):
                raise ValueError(f"values out of the range of {datatype}")
            array = array.astype(dtype, copy=False)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise bad(f"the data of input {name!r} is not a (nested) list of {datatype} values: "
                  f"{exc}") from None
    if array.size != count:
        raise bad(f"input {name!r} holds {array.size} value(s) in \"data\", but its shape "
                  f"needs {count}")
    return array.ravel()


def _bytes_elements(chunk: memoryview | bytes, name: str, count: int) -> np.ndarray:
    """BYTES in the binary extension: each element a 4-byte little-endian length, then bytes."""
    out, pos, buf = [], 0, bytes(chunk)
    while pos < len(buf):
        if pos + 4 > len(buf):
            raise bad(f"the binary BYTES data of input {name!r} ends inside a length prefix")
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise bad(f"an element of the binary BYTES data of input {name!r} runs past its "
                      f"binary_data_size")
        out.append(buf[pos:pos + n])
        pos += n
    if len(out) != count:
        raise bad(f"input {name!r} holds {len(out)} BYTES element(s), but its shape needs "
                  f"{count}")
    return np.array(out, dtype=object)


# -- responses --------------------------------------------------------------------------------

def encode_response(model: str, version: str, request_id: str | None,
                    outputs: list[tuple[str, np.ndarray, bool]]) -> tuple[bytes, int | None]:
    """The body of an inference response and its JSON length (None: all of it is JSON)."""
    doc: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    entries, blobs = [], []
    for name, array, binary in outputs:
        _add_tensor(entries, blobs, name, array, binary)
    doc["outputs"] = entries
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


def _add_tensor(entries: list, blobs: list, name: str, array: np.ndarray, binary: bool) -> None:
    """One tensor of a request or response: its JSON entry, its data as a little-endian blob
    after the JSON (``binary``, the binary tensor extension) or inline as a JSON list."""
    datatype = datatype_of(array.dtype)
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        blob = _bytes_blob(array) if datatype == "BYTES" else \
            np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        entry["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    else:
        entry["data"] = _json_values(array, datatype)
    entries.append(entry)


def _json_values(array: np.ndarray, datatype: str) -> list:
    """A tensor's values as the flat JSON list the protocol sends (BYTES as text)."""
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in array.ravel()]
    return array.ravel().tolist()


def _bytes_blob(array: np.ndarray) -> bytes:
    parts = []
    for v in array.ravel():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def encode_request(inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
                   binary: bool = True, request_id: str | None = None,
                   parameters: dict | None = None) -> tuple[bytes, dict[str, str]]:
    """An inference request's body and headers (for clients, tests and the load generator):
    inputs as binary data (``binary``) or JSON lists; outputs asked for in binary alike."""
    doc: dict[str, Any] = {}
    if request_id is not None:
        doc["id"] = request_id
    params = dict(parameters or {})
    entries, blobs = [], []
    for name, array in inputs.items():
        _add_tensor(entries, blobs, name, np.asarray(array), binary)
    doc["inputs"] = entries
    if outputs is not None:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    elif binary:
        params["binary_data_output"] = True
    if params:
        doc["parameters"] = params
    head = json.dumps(doc, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/octet-stream" if blobs else "application/json"}
    if blobs:
        headers[HEADER_LENGTH] = str(len(head))
    return b"".join([head, *blobs]), headers


def decode_response(body: bytes, header_length: str | int | None) -> dict[str, np.ndarray]:
    """The outputs of an inference response by name, as numpy arrays."""
    n = len(body) if header_length is None else int(header_length)
    doc = json.loads(body[:n])
    rest, pos, out = memoryview(body)[n:], 0, {}
    for o in doc["outputs"]:
        dtype = DATATYPES[o["datatype"]]
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = o["data"]
            if o["datatype"] == "BYTES":
                data = [v.encode() if isinstance(v, str) else v for v in data]
            out[o["name"]] = np.array(data, dtype=dtype).reshape(o["shape"])
            continue
        chunk = rest[pos:pos + size]
        pos += size
        arr = _bytes_elements(chunk, o["name"], math.prod(o["shape"])) \
            if o["datatype"] == "BYTES" else np.frombuffer(chunk, dtype=dtype.newbyteorder("<"))
        out[o["name"]] = arr.reshape(o["shape"])
    return out
