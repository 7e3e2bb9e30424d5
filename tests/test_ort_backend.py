"""ONNX Runtime as a HAL device."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import hal

pytest.importorskip("onnxruntime")


def test_devices_listed():
    devs = {d.string: d for d in hal.devices() if d.backend == "ort"}
    assert devs["cpu:0@ort"].usable
    cuda = devs["cuda:0@ort"]
    if not cuda.usable:
        assert "CPU build" in cuda.reason and "onnxruntime-gpu" in cuda.reason


@pytest.mark.parametrize("level,name", [(0, "ORT_DISABLE_ALL"), (1, "ORT_ENABLE_ALL"),
                                        (3, "ORT_ENABLE_ALL")])
def test_opt_level_mapping(level, name):
    c = hal.compile(hal.models.get("lenet"), "cpu@ort", opt_level=level)
    assert c.executables[0].info["graph_optimization_level"] == name
    x = hal.models.example_input("lenet", 2)
    ref = hal.compile(hal.models.get("lenet"), "cpu@reference")(x)[0]
    assert np.max(np.abs(c(x)[0] - ref)) <= 1e-4


def test_threads_option():
    c = hal.compile(hal.models.get("mlp"), "cpu@ort", intra_op_num_threads=1)
    assert c(np.zeros((1, 784), np.float32))[0].shape == (1, 10)
    assert c.executables[0].info["intra_op_num_threads"] == 1
    assert "intra_op_num_threads" in hal.compile("mlp", "cpu@ort").executables[0].info
    with pytest.raises(hal.OptionError):
        hal.compile(hal.models.get("mlp"), "cpu@ort", intra_op_num_threads=-2)


def test_allow_spinning_option():
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    quiet = hal.compile(hal.models.get("mlp"), "cpu@ort", allow_spinning=False)
    assert quiet.executables[0].info["allow_spinning"] is False
    assert hal.compile("mlp", "cpu@ort").executables[0].info["allow_spinning"] is True
    np.testing.assert_array_equal(quiet(x)[0], hal.compile("mlp", "cpu@ort")(x)[0])
    with pytest.raises(hal.OptionError, match="allow_spinning"):
        hal.compile(hal.models.get("mlp"), "cpu@ort", allow_spinning="no")


def test_run_buffers_stays_on_host_device():
    c = hal.compile(hal.models.get("mlp"), "cpu@ort")
    dev = hal.device("cpu@ort")
    out = c.run([dev.put(np.ones((2, 784), np.float32))])
    assert c.last_transfers.count == 0 and out[0].shape == (2, 10)


@pytest.mark.gpu
def test_cuda_provider():
    _need_cuda()
    c = hal.compile(hal.models.get("lenet"), "cuda@ort")
    x = hal.models.example_input("lenet", 4)
    ref = hal.compile(hal.models.get("lenet"), "cpu@reference")(x)[0]
    assert np.max(np.abs(c(x)[0] - ref)) <= 1e-4


@pytest.mark.gpu
def test_cuda_run_keeps_results_on_the_gpu():
    _need_cuda()
    c = hal.compile(hal.models.get("mlp"), "cuda@ort")
    dev = hal.device("cuda@ort")
    buf = dev.put(np.ones((2, 784), np.float32))
    out = c.run([buf])
    assert c.last_transfers.count == 0
    assert type(out[0]).__name__ == "OrtBuffer" and out[0].shape == (2, 10)
    copies = dev.transfers.d2h_count
    assert out[0].numpy().shape == (2, 10) and dev.transfers.d2h_count == copies + 1


def _need_cuda():
    dev = next(d for d in hal.devices() if d.string == "cuda:0@ort")
    if not dev.usable:
        pytest.skip(dev.reason)


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
    from conftest import _usable_devices

    for dev in _usable_devices():  # every fp32 device (int8 ones have their own tests)
        y = hal.compile(model, dev)(x)[0]
        assert np.max(np.abs(y - expected)) <= 1e-4, dev


def test_exported_onnx_file_from_torch(tmp_path):
    """An .onnx written by torch.onnx.export, outside HAL, runs on cpu@ort."""
    torch = pytest.importorskip("torch")

    class Cnn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)
            self.fc = torch.nn.Linear(4 * 7 * 7, 10)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    net = Cnn().eval()
    path = tmp_path / "cnn.onnx"
    example = torch.zeros(1, 1, 14, 14)
    with warnings.catch_warnings():  # the TorchScript exporter warns that 21 is new to it
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=21,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}})
    x = np.random.default_rng(0).standard_normal((5, 1, 14, 14)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    c = hal.compile(str(path), "cpu@ort", fallback=None)
    assert np.max(np.abs(c(x)[0] - expected)) <= 1e-4


def _conv_act_model():
    """Conv -> Clip(0, 6) -> Flatten -> Gemm -> LeakyRelu, fused into ai.hal nodes."""
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from hal.passes.activation import ActivationFusion

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    fw = numpy_helper.from_array(rng.standard_normal((5, 4 * 4 * 4)).astype(np.float32), "fw")
    lo = numpy_helper.from_array(np.array(0, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(6, np.float32), "hi")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fw"], ["g"], transB=1),
             helper.make_node("LeakyRelu", ["g"], ["y"], alpha=0.2)]
    g = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 2, 6, 6])], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [2, 5])], [w, b, fw, lo, hi])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    model = ir.from_proto(proto)
    assert ActivationFusion()(model).modified
    return proto, ir.to_proto(model)


def test_hal_fused_ops_are_expanded_to_standard_onnx():
    plain, fused = _conv_act_model()
    assert {n.op_type for n in fused.graph.node} >= {"FusedConv", "FusedGemm"}
    x = np.random.default_rng(4).standard_normal((2, 2, 6, 6)).astype(np.float32) * 3
    c = hal.compile(fused, "cpu@ort", fallback=None)
    assert c.executables[0].info["expanded_hal_ops"] == 2
    ref = hal.compile(plain, "cpu@reference")(x)[0]
    assert np.max(np.abs(c(x)[0] - ref)) <= 1e-4


def _qdq_model():
    """x -> Q/DQ -> Conv with a Q/DQ weight -> Relu: a QDQ graph as a quantizer writes it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    wq = numpy_helper.from_array(rng.integers(-127, 128, (3, 1, 3, 3)).astype(np.int8), "wq")
    inits = [wq, numpy_helper.from_array(np.array(0.02, np.float32), "ws"),
             numpy_helper.from_array(np.array(0, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.int8), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 1, 8, 8])], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [1, 3, 6, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_int8_runs_qdq_graphs():
    x = np.random.default_rng(6).standard_normal((1, 1, 8, 8)).astype(np.float32)
    qdq = _qdq_model()
    c = hal.compile(qdq, "cpu@ort", precision="int8", fallback=None)
    assert c.executables[0].info["qdq_nodes"] == 3
    # the same arithmetic in numpy + the reference Conv: quantize x, dequantize both
    from hal.oracle import OPS
    from onnx import numpy_helper

    xd = np.clip(np.round(x / np.float32(0.05)), -128, 127).astype(np.float32) * np.float32(0.05)
    wq = numpy_helper.to_array(next(t for t in qdq.graph.initializer if t.name == "wq"))
    ref = np.maximum(OPS["Conv"](xd, wq.astype(np.float32) * np.float32(0.02)), 0)
    assert np.max(np.abs(c(x)[0] - ref)) <= 1e-4


def test_fp16_close_to_fp32():
    pytest.importorskip("onnxconverter_common")
    x = hal.models.example_input("lenet", 4)
    ref = hal.compile(hal.models.get("lenet"), "cpu@reference")(x)[0]
    y = hal.compile(hal.models.get("lenet"), "cpu@ort", precision="fp16")(x)[0]
    assert y.dtype == np.float32
    assert np.max(np.abs(y - ref)) <= 1e-2 * np.max(np.abs(ref))
    assert np.array_equal(np.argmax(y, 1), np.argmax(ref, 1))


def test_fp16_refused_when_a_weight_overflows():
    from onnx import TensorProto, helper, numpy_helper

    big = numpy_helper.from_array(np.full((2,), 1e6, np.float32), "big")
    g = helper.make_graph([helper.make_node("Mul", ["x", "big"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [big])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    with pytest.raises(hal.OptionError, match="fp16's range"):
        hal.compile(m, "cpu@ort", precision="fp16", opt_level=0)


def test_fp16_without_converter_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    with pytest.raises(hal.OptionError, match="pip install onnxconverter-common"):
        hal.compile(hal.models.get("mlp"), "cpu@ort", precision="fp16")


def test_iobinding_path_runs_on_cpu_too():
    """The GPU executable (OrtValues bound through IOBinding), exercised on the CPU provider."""
    from hal.backends.ort_backend import OrtBuffer, OrtDeviceExecutable

    c = hal.compile(hal.models.get("mlp"), "cpu@ort")
    host = c.executables[0]
    exe = OrtDeviceExecutable(host.session, host.device, host.info)
    x = np.random.default_rng(7).standard_normal((3, 784)).astype(np.float32)
    out = exe.run([OrtBuffer.from_numpy(x, host.device)])
    assert isinstance(out[0], OrtBuffer) and out[0].shape == (3, 10)
    assert out[0].dtype == np.float32
    np.testing.assert_allclose(out[0].numpy(), c(x)[0], rtol=1e-6, atol=1e-6)
