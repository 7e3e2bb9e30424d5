"""Data- and tensor-parallel training on a jax device mesh (backends/jax_backend/parallel.py).

XLA's host device count is fixed when jax initializes, so the parallel runs happen in one
fresh subprocess with ``--xla_force_host_platform_device_count=2`` (shared by the tests below
through a module fixture); the launch decisions and refusals are checked in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import hal
from hal.errors import OptionError
from hal.trainer import Launch, OptimizerSpec, Parallel, TrainSpec
from hal.training import build

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

FLAG = "--xla_force_host_platform_device_count"

# PRELUDE then the PARTS run in one subprocess, which prints one JSON line of measurements
# (one process: importing jax and HAL once; parallel processes were slower on a busy machine).
# - "mlp" (zoo) has a Dropout: both runs use the same seed, so the same masks (the masks are
#   drawn from the seed, step and micro-batch, over the global batch's shape).
# - Adam is checked on a tanh network: on "mlp" with random inputs some ReLU units are almost
#   never active, their gradients cancel to ~eps, and Adam's g / (|g| + eps) turns float32
#   summation order into visible differences (one device with batch 64 against two
#   micro-batches of 32 differs by 0.3 there), which says nothing about the parallel step.
#   Even on the tanh network that reordering is up to 4e-5 for some data draws (seed 3), so
#   Adam is also compared with one device accumulating two micro-batches of 32: the parallel
#   step sums the two devices' halves as that does (measured: equal to the last bit).
PRELUDE = r"""
import json
import numpy as np
import jax
import hal
from hal import nn
from hal.training import build
from hal.training.settings import training_device
from hal.trainer import OptimizerSpec, Parallel, TrainSpec
from test_jax_training import bn_dropout_cnn

dev = training_device("cpu@jax")
rng = np.random.default_rng(0)
out = {"devices": len(jax.devices("cpu"))}


def rel(a, b):
    return max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(b[k])), 1e-12))
               for k in b)


def trainer(graph, workers, opt="sgd", strategy="data"):
    lr = 0.05 if opt == "sgd" else 1e-3
    spec = TrainSpec(OptimizerSpec(name=opt, lr=lr),
                     parallel=Parallel(workers=workers, strategy=strategy))
    return dev.backend.compile_training(graph, dev, spec)


def train(tr, x, y, steps, size=64, start=0):
    for i in range(start, start + steps):
        tr.step([{"input": x[i * size:(i + 1) * size], "target": y[i * size:(i + 1) * size]}],
                [1.0])
    return tr



def wide_net():
    with nn.seed(0):
        net = nn.Sequential(nn.Linear(64, 1024), nn.Tanh(), nn.Linear(1024, 10))
    wide = build(net.to_model((None, 64)))
    rng = np.random.default_rng(0)
    xw = rng.standard_normal((64 * 20, 64)).astype(np.float32)
    yw = rng.integers(0, 10, 64 * 20)
    return wide, xw, yw
"""

PARTS = {"mlp": r"""
mlp = build(hal.models.get("mlp"))
x = rng.standard_normal((64 * 20, 784)).astype(np.float32)
y = rng.integers(0, 10, 64 * 20)
one = train(trainer(mlp, 1), x, y, 20)
two = train(trainer(mlp, 2), x, y, 10)
state = two.state()  # after 10 steps
train(two, x, y, 10, start=10)
out["sgd_rel"] = rel(two.weights(), one.weights())
out["sgd_moved"] = rel(one.weights(), {n: mlp.model.graph.initializers[n].const_value.numpy()
                                       for n in mlp.params})
out["sgd_description"] = two.description
out["param_sharding"] = list(two.params["0.weight"].sharding.spec)
out["eval_rel"] = float(np.max(np.abs(two.evaluate({"input": x[:8]})[0]
                                      - one.evaluate({"input": x[:8]})[0])))

# resume: the state after 10 steps loaded back (placed on the mesh again), 10 more steps;
# the same state also resumes on one device (a checkpoint does not depend on the workers)
out["state_numpy"] = all(type(v).__module__ == "numpy" for v in state.values())
w_two, w_one = two.weights(), one.weights()
two.load_state(state)
train(two, x, y, 10, start=10)
out["resume_rel"] = rel(two.weights(), w_two)
one.load_state(state)
train(one, x, y, 10, start=10)
out["resume_one_rel"] = rel(one.weights(), w_one)

