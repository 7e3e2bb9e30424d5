"""The ``tf`` backend: devices, flows (XLA and graph), layout, precisions, device buffers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import hal
from hal.errors import DeviceNotFound, OptionError

pytest.importorskip("tensorflow")

TOL = 1e-4
# bf16 keeps 8 significant bits (unit roundoff 2**-9 ~ 2e-3). Inputs, weights and every
# conv/matmul result are rounded to bf16, across up to ~10 layers: the zoo shows at most
# 8e-3 of the output's magnitude. 2e-2 of it leaves room for that and still catches a
# wrong kernel, whose error is of the order of the output itself.
BF16_REL = 2e-2
# fp16 keeps 11 bits (unit roundoff ~4.9e-4); the zoo shows at most 1e-3 of the magnitude.
FP16_REL = 4e-3
MODELS = ["lenet", "mobilenet_lite", "resnet_lite", "tiny_transformer"]


def _info(kind: str):
    return next(d for d in hal.devices() if d.backend == "tf" and d.kind == kind)


def _reference(name: str, batch: int = 3):
    x = hal.models.example_input(name, batch)
    return x, hal.compile(hal.models.get(name), "cpu@reference")(x)[0]


# -- devices ----------------------------------------------------------------------------------
def test_device_strings_resolve():
    dev = hal.device("cpu@tf")
    assert dev.string == "cpu:0@tf" and dev.info.usable and dev.info.host_memory
    assert hal.device("cpu:0@tf") is not None
    assert "tensorflow" in dev.info.name


def test_every_kind_is_listed_with_a_reason():
    infos = {d.kind: d for d in hal.devices() if d.backend == "tf"}
    assert set(infos) == {"cpu", "gpu", "tpu"}
    for kind in ("gpu", "tpu"):
        d = infos[kind]
        assert d.usable or "tensorflow" in d.reason
        assert not d.host_memory
        if not d.usable:
            with pytest.raises(DeviceNotFound):
                hal.device(f"{kind}@tf")


def test_bare_cpu_prefers_tf_over_the_reference():
    assert hal.device("cpu@tf").backend.priority == 30
    assert hal.device("cpu").backend.priority >= 30  # tf, or a backend ranked above it


def test_module_import_does_not_import_tensorflow():
    code = ("import sys, hal.backends.tf_backend as m; m.TfBackend().ops; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


@pytest.mark.parametrize("user_level", [None, "0"])
def test_tensorflow_start_up_lines_stay_off_stderr(user_level):
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("HAL_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level
    code = ("import os, sys, hal; hal.device('cpu@tf'); assert 'tensorflow' in sys.modules; "
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert run.stderr == ""
    assert run.stdout.strip() == (user_level or "2")  # the user's setting is kept


# -- flows -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("options,flow", [
    ({}, "tf.xla"),                       # default: XLA and the NHWC layout pass
    ({"xla": False}, "tf.graph"),         # tf.function without XLA
    ({"opt_level": 0}, "tf.plain"),       # no shared passes, no XLA, no layout pass
    ({"layout": "nchw"}, "tf.xla"),       # XLA without HAL's layout pass
    ({"xla": False, "layout": "nchw"}, "tf.graph"),
])
def test_flows_agree_with_reference(name, options, flow):
    x, ref = _reference(name)
    compiled = hal.compile(hal.models.get(name), "cpu@tf", fallback=None, **options)
    assert compiled.flow["flow"] == flow
    exe = compiled.executables[0]
    assert ("XLA" in exe.info["native"]) == flow.endswith("xla")
    y = compiled(x)[0]
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert float(np.max(np.abs(y - ref))) <= TOL


def test_one_trace_serves_every_batch_size():
    from hal.backends.tf_backend.reuse import SEGMENTS

    SEGMENTS.clear()  # a segment traced by an earlier test would count its traces too
    compiled = hal.compile(hal.models.get("lenet"), "cpu@tf")
    ref = hal.compile(hal.models.get("lenet"), "cpu@reference")
    exe = compiled.executables[0]
    assert exe.traces == 1  # the input signature, traced at compile time
    for batch in (1, 7, 2):
        x = hal.models.example_input("lenet", batch)
        assert float(np.max(np.abs(compiled(x)[0] - ref(x)[0]))) <= TOL
    assert exe.traces == 1


# -- reuse: TensorFlow never frees an XLA executable, so an identical segment takes its own ----
def test_compiling_the_same_model_again_reuses_its_function():
    import gc

    from hal.backends.tf_backend.reuse import SEGMENTS

    SEGMENTS.clear()
    x = hal.models.example_input("lenet", 2)
    first = hal.compile(hal.models.get("lenet"), "cpu@tf")
    y = first(x)[0]
    exe = first.executables[0]
    segment, concrete, traces = exe.segment, exe.concrete, exe.traces
    del first, exe
    gc.collect()  # released, as a server reloading the model releases the old one
    again = hal.compile(hal.models.get("lenet"), "cpu@tf")  # a new hal.Model, same content
    assert again.executables[0].segment is segment
    assert again.executables[0].concrete is concrete and segment.plan.traces == traces
    np.testing.assert_array_equal(again(x)[0], y)


def test_other_weights_or_choices_get_their_own_function():
    from hal.backends.tf_backend.reuse import SEGMENTS

    SEGMENTS.clear()
    x = hal.models.example_input("lenet", 2)
    compiled = {seed: hal.compile(hal.models.get("lenet", seed=seed), "cpu@tf")
                for seed in (0, 1)}
    assert compiled[0].executables[0].segment is not compiled[1].executables[0].segment
    outs = {seed: c(x)[0] for seed, c in compiled.items()}
    assert float(np.max(np.abs(outs[0] - outs[1]))) > 100 * TOL
    for seed, y in outs.items():  # each computes its own model
        ref = hal.compile(hal.models.get("lenet", seed=seed), "cpu@reference")(x)[0]
        assert float(np.max(np.abs(y - ref))) <= TOL
    segments = {compiled[0].executables[0].segment}
    for options in ({"xla": False}, {"layout": "nchw"}, {"precision": "bf16"}):
        c = hal.compile(hal.models.get("lenet"), "cpu@tf", **options)
        assert c.executables[0].segment not in segments, options
        segments.add(c.executables[0].segment)
    assert len(SEGMENTS) == 5


def test_kept_segments_are_bounded():
    from hal.backends.tf_backend.reuse import MAX_SEGMENTS, SEGMENTS, SegmentCache

    cache = SegmentCache(max_segments=3, max_bytes=100, size=lambda segment: segment[1])
    for key in "abcd":
        cache.get(key, lambda key=key: (key, 10))
    assert len(cache) == 3 and "a" not in cache
    assert cache.get("b", lambda: ("b again", 10)) == ("b", 10)  # kept, and now the newest
    cache.get("e", lambda: ("e", 10))
    assert "c" not in cache and "b" in cache
    cache.get("big", lambda: ("big", 95))  # 95 + 10 + 10 > 100: the older ones go
    assert len(cache) == 1 and "big" in cache
    cache.get("huge", lambda: ("huge", 500))  # over the bound alone: the newest stays
    assert len(cache) == 1 and "huge" in cache

    SEGMENTS.clear()
    x = hal.models.example_input("mlp", 2)
    first = hal.compile(hal.models.get("mlp"), "cpu@tf", xla=False)
    y = first(x)[0]
    for seed in range(1, MAX_SEGMENTS + 2):
        hal.compile(hal.models.get("mlp", seed=seed), "cpu@tf", xla=False)
        assert len(SEGMENTS) <= MAX_SEGMENTS
    assert first.executables[0].segment not in SEGMENTS.segments()
    np.testing.assert_array_equal(first(x)[0], y)  # dropped from the cache, still usable


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("precision,rel", [("bf16", BF16_REL), ("fp16", FP16_REL)])
@pytest.mark.parametrize("xla", [True, False])
def test_low_precision_on_cpu(name, precision, rel, xla):
    x, ref = _reference(name)
    y = hal.compile(hal.models.get(name), "cpu@tf", precision=precision, xla=xla)(x)[0]
    assert y.dtype == np.float32  # outputs keep the model's dtype
    assert float(np.max(np.abs(y - ref))) <= rel * float(np.max(np.abs(ref)))


def test_bad_options_are_hal_errors():
    model = hal.models.get("mlp")
    with pytest.raises(OptionError, match="precision"):
        hal.compile(model, "cpu@tf", precision="int8")
    with pytest.raises(OptionError, match="xla"):
        hal.compile(model, "cpu@tf", xla="yes")
    with pytest.raises(OptionError, match="layout"):
        hal.compile(model, "cpu@tf", layout="nchwc")
    with pytest.raises(OptionError, match="unknown"):
        hal.compile(model, "cpu@tf", jit=True)


# -- buffers ---------------------------------------------------------------------------------
def test_run_keeps_tensors_on_the_device():
    import tensorflow as tf
    from hal.backends.tf_backend.executable import TfBuffer

    dev = hal.device("cpu@tf")
    compiled = hal.compile(hal.models.get("mlp"), dev, fallback=None)
    x = np.random.default_rng(0).standard_normal((4, 784)).astype(np.float32)
    keep = x.copy()
    buf = dev.put(x)
    assert isinstance(buf, TfBuffer) and isinstance(buf.tensor, tf.Tensor)
    assert "CPU" in buf.tensor.device
    out = compiled.run([buf])
    assert isinstance(out[0], TfBuffer) and isinstance(out[0].tensor, tf.Tensor)
    assert out[0].shape == (4, 10) and out[0].dtype == np.float32
    assert compiled.last_transfers.count == 0
    np.testing.assert_allclose(out[0].numpy(), compiled(x)[0], rtol=0, atol=0)
    x[0, 0] = 123.0  # the buffer holds its own copy
    np.testing.assert_array_equal(buf.numpy(), keep)


def test_buffer_round_trip_and_ints():
    dev = hal.device("cpu@tf")
    for a in (np.arange(6, dtype=np.int64).reshape(2, 3), np.ones((2,), np.float64),
              np.array([True, False])):
        b = dev.put(a)
        assert b.shape == a.shape and b.dtype == a.dtype
        np.testing.assert_array_equal(b.numpy(), a)
        np.testing.assert_array_equal(b.to(hal.device("cpu@reference")).numpy(), a)


# -- accelerators ----------------------------------------------------------------------------
def _accelerator(kind: str):
    info = _info(kind)
    if not info.usable:
        pytest.skip(f"{kind}@tf: {info.reason}")
    return hal.device(f"{kind}@tf")


@pytest.mark.gpu
def test_gpu_runs_the_zoo_and_counts_transfers():
    import tensorflow as tf

    dev = _accelerator("gpu")
    assert all(tf.config.experimental.get_memory_growth(g)
               for g in tf.config.list_physical_devices("GPU"))
    for name in MODELS:
        x, ref = _reference(name)
        compiled = hal.compile(hal.models.get(name), dev, fallback=None)
        assert float(np.max(np.abs(compiled(x)[0] - ref))) <= TOL
        assert compiled.last_transfers.h2d_count == 1 and compiled.last_transfers.d2h_count == 1
        buf = dev.put(x)
        out = compiled.run([buf])
        assert "GPU" in out[0].tensor.device and compiled.last_transfers.count == 0


@pytest.mark.gpu
@pytest.mark.parametrize("precision,rel", [("bf16", BF16_REL), ("fp16", FP16_REL)])
def test_gpu_low_precision(precision, rel):
    dev = _accelerator("gpu")
    x, ref = _reference("resnet_lite")
    y = hal.compile(hal.models.get("resnet_lite"), dev, precision=precision)(x)[0]
    assert float(np.max(np.abs(y - ref))) <= rel * float(np.max(np.abs(ref)))


@pytest.mark.tpu
def test_tpu_runs_the_zoo():
    dev = _accelerator("tpu")
    for name in MODELS:
        x, ref = _reference(name)
        y = hal.compile(hal.models.get(name), dev, fallback=None)(x)[0]
        # TPUs may run fp32 matmuls through bf16 passes unless told otherwise
        assert float(np.max(np.abs(y - ref))) <= BF16_REL * float(np.max(np.abs(ref)))


# -- HAL's fused ops ---------------------------------------------------------------------------
@pytest.mark.parametrize("op,activation,params", [
    ("FusedConv", "Relu", []), ("FusedConv", "Clip", [0.0, 6.0]),
    ("FusedGemm", "LeakyRelu", [0.1]), ("FusedGemm", "Sigmoid", []),
])
@pytest.mark.parametrize("xla", [True, False])
def test_fused_ops_match_their_unfused_form(op, activation, params, xla):
    import onnx_ir as ir
    from hal.oracle import OPS

    from hal.backend import CompileOptions

    rng = np.random.default_rng(0)
    if op == "FusedConv":
        x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
        w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        attrs = {"pads": [1, 1, 1, 1], "strides": [2, 2]}
        y = OPS["Conv"](x, w, None, **attrs)
    else:
        x = rng.standard_normal((2, 5)).astype(np.float32)
        w = rng.standard_normal((4, 5)).astype(np.float32)
        attrs = {"transB": 1}
        y = OPS["Gemm"](x, w, None, **attrs)
    if activation == "Clip":
        want = OPS["Clip"](y, np.float32(params[0]), np.float32(params[1]))
    elif activation == "LeakyRelu":
        want = np.where(y < 0, y * params[0], y)
    else:
        want = OPS[activation](y)

    xv = ir.Value(name="x", shape=ir.Shape(x.shape), type=ir.TensorType(ir.DataType.FLOAT))
    wv = ir.Value(name="w", const_value=ir.tensor(w))
    node = ir.Node("ai.hal", op, [xv, wv], attributes=[
        *(ir.AttrInt64s(k, v) if isinstance(v, list) else ir.AttrInt64(k, v)
          for k, v in attrs.items()),
        ir.AttrString("activation", activation), ir.AttrFloat32s("activation_params", params)])
    node.outputs[0].name = "y"
    graph = ir.Graph([xv], node.outputs, nodes=[node], initializers=[wv],
                     opset_imports={"": 21, "ai.hal": 1})
    dev = hal.device("cpu@tf")
    assert dev.backend.supports(node, dev.info) is True
    exe = dev.backend.compile(ir.Model(graph, ir_version=10), dev,
                              CompileOptions(extra={"xla": xla}))
    np.testing.assert_allclose(exe(x)[0], want, rtol=1e-5, atol=1e-5)
