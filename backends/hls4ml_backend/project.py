"""One hls4ml project per (segment, options): convert, write, build the C simulation, load it.

The project lives under ``$HAL_CACHE_DIR/hls4ml/<key>`` (default ``~/.cache/hal/hls4ml``),
keyed by a hash of the segment and every option that changes the generated code. A
``hal_project.json`` written after a successful build, then the SHA-256 of every file
(``hal.diskcache``), make the next compile a cache hit that only loads the library; a
project whose files no longer match is built again. hls4ml's VivadoAccelerator backend writes the same project
for C simulation and for a board (PYNQ driver, Vivado block design).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from hal import diskcache
from hal.errors import BackendError

from .qdq import FloatScaleError, Port, Prepared, constant_value_infos, prepare

log = logging.getLogger("hal")

PROJECT = "myproject"
MANIFEST = "hal_project.json"
BOARDS = ("pynq-z2", "zcu102")
ROUNDING = {"half_up": "RND", "half_even": "RND_CONV"}


def cache_root() -> Path:
    """``$HAL_CACHE_DIR/hls4ml`` or ``~/.cache/hal/hls4ml``, created private (hal.diskcache)."""
    return diskcache.folder("hls4ml")


@dataclass
class Settings:
    io_type: str = "io_parallel"
    strategy: str = "Latency"
    reuse_factor: int = 1
    board: str = "pynq-z2"
    rounding: str = "half_up"
    clock_period: float = 10.0
    cxx_opt: int = 1  # g++ -O level of the C simulation library (HAL's opt_level)


@dataclass
class Project:
    """A built project: where it is, what it exchanges, and the fixed-point types chosen."""

    path: str
    library: str
    inputs: list[Port]
    outputs: list[Port]
    layers: list[dict]
    settings: dict
    hls4ml_version: str
    requantized: list[str]
    board_files: list[str]
    cache: str = "cold"

    def save(self) -> None:
        d = asdict(self)
        d.pop("cache")
        Path(self.path, MANIFEST).write_text(json.dumps(d, indent=1))

    @classmethod
    def load(cls, path: Path) -> Project | None:
        f = path / MANIFEST
        if not f.exists():
            return None
        try:
            d = json.loads(f.read_text())
            d["inputs"] = [Port(**p) for p in d["inputs"]]
            d["outputs"] = [Port(**p) for p in d["outputs"]]
            proj = cls(**d, cache="warm")
        except (ValueError, TypeError, KeyError):
            return None
        return proj if Path(proj.library).exists() else None

    def fixed_types(self) -> str:
        rows = []
        for layer in self.layers:
            types = ", ".join(f"{k.removesuffix('_t')} {v}" for k, v in layer["types"].items())
            rows.append(f"{layer['name']} ({layer['class']}): {types}")
        return "\n    ".join([""] + rows)


def key(model: onnx.ModelProto, settings: Settings) -> str:
    import hls4ml

    anonymous = onnx.ModelProto()
    anonymous.CopyFrom(model)
    anonymous.graph.name = ""  # the same segment of a differently named model is the same design
    h = hashlib.sha256(anonymous.SerializeToString(deterministic=True))
    h.update(json.dumps(asdict(settings), sort_keys=True).encode())
    h.update(hls4ml.__version__.encode())
    return h.hexdigest()[:20]


def build(model: onnx.ModelProto, settings: Settings, requantized: list[str]) -> Project:
    """The project for ``model`` (a QDQ segment with power-of-two scales): cached or built."""
    path = cache_root() / key(model, settings)
    with diskcache.locked(path):  # a second process building the same project waits for it
        cached = Project.load(path) if diskcache.verified(path) else None
        if cached is not None:
            return cached
        proj = _build(model, settings, requantized, path)
        diskcache.seal(path)  # the commit: an unsealed project is built again
    return proj


def _build(model: onnx.ModelProto, settings: Settings, requantized: list[str],
           path: Path) -> Project:
    import hls4ml

    prep = prepare(model)
    hls_model = _convert(prep, settings, path)
    _check_exact(hls_model)
    _set_rounding(hls_model, ROUNDING[settings.rounding])
    with _quiet():
        try:
            hls_model.write()
            _set_cxx_opt(path, settings.cxx_opt)
            hls_model._compile()  # g++ only: build_lib.sh, then load the library
        except Exception as exc:
            raise BackendError(f"hls4ml could not build the C simulation library in {path}: "
                               f"{exc}") from exc
    libs = sorted((path / "firmware").glob(f"{PROJECT}-*.so"), key=os.path.getmtime)
    if not libs:
        raise BackendError(f"hls4ml built no simulation library in {path / 'firmware'}")
    proj = Project(str(path), str(libs[-1]), prep.inputs, prep.outputs, _layers(hls_model),
                   asdict(settings), hls4ml.__version__, requantized, board_files(path))
    proj.save()
    return proj


def _convert(prep: Prepared, settings: Settings, path: Path):
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.qcdq_to_qonnx import QCDQToQuant
    from qonnx.util.cleanup import cleanup_model

    with _quiet():
        mw = ModelWrapper(prep.model)
        mw = mw.transform(InferShapes())
        mw = mw.transform(QCDQToQuant())
        mw = cleanup_model(mw)
        mw = mw.transform(ConvertToChannelsLastAndClean())
        mw = mw.transform(GemmToMatMul())
        mw = cleanup_model(mw)
        _flat_quant_params(mw)
        constant_value_infos(mw.model)
        leftover = sorted({n.op_type for n in mw.graph.node
                           if n.op_type in ("QuantizeLinear", "DequantizeLinear")})
        if leftover:
            raise BackendError(f"QONNX left {leftover} it could not fuse into Quant nodes; the "
                               f"segment is not in HAL's QDQ form")
        config = hls4ml.utils.config.config_from_onnx_model(
            mw, granularity="name", backend="VivadoAccelerator",
            default_precision="fixed<32,16>", default_reuse_factor=settings.reuse_factor)
        config["Model"]["Strategy"] = settings.strategy
        # the host feeds exact multiples of each input's scale: give the input that type
        inits = {t.name for t in mw.graph.initializer}
        graph_inputs = [i for i in mw.graph.input if i.name not in inits]
        for port, inp in zip(prep.inputs, graph_inputs):
            frac = -int(np.log2(port.scale))
            config["LayerName"].setdefault(inp.name, {})["Precision"] = {
                "result": f"fixed<8,{8 - frac},RND_CONV,SAT>"}
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return hls4ml.converters.convert_from_onnx_model(
                mw, output_dir=str(path), project_name=PROJECT, backend="VivadoAccelerator",
                board=settings.board, io_type=settings.io_type, hls_config=config,
                clock_period=settings.clock_period)
        except Exception as exc:
            raise BackendError(f"hls4ml could not convert the segment: {type(exc).__name__}: "
                               f"{exc}") from exc


def _flat_quant_params(mw) -> None:
    """Channels-last conversion can leave a per-tensor scale shaped [1, 1, 1, 1]; hls4ml then
    derives an array-valued bit width and fails (numpy 2). One value is one value: [1]."""
    for n in mw.graph.node:
        if n.op_type != "Quant":
            continue
        for name in n.input[1:3]:
            arr = mw.get_initializer(name)
            if arr is not None and arr.size == 1 and arr.ndim > 1:
                mw.set_initializer(name, arr.reshape(1))


def _set_cxx_opt(path: Path, level: int) -> None:
    """hls4ml builds with -O3; HAL's opt_level picks the level instead. The simulation stands
    in for the FPGA's arithmetic, not its speed, and g++ at -O3 takes minutes on a conv net
    (LeNet: 12 s user time at -O0, 50 s at -O1)."""
    script = path / "build_lib.sh"
    if script.exists():
        script.write_text(script.read_text().replace('CFLAGS="-O3 ', f'CFLAGS="-O{level} '))


def _check_exact(hls_model) -> None:
    """The second guard: hls4ml turned some scale into float arithmetic after all."""
    from hls4ml.model.types import FixedPrecisionType, IntegerPrecisionType

    for layer in hls_model.get_layers():
        if layer.class_name == "ApplyAlpha" or "Alpha" in layer.class_name:
            raise FloatScaleError(
                f"hls4ml represents a quantization scale of layer {layer.name!r} as float "
                f"arithmetic (ApplyAlpha), which it computes in a default fixed-point type and "
                f"gets wrong; HAL refuses it. Quantize with power_of_two=True")
        for name, t in layer.types.items():
            if not isinstance(t.precision, (FixedPrecisionType, IntegerPrecisionType)):
                raise FloatScaleError(f"layer {layer.name!r} has a non-fixed-point type {name} = "
                                      f"{t.precision}; HAL only runs exact fixed-point designs")


def _set_rounding(hls_model, mode: str) -> None:
    """Requantizing types round like the FPGA spec (half up) or like ONNX (half even)."""
    from hls4ml.model.types import FixedPrecisionType, RoundingMode

    for layer in hls_model.get_layers():
        for t in layer.types.values():
            p = t.precision
            if isinstance(p, FixedPrecisionType) and p.rounding_mode in (RoundingMode.RND_CONV,
                                                                         RoundingMode.RND):
                p.rounding_mode = RoundingMode.from_string(mode)


def _layers(hls_model) -> list[dict]:
    out = []
    for layer in hls_model.get_layers():
        types = {k: _cpp(t.precision) for k, t in layer.types.items()
                 if not k.endswith("table_t") and not k.startswith("index")}
        out.append({"name": layer.name, "class": layer.class_name, "types": types})
    return out


def _cpp(precision) -> str:
    """The C++ type (``ap_fixed<8,3,AP_RND,AP_SAT>``) once written, else hls4ml's name."""
    definition = getattr(precision, "definition_cpp", None)
    return definition() if definition is not None else str(precision)


