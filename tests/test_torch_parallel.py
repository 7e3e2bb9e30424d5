"""Data-parallel training on torch: DistributedDataParallel over gloo between two CPU processes
makes the same updates as one process stepping on the global batch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hal
from hal.errors import OptionError
from hal.trainer import Launch, OptimizerSpec, Parallel, TrainSpec

torch = pytest.importorskip("torch")

WORLD = 2
TIMEOUT_S = 240

#: scenario -> (model, optimizer, steps, micro-batches per step, global micro-batch size).
#: The comparisons to 1e-5 run on a smooth MLP (tanh, sigmoid): float32 rounding (a different
#: summation order) stays ~1e-7 there over 20 steps, whereas a ReLU/max-pool kink that flips
#: amplifies it (lenet: ~1e-3 after 20 steps between a batch of 64 and the same batch as two
#: accumulated halves in one process), so lenet is compared over its first 5 steps.
SCENARIOS = {
    "sgd": ("mlp", dict(name="sgd", lr=0.05), 20, 1, 64),
    "adam": ("mlp", dict(name="adam", lr=1e-3), 20, 1, 64),
    "uneven": ("mlp", dict(name="sgd", lr=0.05), 20, 1, 63),  # 32 + 31
    "accumulate": ("mlp", dict(name="sgd", lr=0.05, momentum=0.9), 20, 2, 32),  # no_sync
    "lenet": ("lenet", dict(name="sgd", lr=0.05), 5, 1, 64),
    # the loss on one of two heads: the other head's parameters get no gradient
    "two_heads": ("two_heads", dict(name="sgd", lr=0.05), 5, 1, 64),
}
#: a BatchNorm + Dropout model on which every rank gets the same (whole) batch
BN_DROPOUT = ("bn_dropout", dict(name="sgd", lr=0.05), 3, 1, 16)
SHAPES = {"mlp": (20,), "two_heads": (20,), "lenet": (1, 28, 28), "bn_dropout": (3, 8, 8)}


def train_graph(kind: str):
    m = model(kind)
    return hal.training.build(m, output="output0" if kind == "two_heads" else None)


def model(kind: str) -> hal.Model:
    if kind == "lenet":
        return hal.models.get("lenet")
    from hal import nn
    from hal.nn import functional as F

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.a, self.b = nn.Linear(20, 16), nn.Linear(16, 10), nn.Linear(16, 3)

        def forward(self, x):
            h = F.tanh(self.body(x))
            return self.a(h), self.b(h)

    with nn.seed(0):
        if kind == "two_heads":
            net = TwoHeads()
        elif kind == "mlp":
            net = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Sigmoid(),
                                nn.Linear(32, 10))
        else:
            net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                nn.Dropout(0.3), nn.GlobalAvgPool(), nn.Flatten(),
                                nn.Linear(4, 10))
    return net.to_model((None, *SHAPES[kind]))


def shards(n: int, world: int) -> list[slice]:
    """How HAL's loop splits a global micro-batch of ``n``: the first ranks one sample more."""
    sizes = [n // world + (r < n % world) for r in range(world)]
    starts = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def global_batches(kind: str, step: int, micro: int, n: int):
    rng = np.random.default_rng(1000 + step)
    return [(rng.standard_normal((n, *SHAPES[kind])).astype(np.float32),
             rng.integers(0, 10, n).astype(np.int64)) for _ in range(micro)]


def rank_step(kind: str, step: int, micro: int, n: int, rank: int, world: int):
    """Rank ``rank``'s shards of a step's global micro-batches and their weights
    ``n_local * world / N_global`` (N_global: the samples of the whole step)."""
    total = micro * n
    batches, weights = [], []
    for x, y in global_batches(kind, step, micro, n):
        part = shards(n, world)[rank]
        batches.append({"input": x[part], "target": y[part]})
        weights.append((part.stop - part.start) * world / total)
    return batches, weights


# what each worker process runs: every scenario in turn, in one process group
WORKER = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import hal
    from hal.trainer import OptimizerSpec, Parallel, TrainSpec
    from test_torch_parallel import (BN_DROPOUT, SCENARIOS, global_batches, rank_step,
                                     train_graph)

    out, address = sys.argv[1], sys.argv[2]
    if address == "env":  # what HAL's loop passes: the rendezvous variables as host:port
        address = os.environ["MASTER_ADDR"] + ":" + os.environ["MASTER_PORT"]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dev = hal.training.settings.training_device("cpu@torch")
    launch = dev.backend.launch_training(dev, Parallel(workers=world))
    assert launch.here and launch.processes == world, launch
    for name in sys.argv[3:]:
        if name == "mismatch":  # rank 0 one micro-batch, rank 1 two: refused on both ranks
            tr = dev.backend.compile_training(train_graph("mlp"), dev, TrainSpec(
                parallel=Parallel(workers=world, rank=rank, world=world, address=address)))
            try:
                tr.step(*rank_step("mlp", 0, rank + 1, 16, rank, world))
                message = "stepped"
            except hal.errors.InputError as exc:
                message = str(exc)
            np.savez(os.path.join(out, f"{{name}}-{{rank}}.npz"), message=np.array(message))
            continue
        kind, opt, steps, micro, n = SCENARIOS.get(name, BN_DROPOUT)
        graph = train_graph(kind)
        par = Parallel(workers=world, rank=rank, world=world, address=address)
        tr = dev.backend.compile_training(graph, dev, TrainSpec(OptimizerSpec(**opt),
                                                                parallel=par))
        losses = []
        for s in range(steps):
            if name == "bn_dropout":  # every rank the whole batch: weight n * world / (n * world)
                batches, weights = rank_step(kind, s, micro, n, 0, 1)
            else:
                batches, weights = rank_step(kind, s, micro, n, rank, world)
            losses.append(tr.step(batches, weights))
        extra = {{}}
        if name == "sgd":  # evaluate, state and load_state on every rank
            state = tr.state()
            tr.load_state(state)
            x = global_batches(kind, 99, 1, 8)[0][0]
            extra = {{"eval": tr.evaluate({{"input": x}})[0], "keys": np.array(sorted(state))}}
        np.savez(os.path.join(out, f"{{name}}-{{rank}}.npz"), losses=np.array(losses),
                 **extra, **{{"w/" + k: v for k, v in tr.weights().items()}})
    tr.close()
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(args: list[list[str]], envs: list[dict], timeout: float = TIMEOUT_S) -> None:
    """Start one process per argv (each in its own session), wait for all; on a failure or the
    timeout, kill every process group and fail with their output."""
    procs = []
    try:
        for argv, env in zip(args, envs):
            procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        outputs = [p.communicate(timeout=timeout)[0].decode(errors="replace") for p in procs]
        failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode]
        assert not failed, f"worker(s) failed {failed}:\n" + "\n".join(o[-3000:] for o in outputs)
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
            else:
                try:  # children a launcher left behind
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if p.stdout:
                p.stdout.close()


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(hal.__file__)), env.get("PYTHONPATH", "")]))
    return env


