"""The pynq transport through the real pynq 4 classes, in the pynq environment (`make pynq-env`,
run by tests/test_pynq_env.py): a stand-in ``pynq.Device`` registered through pynq's device
discovery, ``pynq.Overlay`` from a test-fixture .hwh with download off, ``pynq.allocate``
buffers with physical addresses, MMIO registers. Skipped where pynq is not importable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynq", reason="pynq is not installed here: tests/test_pynq_env.py runs "
                                   "this file in .venv-pynq (make pynq-env)")
os.environ["HAL_PYNQ_STANDIN"] = "1"  # before pynq.Device.devices is first read
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

import pynq
import standin
from hal.backends.fpga import manifest, qdq, spec
from hal.backends.fpga.driver import Driver
from hal.backends.fpga.files import accelerator_dir
from hal.backends.fpga.transports.pynq import PynqTransport
from hwh_fixture import write_hwh

import hal
from hal.errors import BackendError


@pytest.fixture(scope="module")
def hwh(tmp_path_factory):
    return write_hwh(manifest.load(), tmp_path_factory.mktemp("overlay") / "hal_int8.hwh")


@pytest.fixture(scope="module")
def board():
    devs = [d for d in pynq.Device.devices if isinstance(d, standin.HalStandInDevice)]
    assert len(devs) == 1, "the stand-in is found through pynq's own device discovery"
    return devs[0]


@pytest.fixture(scope="module")
def transport(board, hwh):
    t = PynqTransport(board, bitfile=hwh, download=False)
    t.load(accelerator_dir(), manifest.load(), None)
    return t


def test_versions_are_the_board_stack():
    assert pynq.__version__.startswith("4.") and np.__version__.startswith("1.26")
    for heavy in ("onnxruntime", "jax", "tensorflow", "torch", "pyopencl"):
        assert heavy not in sys.modules


def test_overlay_from_the_hwh_finds_the_ip(transport, board):
    assert isinstance(transport.overlay, pynq.Overlay)
    assert transport.ip_name == manifest.load()["accelerator"]["instance"]
    assert isinstance(transport.ip, pynq.overlay.DefaultIP)
    assert isinstance(transport.ip.mmio, pynq.MMIO) and transport.ip.mmio.device is board
    assert transport.read_reg(0) & 0x4  # ap_idle through MMIO
    assert transport.simulated  # the stand-in says so; a board would not


def test_driver_on_golden_vectors_and_cache_sync(transport, board):
    drv = Driver(transport)
    before = (board.flushes, board.invalidates)
    for path in sorted((accelerator_dir() / "golden").glob("*.npz")):
        g = np.load(path)
        x = g["x"]
        L = qdq.Layer(op="gemm" if int(g["op"]) == 1 else "conv", nodes=[], x="x", y="y",
                      w=g["w"], bias=g["bias"], m=g["mult"], s=g["shift"],
                      stride=int(g["stride"]), pad=int(g["pad"]), groups=int(g["groups"]),
                      act_min=int(g["act_min"]), act_max=int(g["act_max"]),
                      pool=int(g["pool"]), in_shape=x.shape[1:])
        loaded = drv.load(L)
        xm, ym = drv.upload(x), transport.allocate(g["y"].size)
        assert isinstance(xm.array, pynq.buffer.PynqBuffer) and xm.address == \
            xm.array.device_address
        assert drv.run(loaded, xm, ym, x.shape[0]) > 0
        got = ym.read(np.int8, g["y"].size).reshape(g["y"].shape)
        np.testing.assert_array_equal(got, g["y"], err_msg=path.stem)
    assert board.flushes > before[0] and board.invalidates > before[1]


def test_status_error_through_mmio(transport):
    drv = Driver(transport)
    rng = np.random.default_rng(0)
    L = qdq.Layer(op="gemm", nodes=[], x="x", y="y",
                  w=rng.integers(-128, 128, (4, 8), dtype=np.int8), bias=np.zeros(4, np.int32),
                  m=np.full(4, 1 << 30, np.int32), s=np.full(4, 63, np.int32), in_shape=(8,))
    with pytest.raises(BackendError, match=r"status 0x8"):
        drv.run(drv.load(L), drv.upload(np.zeros((1, 8), np.int8)), transport.allocate(4), 1)


def test_unbuilt_board_target_names_the_make_command(board):
    t = PynqTransport(board)
    with pytest.raises(BackendError, match=r"make -C bitstreams/hal_int8 kv260"):
        t.load(accelerator_dir(), manifest.load(), "kv260")


def test_hal_device_and_compile_through_pynq(hwh):
    from qdq_by_hand import conv_net, evaluate, quantize, with_int8_io

    info = next(d for d in hal.devices() if d.string == "fpga:0@pynq")
    assert info.usable and info.simulated and "stand-in" in info.name
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    model = with_int8_io(quantize(conv_net(), x))
    compiled = hal.compile(model, "fpga@pynq", precision="int8", bitfile=str(hwh))
    assert [s.device.string for s in compiled.segments] == ["fpga:0@pynq"]
    xq = rng.integers(-128, 128, (2, 3, 16, 16), dtype=np.int8)
    y = compiled(xq)[0]
    np.testing.assert_array_equal(y, evaluate(model, xq)[0])
    info = compiled.report()["segments"][0]["info"]
    assert "simulated" in info["accelerator"] and "ESTIMATED" in info["estimate"]
    # the spec, directly, for the first layer
    assert spec.INT8_MIN == -128
