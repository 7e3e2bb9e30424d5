"""``cpu@torch``, ``cuda@torch`` (and ``mps@torch``): segments lowered to torch.fx.

Each segment becomes one ``torch.fx.GraphModule`` at compile time (one call per
ONNX node, weights as buffers on the device), run under ``torch.inference_mode``.
``opt_level`` picks the native steps: 0 plain fx, 1 fx after HAL's shared passes,
2 ``torch.compile`` (inductor) of the GraphModule, 3 adds CUDA graphs on CUDA.
``precision="bf16"|"fp16"`` runs under autocast (fp32 accumulation).
Training (``compile_training``): autograd and torch.optim over the same lowering (training.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal.ir.schemas import HAL_DOMAIN
from hal.backends.torch_backend.optable import HAL_OPS, OPS

from hal.backend import Backend, Buffer, CompileOptions, Device, Executable, check_precision
from hal.device import DeviceInfo
from hal.errors import InputError, OptionError

if TYPE_CHECKING:
    import numpy as np
    import onnx_ir as ir

    from hal.trainer import Launch, Parallel, Trainer, TrainGraph, TrainSpec

#: torch stores these but has almost no kernels for them; only data movement is allowed
_SHELL_DTYPES = frozenset({"UINT16", "UINT32", "UINT64"})
_MOVES = frozenset({"Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
                    "Concat", "Cast", "CastLike", "Shape", "Size", "Slice", "Gather", "Expand",
                    "Constant", "Split", "Tile"})
_FLOWS = {0: "torch.plain", 1: "torch.default", 2: "torch.compile", 3: "torch.max"}


class TorchBackend(Backend):
    name = "torch"
    kinds = ("cpu", "cuda", "mps")
    priority = 50
    ops = OPS
    hal_ops = HAL_OPS
    requires = ("torch",)
    install_hint = "pip install hal-accel[torch]"
    options = frozenset({"channels_last"})
    precisions = ("fp32", "fp16", "bf16")

    # -- devices ---------------------------------------------------------------------------
    def probe(self) -> list[DeviceInfo]:
        import platform

        import torch

        ver = torch.__version__.split("+")[0]
        cpu_name = _cpu_name() or platform.processor() or platform.machine() or "CPU"
        out = [self._prove("cpu", 0, f"{cpu_name} ({torch.get_num_threads()} threads)", True,
                           {"torch": torch.__version__})]
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                try:
                    name = torch.cuda.get_device_name(i)
                except Exception as exc:  # noqa: BLE001 - a broken driver must not hide the other devices
                    name = f"CUDA device {i} ({type(exc).__name__})"
                out.append(self._prove("cuda", i, name, False,
                                       {"torch": torch.__version__, "cuda": torch.version.cuda}))
        elif torch.version.cuda is None:
            out.append(self.unusable("cuda", f"torch {ver} is a CPU build (no CUDA); install a "
                                             f"CUDA build of torch to use a GPU",
                                     host_memory=False))
        else:
            out.append(self.unusable("cuda", f"torch {ver} (CUDA {torch.version.cuda}) found "
                                             f"no CUDA device", host_memory=False))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_built():
            if mps.is_available():
                out.append(self._prove("mps", 0, "Apple GPU (MPS)", False, {}))
            else:
                out.append(self.unusable("mps", "torch is built with MPS but no MPS device is "
                                                "available", host_memory=False))
        return out

    def _prove(self, kind: str, index: int, name: str, host: bool, details: dict) -> DeviceInfo:
        import torch

        try:
            t = torch.ones(2, device=torch.device(kind, index)) + 1
            ok = float(t.sum().item()) == 4.0
            reason = "" if ok else f"the self-test on {kind}:{index} computed a wrong result"
        except Exception as exc:  # noqa: BLE001 - a failing device is reported, never raised
            first = str(exc).splitlines()[0] if str(exc) else ""
            ok, reason = False, (f"the self-test kernel failed on {kind}:{index}: "
                                 f"{type(exc).__name__}: {first}")
        return DeviceInfo(kind, index, self.name, name=name, usable=ok, reason=reason,
                          host_memory=host, details=details)

    def supports(self, node: ir.Node, device: DeviceInfo) -> bool | str:
        if node.domain == HAL_DOMAIN:
            if node.op_type not in HAL_OPS:
                return f"torch has no kernel for {HAL_DOMAIN} {node.op_type}"
        else:
            base = super().supports(node, device)
            if base is not True:
                return base
        from hal.backends.torch_backend import ops_math, ops_nn, ops_tensor  # noqa: F401
        from hal.backends.torch_backend.lowering import CONVERTERS, supported_dtype

        for v in list(node.inputs) + list(node.outputs):
            if v is None or v.dtype is None:
                continue
            if not supported_dtype(v.dtype):
                return f"torch has no {v.dtype.name} tensors"
            if v.dtype.name in _SHELL_DTYPES and node.op_type not in _MOVES:
                return f"torch cannot compute {node.op_type} on {v.dtype.name} (it only stores it)"
        domain = "" if node.domain == "ai.onnx" else node.domain
        _, check = CONVERTERS[domain, node.op_type]
        why = check(node) if check is not None else None
        return why or True

    def put(self, array: np.ndarray, device: Device) -> Buffer:
        return TorchBuffer(_tensor(array, device), device)

    def sync(self, device: Device) -> None:
        import torch

        kind = device.info.kind
        if kind == "cuda":
            torch.cuda.synchronize(device.info.index)
        elif kind == "mps":
            torch.mps.synchronize()

    # -- compiling -------------------------------------------------------------------------
    def flow(self, options: CompileOptions):
        from hal.passes import default_flow

        flow = default_flow(self.name, options, fuse_activations=True)
        flow.name = _FLOWS[options.opt_level]
        return flow

    def compile(self, model: ir.Model, device: Device, options: CompileOptions) -> Executable:
        from hal.backends.torch_backend.executable import build

        check_precision(self, options)
        cl = options.extra.get("channels_last")
        if cl is not None and not isinstance(cl, bool):
            raise OptionError(f"channels_last must be True or False, got {cl!r}")
        return build(model, device, options)

    # -- training ----------------------------------------------------------------------------
    trains = True

    def compile_training(self, graph: TrainGraph, device: Device, spec: TrainSpec) -> Trainer:
        from hal.backends.torch_backend.training import TorchTrainer

        if spec.parallel.strategy == "pipeline":
            from hal.backends.torch_backend.parallel import rank_device
            from hal.backends.torch_backend.pipeline import PipelineTrainer

            tdev = rank_device(torch_device(device), spec.parallel)
            return PipelineTrainer(graph, device, spec, tdev)
        return TorchTrainer(graph, device, spec)

    def launch_training(self, device: Device, parallel: Parallel) -> Launch:
        """strategy "data": one process per worker under DistributedDataParallel (gloo on cpu,
        nccl on cuda with one GPU per process); ``here`` when torchrun or HAL's launcher started
        this process (RANK set, WORLD_SIZE == workers). "pipeline": one process per stage
        (``hal.backends.torch_backend.pipeline``). "tensor" is refused."""
        from hal.backends.torch_backend.parallel import launch

        return launch(device.info.kind, parallel)


class TorchBuffer(Buffer):
    """A torch.Tensor on a torch device."""

    def __init__(self, tensor, device: Device):
        self.device = device
        self.tensor = tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return self.tensor.shape  # a torch.Size is a tuple

    @property
    def dtype(self):
        from hal.backends.torch_backend.executable import numpy_dtype

        return numpy_dtype(self.tensor.dtype)

    def _to_host(self):
        import torch

        t = self.tensor
        t = t if t.device.type == "cpu" else t.cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16; ml_dtypes' has the same bits
            import ml_dtypes

            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()

    def numpy(self):
        if self.device.info.host_memory:
            return self._to_host()  # shares memory: CPU results are never copied
        return super().numpy()

    def to(self, device: Device) -> Buffer:
        if device is self.device:
            return self
        if not isinstance(device.backend, TorchBackend):
            return super().to(device)
        nbytes = self.tensor.numel() * self.tensor.element_size()
        if not self.device.info.host_memory:
            self.device.transfers.d2h_count += 1
            self.device.transfers.d2h_bytes += nbytes
        if not device.info.host_memory:
            device.transfers.h2d_count += 1
            device.transfers.h2d_bytes += nbytes
        return TorchBuffer(self.tensor.to(torch_device(device)), device)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def torch_device(device: Device):
    """The torch.device of a HAL device, cached on it."""
    td = device.__dict__.get("_torch_device")
    if td is None:
        import torch

        td = torch.device(device.info.kind, device.info.index)
        device.__dict__["_torch_device"] = td
    return td


def _tensor(array, device: Device):
    from torch import from_numpy

    try:
        if array.flags.writeable:
            t = from_numpy(array)
        else:  # HAL never writes to inputs; share the memory without torch's warning
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = from_numpy(array)
    except (TypeError, ValueError) as exc:
        import numpy as np

        if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: same bits as torch's
            import torch

            return _on(from_numpy(np.ascontiguousarray(array).view(np.int16))
                       .view(torch.bfloat16), device)
        if array.dtype.kind in "OUSVMm":
            raise InputError(f"cannot put an array of dtype {array.dtype} on "
                             f"{device.string}: torch holds numbers and booleans only") from exc
        t = from_numpy(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("="),
                                                                 copy=False))
    return _on(t, device)


def _on(t, device: Device):
    if device.info.kind != "cpu":
        t = t.to(torch_device(device))
    return t