def worker_script(tmp_path) -> str:
    path = tmp_path / "worker.py"
    path.write_text(WORKER.format(tests=os.path.dirname(os.path.abspath(__file__))))
    return str(path)


@pytest.fixture(scope="module")
def lenet_graph():
    return hal.training.build(hal.models.get("lenet"))


@pytest.fixture(scope="module")
def graphs(lenet_graph):
    return {"lenet": lenet_graph, **{k: train_graph(k) for k in ("mlp", "two_heads",
                                                                  "bn_dropout")}}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Every scenario run by two processes started here (RANK/WORLD_SIZE/... and a tcp
    address), rank by rank: {scenario: [rank 0's npz, rank 1's npz]}."""
    tmp = tmp_path_factory.mktemp("ddp")
    script, port = worker_script(tmp), free_port()
    envs = [{**base_env(), "RANK": str(r), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(r),
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)} for r in range(WORLD)]
    names = [*SCENARIOS, "bn_dropout", "mismatch"]
    argv = [sys.executable, script, str(tmp), f"127.0.0.1:{port}", *names]
    run_group([argv] * WORLD, envs)
    return {name: [dict(np.load(tmp / f"{name}-{r}.npz")) for r in range(WORLD)]
            for name in names}


def single_process(graph, name: str):
    """The scenario in one process: each step on the global micro-batches, weights n / N;
    (losses, weights, trainer)."""
    kind, opt, steps, micro, n = SCENARIOS.get(name, BN_DROPOUT)
    dev = hal.training.settings.training_device("cpu@torch")
    tr = dev.backend.compile_training(graph, dev, TrainSpec(OptimizerSpec(**opt)))
    losses = []
    for s in range(steps):
        batches, weights = rank_step(kind, s, micro, n, 0, 1)
        assert weights == [1 / micro] * micro
        losses.append(tr.step(batches, weights))
    return np.array(losses), tr.weights(), tr


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_ddp_matches_one_process(ddp_runs, graphs, name):
    graph = graphs[SCENARIOS[name][0]]
    losses, weights, _ = single_process(graph, name)
    runs = ddp_runs[name]
    for rank, run in enumerate(runs):
        # every rank reports the global loss of each micro-batch
        assert run["losses"].shape == losses.shape
        assert rel_err(run["losses"], losses) < 1e-5, (name, rank, run["losses"] - losses)
        for key, want in weights.items():
            got = run[f"w/{key}"]
            assert rel_err(got, want) < 1e-5, (name, rank, key, rel_err(got, want))
    # the ranks hold the same weights, and they moved
    for key in weights:
        np.testing.assert_array_equal(runs[0][f"w/{key}"], runs[1][f"w/{key}"])
    start = {n: np.asarray(v.const_value.numpy())
             for n, v in graph.model.graph.initializers.items() if n in weights}
    assert max(rel_err(weights[k], start[k]) for k in start) > 1e-3


def test_ddp_evaluate_and_state(ddp_runs, graphs):
    _, _, tr = single_process(graphs["mlp"], "sgd")
    want = tr.evaluate({"input": global_batches("mlp", 99, 1, 8)[0][0]})[0]
    for run in ddp_runs["sgd"]:
        assert rel_err(run["eval"], want) < 1e-5
        assert list(run["keys"]) == sorted(tr.state())


def test_unused_parameters(graphs):
    from hal.backends.torch_backend.parallel import unused_parameters

    dev = hal.training.settings.training_device("cpu@torch")
    for kind, unused in (("mlp", 0), ("two_heads", 2)):
        tr = dev.backend.compile_training(graphs[kind], dev, TrainSpec())
        assert len(unused_parameters(tr.train_module, tr.loss_index)) == unused


def test_ddp_refuses_uneven_micro_batch_counts(ddp_runs):
    for run in ddp_runs["mismatch"]:
        assert "the ranks got between 1 and 2" in str(run["message"]), run["message"]


def test_ddp_dropout_and_batchnorm(ddp_runs, graphs):
    """Both ranks step on the same batch: each draws its own dropout masks (rank 0 the ones a
    single process draws), so the global loss differs from the single process's; the ranks
    still hold the same weights and the same running statistics (rank 0's)."""
    runs = ddp_runs["bn_dropout"]
    losses, _, _ = single_process(graphs["bn_dropout"], "bn_dropout")
    np.testing.assert_array_equal(runs[0]["losses"], runs[1]["losses"])
    assert abs(runs[0]["losses"][0, 0] - losses[0, 0]) > 1e-4  # same weights, other masks
    keys = [k for k in runs[0] if k.startswith("w/")]
    assert any("mean" in k or "var" in k for k in keys), keys
    for key in keys:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])


