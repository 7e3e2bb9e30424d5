"""The board side of ``fpga@hls4ml``: find a PYNQ board and run a built design through pynq
(``hal fpga build``, in the command line, builds the design with Vivado HLS + Vivado).

Nothing here claims a build that did not happen: a design counts as built only when its
``.bit`` and ``.hwh`` files exist in the project.

The pynq path (``BoardRunner``) cannot be exercised without a board and a bitstream; it
uses hls4ml's generated ``axi_stream_driver.py`` unchanged.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from hal.errors import BackendError

_BOARD_NAMES = {"pynq-z2": "pynq-z2", "pynqz2": "pynq-z2", "zcu102": "zcu102"}


def detect_board() -> str | None:
    """The hls4ml board this machine is, when it is a PYNQ board with pynq installed."""
    if importlib.util.find_spec("pynq") is None:
        return None
    if not (Path("/dev/xdevcfg").exists() or Path("/sys/class/fpga_manager/fpga0").exists()):
        return None
    name = os.environ.get("BOARD", "").strip().lower().replace("_", "-")
    return _BOARD_NAMES.get(name, _BOARD_NAMES.get(name.replace("-", "")))


def runner_for(project, device):
    """How a non-simulated device runs ``project``: its bitstream through pynq."""
    from .project import bitstreams

    files = bitstreams(Path(project.path))
    bit = next((f for f in files if f.endswith(".bit")), None)
    hwh = next((f for f in files if f.endswith(".hwh")), None)
    if bit is None or hwh is None:
        raise BackendError(
            f"{device.string} is a {device.info.details.get('board', 'PYNQ')} board, but the "
            f"hls4ml design for this model has no bitstream at {project.path}: build it with "
            f"`hal fpga build MODEL --board {project.settings['board']}` on a machine with "
            f"Vivado and copy that project directory here (HAL_CACHE_DIR/hls4ml/"
            f"{Path(project.path).name})")
    return BoardRunner(project, bit)


class BoardRunner:
    """One overlay per process; DMA buffers re-allocated when the batch size changes."""

    def __init__(self, project, bitfile: str):
        spec = importlib.util.spec_from_file_location(
            "hal_hls4ml_driver", Path(project.path) / "axi_stream_driver.py")
        driver = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(driver)
        self.project = project
        self.ins, self.outs = project.inputs, project.outputs
        if len(self.ins) != 1 or len(self.outs) != 1:
            raise BackendError("hls4ml's PYNQ driver streams one input and one output")
        n_in, n_out = int(np.prod(self.ins[0].shape)), int(np.prod(self.outs[0].shape))
        self.overlay = driver.NeuralNetworkOverlay(bitfile, (1, n_in), (1, n_out))
        self.batch = 1

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        from pynq import allocate

        from .project import from_grid, to_grid

        x = to_grid(arrays[0], self.ins[0]).astype(np.float32)
        batch = x.shape[0]
        if batch != self.batch:
            n_in, n_out = int(np.prod(self.ins[0].shape)), int(np.prod(self.outs[0].shape))
            self.overlay.input_buffer = allocate(shape=(batch, n_in), dtype=np.float32)
            self.overlay.output_buffer = allocate(shape=(batch, n_out), dtype=np.float32)
            self.batch = batch
        y = np.array(self.overlay.predict(x.reshape(batch, -1)), np.float64)
        return [from_grid(y.reshape(batch, *self.outs[0].shape), self.outs[0])]
