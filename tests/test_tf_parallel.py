"""Data-parallel training on tf (tf.distribute.MirroredStrategy over logical CPU devices):
the replicated update is the single-device one, and launch_training asks for a process with
HAL_TF_CPU_DEVICES when this one has too few devices.

Logical CPU devices exist only if configured before TensorFlow starts, so the replicated runs
happen in one fresh process (HAL_TF_CPU_DEVICES=2) that reports its measurements as JSON.
The model is a small hal.nn MLP with Tanh and no Dropout: every step is smooth in the
weights, so splitting a batch differently changes the weights by float rounding only. (On
lenet, whose ReLU and MaxPool have ties, the kernels' different rounding at batch 16 and 32
flipped one tie at step 14 and the runs then differed by 2e-3 relative after 20 steps.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hal.errors import OptionError
from hal.trainer import OptimizerSpec, Parallel, TrainSpec

pytest.importorskip("tensorflow")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REPLICATED = r"""
import json
import numpy as np
import hal
from hal import nn
from hal.trainer import OptimizerSpec, Parallel, TrainSpec
from hal.training.settings import training_device

with nn.seed(0):
    net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10), nn.LogSoftmax(dim=1))
tg = hal.training.build(net.to_model((None, 64), name="mlp"))
dev = training_device("cpu@tf")
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 64)).astype(np.float32)
y = rng.integers(0, 10, 64)
out = {"launch": repr(dev.backend.launch_training(dev, Parallel(workers=2))),
       "tf_cpu_devices": [d.string for d in dev.backend.probe() if d.kind == "cpu"]}


def make(workers, opt):
    return dev.backend.compile_training(tg, dev, TrainSpec(opt, parallel=Parallel(workers)))


def batches(n, parts):
    xs, ys = np.array_split(x[:n], parts), np.array_split(y[:n], parts)
    return [{"input": a, "target": b} for a, b in zip(xs, ys)], [len(a) / n for a in xs]


def train(t, n, parts, steps):
    feeds, weights = batches(n, parts)
    return [t.step(feeds, weights) for _ in range(steps)]


def rel(a, b):
    return max(float(np.abs(a[k] - b[k]).max() / (np.abs(b[k]).max() or 1.0)) for k in b)


def mirrored_copies_agree(t):
    variables = list(t.params.values()) + [t.opt.iterations.value]
    return all(np.array_equal(c.numpy(), v.values[0].numpy()) for v in variables
               for c in v.values)


cases = {"sgd_b64": ("sgd", 64, 1), "adam_b64": ("adam", 64, 1), "sgd_b63": ("sgd", 63, 1),
         "sgd_accumulate2": ("sgd_momentum_clip", 64, 2), "adam_b1": ("adam", 1, 1)}
opts = {"sgd": OptimizerSpec(name="sgd", lr=0.05), "adam": OptimizerSpec(name="adam", lr=1e-3),
        "sgd_momentum_clip": OptimizerSpec(name="sgd", lr=0.05, momentum=0.9, clip_norm=0.5,
                                           weight_decay=1e-3)}
for case, (opt, n, parts) in cases.items():
    one, two = make(1, opts[opt]), make(2, opts[opt])
    start = one.weights()
    l1, l2 = train(one, n, parts, 20), train(two, n, parts, 20)
    out[case] = {"weights_rel": rel(two.weights(), one.weights()),
                 "loss_diff": float(np.abs(np.array(l1) - np.array(l2)).max()),
                 "moved": rel(one.weights(), start),
                 "copies_agree": mirrored_copies_agree(two)}
    if case == "sgd_accumulate2":
        e1, e2 = one.evaluate({"input": x[:8]})[0], two.evaluate({"input": x[:8]})[0]
        out["evaluate_diff"] = float(np.abs(e1 - e2).max())
        again = make(2, opts[opt])
        again.load_state(two.state())
        train(two, n, parts, 3)
        train(again, n, parts, 3)
        out["resume_diff"] = rel(again.weights(), two.weights())
        out["resume_copies_agree"] = mirrored_copies_agree(again)
with nn.seed(0):
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten(),
                       nn.Linear(4 * 6 * 6, 10), nn.LogSoftmax(dim=1))
tg = hal.training.build(bn.to_model((None, 1, 8, 8), name="bn"))
images = {"input": rng.standard_normal((63, 1, 8, 8)).astype(np.float32), "target": y[:63]}
firsts = []
for workers in (1, 2):
    t = make(workers, opts["sgd"])
    t.step([images], [1.0])
    firsts.append({k: v for k, v in t.weights().items() if "running" in k})
out["bn_running"] = {k: float(np.abs(firsts[1][k] - firsts[0][k]).max()
                              / np.abs(firsts[0][k]).max()) for k in firsts[0]}
