"""``hal.train(..., cluster="ray")``: the same data-parallel run as Ray Train workers.

Ray Train's ``TorchTrainer`` starts the workers on the cluster's nodes, sets torch's
rendezvous variables and the process group in each, and restarts the whole group from the
last reported checkpoint when a worker dies (``max_failures``). Each worker runs HAL's own
loop (``hal.training.loop.train``) with ``workers=N`` on ``cpu@torch`` (or ``cuda@torch``),
so the torch backend joins the group Ray set up. After every epoch rank 0 hands the loop's
checkpoint to Ray (``ray.train.report``), and a restarted group resumes from Ray's latest one.
The trained model comes back through Ray's final checkpoint.

``cluster``: ``"ray"`` (``ray.init()``: ``RAY_ADDRESS`` when set, else a new local Ray),
``"ray://HOST:PORT"`` (Ray Client) or ``"HOST:PORT"``/``"auto"`` (an existing cluster).
``workers=(MIN, MAX)`` is Ray Train's elastic scaling: each attempt runs as many workers as
the cluster has room for, and since N data-parallel workers take the step of one, a restart
on another count resumes the same run. The
checkpoints live under ``storage_path`` (a folder every node can read, or a URI Ray supports);
the default is a temporary folder, which only a cluster on one machine shares. jax and tf run on
Ray Train only through engines HAL does not drive here, so they are refused.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hal.errors import BackendError, OptionError
from hal.training.callbacks import Callback

RESULT = "result.pkl"


def address_of(cluster: str) -> str | None:
    """The address ``ray.init`` takes for ``cluster`` (None: Ray's own default)."""
    if not isinstance(cluster, str) or not cluster:
        raise OptionError(f"cluster must be 'ray', 'ray://HOST:PORT' or 'HOST:PORT', got "
                          f"{cluster!r}")
    if cluster == "ray":
        return None
    if cluster.startswith("ray://") or cluster == "auto" or ":" in cluster:
        return cluster
    raise OptionError(f"cluster {cluster!r} is not 'ray', 'ray://HOST:PORT', 'HOST:PORT' or "
                      f"'auto'")


def check_range(workers: tuple) -> None:
    """``workers=(MIN, MAX)``: an elastic run of between MIN and MAX workers."""
    ok = len(workers) == 2 and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                   for n in workers) and workers[0] <= workers[1]
    if not ok:
        raise OptionError(f"workers=(MIN, MAX) takes two ints 1 <= MIN <= MAX, got {workers!r}")


def run_on_ray(call: dict[str, Any], cluster: str, backend: str, max_failures: int,
               storage_path: str | None, timeout: float | None = None):
    """Rank 0's TrainResult of ``hal.train(**call)`` run by Ray Train workers."""
    if backend != "torch":
        raise OptionError(f"cluster= trains through Ray Train's TorchTrainer, on torch devices "
                          f"(cpu@torch, cuda@torch); {call['device']} is a {backend} device")
    try:
        import ray
        from ray.train import (CheckpointConfig, FailureConfig, RunConfig, ScalingConfig,
                               TrainingFailedError)
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise OptionError("cluster='ray' needs Ray Train: pip install 'hal-accel[ray]'") \
            from None
    address = address_of(cluster)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    model = call["model"]
    call = {**call, "model": (model.to_proto().SerializeToString(), model.name)}
    workers = call["workers"]  # an int, or (MIN, MAX): Ray Train's elastic scaling
    storage = storage_path or tempfile.mkdtemp(prefix="hal-ray-")
    use_gpu = call["device"].startswith("cuda")
    trainer = TorchTrainer(
        _worker_loop, train_loop_config={"call": call},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=f"hal-{model.name}", storage_path=storage,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise BackendError(f"Ray Train gave up on the run after {max_failures} restart(s): "
                           f"{exc}") from None
    if result.checkpoint is None:
        raise BackendError("the Ray Train run finished without a checkpoint from rank 0")
    with result.checkpoint.as_directory() as folder:
        fields = pickle.loads((Path(folder) / RESULT).read_bytes())
    from hal.ir.model import load
    from hal.training.result import TrainResult

    fields["model"] = load(*fields["model"])
    fields["settings"] = {**fields["settings"],
                          "cluster": {"address": cluster, "workers": workers,
                                      "max_failures": max_failures, "storage_path": storage}}
    return TrainResult(**fields)


class RayReport(Callback):
    """Hands each epoch's checkpoint to Ray Train (rank 0 with the file, the others without)."""

    def on_checkpoint(self, run, path: Path) -> None:
        import ray.train

        metrics = {k: v for k, v in run.history[-1].items() if isinstance(v, (int, float))}
        if not run.writes:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy2(path, Path(folder) / path.name)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: HAL's loop from Ray's latest checkpoint, if any."""
    import ray.train

    from hal.ir.model import load
    from hal.training import checkpoint
    from hal.training.loop import train

    call = dict(config["call"])
    model, data = load(*call.pop("model")), call.pop("data")
    call["workers"] = ray.train.get_context().get_world_size()  # this attempt's, if elastic
    folder = Path(tempfile.mkdtemp(prefix="hal-ray-worker-"))
    latest = ray.train.get_checkpoint()
    if latest is not None:
        with latest.as_directory() as d:
            shutil.copy2(Path(d) / checkpoint.LAST, folder / checkpoint.LAST)
    call["callbacks"] = [*call.get("callbacks", ()), RayReport()]
    result = train(model, data, checkpoint_dir=folder, resume=latest is not None, **call)
    rank = ray.train.get_context().get_world_rank()
    if rank != 0:
        ray.train.report({"done": 1})
        return
    fields = {k: getattr(result, k) for k in result.__dataclass_fields__}
    fields["model"] = (result.model.to_proto().SerializeToString(), result.model.name)
    fields["best_checkpoint"] = fields["last_checkpoint"] = None  # worker-local files
    with tempfile.TemporaryDirectory() as out:
        (Path(out) / RESULT).write_bytes(pickle.dumps(fields, protocol=5))
        ray.train.report({"done": 1}, checkpoint=ray.train.Checkpoint.from_directory(out))