# micro-batches of 63 (do not divide by 2): run replicated, the single-device math
before = two.description["parallel"]
one.load_state(state)
two.load_state(state)
train(one, x, y, 3, size=63)
train(two, x, y, 3, size=63)
out["short_rel"] = rel(two.weights(), one.weights())
out["short_counts"] = [before["sharded_batches"], before["replicated_batches"],
                       two.description["parallel"]["replicated_batches"]]

# accumulation: one update from micro-batches of 32 (split) and 31 (replicated)
for tr in (one, two):
    tr.load_state(state)
    tr.step([{"input": x[:32], "target": y[:32]}, {"input": x[32:63], "target": y[32:63]}],
            [32 / 63, 31 / 63])
out["accumulate_rel"] = rel(two.weights(), one.weights())
""", "adam": r"""
wide, xw, yw = wide_net()
a1, a2 = train(trainer(wide, 1, "adam"), xw, yw, 20), train(trainer(wide, 2, "adam"), xw, yw, 20)
halves = trainer(wide, 1, "adam")
for i in range(20):
    xb, yb = xw[i * 64:(i + 1) * 64], yw[i * 64:(i + 1) * 64]
    halves.step([{"input": xb[:32], "target": yb[:32]}, {"input": xb[32:], "target": yb[32:]}],
                [0.5, 0.5])
out["adam_rel"] = rel(a2.weights(), a1.weights())
out["adam_halves_rel"] = rel(a2.weights(), halves.weights())
""", "tensor": r"""
wide, xw, yw = wide_net()

# tensor: the gradients of the first micro-batch (the trainer's own gradient function,
# jitted over its weights where they live), then the weights after one and after 20 steps


def gradients(tr):
    feed = tr._feed({"input": xw[:64], "target": yw[:64]})
    if tr.layout is not None:
        feed = tr.layout.feed(feed)
    _, grads, _ = jax.jit(tr._grads)(tr.params, tr.fixed, tr.stats, feed, np.uint32(0),
                                     np.int32(0), np.int32(0), np.float32(1), None)
    return {n: np.asarray(g) for n, g in grads.items()}


t1, t2 = trainer(wide, 1), trainer(wide, 2, strategy="tensor")
g1, g2 = gradients(t1), gradients(t2)
train(t1, xw, yw, 1)
train(t2, xw, yw, 1)
out["tensor_weight_rel"] = rel(t2.weights(), t1.weights())
out["tensor_grad_rel"] = rel(g2, g1)
out["tensor_placement"] = t2.placement
out["tensor_sharding"] = {n: list(v.sharding.spec) for n, v in t2.params.items()}
train(t1, xw, yw, 19, start=1)
train(t2, xw, yw, 19, start=1)
out["tensor_20_rel"] = rel(t2.weights(), t1.weights())
""", "bn": r"""

