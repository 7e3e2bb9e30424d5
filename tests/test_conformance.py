"""ONNX's own operator cases, run through hal.compile on every usable device."""

from __future__ import annotations

import pytest

import hal
from hal.testing.conformance import run_conformance


def test_declared_ops_pass_onnx_cases(device, record_property, capsys):
    report = run_conformance(device)
    record_property("conformance", report.to_dict())
    with capsys.disabled():
        print("\n" + report.summary())
    assert report.run > 0, f"no ONNX case ran on {device}"
    assert report.failed == 0, f"{report.summary()}\n{report.failures_text()}"


@pytest.mark.parametrize("name", hal.models.list())
def test_reference_runs_every_zoo_model_itself(name, zoo):
    """The oracle hands nothing to another device: strict compile, every node on it."""
    compiled = hal.compile(zoo[name], "cpu@reference", fallback=None)
    assert compiled.fallbacks == []
    assert set(compiled.placement.values()) == {"cpu:0@reference"}
