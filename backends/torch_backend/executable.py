"""The compiled segment: a GraphModule (optionally torch.compile'd) behind a thin run()."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir
import torch
from hal.backends.torch_backend import TorchBuffer, ops_math, ops_nn, ops_tensor, torch_device  # noqa: F401 (registers)
from hal.backends.torch_backend.lowering import Lowering

from hal.backend import Buffer, CompileOptions, Device, Executable
from hal.errors import InputError

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
          torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32,
          torch.int64: np.int64, torch.uint8: np.uint8, torch.uint16: np.uint16,
          torch.uint32: np.uint32, torch.uint64: np.uint64, torch.bool: np.bool_,
          torch.complex64: np.complex64, torch.complex128: np.complex128}
_NUMPY = {k: np.dtype(v) for k, v in _NUMPY.items()}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    try:
        return _NUMPY[dtype]
    except KeyError:
        raise InputError(f"torch {dtype} has no numpy equivalent") from None


def channels_last_default(model: ir.Model, options: CompileOptions, tdev: torch.device) -> bool:
    """NHWC for conv models on the CPU from opt_level 1: measured 0.41-0.97x the NCHW time
    (mobilenet_lite, resnet_lite, lenet at batch 1 and 32, interleaved medians). Not measured
    on CUDA, so off there."""
    if options.opt_level < 1 or tdev.type != "cpu":
        return False
    return any(n.op_type in ("Conv", "FusedConv") for n in model.graph)


def build(model: ir.Model, device: Device, options: CompileOptions) -> TorchExecutable:
    tdev = torch_device(device)
    if tdev.type == "cuda" and options.precision == "fp32":
        # cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and newer; fp32 must
        # agree with the reference to 1e-4, so HAL asks for true fp32 (a process-wide flag).
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    extra = options.extra.get("channels_last")
    channels_last = channels_last_default(model, options, tdev) if extra is None else extra
    low = Lowering(model, tdev, channels_last=channels_last,
                   cast_outputs=options.precision in _AUTOCAST)
    gm = low.lower()
    native = ["torch.fx"]
    target = gm.forward  # the generated code itself, without nn.Module.__call__'s hooks
    if options.opt_level >= 2:
        mode = None
        if options.opt_level >= 3 and tdev.type == "cuda":
            mode = "reduce-overhead"  # CUDA graphs
            native.append("cuda graphs")
        target = torch.compile(gm, mode=mode, dynamic=None)
        native.insert(1, "torch.compile(inductor)")
    autocast = _AUTOCAST.get(options.precision)
    exe = TorchExecutable(device, low.input_names, [v.name for v in model.graph.outputs],
                          _runner(target, tdev.type, autocast,
                                  clone=options.opt_level >= 3 and tdev.type == "cuda"))
    exe.module = gm
    exe.info = {
        "native": native, "torch": torch.__version__, "device": str(tdev),
        "fx_nodes": sum(1 for n in gm.graph.nodes if n.op == "call_function"
                        or n.op == "call_method"),
        "precision": options.precision,
        "autocast": f"{tdev.type}/{str(autocast).removeprefix('torch.')}" if autocast else None,
        "channels_last": channels_last, "inference_mode": True,
    }
    if options.opt_level >= 3 and tdev.type != "cuda":
        exe.info["note"] = "CUDA graphs need a CUDA device; opt_level 3 equals 2 here"
    return exe


def _inference_guard():
    """torch's C++ inference-mode guard: the same switch as torch.inference_mode(), at a
    third of its Python cost (it is what that context manager enters)."""
    guard = getattr(torch._C, "_InferenceMode", None)
    return (lambda: guard(True)) if guard is not None else torch.inference_mode


def _runner(target, device_type: str, autocast: torch.dtype | None, clone: bool):
    """The per-call function: as few Python steps as possible around the module."""
    inference_mode = _inference_guard()
    if autocast is not None:
        ac = torch.autocast

        def run(*xs):
            with inference_mode(), ac(device_type, dtype=autocast):
                return target(*xs)
    elif clone:  # CUDA-graph outputs are overwritten by the next replay
        def run(*xs):
            with inference_mode():
                return [t.clone() for t in target(*xs)]
    else:
        def run(*xs):
            with inference_mode():
                return target(*xs)
    return run


class TorchExecutable(Executable):
    def __init__(self, device: Device, input_names, output_names, fn):
        super().__init__(device, input_names, output_names)
        self._fn = fn

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        dev = self.device
        try:
            tensors = [b.tensor if b.device is dev else self._adopt(b) for b in buffers]
        except AttributeError:
            tensors = [self._adopt(b) for b in buffers]
        if len(tensors) != len(self.input_names):
            raise InputError(f"expected {len(self.input_names)} inputs {self.input_names}, "
                             f"got {len(tensors)}")
        return [TorchBuffer(t, dev) for t in self._fn(*tensors)]

    def _adopt(self, b) -> torch.Tensor:
        if isinstance(b, TorchBuffer) and b.device is self.device:
            return b.tensor
        if isinstance(b, Buffer):
            return b.to(self.device).tensor
        if isinstance(b, np.ndarray):
            return self.device.put(b).tensor
        raise InputError(f"run() takes hal Buffers (or numpy arrays), got {type(b).__name__}")
