"""Running a compiled OpenVINO model: one InferRequest per calling thread, reused.

An InferRequest runs one inference at a time, so each thread that calls the executable gets
its own (OpenVINO's compiled model is shared and thread-safe; with
``PERFORMANCE_HINT=THROUGHPUT`` the threads' requests run on separate streams). Inputs are
set on the request as tensors sharing the caller's memory (no copy; OpenVINO only reads them),
the request runs with ``infer()`` and no arguments, and each output is copied out of the
request's own tensor, since the next call on the same request overwrites it. This skips
``InferRequest.infer(inputs)``'s Python data dispatcher and its result dictionary: about 90 µs
less per LeNet call at batch 1 on the reference machine.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from hal.backend import Buffer, Device, Executable, HostBuffer
from hal.backends.common.frameworks import import_openvino
from hal.errors import BackendError


class OpenVINOExecutable(Executable):
    """numpy in, numpy out (host memory) through a per-thread ``InferRequest``."""

    def __init__(self, compiled, device: Device, input_names: Sequence[str],
                 output_names: Sequence[str], info: dict, input_dims: Sequence = (),
                 output_specs: Sequence = ()):
        super().__init__(device, input_names, output_names)
        #: the graph's input dims and (dims, dtype) of its outputs: what an empty batch gives
        self._input_dims = list(input_dims)
        self._output_specs = list(output_specs)
        self.compiled = compiled
        self.info = info
        self._local = threading.local()
        self._tensor = import_openvino().Tensor
        # OpenVINO's input ports in its order, as indices of HAL's inputs (an input the model
        # does not use, e.g. Dropout's ratio at inference, may have no port)
        self._feed = [_index(port, self.input_names, "input") for port in compiled.inputs]
        # HAL's outputs (the ONNX graph's order) as indices of OpenVINO's output ports
        outs = {name: i for i, port in enumerate(compiled.outputs) for name in port.names}
        missing = [n for n in self.output_names if n not in outs]
        if missing:
            raise BackendError(f"OpenVINO's compiled model has no output {missing[0]!r} "
                               f"(it has {[sorted(p.names) for p in compiled.outputs]})")
        self._out_index = [outs[n] for n in self.output_names]

    def _request(self):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        req = self._request()
        tensor = self._tensor
        for port, i in enumerate(self._feed):
            b = buffers[i]
            a = b.array if type(b) is HostBuffer else b.numpy()
            flags = a.flags
            if not (flags.c_contiguous and flags.writeable):
                a = np.array(a, order="C")  # OpenVINO shares contiguous, writable memory only
            req.set_input_tensor(port, tensor(a, shared_memory=True))
        try:
            req.infer()
        except RuntimeError:
            if any(0 in tuple(b.shape) for b in buffers):
                return self._empty(buffers)
            raise
        device = self.device
        out = req.get_output_tensor
        return [HostBuffer(out(i).data.copy(), device) for i in self._out_index]

    def _empty(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        """An input with no elements (a batch of 0) that OpenVINO's CPU plugin refused to run
        (its MaxPool, for one, checks for a batch): the outputs are made from the graph's
        shapes when each of them is empty too (a dim named like an input dim that is 0 here);
        otherwise a BackendError says why."""
        sizes: dict = {}
        for dims, b in zip(self._input_dims, buffers):
            for d, n in zip(dims, b.shape):
                if isinstance(d, str):
                    sizes.setdefault(d, n)
        out = []
        for name, (dims, dtype) in zip(self.output_names, self._output_specs):
            shape = [sizes.get(d) if isinstance(d, str) else d for d in dims or [None]]
            if dims is None or None in shape or 0 not in shape:
                raise BackendError(f"OpenVINO's CPU plugin refused this call with an empty "
                                   f"input, and the graph does not say that output {name!r} "
                                   f"is empty then")
            out.append(HostBuffer(np.zeros(shape, dtype), self.device))
        return out


def _index(port, names: list[str], what: str) -> int:
    for name in port.names:
        if name in names:
            return names.index(name)
    raise BackendError(f"OpenVINO's compiled model has an {what} {sorted(port.names)} that is "
                       f"none of the segment's {names}")


