"""ONNX Runtime as a HAL device."""

from __future__ import annotations

import numpy as np
import pytest

import hal

pytest.importorskip("onnxruntime")


def test_devices_listed():
    devs = {d.string: d for d in hal.devices() if d.backend == "ort"}
    assert devs["cpu:0@ort"].usable
    cuda = devs["cuda:0@ort"]
    if not cuda.usable:
        assert "CUDAExecutionProvider" in cuda.reason


@pytest.mark.parametrize("level,name", [(0, "ORT_DISABLE_ALL"), (1, "ORT_ENABLE_BASIC"),
                                        (2, "ORT_ENABLE_EXTENDED"), (3, "ORT_ENABLE_ALL")])
def test_opt_level_mapping(level, name):
    c = hal.compile(hal.models.get("lenet"), "cpu@ort", opt_level=level)
    assert c.executables[0].info["graph_optimization_level"] == name
    x = hal.models.example_input("lenet", 2)
    ref = hal.compile(hal.models.get("lenet"), "cpu@reference")(x)[0]
    assert np.max(np.abs(c(x)[0] - ref)) <= 1e-4


def test_threads_option():
    c = hal.compile(hal.models.get("mlp"), "cpu@ort", intra_op_num_threads=1)
    assert c(np.zeros((1, 784), np.float32))[0].shape == (1, 10)
    with pytest.raises(hal.OptionError):
        hal.compile(hal.models.get("mlp"), "cpu@ort", intra_op_num_threads=-2)


def test_run_buffers_stays_on_host_device():
    c = hal.compile(hal.models.get("mlp"), "cpu@ort")
    dev = hal.device("cpu@ort")
    out = c.run([dev.put(np.ones((2, 784), np.float32))])
    assert c.last_transfers.count == 0 and out[0].shape == (2, 10)


@pytest.mark.gpu
def test_cuda_provider():
    dev = [d for d in hal.devices() if d.string == "cuda:0@ort"][0]
    if not dev.usable:
        pytest.skip(dev.reason)
    c = hal.compile(hal.models.get("lenet"), "cuda@ort")
    x = hal.models.example_input("lenet", 4)
    ref = hal.compile(hal.models.get("lenet"), "cpu@reference")(x)[0]
    assert np.max(np.abs(c(x)[0] - ref)) <= 1e-4


def test_exported_torch_model_on_every_backend():
    torch = pytest.importorskip("torch")

    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.c2 = torch.nn.Conv2d(8, 8, 3, stride=2, groups=8)
            self.fc = torch.nn.Linear(8 * 7 * 7, 5)

        def forward(self, x):
            x = torch.relu(self.bn(self.c1(x)))
            x = torch.nn.functional.avg_pool2d(torch.sigmoid(self.c2(x)), 1)
            return torch.softmax(self.fc(torch.flatten(x, 1)), 1)

    torch.manual_seed(0)
    net = Small().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    model = hal.from_torch(net, x[:1])
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    for dev in sorted({d.string for d in hal.devices() if d.usable and not d.alias_of}):
        y = hal.compile(model, dev)(x)[0]
        assert np.max(np.abs(y - expected)) <= 1e-4, dev
