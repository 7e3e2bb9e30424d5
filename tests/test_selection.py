"""Measured selection (hal.selection): a bare kind is served by the fastest backend whose
outputs agree with cpu@reference; the decision is cached on disk and invalidated by what can
change it. The candidates here are onnxruntime and three in-process backends built on it: one
whose outputs are wrong, one that fails to compile, one that counts its compiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hal
from hal.backends.ort_backend import OrtBackend
from hal.backend import Executable, HostBuffer
from hal.cli import main
from hal.selection import cache

COMPILES: dict[str, int] = {}


class Skewed(OrtBackend):
    """Fast and wrong: its outputs are off by one. Highest priority, so 'priority' picks it."""

    name = "skewed"
    priority = 70

    def compile(self, model, device, options):
        COMPILES[self.name] = COMPILES.get(self.name, 0) + 1
        return _Shifted(super().compile(model, device, options))


class Boom(OrtBackend):
    name = "boom"
    priority = 65

    def compile(self, model, device, options):
        raise RuntimeError("kernel generator crashed")


class Counting(OrtBackend):
    name = "counting"
    priority = 1

    def compile(self, model, device, options):
        COMPILES[self.name] = COMPILES.get(self.name, 0) + 1
        return super().compile(model, device, options)


class _Shifted(Executable):
    def __init__(self, inner):
        super().__init__(inner.device, inner.input_names, inner.output_names)
        self.inner = inner

    def run(self, buffers):
        return [HostBuffer(b.numpy() + 1.0, self.device) for b in self.inner.run(buffers)]


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Measured selection on, a private cache, a short budget, and the four candidates."""
    monkeypatch.delenv("HAL_SELECT", raising=False)
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HAL_SELECT_BUDGET", "0.03")
    for b in (Skewed, Boom, Counting):
        hal.register_backend(b, replace=True)
    monkeypatch.setenv("HAL_BACKENDS", "skewed,boom,ort,counting,reference")
    COMPILES.clear()
    yield tmp_path
    for b in (Skewed, Boom, Counting):
        hal.registry.REGISTRY.unregister(b.name)


def _by_backend(sel: dict) -> dict:
    return {c["backend"]: c for c in sel["candidates"]}


def test_measured_keeps_the_fastest_agreeing_candidate(measured):
    compiled = hal.compile("lenet", "cpu")
    sel = compiled.report()["selection"]
    assert sel["mode"] == "measured" and not sel["cached"] and sel["measure_s"] > 0
    c = _by_backend(sel)
    assert c["skewed"]["status"] == "rejected" and "differs from cpu@reference" in \
        c["skewed"]["reason"]
    assert c["boom"]["status"] == "failed" and "kernel generator crashed" in c["boom"]["reason"]
    assert c["reference"]["status"] == "unusable"
    timed = [k for k, v in c.items() if v["status"] == "measured"]
    assert sorted(timed) == ["counting", "ort", "ort intra_op_num_threads=1"]
    assert all(c[k]["p50_ms"] > 0 for k in timed)
    fastest = c[min(timed, key=lambda k: c[k]["p50_ms"])]
    assert sel["winner"] == fastest["device"] == compiled.device.string
    assert sel["winner_options"] == fastest.get("options", {})
    assert compiled.options.extra == sel["winner_options"]
    assert "fastest of 3 candidates" in sel["why"]
    x = hal.models.example_input("lenet", 1)
    ref = hal.compile("lenet", "cpu@reference")(x)[0]
    np.testing.assert_allclose(compiled(x)[0], ref, rtol=1e-4, atol=1e-5)


def test_second_compile_measures_nothing_and_batch_or_upgrade_invalidate(measured,
                                                                          monkeypatch):
    first = hal.compile("lenet", "cpu")
    assert COMPILES == {"skewed": 1, "counting": 1}
    again = hal.compile("lenet", "cpu")
    sel = again.report()["selection"]
    assert sel["cached"] and sel["measure_s"] == 0.0
    assert sel["winner"] == first.selection["winner"] == again.device.string
    # only the winner compiled: no candidate was tried again
    assert COMPILES == {"skewed": 1, "counting": 1 + (again.device.backend.name == "counting")}
    assert not hal.compile("lenet", "cpu", batch=2).selection["cached"]
    assert hal.compile("lenet", "cpu", batch=2).selection["cached"]

    real = cache.runtime_versions
    monkeypatch.setattr(cache, "runtime_versions", lambda b: {"onnxruntime": "99.0"}
                        if b.name == "ort" else real(b))
    assert not hal.compile("lenet", "cpu").selection["cached"]  # an ort upgrade: measured again