print("RESULT" + json.dumps(out))
"""


def run_python(code: str, env: dict, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **env})


@pytest.fixture(scope="module")
def replicated():
    proc = run_python(REPLICATED, {"HAL_TF_CPU_DEVICES": "2"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT"):])


def test_the_process_with_two_logical_cpus_trains_here(replicated):
    assert replicated["launch"].startswith("Launch(processes=1, env={}, here=True")
    assert "MirroredStrategy over 2 of this process's 2 logical CPU" in replicated["launch"]
    assert replicated["tf_cpu_devices"] == ["cpu:0@tf"]  # the replicas are not HAL devices


@pytest.mark.parametrize("case", ["sgd_b64", "adam_b64", "sgd_b63", "sgd_accumulate2",
                                  "adam_b1"])
def test_two_replicas_update_as_one_device(replicated, case):
    """20 steps with workers=2 give the weights and losses of workers=1, to 1e-5 relative:
    gradients summed once (not averaged or summed twice); 63 samples split 32 + 31; a batch
    of one sample leaves a replica empty."""
    got = replicated[case]
    assert got["moved"] > 1e-3  # the runs trained: the comparison means something
    assert got["weights_rel"] < 1e-5, got
    assert got["loss_diff"] < 1e-5, got
    assert got["copies_agree"]


def test_replicated_evaluate_and_resume(replicated):
    assert replicated["evaluate_diff"] < 1e-5
    assert replicated["resume_diff"] == 0.0
    assert replicated["resume_copies_agree"]


def test_cpu_devices_set_after_tensorflow_started_is_refused():
    code = ("import tensorflow as tf, os\n"
            "tf.config.list_logical_devices('CPU')\n"
            "os.environ['HAL_TF_CPU_DEVICES'] = '2'\n"
            "from hal.backends.tf_backend.framework import import_tf\n"
            "from hal.errors import BackendError\n"
            "try:\n"
            "    import_tf()\n"
            "except BackendError as e:\n"
            "    print('REFUSED', e)\n")
    proc = run_python(code, {}, timeout=240)
    assert "REFUSED HAL_TF_CPU_DEVICES=2" in proc.stdout, proc.stdout + proc.stderr[-2000:]


# -- in this process (one logical CPU unless the caller set HAL_TF_CPU_DEVICES) -------------
@pytest.fixture(scope="module")
def tf_cpu():
    import hal

    dev = hal.device("cpu@tf")
    from hal.backends.tf_backend.framework import import_tf

    if len(import_tf().config.list_logical_devices("CPU")) != 1:
        pytest.skip("this process has several logical CPU devices (HAL_TF_CPU_DEVICES)")
    return dev


def test_launch_asks_for_a_process_with_logical_cpus(tf_cpu):
    launch = tf_cpu.backend.launch_training(tf_cpu, Parallel(workers=2))
    assert (launch.here, launch.processes, launch.env) == (False, 1, {"HAL_TF_CPU_DEVICES": "2"})
    assert "MirroredStrategy" in launch.why
    assert tf_cpu.backend.launch_training(tf_cpu, Parallel()).here


@pytest.mark.parametrize("parallel, words", [
    (Parallel(workers=2, strategy="pipeline"), "runs on torch"),
    (Parallel(workers=2, strategy="tensor"), "runs on jax"),
    (Parallel(workers=2, strategy="model"), "unknown strategy"),
    (Parallel(workers=0), "workers must be an int >= 1"),
    (Parallel(workers=True), "workers must be an int >= 1"),
])
def test_launch_refuses(tf_cpu, parallel, words):
    with pytest.raises(OptionError, match=words):
        tf_cpu.backend.launch_training(tf_cpu, parallel)


def test_compile_training_refuses(tf_cpu):
    from hal import nn
    from hal.training import build

    with nn.seed(0):
        net = nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1))
    tg = build(net.to_model((None, 4), name="tiny"))
    sgd = OptimizerSpec(name="sgd", lr=0.1)
    with pytest.raises(OptionError, match="xla=True does not run under"):
        tf_cpu.backend.compile_training(
            tg, tf_cpu, TrainSpec(sgd, parallel=Parallel(workers=2), extra={"xla": True}))
    with pytest.raises(OptionError, match="HAL_TF_CPU_DEVICES=2"):
        tf_cpu.backend.compile_training(tg, tf_cpu, TrainSpec(sgd, parallel=Parallel(workers=2)))
    with pytest.raises(OptionError, match="runs on torch"):
        tf_cpu.backend.compile_training(
            tg, tf_cpu, TrainSpec(sgd, parallel=Parallel(workers=2, strategy="pipeline")))


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_cpu_device_count_is_refused(monkeypatch, value):
    from hal.backends.tf_backend.parallel import requested_cpu_devices

    monkeypatch.setenv("HAL_TF_CPU_DEVICES", value)
    with pytest.raises(OptionError, match="HAL_TF_CPU_DEVICES"):
        requested_cpu_devices()



def test_hal_train_with_two_workers_starts_a_process_and_matches_one(tf_cpu):
    """hal.train(workers=2) on cpu@tf: this process has one logical CPU, so the run goes to
    one fresh process with HAL_TF_CPU_DEVICES=2; its weights are workers=1's (256 samples at
    batch 63: the last micro-batch has 4)."""
    import numpy as np

    import hal
    from hal import nn

    with nn.seed(0):
        net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10),
                            nn.LogSoftmax(dim=1))
    model = net.to_model((None, 64), name="mlp")
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((256, 64)).astype(np.float32), rng.integers(0, 10, 256))
    runs = [hal.train(model, data, device="cpu@tf", optimizer="sgd", lr=0.05, epochs=2,
                      batch_size=63, workers=w, progress=False, timeout=300) for w in (1, 2)]
    assert runs[1].settings["parallel"]["workers"] == 2
    assert "MirroredStrategy" in runs[1].settings["parallel"]["engine"]
    one, two = ({n: v.const_value.numpy() for n, v in r.model.graph.initializers.items()}
                for r in runs)
    for name in one:
        assert np.abs(two[name] - one[name]).max() <= 1e-5 * np.abs(one[name]).max(), name
    assert abs(runs[1].history[-1]["loss"] - runs[0].history[-1]["loss"]) < 1e-5


def test_batchnorm_running_mean_is_the_global_batchs(replicated):
    """One step from the same weights: the running mean takes the sample-weighted mean of
    the replicas' updates (the global batch's mean); the running variance misses the spread
    between the replicas' means, so it only stays close."""
    got = replicated["bn_running"]
    assert sorted(got) == ["1.running_mean", "1.running_var"], got
    assert got["1.running_mean"] < 1e-5
    assert got["1.running_var"] < 1e-2
