"""Loading and saving models: round trips, old opsets, corrupt files."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import hal
from tests.helpers import make_model, rand


def test_zoo_save_load_identical(tmp_path):
    for name in ("lenet", "tiny_transformer"):
        model = hal.models.get(name)
        path = tmp_path / f"{name}.onnx"
        hal.save(model, path)
        again = hal.load(path)
        x = hal.models.example_input(name, 3)
        a = hal.compile(model, "cpu@reference")(x)[0]
        b = hal.compile(again, "cpu@reference")(x)[0]
        np.testing.assert_array_equal(a, b)
        assert again.inputs == model.inputs


@pytest.mark.parametrize("cut", [0, 10, 200, -50])
def test_corrupt_or_truncated_file(tmp_path, cut):
    path = tmp_path / "m.onnx"
    data = hal.models.get("lenet").to_proto().SerializeToString()
    path.write_bytes(data[:cut] if cut else b"")
    with pytest.raises(hal.ModelError) as e:
        hal.load(path)
    assert "m.onnx" in str(e.value)


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00\xff" * 1000 + b"not a model")
    with pytest.raises(hal.ModelError):
        hal.load(path)


def test_missing_file():
    with pytest.raises(hal.ModelError, match="does not exist"):
        hal.load("/nonexistent/model.onnx")


@pytest.mark.parametrize("opset", [9, 11, 13, 17, 21])
def test_old_opsets_are_converted(opset):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="c", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="r"),
             helper.make_node("Flatten", ["r"], ["y"], name="f")]
    proto = make_model(nodes, [("x", [2, 3, 5, 5])], [("y", None)], {"w": rand(4, 3, 3, 3)},
                       opset=opset)
    model = hal.load(proto)
    assert model.opset == hal.DEFAULT_OPSET
    x = rand(2, 3, 5, 5, seed=1)
    y = hal.compile(model, "cpu@reference")(x)[0]
    assert y.shape == (2, 100)


def test_too_old_opset():
    proto = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2])], [("y", None)],
                       opset=7)
    with pytest.raises(hal.ModelError, match="opset 7"):
        hal.load(proto)


def test_load_does_not_modify_proto():
    proto = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2])], [("y", None)],
                       opset=13)
    before = proto.SerializeToString()
    hal.load(proto)
    assert proto.SerializeToString() == before


def test_compile_does_not_modify_model():
    model = hal.models.get("resnet_lite")
    before = model.to_proto().SerializeToString()
    hal.compile(model, "cpu@reference")
    assert model.to_proto().SerializeToString() == before


def test_torch_frontend_round_trip():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 8 * 8, 5)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    torch.manual_seed(0)
    net = Net()
    x = rand(3, 1, 8, 8)
    model = hal.from_torch(net, x[:1])
    assert model.inputs[0].shape[0] == "N"  # batch stays dynamic
    y = hal.compile(model, "cpu@reference")(x)[0]
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_load_of_a_builder_module_asks_for_its_shape():
    with pytest.raises(hal.ModelError, match="input shape"):
        hal.load(hal.models.build("mlp"))


def test_calibration_files(tmp_path):
    from hal.inputs import load_calibration, samples

    model = hal.models.get("mlp")
    x = hal.models.calibration_data("mlp", 8)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "any_name.npz", whatever=x)
    np.savez(tmp_path / "named.npz", **{model.inputs[0].name: x})
    for name in ("x.npy", "any_name.npz", "named.npz"):
        data = load_calibration(tmp_path / name, model)
        assert samples(data) == 8
        got = data if isinstance(data, np.ndarray) else data[model.inputs[0].name]
        assert np.array_equal(got, x)
    (tmp_path / "x.txt").write_text("1 2 3")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    for name, needle in (("missing.npy", "does not exist"), ("x.txt", ".npz"),
                         ("bad.npy", "cannot read")):
        with pytest.raises(hal.InputError, match=needle):
            load_calibration(tmp_path / name, model)


def test_save_rejects_non_model(tmp_path):
    with pytest.raises(hal.ModelError):
        hal.save(onnx.ModelProto(), tmp_path / "x.onnx")
