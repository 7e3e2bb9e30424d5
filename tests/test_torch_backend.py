"""The torch backend: devices, flows, precisions, device-resident buffers, exported models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import hal
from hal.errors import DeviceNotFound, OptionError

torch = pytest.importorskip("torch")

HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device: torch "
                                f"{torch.__version__} sees none")


def _ref(name, batch=2):
    x = hal.models.example_input(name, batch)
    return x, hal.compile(name, "cpu@reference")(x)[0]


# -- devices ---------------------------------------------------------------------------------

def test_cpu_torch_is_listed_usable_and_resolves():
    infos = {d.string: d for d in hal.devices() if d.backend == "torch"}
    assert infos["cpu:0@torch"].usable and infos["cpu:0@torch"].host_memory
    dev = hal.device("cpu@torch")
    assert dev.string == "cpu:0@torch" and dev.backend.name == "torch"
    assert hal.device("cpu:0@torch") is dev


def test_cuda_is_listed_with_a_reason_when_unusable():
    cuda = [d for d in hal.devices() if d.backend == "torch" and d.kind == "cuda"]
    assert cuda, "cuda@torch must always be listed, usable or not"
    for d in cuda:
        assert d.host_memory is False
        if not d.usable:
            assert "CPU build" in d.reason or "no CUDA device" in d.reason or "failed" in d.reason


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present")
def test_cuda_device_string_raises_with_the_reason():
    with pytest.raises(DeviceNotFound, match="CPU build|no CUDA device"):
        hal.device("cuda@torch")


def test_declared_ops_have_converters_and_cover_the_zoo():
    from hal.backends.torch_backend import TorchBackend, lowering, ops_math, ops_nn, ops_tensor  # noqa

    converters = {op for dom, op in lowering.CONVERTERS if dom == ""}
    assert TorchBackend.ops == converters
    zoo_ops = {n.op_type for name in hal.models.list() for n in hal.models.get(name).graph}
    assert zoo_ops <= TorchBackend.ops


# -- flows -----------------------------------------------------------------------------------

@pytest.mark.parametrize("level,flow,native", [
    (0, "torch.plain", ["torch.fx"]),
    (1, "torch.default", ["torch.fx"]),
    (2, "torch.compile", ["torch.fx", "torch.compile(inductor)"]),
    (3, "torch.max", ["torch.fx", "torch.compile(inductor)"]),  # + "cuda graphs" on CUDA
])
def test_flow_per_opt_level(level, flow, native):
    compiled = hal.compile("mlp", "cpu@torch", opt_level=level)  # torch.compile is lazy
    assert compiled.flow["flow"] == flow
    info = compiled.report()["segments"][0]["info"]
    assert info["native"] == native and info["inference_mode"] is True
    if level < 2:
        x, ref = _ref("mlp")
        np.testing.assert_allclose(compiled(x)[0], ref, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_agrees_with_reference():
    x, ref = _ref("mlp", 4)
    y = hal.compile("mlp", "cpu@torch", opt_level=2)(x)[0]
    np.testing.assert_allclose(y, ref, atol=1e-5)


# bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%); autocast runs conv/gemm/matmul in
# bf16 with fp32 accumulation, so each layer adds about that much relative error to its output.
# Over the zoo's 2-20 layers the max abs error on these O(1) outputs stays within 5% of the
# output range, and the predicted class (top-1) agrees. fp16 has 11 bits: 8x tighter.
TOLERANCE = {"bf16": 0.05, "fp16": 0.01}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", ["lenet", "resnet_lite", "tiny_transformer"])
def test_reduced_precision_agrees_with_reference(precision, name):
    x, ref = _ref(name, 8)
    compiled = hal.compile(name, "cpu@torch", precision=precision)
    y = compiled(x)[0]
    assert y.dtype == np.float32 and y.shape == ref.shape  # outputs keep the graph's dtype
    scale = float(np.max(np.abs(ref)))
    err = float(np.max(np.abs(y - ref)))
    assert err <= TOLERANCE[precision] * max(scale, 1.0), f"{name} {precision}: {err:.3g}"
    assert (y.argmax(-1) == ref.argmax(-1)).mean() >= 0.875
    info = compiled.report()["segments"][0]["info"]
    assert info["autocast"] == f"cpu/{'bfloat16' if precision == 'bf16' else 'float16'}"


def test_bad_options_raise_option_errors():
    with pytest.raises(OptionError, match="channels_last"):
        hal.compile("lenet", "cpu@torch", channels_last="yes")
    with pytest.raises(OptionError, match="int8"):
        hal.compile("lenet", "cpu@torch", precision="int8")
    with pytest.raises(OptionError, match="unknown compile option"):
        hal.compile("lenet", "cpu@torch", chanels_last=True)


def test_channels_last_is_chosen_for_conv_models_and_gives_the_same_numbers():
    def layout(name, **kw):
        return hal.compile(name, "cpu@torch", **kw).report()["segments"][0]["info"][
            "channels_last"]

    assert layout("resnet_lite") is True  # measured faster on the CPU from opt_level 1
    assert layout("resnet_lite", opt_level=0) is False  # plain fx changes nothing
    assert layout("mlp") is False
    assert layout("resnet_lite", channels_last=False) is False
    x, ref = _ref("resnet_lite")
    for cl in (True, False):
        y = hal.compile("resnet_lite", "cpu@torch", channels_last=cl)(x)[0]
        np.testing.assert_allclose(y, ref, atol=1e-4)


# -- buffers ---------------------------------------------------------------------------------

def test_run_keeps_tensors_on_the_device():
    from hal.backends.torch_backend import TorchBuffer

    compiled = hal.compile("lenet", "cpu@torch")
    dev = compiled.device
    x, ref = _ref("lenet")
    buf = dev.put(x)
    assert isinstance(buf, TorchBuffer) and isinstance(buf.tensor, torch.Tensor)
    assert np.shares_memory(buf.tensor.numpy(), x)  # from_numpy: no copy on the CPU
    out = compiled.run([buf])
    assert isinstance(out[0], TorchBuffer) and out[0].tensor.device.type == "cpu"
    assert out[0].shape == ref.shape and out[0].dtype == np.float32
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-4)
    assert compiled.transfers.count == 0  # host memory: nothing is ever copied


def test_read_only_and_strided_inputs_work_and_are_not_modified():
    compiled = hal.compile("mlp", "cpu@torch")
    x, ref = _ref("mlp", 3)
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_allclose(compiled(ro)[0], ref, atol=1e-5)
    rev = np.ascontiguousarray(x[::-1])[::-1]  # negative strides: torch cannot view these
    np.testing.assert_allclose(compiled(rev)[0], ref, atol=1e-5)


@gpu
@needs_cuda
@pytest.mark.parametrize("name", ["lenet", "tiny_transformer"])
def test_cuda_zoo_and_device_residency(name):
    x, ref = _ref(name, 4)
    compiled = hal.compile(name, "cuda@torch")
    buf = compiled.device.put(x)
    assert buf.tensor.device.type == "cuda"
    out = compiled.run([buf])
    assert out[0].tensor.device.type == "cuda"
    compiled.sync()
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-4)
    assert compiled.device.transfers.h2d_count >= 1 and compiled.device.transfers.d2h_count >= 1


@gpu
@needs_cuda
def test_cuda_fp16_and_cuda_graphs():
    x, ref = _ref("resnet_lite", 4)
    y = hal.compile("resnet_lite", "cuda@torch", precision="fp16")(x)[0]
    assert float(np.max(np.abs(y - ref))) <= TOLERANCE["fp16"] * max(float(np.abs(ref).max()), 1)
    compiled = hal.compile("resnet_lite", "cuda@torch", opt_level=3)
    assert "cuda graphs" in compiled.report()["segments"][0]["info"]["native"]
    for _ in range(3):  # replays must not overwrite results already handed out
        first = compiled(x)[0]
    np.testing.assert_allclose(first, ref, atol=1e-3)


# -- models from outside HAL -----------------------------------------------------------------

class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, groups=2)
        self.pool = torch.nn.AvgPool2d(2, ceil_mode=True)
        self.fc = torch.nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = torch.nn.functional.relu(self.bn(self.conv1(x)))
        x = torch.nn.functional.max_pool2d(x, 2)
        x = self.pool(torch.nn.functional.hardswish(self.conv2(x)))
        x = torch.flatten(x, 1)
        return torch.softmax(self.fc(x), dim=-1)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_exported_torch_model_runs_and_agrees(tmp_path):
    torch.manual_seed(0)
    net = SmallCNN().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.1, 0.1)
        net.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / "small_cnn.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=21,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}})
    compiled = hal.compile(str(path), "cpu@torch", fallback=None)
    assert set(compiled.placement.values()) == {"cpu:0@torch"}
    for batch in (2, 5):
        xb = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            expected = net(xb).numpy()
        np.testing.assert_allclose(compiled(xb.numpy())[0], expected, atol=1e-5)


# -- hand-written torch twins of the zoo (the bench peer) ------------------------------------

@pytest.fixture(scope="module")
def twins():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "handwritten"))
    try:
        import torch_models
    finally:
        sys.path.pop(0)
    return torch_models


@pytest.mark.parametrize("name", ["lenet", "mobilenet_lite", "resnet_lite", "tiny_transformer"])
def test_hand_written_torch_twin_agrees_with_reference(twins, name):
    net = twins.build(name, hal.models.build(name))
    x, ref = _ref(name, 3)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-4)


# -- HAL's fused ops -------------------------------------------------------------------------

@pytest.mark.parametrize("activation,params,numpy_act", [
    ("Relu", [], lambda y: np.maximum(y, 0)),
    ("Clip", [0.0, 6.0], lambda y: np.clip(y, 0, 6)),
    ("LeakyRelu", [0.1], lambda y: np.where(y > 0, y, 0.1 * y)),
])
def test_fused_conv_and_gemm_lower_with_their_activation(activation, params, numpy_act):
    import onnx
    import onnx_ir as ir
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    gw = rng.standard_normal((5, 64)).astype(np.float32)
    act = {"activation": activation, **({"activation_params": params} if params else {})}
    nodes = [helper.make_node("FusedConv", ["x", "w", "b"], ["c"], domain="ai.hal",
                              pads=[1, 1, 1, 1], strides=[2, 2], **act),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("FusedGemm", ["f", "gw"], ["y"], domain="ai.hal", transB=1, **act)]
    graph = helper.make_graph(
        nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [onnx.numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (gw, "gw"))])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 21), helper.make_opsetid("ai.hal", 1)]))
    dev = hal.device("cpu@torch")
    assert all(dev.backend.supports(n, dev.info) is True for n in model.graph)
    exe = dev.backend.compile(model, dev, hal.backend.CompileOptions())
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    conv = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                      torch.from_numpy(b), 2, 1).numpy()
    expected = numpy_act(numpy_act(conv).reshape(2, -1) @ gw.T)
    np.testing.assert_allclose(exe(x)[0], expected, rtol=1e-5, atol=1e-5)