def test_options_and_model_are_part_of_the_key(measured):
    hal.compile("lenet", "cpu")
    assert not hal.compile("lenet", "cpu", opt_level=0).selection["cached"]
    assert not hal.compile("mlp", "cpu").selection["cached"]


def test_priority_keeps_the_fixed_order(measured, monkeypatch):
    compiled = hal.compile("lenet", "cpu", select="priority")
    assert compiled.device.backend.name == "skewed"  # highest priority, nothing measured
    assert compiled.selection["mode"] == "priority"
    assert COMPILES == {"skewed": 1}
    monkeypatch.setenv("HAL_SELECT", "priority")
    assert hal.compile("lenet", "cpu").device.backend.name == "skewed"
    assert not (measured / "selection").exists()  # nothing measured, nothing stored


def test_named_device_is_never_measured(measured):
    compiled = hal.compile("lenet", "cpu@skewed")
    assert compiled.selection is None and "selection" not in compiled.report()


def test_corrupt_entry_is_measured_again(measured):
    hal.compile("lenet", "cpu")
    folder = measured / "selection"
    assert folder.stat().st_mode & 0o777 == 0o700
    (entry,) = folder.glob("*.json")
    entry.write_text("{ not json")
    assert not hal.compile("lenet", "cpu").selection["cached"]
    assert json.loads(entry.read_text())["winner"]  # rewritten whole
    entry.write_text(json.dumps({"key": {"other": 1}, "winner": "cpu:0@skewed",
                                 "candidates": []}))
    sel = hal.compile("lenet", "cpu").selection
    assert not sel["cached"] and sel["winner"] != "cpu:0@skewed"


def test_no_agreeing_candidate_is_an_error(measured, monkeypatch):
    monkeypatch.setenv("HAL_BACKENDS", "skewed,boom")
    with pytest.raises(hal.BackendError, match="kernel generator crashed") as err:
        hal.compile("lenet", "cpu")
    assert "differs from cpu@reference" in str(err.value)


@pytest.mark.parametrize("kw, match", [({"select": "fastest"}, "not a selection mode"),
                                       ({"batch": 0}, "batch must be a positive int"),
                                       ({"select_budget_s": -1}, "seconds of timed calls")])
def test_bad_selection_options(measured, kw, match):
    with pytest.raises(hal.OptionError, match=match):
        hal.compile("lenet", "cpu", **kw)


def test_bad_env(measured, monkeypatch):
    monkeypatch.setenv("HAL_SELECT", "fast")
    with pytest.raises(hal.OptionError, match="HAL_SELECT='fast'"):
        hal.compile("lenet", "cpu")


def test_tune_then_run_explain(measured, capsys):
    assert main(["tune", "lenet", "--batch", "1", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(d["batch"], d["cached"]) for d in out] == [(1, False), (3, False)]
    assert main(["run", "lenet", "--batch", "3", "--json"]) == 0
    sel = json.loads(capsys.readouterr().out)["report"]["selection"]
    assert sel["cached"] and sel["measure_s"] == 0.0 and sel["winner"] == out[1]["winner"]
    assert main(["run", "lenet", "--batch", "3", "--explain"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("nothing measured now", "winner", "rejected", "kernel", "why: fastest of"):
        assert shown in text
    assert main(["tune", "lenet", "--device", "cpu@ort"]) == 2
    assert "names its backend" in capsys.readouterr().err


def test_backend_options_narrow_the_candidates(measured):
    compiled = hal.compile("lenet", "cpu", intra_op_num_threads=1)
    c = _by_backend(compiled.selection)
    assert "does not take the option(s) ['intra_op_num_threads']" in c["reference"]["reason"]
    assert "ort intra_op_num_threads=1" not in c  # the caller set it: no variant of its own
    assert compiled.options.extra == {"intra_op_num_threads": 1}


def test_a_callers_mistake_is_raised_as_it_is(measured):
    with pytest.raises(hal.OptionError, match="only apply to precision='int8'"):
        hal.compile("lenet", "cpu", calibration=np.zeros((4, 1, 28, 28), np.float32))
