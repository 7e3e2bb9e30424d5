"""hal.compare(train=True) / `hal compare --train`: training rows, their losses from the same
initial weights, devices that cannot train left out with why, and the writers.

An in-process numpy trainer keeps most of these fast; one test trains LeNet on the first
framework that trains. Tiny budgets: these check behaviour, never speed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import hal
from hal.comparison import Results, compare, regressions
from hal.comparison.train import training_data
from hal.errors import OptionError
from hal.oracle.interpreter import Interpreter
from hal.trainer import OptimizerSpec, TrainSpec
from hal.training import build, trainable_devices
from test_training import SoftmaxRegression, linear, nptrain  # noqa: F401 (a fixture)

FAST = {"budget_s": 0.01, "warmup": 1, "min_runs": 3, "max_runs": 10}


@pytest.fixture
def linear_onnx(tmp_path):
    path = tmp_path / "linear.onnx"
    hal.save(linear(), path)
    return str(path)


def expected_losses(model_path: str, batch: int, steps: int) -> list[float]:
    """A fresh trainer's losses on the comparison's data: what every row must start from."""
    model = hal.load(model_path)
    trainer = SoftmaxRegression(build(model), TrainSpec(OptimizerSpec()))
    batches, _ = training_data(model, batch, steps)
    return [trainer.step([b], [1.0])[0] for b in batches]


def test_training_rows_start_every_batch_from_the_initial_weights(nptrain, linear_onnx):
    res = compare([linear_onnx], ["cpu@nptrain"], batch=(5, 2), train=True, train_steps=4,
                  **FAST)
    assert [r.batch for r in res] == [5, 2] and len(nptrain.trainers) == 1  # compiled once
    for r in res:
        assert r.error is None and r.task == "training" and r.device == "cpu:0@nptrain"
        assert r.train_steps == 4 and r.train_data == "seeded noise, seeded labels"
        np.testing.assert_allclose(r.losses, expected_losses(linear_onnx, r.batch, 4),
                                   rtol=1e-12)
        assert (r.loss_first, r.loss_last) == (r.losses[0], r.losses[-1])
        assert 3 <= r.runs <= 10 and r.p50_ms > 0 and r.first_call_ms > 0
        assert r.throughput_per_s == pytest.approx(r.batch / (r.mean_ms / 1e3))
        assert r.compile_s >= 0 and r.peak_mem_mb >= 0 and r.max_abs_err is None
    run = res.environment["run"]
    assert run["train"]["steps"] == 4 and run["train"]["optimizer"]["name"] == "adamw"


def test_devices_that_cannot_train_are_left_out_with_why(nptrain, linear_onnx):
    res = compare([linear_onnx], ["cpu@reference", "cpu@nptrain"], batch=2, train=True,
                  train_steps=2, **FAST)
    assert [r.device for r in res] == ["cpu:0@nptrain"]
    why = res.environment["run"]["left_out"]["cpu:0@reference"]
    assert "'reference'" in why and "does not train" in why
    with pytest.raises(OptionError, match="can train.*cpu:0@nptrain"):
        compare([linear_onnx], ["cpu@reference"], batch=2, train=True, **FAST)


def test_bad_training_arguments_fail_before_any_work(nptrain, linear_onnx):
    for kw, match in (({"precision": "int8"}, "training runs in"),
                      ({"train_steps": 0}, "train_steps"),
                      ({"scenario": "offline"}, "leave it out with --train")):
        with pytest.raises(OptionError, match=match):
            compare([linear_onnx], ["cpu@nptrain"], train=True, **kw, **FAST)
    assert nptrain.trainers == []


def test_a_model_that_is_no_classifier_is_an_error_row(nptrain, tmp_path):
    path = tmp_path / "per_token.onnx"  # scores per token: [N, 3, 2]
    hal.save(hal.nn.Sequential(hal.nn.Linear(4, 2)).to_model((None, 3, 4), name="tokens"),
             path)
    (row,) = compare([str(path)], ["cpu@nptrain"], batch=2, train=True, **FAST).rows
    assert "trains classifiers" in row.error and row.task == "training"


def test_writers_and_baseline_keep_training_rows(nptrain, linear_onnx, tmp_path, capsys):
    from hal.cli import main

    args = ["compare", "--train", "--steps", "3", "--models", linear_onnx, "--devices",
            "cpu@reference,cpu@nptrain", "--batch", "2", "--budget", "0.01"]
    files = {f: tmp_path / f"out.{f}" for f in ("json", "csv", "html")}
    assert main(args + [x for f, p in files.items() for x in (f"--{f}", str(p))]) == 0
    out = capsys.readouterr().out
    assert "HAL training comparison" in out and "loss@3" in out
    assert "not trained: cpu:0@reference" in out
    res = Results.from_json(files["json"])
    (row,) = res.rows
    assert row.task == "training" and len(row.losses) == 3
    assert json.loads(files["json"].read_text())["rows"][0]["best"] is True
    csv_text = files["csv"].read_text()
    assert "loss_first" in csv_text.splitlines()[0] and f"{row.losses[1]:.7g}" in csv_text
    html = files["html"].read_text()
    assert "HAL training comparison" in html and "Loss from the same initial weights" in html
    assert "samples/s" in html and "max err" not in html
    assert not regressions(res, res)


@pytest.mark.skipif(not trainable_devices() or trainable_devices()[-1].backend == "nptrain",
                    reason="no framework that trains is installed")
def test_lenet_on_a_framework_starts_from_the_oracles_loss():
    device = trainable_devices()[0].string
    (row,) = compare(["lenet"], [device], batch=4, train=True, train_steps=3, **FAST).rows
    assert row.error is None and row.train_data == "digits 1x28x28" and row.backend != ""
    model = hal.models.get("lenet")
    tg = build(model)
    batches, _ = training_data(model, 4, 3)
    feed = [batches[0][v.name] for v in tg.model.graph.inputs]
    oracle = float(Interpreter(tg.model.graph)(feed)[0])
    assert row.loss_first == pytest.approx(oracle, abs=1e-5)
    assert row.placement == {row.device: {"segments": 1, "nodes": len(list(tg.model.graph))}}
    assert row.transfers["count"] == 0 or row.device.startswith(("cuda", "gpu", "tpu"))
