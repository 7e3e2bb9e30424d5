"""hal.train(..., workers=N): the loop's side of parallel training (the split of each global
batch, the options, the launch), and end to end on each framework's engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hal
from hal.errors import OptionError
from hal.trainer import Launch, Parallel
from hal.training.batches import TARGET
from hal.training.loop import shard
from hal.training.settings import check_shards, joined, parallel_spec


def linear_grad(w, x, y):
    """The gradient of the mean squared error of x @ w against y."""
    return 2 * x.T @ (x @ w - y) / len(x)


@pytest.mark.parametrize("sizes", [[64], [63], [32, 31], [5, 64, 3]])
@pytest.mark.parametrize("world", [2, 3])
def test_the_average_of_weighted_shard_gradients_is_the_groups_gradient(sizes, world):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 1))
    group = [{"input": rng.standard_normal((n, 4)), TARGET: rng.standard_normal((n, 1))}
             for n in sizes]
    x = np.concatenate([b["input"] for b in group])
    y = np.concatenate([b[TARGET] for b in group])
    whole = linear_grad(w, x, y)
    per_rank = []
    for rank in range(world):
        mine, weights = shard(group, Parallel(workers=world, rank=rank, world=world))
        assert [len(b[TARGET]) for b in mine] == [len(np.array_split(np.arange(n), world)[rank])
                                                   for n in sizes]
        per_rank.append(sum(wt * linear_grad(w, b["input"], b[TARGET])
                            for b, wt in zip(mine, weights)))
    np.testing.assert_allclose(np.mean(per_rank, axis=0), whole, rtol=1e-12)
    rows = np.concatenate([shard(group, Parallel(workers=world, rank=r, world=world))[0][0]
                           ["input"] for r in range(world)])
    np.testing.assert_array_equal(rows, group[0]["input"])  # each row goes to one rank


def test_parallel_options_are_checked():
    assert not parallel_spec(1, "data", 2).active and parallel_spec(2, "data", 2).active
    with pytest.raises(OptionError, match="workers must be a positive int"):
        parallel_spec(0, "data", 2)
    with pytest.raises(OptionError, match="strategy 'model' is not one of"):
        parallel_spec(2, "model", 2)
    with pytest.raises(OptionError, match="fewer than the 2 worker processes"):
        check_shards(Parallel(workers=2, world=2), 64, 129)
    check_shards(Parallel(workers=2, world=2), 64, 130)


def test_a_rank_joins_from_the_rendezvous_variables(monkeypatch):
    launch = Launch(processes=2, here=True, why="test")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(OptionError, match="RANK and WORLD_SIZE"):
        joined(Parallel(workers=2), launch)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "1234")
    p = joined(Parallel(workers=2), launch)
    assert (p.rank, p.world, p.address.endswith(":1234")) == (1, 2, True)
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(OptionError, match="do not fit a run of 2"):
        joined(Parallel(workers=2), launch)


def test_a_backend_without_an_engine_refuses_workers(nptrain):
    x = np.zeros((8, 1, 4, 4), np.float32)
    with pytest.raises(OptionError, match="trains on one device only"):
        hal.train(linear(), (x, np.zeros(8, np.int64)), device="cpu@nptrain", workers=2,
                  progress=False)


def test_the_scaling_model_is_a_ring_all_reduce():
    from hal.training.scaling import estimate, parse_bandwidth, parse_workers

    assert parse_bandwidth("100Gbit") == 100e9 == parse_bandwidth("100 Gb/s")
    assert parse_bandwidth("12.5GB/s") == 100e9
    with pytest.raises(OptionError, match="not a rate"):
        parse_bandwidth("fast")
    assert parse_workers("1,8,64") == [1, 8, 64]
    with pytest.raises(OptionError, match="worker counts"):
        parse_workers("1,x")
    one, four = estimate(0.010, 64, 4_000_000, [1, 4], 8e9, latency_s=1e-5)
    assert one.allreduce_s == 0 and one.efficiency == 1 and one.samples_per_s == 6400
    # 2 (n-1)/n of 32 Mbit at 8 Gbit/s, plus 6 messages of 10 us
    assert four.allreduce_s == pytest.approx(1.5 * 4e-3 + 6e-5)
    assert four.samples_per_s == pytest.approx(256 / (0.010 + four.allreduce_s))
    assert four.efficiency == pytest.approx(0.010 / four.step_s)


def test_hal_train_estimate_scaling_measures_one_step_and_labels_the_model(nptrain, tmp_path,
                                                                           capsys):
    import json

    from hal.cli import main

    x, y = blobs(40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    linear().save(tmp_path / "m.onnx")
    assert main(["train", str(tmp_path / "m.onnx"), "--device", "cpu@nptrain", "--data",
                 str(tmp_path / "d.npz"), "--batch", "8", "--estimate-scaling", "1,2,512",
                 "--bandwidth", "10Gbit", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "a model, not a measurement" in report["note"]
    assert report["gradient_bytes"] == 4 * (16 * 3 + 3)
    assert [r["workers"] for r in report["rows"]] == [1, 2, 512]
    assert report["measured_step_ms"] > 0 and report["rows"][2]["efficiency"] < 1


# -- end to end through hal.train, on each framework's engine ---------------------------------

from tests.test_training import (FRAMEWORKS, blobs, linear,  # noqa: E402, F401 (a fixture)
                                 nptrain, trainer_device)


def small_mlp():
    from hal import nn

    with nn.seed(0):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(),
                             nn.Linear(48, 10)).to_model((None, 1, 8, 8), name="small_mlp")


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 1e-3)])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_two_workers_make_the_steps_of_one(framework, optimizer, lr):
    """20 steps at a global batch of 64 (10 per epoch, the last of each 63 samples: an uneven
    split) with workers=2 end at the weights of one worker."""
    device = trainer_device(framework)
    pytest.importorskip("sklearn")
    x, y = hal.data.digits("train", 8)
    data = (x[:639], y[:639])
    kw = dict(device=device, optimizer=optimizer, lr=lr, epochs=2, batch_size=64,
              progress=False)
    one = hal.train(small_mlp(), data, **kw)
    two = hal.train(small_mlp(), data, workers=2, timeout=240, **kw)
    assert two.steps == one.steps == 20
    assert two.settings["parallel"]["workers"] == 2, two.settings
    inits = one.model.graph.initializers
    for name, v in two.model.graph.initializers.items():
        assert rel(v.const_value.numpy(), inits[name].const_value.numpy()) < 1e-5, name
    for a, b in zip(one.history, two.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


TORCHRUN_SCRIPT = """
import os, sys
from pathlib import Path

