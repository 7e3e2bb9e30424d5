"""Placement and transfers of every zoo model on the FPGA devices (int8) and of a few on the toy
accelerator (fp32), recorded from the partitioner before it asked backends for claims over
whole graphs: the claim API must place every model exactly as before.

Each segment is ("dev", ops) on the device compiled for or ("cpu", ops) on the fallback; the
transfers are ``compiled.last_transfers`` (count, bytes) after one call on a batch of 1.
"""

from __future__ import annotations

import warnings

import pytest

import hal
from tests.toy import toy  # noqa: F401  (fixture)

#: fpga@emu, fpga@opencl and fpga@rtl: the specification's core
FULL_CORE = {
    'digits': ([
        ('cpu', 'QuantizeLinear:1'),
        ('dev', 'Conv:2 DequantizeLinear:15 Flatten:1 Gemm:2 MaxPool:2 QuantizeLinear:7 Relu:3'),
        ('cpu', 'DequantizeLinear:1'),
    ], (2, 74)),
    'dwsep': ([
        ('cpu', 'QuantizeLinear:1'),
        ('dev', 'Conv:5 DequantizeLinear:16 MaxPool:1 QuantizeLinear:6 Relu:5'),
        ('cpu', 'DequantizeLinear:1 Flatten:1 GlobalAveragePool:1 MaxPool:1 QuantizeLinear:1'),
        ('dev', 'DequantizeLinear:3 Gemm:1 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1'),
    ], (4, 13402)),
    'lenet': ([
        ('cpu', 'QuantizeLinear:1'),
        ('dev', 'Conv:2 DequantizeLinear:15 Flatten:1 Gemm:2 MaxPool:2 QuantizeLinear:7 Relu:1'),
        ('cpu', 'DequantizeLinear:1 LogSoftmax:1'),
    ], (2, 794)),
    'mlp': ([
        ('cpu', 'QuantizeLinear:1'),
        ('dev', 'DequantizeLinear:6 Gemm:2 QuantizeLinear:2 Relu:1'),
        ('cpu', 'DequantizeLinear:1 QuantizeLinear:1 Tanh:1'),
        ('dev', 'DequantizeLinear:3 Gemm:1 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1 Softmax:1'),
    ], (4, 1050)),
    'mobilenet_lite': ([
        ('cpu', 'QuantizeLinear:1'),
        ('dev', 'Clip:1 Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'Clip:1 Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('dev', 'Clip:1 Conv:2 DequantizeLinear:6 QuantizeLinear:2'),
        ('cpu', 'Add:1 DequantizeLinear:1 QuantizeLinear:1'),
        ('dev', 'Clip:2 Conv:3 DequantizeLinear:9 QuantizeLinear:3'),
        ('cpu', 'Clip:1 Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('dev', 'Clip:1 Conv:2 DequantizeLinear:6 QuantizeLinear:2'),
        ('cpu', 'Add:1 DequantizeLinear:1 QuantizeLinear:1'),
        ('dev', 'Clip:1 Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1 Flatten:1 GlobalAveragePool:1 QuantizeLinear:1'),
        ('dev', 'DequantizeLinear:3 Gemm:1 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1'),
    ], (12, 46666)),
    'resnet_lite': ([
        ('cpu', 'QuantizeLinear:1'),
        ('dev', 'Conv:1 DequantizeLinear:3 QuantizeLinear:1 Relu:1'),
        ('cpu', 'Conv:1 DequantizeLinear:3 QuantizeLinear:1 Relu:1'),
        ('dev', 'Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'Add:1 Conv:1 DequantizeLinear:4 QuantizeLinear:2 Relu:2'),
        ('dev', 'Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'Add:1 Conv:1 DequantizeLinear:4 QuantizeLinear:2 Relu:2'),
        ('dev', 'Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'Add:1 Conv:2 DequantizeLinear:7 QuantizeLinear:3 Relu:2'),
        ('dev', 'Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'Add:1 DequantizeLinear:1 Flatten:1 GlobalAveragePool:1 QuantizeLinear:1 Relu:1'),
        ('dev', 'DequantizeLinear:3 Gemm:1 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1'),
    ], (12, 117802)),
    'tiny_transformer': ([
        ('cpu', 'Add:16 DequantizeLinear:32 Gelu:2 LayerNormalization:5 MatMul:16 Mul:2 QuantizeLinear:21 ReduceMean:1 Reshape:8 Softmax:2 Transpose:10'),
        ('dev', 'DequantizeLinear:3 Gemm:1 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1'),
    ], (2, 74)),}

#: fpga:1@rtl: the iCE40 bitstream's smaller core (no group loop, smaller banks)
SMALL_CORE = {**FULL_CORE,
    'dwsep': ([
        ('cpu', 'Conv:5 DequantizeLinear:17 Flatten:1 GlobalAveragePool:1 MaxPool:2 QuantizeLinear:8 Relu:5'),
        ('dev', 'DequantizeLinear:3 Gemm:1 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1'),
    ], (2, 74)),
    'mobilenet_lite': ([
        ('cpu', 'QuantizeLinear:1'),
        ('dev', 'Clip:1 Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'Add:1 Clip:2 Conv:3 DequantizeLinear:10 QuantizeLinear:4'),
        ('dev', 'Clip:1 Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'Clip:1 Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('dev', 'Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'Add:1 Clip:2 Conv:3 DequantizeLinear:10 QuantizeLinear:4'),
        ('dev', 'Clip:1 Conv:1 DequantizeLinear:3 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1 Flatten:1 GlobalAveragePool:1 QuantizeLinear:1'),
        ('dev', 'DequantizeLinear:3 Gemm:1 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1'),
    ], (10, 38986)),
    'resnet_lite': ([
        ('cpu', 'Add:4 Conv:10 DequantizeLinear:34 Flatten:1 GlobalAveragePool:1 QuantizeLinear:15 Relu:9'),
        ('dev', 'DequantizeLinear:3 Gemm:1 QuantizeLinear:1'),
        ('cpu', 'DequantizeLinear:1'),
    ], (2, 42)),}

#: the toy accelerator of examples/toy_accelerator (Conv, Gemm, MatMul, Relu), fp32
TOY = {
    'lenet': ([
        ('dev', 'Conv:1'),
        ('cpu', 'MaxPool:1'),
        ('dev', 'Conv:1'),
        ('cpu', 'Flatten:1 MaxPool:1'),
        ('dev', 'Gemm:2 Relu:1'),
        ('cpu', 'LogSoftmax:1'),
    ], (6, 76776)),
    'mlp': ([
        ('dev', 'Gemm:2 Relu:1'),
        ('cpu', 'Tanh:1'),
        ('dev', 'Gemm:1'),
        ('cpu', 'Softmax:1'),
    ], (4, 4200)),
    'resnet_lite': ([
        ('dev', 'Conv:3 Relu:2'),
        ('cpu', 'Add:1'),
        ('dev', 'Conv:2 Relu:2'),
        ('cpu', 'Add:1'),
        ('dev', 'Conv:3 Relu:2'),
        ('cpu', 'Add:1'),
        ('dev', 'Conv:2 Relu:2'),
        ('cpu', 'Add:1 Flatten:1 GlobalAveragePool:1 Relu:1'),
        ('dev', 'Gemm:1'),
    ], (14, 569512)),}

FPGA_DEVICES = {"fpga@emu": FULL_CORE, "fpga@opencl": FULL_CORE, "fpga@rtl": FULL_CORE,
                "fpga:1@rtl": SMALL_CORE}


def _usable(device: str) -> bool:
    try:
        hal.device(device)
    except hal.DeviceNotFound:
        return False
    return True


def _placement(compiled, device: str) -> tuple[list, tuple[int, int]]:
    fallback = hal.device("cpu").string
    segs = []
    for s in compiled.segments:
        role = "dev" if s.device.string == device else "cpu" if s.device.string == fallback \
            else s.device.string
        segs.append((role, " ".join(f"{op}:{n}" for op, n in sorted(s.ops.items()))))
    t = compiled.last_transfers
    return segs, (t.count, t.bytes)


def _run(name: str, device: str, **options) -> tuple[list, tuple[int, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback's warning
        compiled = hal.compile(name, device, **options)
    compiled(hal.models.example_input(name, 1))
    return _placement(compiled, hal.device(device).string)


@pytest.mark.parametrize("fpga", sorted(FPGA_DEVICES))
@pytest.mark.parametrize("name", sorted(FULL_CORE))
def test_fpga_placement_and_transfers(name, fpga):
    if not _usable(fpga):
        pytest.skip(f"{fpga} is not usable here")
    assert _run(name, fpga, precision="int8") == FPGA_DEVICES[fpga][name]


def test_every_zoo_model_is_recorded():
    assert sorted(FULL_CORE) == sorted(hal.models.list())


@pytest.mark.parametrize("name", sorted(TOY))
def test_toy_placement_and_transfers(toy, name):
    assert _run(name, "toy") == TOY[name]