def test_shard_weights_give_the_global_gradient():
    """DDP averages the ranks' gradients: with weight n_local * world / N each, the average
    is the global batch's mean gradient (a least-squares model, by hand)."""
    rng = np.random.default_rng(0)
    x, y, w = rng.standard_normal((63, 5)), rng.standard_normal(63), rng.standard_normal(5)

    def mean_grad(xs, ys):  # d/dw mean((xs @ w - ys) ** 2)
        return 2 * xs.T @ (xs @ w - ys) / len(ys)

    for world in (2, 3, 4):
        parts = shards(63, world)
        avg = sum(len(y[p]) * world / 63 * mean_grad(x[p], y[p]) for p in parts) / world
        np.testing.assert_allclose(avg, mean_grad(x, y), rtol=1e-12)
    assert [p.stop - p.start for p in shards(63, 2)] == [32, 31]


@pytest.mark.slow  # torchrun's agent and rendezvous take ~15 s
def test_torchrun_starts_the_ranks(tmp_path, graphs):
    """The same worker under torchrun, given the address HAL's loop passes
    (MASTER_ADDR:MASTER_PORT, whose store torchrun's agent already serves: joined through
    env://); launch_training answers here=True."""
    script, port = worker_script(tmp_path), free_port()
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
            f"--nproc-per-node={WORLD}", "--master-addr=127.0.0.1", f"--master-port={port}",
            script, str(tmp_path), "env", "sgd"]
    run_group([argv], [base_env()])
    losses, weights, _ = single_process(graphs["mlp"], "sgd")
    for r in range(WORLD):
        run = dict(np.load(tmp_path / f"sgd-{r}.npz"))
        assert rel_err(run["losses"], losses) < 1e-5
        assert all(rel_err(run[f"w/{k}"], v) < 1e-5 for k, v in weights.items())


