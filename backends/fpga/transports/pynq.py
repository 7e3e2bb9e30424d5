"""``fpga@pynq``: hal_int8 on a board, through the pynq library.

``pynq.Overlay`` programs the target's ``.bit`` (its ``.hwh`` beside it describes the block
design), the accelerator's AXI-lite port is the overlay IP's ``MMIO``, and buffers are
``pynq.allocate`` arrays in physically contiguous memory whose ``device_address`` goes into the
address registers; ``flush`` before the accelerator reads, ``invalidate`` before the host does.
pynq is imported only here, when a board is used (it pins numpy<2, so it lives in the board's
own environment, or ``make pynq-env`` for the tests).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from hal.errors import BackendError

from .. import manifest as M
from ..transport import Memory, Transport
from . import pick_target

IP_TYPE = "hal_int8_layer"


def board_devices() -> tuple[list, str]:
    """(pynq devices, why none) without raising: pynq missing or no board are reasons."""
    try:
        import pynq
    except Exception as exc:  # noqa: BLE001 - ImportError, or pynq failing off a board
        return [], (f"pynq is not importable here ({type(exc).__name__}: {exc}); on a PYNQ "
                    f"board install hal-accel[pynq]; no board found: try fpga@emu")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            devs = list(pynq.Device.devices)
    except Exception as exc:  # noqa: BLE001 - a probe never raises
        return [], (f"pynq could not list devices ({type(exc).__name__}: {exc}); no board "
                    f"found: try fpga@emu")
    if not devs:
        return [], "no PYNQ board found (pynq.Device.devices is empty): try fpga@emu"
    return devs, ""


def _board_name() -> str | None:
    """The board a PYNQ image runs on (its BOARD variable, e.g. "KV260"), lower case."""
    import os

    board = os.environ.get("BOARD", "").strip().lower()
    return board or None


class PynqMemory(Memory):
    def __init__(self, array):
        self.array = array  # a pynq.PynqBuffer of uint8
        self.address = int(array.device_address)
        self.nbytes = int(array.nbytes)

    def write(self, data: np.ndarray, offset: int = 0) -> None:
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if offset < 0 or offset + raw.size > self.nbytes:
            raise BackendError(f"write of {raw.size} bytes at offset {offset} overruns a "
                               f"{self.nbytes}-byte buffer")
        self.array[offset:offset + raw.size] = raw
        self.array.flush()

    def read(self, dtype, count: int, offset: int = 0) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if offset < 0 or offset + size > self.nbytes:
            raise BackendError(f"read of {size} bytes at offset {offset} overruns a "
                               f"{self.nbytes}-byte buffer")
        self.array.invalidate()
        return np.array(self.array[offset:offset + size]).view(dtype)

    def free(self) -> None:
        self.array.freebuffer()


class PynqTransport(Transport):
    name = "pynq"

    def __init__(self, device=None, bitfile: str | Path | None = None, download: bool = True):
        """``device``: a pynq.Device (default: pynq's active device). ``bitfile``: a bitstream
        to use instead of the manifest target's (e.g. one built elsewhere); ``download=False``
        uses the overlay already programmed."""
        import pynq

        self.pynq = pynq
        self.device = device if device is not None else pynq.Device.active_device
        # a stand-in device (tests) says it computes in software; a board does not
        self.simulated = bool(getattr(self.device, "hal_simulated", False))
        self.bitfile, self.download = bitfile, download
        self.overlay = self.ip = None

    def load(self, accelerator: Path, manifest: dict, target: str | None) -> None:
        if self.bitfile is None:
            name = pick_target(manifest, "pynq", target or _board_name())
            path = M.target_file(manifest, name, "bitstream", accelerator)
        else:
            path = Path(self.bitfile)
        try:
            self.overlay = self.pynq.Overlay(str(path), download=self.download,
                                             device=self.device)
        except Exception as exc:
            raise BackendError(f"pynq could not load the overlay {path}: "
                               f"{type(exc).__name__}: {exc}") from exc
        names = [k for k, v in self.overlay.ip_dict.items()
                 if f":{IP_TYPE}:" in str(v.get("type", ""))]
        if len(names) != 1:
            raise BackendError(f"the overlay {path.name} has {len(names)} {IP_TYPE} IP(s) "
                               f"({names}); expected exactly one")
        self.ip = getattr(self.overlay, names[0].replace("/", "."))
        self.ip_name = names[0]

    def describe(self) -> str:
        return "pynq stand-in device" if self.simulated else "board"

    def read_reg(self, offset: int) -> int:
        return int(self.ip.mmio.read(offset))

    def write_reg(self, offset: int, value: int) -> None:
        self.ip.mmio.write(offset, int(value) & 0xFFFFFFFF)

    def allocate(self, nbytes: int) -> PynqMemory:
        if nbytes < 1:
            raise BackendError(f"cannot allocate {nbytes} bytes")
        return PynqMemory(self.pynq.allocate((nbytes,), np.uint8, target=self.device))


def discover() -> list:
    from . import Found

    devs, why = board_devices()
    if not devs:
        return [Found(usable=False, reason=why)]
    return [Found(i, str(getattr(d, "name", d.tag)), simulated=bool(getattr(d, "hal_simulated",
                                                                          False)),
                  details={"tag": d.tag}, handle=d) for i, d in enumerate(devs)]


def connect(handle, bitfile=None, **options) -> PynqTransport:
    return PynqTransport(handle, bitfile=bitfile,
                         download=not str(bitfile or "").endswith(".hwh"))