# BatchNorm (batch statistics over the global batch: XLA all-reduces them) and Dropout
bn = build(bn_dropout_cnn())
xb = rng.normal(0, 0.5, (64 * 5, 1, 8, 8)).astype(np.float32)
yb = rng.integers(0, 3, 64 * 5)
b1, b2 = train(trainer(bn, 1), xb, yb, 5), train(trainer(bn, 2), xb, yb, 5)
out["bn_rel"] = rel(b2.weights(), b1.weights())
out["bn_names"] = sorted(b2.weights())
"""}


@pytest.fixture(scope="module")
def measured() -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} {FLAG}=2".strip()
    code = PRELUDE + "".join(PARTS.values()) + '\nprint("RESULT " + json.dumps(out))\n'
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "XLA_FLAGS": flags}, timeout=300,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(s for s in done.stdout.splitlines() if s.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["devices"] >= 2
    return out


def test_data_parallel_sgd_matches_one_device(measured):
    assert measured["sgd_moved"] > 1e-3
    assert measured["sgd_rel"] < 1e-5
    assert measured["param_sharding"] == []  # replicated weights
    par = measured["sgd_description"]["parallel"]
    assert par["workers"] == 2 and par["sharded_batches"] == 20
    assert par["replicated_batches"] == 0
    assert par["mesh"] == "data: 2 x cpu"
    assert measured["eval_rel"] < 1e-5


def test_data_parallel_adam_matches_one_device(measured):
    assert measured["adam_rel"] < 1e-5
    assert measured["adam_halves_rel"] < 1e-6


def test_a_batch_that_does_not_divide_runs_replicated_and_is_counted(measured):
    assert measured["short_rel"] < 1e-5
    assert measured["short_counts"] == [30, 0, 3]  # 30 batches of 64 split, 3 of 63 not


def test_accumulating_split_and_replicated_micro_batches_matches_one_device(measured):
    assert measured["accumulate_rel"] < 1e-5


def test_parallel_state_resumes_exactly(measured):
    assert measured["state_numpy"]
    assert measured["resume_rel"] < 1e-6
    assert measured["resume_one_rel"] < 1e-5


def test_tensor_parallel_gradients_and_weights_match_one_device(measured):
    assert measured["tensor_grad_rel"] < 1e-5
    assert measured["tensor_weight_rel"] < 1e-5
    assert measured["tensor_20_rel"] < 1e-5
    placement = measured["tensor_placement"]
    assert placement["0.weight"].startswith("split on dim 0")
    assert placement["2.weight"].startswith("split on dim 1")
    assert placement["0.bias"] == "replicated"
    assert measured["tensor_sharding"]["0.weight"][0] == "model"
    assert measured["tensor_sharding"]["2.weight"] == [None, "model"]


def test_batchnorm_and_dropout_match_one_device(measured):
    assert measured["bn_rel"] < 1e-5
    assert "1.running_mean" in measured["bn_names"]  # running statistics compared too


def test_hal_train_with_workers_starts_a_fresh_process_when_this_one_lacks_devices():
    if len(jax.devices("cpu")) >= 2:
        pytest.skip("this process already has 2 CPU devices: nothing is launched")
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((301, 784)).astype(np.float32)  # the last micro-batch: 45
    y = rng.integers(0, 10, 301)
    kw = dict(device="cpu@jax", epochs=1, batch_size=64, optimizer="sgd", lr=0.05,
              progress=False)
    one = hal.train("mlp", (x, y), **kw)
    two = hal.train("mlp", (x, y), workers=2, timeout=120, **kw)
    assert two.settings["parallel"]["workers"] == 2
    assert abs(two.history[-1]["loss"] - one.history[-1]["loss"]) < 1e-5
    for name, v in one.model.graph.initializers.items():
        a = v.const_value.numpy()
        if a.dtype == np.float32:
            b = two.model.graph.initializers[name].const_value.numpy()
            assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(a)), name


# -- in this process: the launch decision and the refusals -------------------------------

def _device():
    from hal.training.settings import training_device

    return training_device("cpu@jax")


def test_launch_asks_for_a_fresh_process_with_the_host_device_count(monkeypatch):
    dev = _device()
    have = len(jax.devices("cpu"))
    monkeypatch.setenv("XLA_FLAGS", f"--xla_cpu_use_thunk_runtime=true {FLAG}=1")
    launch = dev.backend.launch_training(dev, Parallel(workers=have + 1))
    assert isinstance(launch, Launch) and not launch.here and launch.processes == 1
    assert launch.env == {"XLA_FLAGS": f"--xla_cpu_use_thunk_runtime=true {FLAG}={have + 1}"}
    assert FLAG in launch.why
    assert dev.backend.launch_training(dev, Parallel(workers=have)).here
    assert dev.backend.launch_training(dev, Parallel(workers=1, strategy="tensor")).here


@pytest.mark.parametrize("parallel, words", [
    (Parallel(workers=2, strategy="pipeline"), "cpu@torch"),
    (Parallel(workers=0), "workers must be an int >= 1"),
    (Parallel(workers="2"), "workers must be an int >= 1"),
    (Parallel(workers=2, strategy="model"), "unknown strategy"),
    (Parallel(workers=2, rank=1, world=2), "multi-host"),
])
def test_launch_refuses_what_jax_does_not_run(parallel, words):
    dev = _device()
    with pytest.raises(OptionError, match=words):
        dev.backend.launch_training(dev, parallel)


def test_a_trainer_without_the_devices_says_how_to_get_them():
    have = len(jax.devices("cpu"))
    dev = _device()
    graph = build(hal.models.get("mlp"))
    spec = TrainSpec(OptimizerSpec(name="sgd", lr=0.05), parallel=Parallel(workers=have + 1))
    with pytest.raises(OptionError, match=FLAG):
        dev.backend.compile_training(graph, dev, spec)
