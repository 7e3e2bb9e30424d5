"""ONNX's light models on every usable CPU device, strict: no node falls back, and every
output matches the expected one the onnx package ships, at ONNX's own tolerances.

The models, their tolerances, their inputs and the comparison are the onnx package's own
(``onnx.backend.test``): the same check ONNX's backend test runner makes of a backend.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.backend.test.case.model import collect_testcases
from onnx.backend.test.runner import Runner

import hal

SITE = Path(onnx.__file__).parent.parent  # a light case's url is relative to it
LIGHT = {c.model_name: c for c in collect_testcases() if c.kind == "real"
         and c.url.startswith("onnx/backend/test/data/light/")}

#: (model, backend) pairs known to fail, with why; strict, so a fix turns them green
KNOWN: dict[tuple[str, str], str] = {
    ("squeezenet", "openvino"): "constant weights make the 1000 logits equal in exact arithmetic "
    "(~9.5e9 each); OpenVINO's f32 convolutions round the channels apart (~4e-7 relative, "
    "thousands absolute) and Softmax turns that into a peaked distribution, not 0.001 each",
}
#: the ten slowest cases (pytest --durations, shared 2-core machine: 4-17 s each, the file
#: 2.5 min in all); the quick run (-m "not slow", 1 min) still has every model and device
SLOW = {("bvlc_alexnet", "tf"), ("densenet121", "jax"), ("densenet121", "tf"),
        ("inception_v1", "jax"), ("inception_v1", "tf"), ("inception_v2", "jax"),
        ("inception_v2", "tf"), ("resnet50", "tf"), ("vgg19", "tf"), ("zfnet512", "tf")}


def _cpu_devices() -> list[str]:
    return sorted(d.string for d in hal.devices() if d.usable and d.kind == "cpu"
                  and not d.alias_of)


def _params():
    for name in sorted(LIGHT):
        for dev in _cpu_devices():
            backend = dev.split("@")[1]
            marks = [pytest.mark.slow] if (name, backend) in SLOW else []
            if (name, backend) in KNOWN:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[name, backend]))
            yield pytest.param(name, dev, marks=marks, id=f"{name}-{dev}")


@functools.lru_cache(maxsize=None)
def _light(name: str):
    """The model as HAL loads it, its inputs as ONNX's runner makes them, its expected
    outputs."""
    case = LIGHT[name]
    path = SITE / case.url
    proto = onnx.load(path)
    inits = {t.name for t in proto.graph.initializer}
    inputs = [Runner.generate_dummy_data(v, seed=0, name=name, random=False)
              for v in proto.graph.input if v.name not in inits]
    expected = []
    for i in range(len(proto.graph.output)):
        tensor = onnx.load_tensor(str(path.with_suffix("")) + f"_output_{i}.pb")
        expected.append(onnx.numpy_helper.to_array(tensor))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the opset conversion's notes on old models
        model = hal.load(proto)
    return model, inputs, expected


def test_every_light_model_is_checked():
    shipped = {p.name.removeprefix("light_").removesuffix(".onnx")
               for p in (SITE / "onnx/backend/test/data/light").glob("light_*.onnx")}
    assert shipped and set(LIGHT) == shipped


@pytest.mark.parametrize("name, cpu", _params())
def test_light_model_matches_onnx_expected_output(name, cpu):
    model, inputs, expected = _light(name)
    compiled = hal.compile(model, cpu, fallback=None)
    assert compiled.fallbacks == []
    assert set(compiled.placement.values()) == {hal.device(cpu).string}
    outputs = compiled(*inputs)
    case = LIGHT[name]
    Runner.assert_similar_outputs(expected, [np.asarray(o) for o in outputs],
                                  rtol=case.rtol, atol=case.atol)