import numpy as np
sys.path.insert(0, os.getcwd())
import hal
from hal import nn
with nn.seed(0):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(),
                          nn.Linear(48, 10)).to_model((None, 1, 8, 8), name="small_mlp")
x, y = hal.data.digits("train", 8)
res = hal.train(model, (x[:639], y[:639]), device="cpu@torch", optimizer="sgd", lr=0.05,
                epochs=2, batch_size=64, progress=False, workers=2)
if os.environ["RANK"] == "0":
    np.savez(sys.argv[1], **{k: v.const_value.numpy()
                            for k, v in res.model.graph.initializers.items()})
"""


def test_the_same_call_runs_under_torchrun(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    device = trainer_device("cpu@torch")
    pytest.importorskip("sklearn")
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT)
    out = tmp_path / "w.npz"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                             "2", "--standalone", str(script), str(out)],
                            cwd=str(Path(__file__).resolve().parents[1]), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    finally:  # torchrun's workers too, also when the run hangs
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    x, y = hal.data.digits("train", 8)
    one = hal.train(small_mlp(), (x[:639], y[:639]), device=device, optimizer="sgd", lr=0.05,
                    epochs=2, batch_size=64, progress=False)
    got = np.load(out)
    for name, v in one.model.graph.initializers.items():
        assert rel(got[name], v.const_value.numpy()) < 1e-5, name


def test_the_result_says_what_ran_where():
    trainer_device("cpu@jax")
    pytest.importorskip("sklearn")
    x, y = hal.data.digits("train", 8)
    res = hal.train(small_mlp(), (x[:128], y[:128]), device="cpu@jax", workers=2,
                    strategy="tensor", progress=False, timeout=240)
    par = res.settings["parallel"]
    assert par["strategy"] == "tensor" and "jax" in par["engine"]
    placement = par["trainer"]["parallel"]["placement"]
    assert any(where.startswith("split") for where in placement.values()), placement


def test_a_range_of_workers_needs_a_cluster():
    from hal.training.ray_cluster import check_range

    x = np.zeros((8, 1, 8, 8), np.float32)
    with pytest.raises(OptionError, match="elastic training on a Ray cluster"):
        hal.train(small_mlp(), (x, np.zeros(8, np.int64)), workers=(1, 2), progress=False)
    for bad in [(2, 1), (0, 2), (1, "2"), (1, 2, 3)]:
        with pytest.raises(OptionError, match="two ints 1 <= MIN <= MAX"):
            check_range(bad)


def wide_mlp():
    from hal import nn

    with nn.seed(0):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 1024), nn.Tanh(), nn.Linear(1024, 64),
                             nn.Tanh(), nn.Linear(64, 10)).to_model((None, 1, 8, 8), name="wide")


@pytest.mark.parametrize("optimizer,lr,epochs", [("sgd", 0.05, 1), ("adam", 1e-3, 2)])
def test_a_two_stage_pipeline_takes_the_single_device_steps(optimizer, lr, epochs):
    """GPipe over two processes (torch.distributed.pipelining) on a model with a hidden layer
    of 1024: one SGD step (the gradient times lr) and 10 Adam steps with an uneven last batch
    (63 rows in 3 micro-batches) match one device to 1e-5."""
    device = trainer_device("cpu@torch")
    pytest.importorskip("sklearn")
    x, y = hal.data.digits("train", 8)
    data = (x[:64], y[:64]) if epochs == 1 else (x[:319], y[:319])
    kw = dict(device=device, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=64,
              progress=False)
    one = hal.train(wide_mlp(), data, **kw)
    two = hal.train(wide_mlp(), data, strategy="pipeline", stages=2, timeout=240, **kw)
    placement = two.settings["parallel"]["trainer"]["parallel"]["placement"]
    assert set(placement.values()) == {"stage 0", "stage 1"}, placement
    start = wide_mlp().graph.initializers
    inits = one.model.graph.initializers
    for name, v in two.model.graph.initializers.items():
        got, want = v.const_value.numpy(), inits[name].const_value.numpy()
        if epochs == 1:  # the gradients themselves: (w0 - w1) / lr
            w0 = start[name].const_value.numpy()
            assert rel((w0 - got) / lr, (w0 - want) / lr) < 1e-5, name
        assert rel(got, want) < 1e-5, name
    assert [h["loss"] for h in two.history] == pytest.approx([h["loss"] for h in one.history],
                                                            rel=1e-5)


def test_a_pipeline_run_resumes_to_the_uninterrupted_weights(tmp_path):
    device = trainer_device("cpu@torch")
    pytest.importorskip("sklearn")
    x, y = hal.data.digits("train", 8)
    kw = dict(device=device, optimizer="adam", lr=1e-3, batch_size=32, progress=False,
              strategy="pipeline", stages=2, timeout=240)
    data = (x[:96], y[:96])
    whole = hal.train(wide_mlp(), data, epochs=3, **kw)
    hal.train(wide_mlp(), data, epochs=1, checkpoint_dir=tmp_path, **kw)
    rest = hal.train(wide_mlp(), data, epochs=3, checkpoint_dir=tmp_path, resume=True, **kw)
    assert rest.steps == whole.steps == 9
    inits = whole.model.graph.initializers
    for name, v in rest.model.graph.initializers.items():
        assert rel(v.const_value.numpy(), inits[name].const_value.numpy()) < 1e-6, name
