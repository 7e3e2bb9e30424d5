"""The jax backend: devices, jit caching, precision, device-resident buffers, peers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hal
from hal.errors import DeviceNotFound, OptionError

jax = pytest.importorskip("jax")

#: bf16 keeps 8 significant bits, so each rounding is off by up to 2^-9 of the value;
#: through ~10 layers with fp32 accumulation the zoo's outputs stay within 2 bf16 ulps
#: of their largest magnitude (measured: at most 0.7% of max|ref|). 2^-5 of max|ref|
#: leaves 4x headroom while still catching a layer computed wrongly.
BF16_TOL = 2.0 ** -5


def _usable(kind: str) -> str | None:
    for d in hal.devices():
        if d.backend == "jax" and d.kind == kind and d.usable:
            return None
        if d.backend == "jax" and d.kind == kind:
            return d.reason
    return "jax backend not registered"


def _skip_without(kind: str):
    reason = _usable(kind)
    return pytest.mark.skipif(reason is not None, reason=f"{kind}@jax unusable: {reason}")


@pytest.fixture(scope="module")
def lenet():
    return hal.models.get("lenet")


# -- devices -----------------------------------------------------------------------
def test_cpu_jax_is_usable_and_described():
    dev = hal.device("cpu@jax")
    assert dev is hal.device("cpu:0@jax")
    assert dev.string == "cpu:0@jax" and dev.info.usable and dev.info.host_memory
    assert "jax" in dev.info.name


@pytest.mark.parametrize("kind, words", [("tpu", "no TPU found"), ("gpu", "no GPU found")])
def test_missing_accelerators_are_listed_with_a_reason(kind, words):
    if _usable(kind) is None:
        pytest.skip(f"this machine has a {kind}")
    infos = [d for d in hal.devices() if d.backend == "jax" and d.kind == kind]
    assert infos and not infos[0].usable and words in infos[0].reason
    assert not infos[0].host_memory
    with pytest.raises(DeviceNotFound, match=words):
        hal.device(f"{kind}@jax")


def test_missing_index_names_what_exists():
    with pytest.raises(DeviceNotFound, match="index 7"):
        hal.device("cpu:7@jax")


def test_declared_ops_are_the_kernel_registrations():
    from hal.backends.jax_backend import JaxBackend
    from hal.backends.jax_backend.kernels import TABLE

    assert JaxBackend.ops == TABLE.ops and {"Conv", "Dropout", "Relu"} <= JaxBackend.ops
    zoo_ops = {n.op_type for name in hal.models.list() for n in hal.models.get(name).graph}
    assert zoo_ops <= JaxBackend.ops


def test_reading_the_op_list_does_not_import_jax():
    code = ("import sys, hal.backends.jax_backend as m; assert m.JaxBackend().ops; "
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


# -- compile and run ---------------------------------------------------------------------
def test_jit_traces_once_per_batch_size(lenet):
    compiled = hal.compile(lenet, "cpu@jax")
    (exe,) = compiled.executables
    assert exe.info["native"] == "jax.jit"
    for batch in (1, 5, 1, 5, 3):
        compiled(hal.models.example_input("lenet", batch))
    assert exe.traces == 3  # batch 1, 5 and 3: repeats hit jax's cache


def test_opt_level_0_runs_eagerly_and_agrees(lenet):
    x = hal.models.example_input("lenet", 2)
    eager = hal.compile(lenet, "cpu@jax", opt_level=0)
    assert "eager" in eager.executables[0].info["native"]
    np.testing.assert_allclose(eager(x)[0], hal.compile(lenet, "cpu@reference")(x)[0],
                               atol=1e-4)


def test_run_keeps_arrays_on_the_device(lenet):
    dev = hal.device("cpu@jax")
    compiled = hal.compile(lenet, dev)
    x = hal.models.example_input("lenet", 4)
    buf = dev.put(x)
    jdev = dev.backend.jax_device(dev)
    out = compiled.run([buf])
    out2 = compiled.run([buf])  # the same input buffer again: nothing was donated
    dev.sync()
    for o in (out[0], out2[0]):
        assert isinstance(o.array, jax.Array) and o.array.devices() == {jdev}
        assert o.shape == (4, 10) and o.dtype == np.float32
    np.testing.assert_array_equal(out[0].numpy(), out2[0].numpy())
    np.testing.assert_array_equal(buf.numpy(), x)


def test_put_copies_the_users_array():
    dev = hal.device("cpu@jax")
    x = np.arange(6, dtype=np.float32)
    buf = dev.put(x)
    x[:] = -1
    np.testing.assert_array_equal(buf.numpy(), np.arange(6))
    host = buf.numpy()
    host[0] = 42  # the copy handed out is the caller's to write
    assert buf.numpy()[0] == 0


def test_bf16_agrees_with_reference_within_tolerance(zoo):
    for name in ("lenet", "resnet_lite", "tiny_transformer"):
        x = hal.models.example_input(name, 4)
        ref = hal.compile(zoo[name], "cpu@reference")(x)[0]
        y = hal.compile(zoo[name], "cpu@jax", precision="bf16")(x)[0]
        assert y.dtype == np.float32  # outputs are cast back to the model's fp32
        err = float(np.max(np.abs(y - ref)))
        assert err <= BF16_TOL * float(np.max(np.abs(ref))), f"{name}: bf16 error {err:.3g}"


def test_fp16_is_for_gpus_only(lenet):
    if _usable("gpu") is None:
        pytest.skip("this machine has a GPU")
    with pytest.raises(OptionError, match="bf16"):
        hal.compile(lenet, "cpu@jax", precision="fp16")


def _graph(op, inputs, outputs, **attrs):
    from onnx import helper

    node = helper.make_node(op, [i[0] for i in inputs], [o[0] for o in outputs], **attrs)
    g = helper.make_graph([node], op.lower(),
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def test_shape_input_given_at_runtime_traces_once_per_value():
    from onnx import TensorProto as T

    m = _graph("Reshape", [("x", T.FLOAT, [2, 6]), ("s", T.INT64, [2])],
               [("y", T.FLOAT, None)])
    compiled = hal.compile(m, "cpu@jax", fallback=None)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert compiled(x, np.array([3, 4]))[0].shape == (3, 4)
    assert compiled(x, np.array([4, -1]))[0].shape == (4, 3)
    assert compiled(x, np.array([3, 4]))[0].shape == (3, 4)
    assert compiled.executables[0].traces == 2


def test_int64_is_kept_without_touching_jax_globally():
    from onnx import TensorProto as T

    m = _graph("ArgMax", [("x", T.FLOAT, [3, 4])], [("y", T.INT64, [3, 1])], axis=1)
    compiled = hal.compile(m, "cpu@jax", fallback=None)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    y = compiled(x)[0]
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, x.argmax(1)[:, None])
    assert not jax.config.jax_enable_x64
    big = np.array([2**40, -3], np.int64)
    add = hal.compile(_graph("Add", [("a", T.INT64, [2]), ("b", T.INT64, [2])],
                             [("c", T.INT64, [2])]), "cpu@jax", fallback=None)
    np.testing.assert_array_equal(add(big, big)[0], big * 2)


# -- accelerators --------------------------------------------------------------------------
@pytest.mark.gpu
@_skip_without("gpu")
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-4), ("bf16", None), ("fp16", None)])
def test_gpu_agrees_with_reference(lenet, precision, tol):
    _accelerator_agrees(lenet, "gpu@jax", precision, tol)


@pytest.mark.tpu
@_skip_without("tpu")
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-4), ("bf16", None)])
def test_tpu_agrees_with_reference(lenet, precision, tol):
    _accelerator_agrees(lenet, "tpu@jax", precision, tol)


def _accelerator_agrees(model, device, precision, tol):
    dev = hal.device(device)
    assert not dev.info.host_memory
    x = hal.models.example_input("lenet", 8)
    ref = hal.compile(model, "cpu@reference")(x)[0]
    compiled = hal.compile(model, dev, precision=precision)
    out = compiled.run([dev.put(x)])
    dev.sync()
    y = out[0].numpy()
    limit = tol if tol is not None else BF16_TOL * 4 * float(np.max(np.abs(ref)))
    assert float(np.max(np.abs(y - ref))) <= limit


# -- the hand-written peers used by bench/ ------------------------------------------------
def _handwritten():
    path = Path(__file__).resolve().parents[1] / "bench" / "handwritten" / "jax_models.py"
    spec = importlib.util.spec_from_file_location("hal_bench_jax_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["lenet", "mobilenet_lite", "resnet_lite", "tiny_transformer"])
def test_handwritten_jax_models_match_reference(name, zoo):
    fn = _handwritten().build(name, hal.models.build(name))
    ref = hal.compile(zoo[name], "cpu@reference")
    for batch in (1, 3):
        x = hal.models.example_input(name, batch)
        err = float(np.max(np.abs(np.asarray(fn(x)) - ref(x)[0])))
        assert err <= 1e-4, f"hand-written {name}, batch {batch}: {err:.2e}"