def board_files(path: Path) -> list[str]:
    """What hls4ml wrote for the board: driver, block design, HLS build scripts."""
    names = ("axi_stream_driver.py", "design.tcl", "build_prj.tcl", "build_lib.sh",
             "project.tcl", "hls4ml_config.yml", f"firmware/{PROJECT}_axi.cpp",
             f"firmware/{PROJECT}_axi.h")
    return [str(path / n) for n in names if (path / n).exists()]


@contextlib.contextmanager
def _quiet():
    """hls4ml and QONNX print their progress and warn freely; keep HAL's output readable."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        yield
    if buf.getvalue():
        log.debug("hls4ml: %s", buf.getvalue())


class Simulation:
    """The compiled C simulation: one call per sample through the bridge's double entry."""

    def __init__(self, project: Project):
        self.project = project
        lib = ctypes.cdll.LoadLibrary(project.library)
        fn = getattr(lib, f"{PROJECT}_double")
        n = len(project.inputs) + len(project.outputs)
        fn.restype = None
        fn.argtypes = [np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")] * n
        self._fn = fn
        self._lib = lib

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        ins = [to_grid(a, p) for a, p in zip(arrays, self.project.inputs)]
        batch = ins[0].shape[0]
        outs = [np.zeros((batch, int(np.prod(p.shape))), np.float64)
                for p in self.project.outputs]
        for i in range(batch):
            self._fn(*[np.ascontiguousarray(x[i].reshape(-1)) for x in ins],
                     *[o[i] for o in outs])
        return [from_grid(o.reshape(batch, *p.shape), p)
                for o, p in zip(outs, self.project.outputs)]


def to_grid(a: np.ndarray, port: Port) -> np.ndarray:
    """Host side of the input quantization: QuantizeLinear (round half to even, saturate)."""
    if port.int8:
        q = a.astype(np.float64)
    else:
        q = np.clip(np.rint(a.astype(np.float64) / port.scale), -128, 127)
    return q * port.scale


def from_grid(y: np.ndarray, port: Port) -> np.ndarray:
    """Host side of the output: int8 codes for an int8 port, else the float values."""
    if port.int8:
        return np.rint(y / port.scale).astype(np.int8)
    return y.astype(np.float32)


def vivado_tools() -> dict[str, str | None]:
    return {t: shutil.which(t) for t in ("vivado_hls", "vivado")}


def run_board_build(project: Project) -> list[str]:
    """Synthesize the HLS IP and the block design with Vivado; returns the bitstream files.

    Raises BackendError when a step fails or produces no bitstream."""
    path = Path(project.path)
    steps = [["vivado_hls", "-f", "build_prj.tcl",
              "reset=0 csim=0 synth=1 cosim=0 validation=0 export=1 vsynth=0 fifo_opt=0"],
             ["vivado", "-mode", "batch", "-source", "design.tcl"]]
    for cmd in steps:
        done = subprocess.run(cmd, check=False, cwd=path, capture_output=True, text=True)
        (path / f"hal_{cmd[0]}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise BackendError(f"{' '.join(cmd[:3])} failed in {path} (exit {done.returncode}); "
                               f"see {path / f'hal_{cmd[0]}.log'}")
    bits = bitstreams(path)
    if not bits:
        raise BackendError(f"Vivado finished but wrote no .bit/.hwh under {path}; see its logs")
    return bits


def bitstreams(path: Path) -> list[str]:
    found = [p for p in path.rglob("*.bit")] + [p for p in path.rglob("*.hwh")]
    return sorted(str(p) for p in found)
