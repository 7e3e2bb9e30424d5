"""hal.train(..., cluster=...) on a throwaway two-node Ray cluster on this machine: the same
data-parallel run as Ray Train workers, and a run that survives a killed worker."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import hal
from hal.training.callbacks import Callback
from tests.test_parallel_training import rel, small_mlp

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train.torch")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    from hal.training.settings import training_device

    try:
        training_device("cpu@torch")
    except hal.HalError as exc:
        pytest.skip(f"cpu@torch does not train here: {exc}")
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE",)}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway cluster, on this machine only
    from ray import cloudpickle  # Ray's own copy pickles the tasks

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the callbacks below
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        c.add_node(num_cpus=2)
        c.wait_for_nodes(timeout=60)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def time_bound(request):
    """Each test's bound: past it the cluster is shut down, so the run fails instead of
    hanging (the fixture above cleans up either way)."""
    if "cluster" not in request.fixturenames:
        yield
        return
    c = request.getfixturevalue("cluster")
    timer = threading.Timer(300, c.shutdown)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def same_weights(a, b):
    inits = b.model.graph.initializers
    for name, v in a.model.graph.initializers.items():
        assert rel(v.const_value.numpy(), inits[name].const_value.numpy()) < 1e-5, name


KW = dict(device="cpu@torch", optimizer="adam", lr=1e-2, epochs=3, batch_size=64,
          progress=False)


def test_ray_workers_train_to_the_single_process_accuracy(cluster):
    train, test = hal.data.digits("train", 8), hal.data.digits("test", 8)
    alone = hal.train(small_mlp(), train, validation=test, **KW)
    fleet = hal.train(small_mlp(), train, validation=test, cluster=cluster.address, workers=2,
                      **KW)
    assert fleet.settings["cluster"]["workers"] == 2 and fleet.steps == alone.steps
    a, f = alone.history[-1]["val_accuracy"], fleet.history[-1]["val_accuracy"]
    assert a > 0.85 and abs(a - f) <= 0.01, (a, f)
    same_weights(fleet, alone)


class Pids(Callback):
    """Writes each rank's pid, slows the steps so an epoch lasts a while, and marks each
    epoch's checkpoint."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_begin(self, run):
        rank = os.environ.get("RANK", "0")
        Path(self.folder, f"pid-{rank}-{os.getpid()}").touch()

    def on_step_end(self, run):
        time.sleep(0.05)

    def on_checkpoint(self, run, path):
        Path(self.folder, f"epoch-{run.epoch}").touch()


def test_a_killed_worker_is_restarted_from_the_last_checkpoint(cluster, tmp_path):
    train = hal.data.digits("train", 8)
    killed = []

    def kill_rank_1_in_epoch_2():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / "epoch-1").exists():
            time.sleep(0.05)
        time.sleep(0.3)  # into the second epoch
        pids = [int(p.name.split("-")[2]) for p in tmp_path.glob("pid-1-*")]
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    killer = threading.Thread(target=kill_rank_1_in_epoch_2, daemon=True)
    killer.start()
    fleet = hal.train(small_mlp(), train, cluster=cluster.address, workers=2, max_failures=1,
                      callbacks=[Pids(str(tmp_path))], **KW)
    killer.join(timeout=5)
    assert killed, "no rank-1 worker was found to kill"
    assert len(list(tmp_path.glob("pid-1-*"))) == 2  # rank 1 started again
    assert fleet.steps == 3 * 20
    alone = hal.train(small_mlp(), train, **KW)
    same_weights(fleet, alone)


def test_an_elastic_run_takes_the_workers_the_cluster_has(cluster):
    train = hal.data.digits("train", 8)
    kw = {**KW, "epochs": 1}
    fleet = hal.train(small_mlp(), train, cluster=cluster.address, workers=(1, 2), **kw)
    assert fleet.settings["cluster"]["workers"] == (1, 2)
    assert fleet.settings.get("parallel", {}).get("workers", 1) in (1, 2)
    same_weights(fleet, hal.train(small_mlp(), train, **kw))
