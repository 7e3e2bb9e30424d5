"""The Backend and Buffer sides the tracing backends share: the op list read from the kernel
table, what they claim, and buffers moved between one framework's devices."""

from __future__ import annotations

from typing import ClassVar

import onnx_ir as ir

from hal.backend import Backend, Buffer, Device
from hal.backends.common.support import tracing_support
from hal.backends.common.table import KernelTable
from hal.device import DeviceInfo


class TracingBackend(Backend):
    """A backend whose segments are traced by its framework through the shared lowering.

    A subclass sets ``table`` (its kernel table: ``ops`` and ``hal_ops`` are read from it)
    and may decline nodes its framework cannot run in ``declines``.
    """

    kinds = ("cpu", "gpu", "tpu")
    precisions = ("fp32", "bf16", "fp16")
    table: ClassVar[KernelTable]
    #: one trace serves every size of a symbolic dim (tf): a Shape of one is not a constant
    dynamic_dims: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "table" in cls.__dict__:
            cls.ops = cls.table.ops
            cls.hal_ops = cls.table.hal_ops

    def supports(self, node: ir.Node, device: DeviceInfo) -> bool | str:
        ok = super().supports(node, device)
        if ok is not True:
            return ok
        reason = self.declines(node)
        if reason:
            return reason
        return tracing_support(node, self.table, self.name, self.dynamic_dims)

    def declines(self, node: ir.Node) -> str | None:
        """Why the framework cannot run ``node`` although the table has its kernel, or None."""
        return None


class FrameworkBuffer(Buffer):
    """A buffer a tracing backend's framework holds. Between two devices of the same backend
    it moves inside the framework (``copy_to``), counted as one copy out and one in where
    either side is not host memory; to another backend's device, through the host."""

    def to(self, device: Device) -> Buffer:
        if device is self.device:
            return self
        if type(device.backend) is not type(self.device.backend):
            return super().to(device)
        if not self.device.info.host_memory:
            self.device.transfers.d2h_count += 1
            self.device.transfers.d2h_bytes += self.nbytes
        if not device.info.host_memory:
            device.transfers.h2d_count += 1
            device.transfers.h2d_bytes += self.nbytes
        return self.copy_to(device)

    def copy_to(self, device: Device) -> Buffer:
        """This buffer's data on ``device``, another device of the same backend."""
        raise NotImplementedError