# -- launch_training and the trainer's refusals (in process) ------------------------------------
@pytest.fixture()
def cpu(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    return hal.training.settings.training_device("cpu@torch")


def test_launch_starts_processes(cpu):
    launch = cpu.backend.launch_training(cpu, Parallel(workers=2))
    assert launch == Launch(processes=2, env={}, here=False,
                            why="DistributedDataParallel over 2 processes, gloo")
    assert cpu.backend.launch_training(cpu, Parallel(workers=1)).here


def test_launch_here_under_torchrun(cpu, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    launch = cpu.backend.launch_training(cpu, Parallel(workers=3))
    assert launch.here and launch.processes == 3
    with pytest.raises(OptionError, match="WORLD_SIZE=3.*workers=2"):
        cpu.backend.launch_training(cpu, Parallel(workers=2))


@pytest.mark.parametrize("strategy, workers, match", [
    ("tensor", 2, "jax"), ("pipeline", 3, "one process per stage"), ("model", 2, "not one of")])
def test_launch_refuses_other_strategies(cpu, strategy, workers, match):
    with pytest.raises(OptionError, match=match):
        cpu.backend.launch_training(cpu, Parallel(workers=workers, strategy=strategy))


def test_a_pipeline_launches_a_process_per_stage(cpu, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    launch = cpu.backend.launch_training(cpu, Parallel(strategy="pipeline", stages=3))
    assert launch.processes == 3 and not launch.here and "pipeline" in launch.why


def test_launch_refuses_devices_without_ddp():
    from hal.backends.torch_backend.parallel import launch

    count = torch.cuda.device_count()
    with pytest.raises(OptionError, match=f"torch sees {count}"):
        launch("cuda", Parallel(workers=count + 2))
    with pytest.raises(OptionError, match="not on mps"):
        launch("mps", Parallel(workers=2))
    with pytest.raises(OptionError, match="positive int"):
        launch("cpu", Parallel(workers=0))


def test_trainer_refuses_a_parallel_it_cannot_run(cpu, graphs):
    def compile_with(par):
        return cpu.backend.compile_training(graphs["mlp"], cpu, TrainSpec(parallel=par))

    with pytest.raises(OptionError, match="one process per worker"):
        compile_with(Parallel(workers=2))  # rank 0 of world 1: no process group to join
    with pytest.raises(OptionError, match="one process per stage"):
        compile_with(Parallel(workers=2, strategy="pipeline"))
    with pytest.raises(OptionError, match="host:port"):
        compile_with(Parallel(workers=2, rank=0, world=2, address="nohost"))
    with pytest.raises(OptionError, match="not in"):
        compile_with(Parallel(workers=2, rank=2, world=2, address="127.0.0.1:1"))
    assert not torch.distributed.is_initialized()
