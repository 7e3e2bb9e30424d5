"""The hand-written TensorFlow peers in bench/ compute what the zoo models compute."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

import hal

pytest.importorskip("tensorflow")

_PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "handwritten" / "tf_models.py"


def _tf_models():
    spec = importlib.util.spec_from_file_location("hal_bench_tf_models", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["lenet", "mobilenet_lite", "resnet_lite", "tiny_transformer"])
def test_handwritten_tf_matches_reference(name):
    tf_models = _tf_models()
    module = hal.models.build(name)
    ref = hal.compile(hal.models.get(name), "cpu@reference")
    for jit in (True, False):
        f = tf_models.build(name, module, jit_compile=jit)
        for batch in (1, 4):
            x = hal.models.example_input(name, batch)
            err = float(np.max(np.abs(f(x) - ref(x)[0])))
            assert err <= 1e-4, f"{name} (jit_compile={jit}) batch {batch}: {err:.2e}"
