"""hal.compress and ``hal compress``: the accuracy-aware search over pruning and precision."""

from __future__ import annotations

import json
import warnings

import pytest

import hal
from hal.cli import main
from hal.errors import InputError, OptionError


@pytest.fixture(scope="module")
def trained():
    x, y = hal.data.digits("train", size=28)
    model = hal.train(hal.models.get("lenet"), (x, y), device="cpu@torch", epochs=2,
                      progress=False).model
    return model, (x, y), hal.data.digits("test", size=28)


def _accuracy(model, options, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = hal.compile(model, "cpu@ort", **options)
    return float((compiled(x)[0].argmax(1) == y).mean())


def test_the_choice_is_the_fastest_candidate_within_the_bound(trained, tmp_path):
    model, data, (xt, yt) = trained
    result = hal.compress(model, data, validation=(xt, yt), device="cpu@ort",
                          max_accuracy_drop=0.02, prune_ratios=(0.5,),
                          precisions=("fp32", "int8", "int8-dynamic"), finetune_epochs=1,
                          budget_s=0.05)
    names = [c.name for c in result.candidates]
    assert names == ["as given, fp32", "as given, int8", "as given, int8-dynamic",
                     "pruned 0.5, fp32", "pruned 0.5, int8", "pruned 0.5, int8-dynamic"]
    assert result.baseline is result.candidates[0]
    measured = [c for c in result.candidates if c.p50_ms is not None]
    assert len(measured) == 6, [c.note for c in result.candidates]
    chosen = result.chosen
    assert chosen.within_bound
    assert chosen.accuracy >= result.baseline.accuracy - 0.02
    assert all(chosen.p50_ms <= c.p50_ms for c in measured if c.within_bound)
    for c in measured:  # the Pareto flags: no flagged candidate is beaten on all three
        beaten = any(o.accuracy >= c.accuracy and o.p50_ms <= c.p50_ms
                     and o.size_bytes <= c.size_bytes and o is not c
                     and (o.accuracy, o.p50_ms, o.size_bytes) != (c.accuracy, c.p50_ms,
                                                                   c.size_bytes)
                     for o in measured)
        assert c.pareto == (not beaten)
    # what the table says is what the model does, measured again here
    assert _accuracy(result.model, result.compile_options, xt, yt) == pytest.approx(
        chosen.accuracy)
    pruned = next(c for c in measured if c.name == "pruned 0.5, fp32")
    assert pruned.flops < result.baseline.flops and pruned.params < result.baseline.params
    int8 = next(c for c in measured if c.name == "as given, int8")
    assert int8.size_bytes < result.baseline.size_bytes / 3  # int8 weights, float ones gone
    text = str(result)
    assert all(n in text for n in names) and "chosen" in text
    page = result.html()
    assert "<svg" in page and "accuracy vs latency" in page
    assert model.compression is None  # the model given is untouched


def test_bad_requests_name_the_fix(trained):
    model, data, _ = trained
    for kw, match in [({"max_accuracy_drop": 1.5}, "max_accuracy_drop"),
                      ({"objective": "energy"}, "objective"),
                      ({"prune_ratios": (1.0,)}, "prune_ratios"),
                      ({"precisions": ("int4",)}, "precisions"),
                      ({"batch": 0}, "batch")]:
        with pytest.raises(OptionError, match=match):
            hal.compress(model, data, **kw)
    with pytest.raises(InputError, match="data"):
        hal.compress(model, [1, 2, 3])


@pytest.mark.slow
def test_the_command_prints_a_table_whose_choice_meets_the_bound_on_the_test_split(
        tmp_path, capsys):
    out = tmp_path / "chosen.onnx"
    page = tmp_path / "compress.html"
    assert main(["compress", "lenet", "--device", "cpu", "--data", "digits",
                 "--max-accuracy-drop", "0.01", "--out", str(out), "--html", str(page),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    chosen = next(c for c in report["candidates"] if c["name"] == report["chosen"])
    assert chosen["within_bound"]
    xt, yt = hal.data.digits("test", size=28)
    from hal.compression.search import RUNS_AS

    got = _accuracy(hal.load(str(out)), {"precision": RUNS_AS[chosen["precision"]]}, xt, yt)
    assert got == pytest.approx(chosen["accuracy"])
    assert got >= report["baseline_accuracy"] - 0.01
    assert "<svg" in page.read_text()
    print("\n" + "\n".join(f"{c['name']}: {c['accuracy']}, {c['p50_ms']} ms"
                           for c in report["candidates"]))
