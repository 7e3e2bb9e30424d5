"""``hal.train``: HAL's training loop, the same for every backend.

The backend's Trainer differentiates and updates (``hal.trainer``); the loop owns the rest:
data order, accumulation groups, epochs, validation, checkpoints, callbacks and progress.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hal.backend import Device
from hal.errors import BackendError, HalError, OptionError
from hal.ir.model import Model, TensorSpec
from hal.trainer import Launch, Parallel, TrainGraph, Trainer, TrainSpec
from hal.training import checkpoint, launcher, qat, ray_cluster
from hal.training.batches import TARGET, ArrayData, BatchStream, Feed, grouped, source, weights
from hal.training.callbacks import BestCheckpoint, Callback
from hal.training.graph import build
from hal.training.interrupt import SharedBoundary, StepBoundary, TrainingInterrupted
from hal.training.metrics import Evaluation, check
from hal.training.progress import Progress
from hal.training.result import TrainResult, trained_model
from hal.training.settings import (check_shards, joined, optimizer_spec, parallel_spec,
                                   positive_int, train_spec, training_device)

log = logging.getLogger("hal")


def train(model: Any, data: Any, *, device: str | Device = "cpu", loss: str = "cross_entropy",
          optimizer: str = "adamw", lr: float = 1e-3, epochs: int = 1, batch_size: int = 64,
          accumulate: int = 1, precision: str = "fp32", seed: int = 0, validation: Any = None,
          metrics: Sequence[str] = ("accuracy",), checkpoint_dir: str | Path | None = None,
          resume: bool = False, callbacks: Sequence[Callback] = (), progress: bool = True,
          freeze: Sequence[str] = (), output: str | None = None, workers: int = 1,
          strategy: str = "data", stages: int = 2, explain: bool = False,
          cluster: str | None = None, max_failures: int = 0, timeout: float | None = None,
          loss_options: dict | None = None, quantize: str | None = None,
          **options: Any) -> TrainResult:
    """Train ``model`` (anything ``hal.compile`` takes) on ``data`` on ``device``.

    ``data``/``validation``: ``(x, y)`` arrays, a dict by input name with ``"target"``, or an
    iterable of such batches. ``batch_size`` samples per micro-batch, ``accumulate``
    micro-batches per update. Optimizer options by keyword: momentum, nesterov, weight_decay,
    betas, eps, schedule ("constant", "step", "cosine"), warmup_steps, step_size, gamma,
    clip_norm, total_steps; other keywords go to the backend (``TrainSpec.extra``).
    ``checkpoint_dir``: last.safetensors each epoch and best.safetensors at the best epoch;
    ``resume=True`` continues from last.safetensors. Ctrl-C lets the step under way finish,
    writes last.safetensors there and raises ``TrainingInterrupted`` (a KeyboardInterrupt
    naming the file; ``hal.training.interrupt``): resuming continues at that very step.

    ``workers``/``strategy``: several workers on the backend's own engine ("data": the
    global batch of ``batch_size`` split across them; "pipeline" with ``stages``; "tensor"),
    in fresh worker processes when this one cannot host them (``hal.training.launcher``);
    the result's ``settings["parallel"]`` says what ran where, and ``explain=True`` logs it.
    ``cluster="ray"`` (or "ray://HOST:PORT", "HOST:PORT"): the data-parallel run as Ray Train
    workers on a Ray cluster, restarted from the last epoch's checkpoint up to
    ``max_failures`` times (``hal.training.ray_cluster``; ``storage_path=`` for checkpoints).
    ``timeout``: seconds the fresh worker processes of a parallel run may take before they are
    stopped and the run fails (None: no limit). ``loss_options``: the settings of a loss that
    has some (loss "distill": temperature, alpha; its data are dicts that also carry
    ``"teacher_logits"``, as ``hal.distill`` makes them).
    ``quantize="int8"``: quantization-aware training (``hal.training.qat``): the model trains
    with fake quantization where ``hal.compile(precision="int8")`` quantizes, calibrated on
    ``calibration=`` (else the first training samples; also ``calibration_method``,
    ``calibration_percentile``, ``power_of_two``), and the result is the int8 QDQ model.
    """
    from hal.frontends import to_model

    model_kw = {k: options.pop(k) for k in ("input_shape", "example_input") if k in options}
    hal_model = to_model(model, **model_kw)
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("accumulate", accumulate)):
        positive_int(name, value)
    if resume and checkpoint_dir is None:
        raise OptionError("resume=True continues from checkpoint_dir's last checkpoint: pass "
                          "checkpoint_dir=")
    dev = training_device(device)
    elastic = isinstance(workers, tuple)
    if elastic:
        if cluster is None:
            raise OptionError(f"workers={workers!r} (MIN, MAX) is elastic training on a Ray "
                              f"cluster: pass cluster='ray', or an int of workers")
        ray_cluster.check_range(workers)
    parallel = parallel_spec(workers if not elastic else max(workers), strategy, stages)
    call = dict(model=hal_model, data=data, device=dev.string, loss=loss, optimizer=optimizer,
                lr=lr, epochs=epochs, batch_size=batch_size, accumulate=accumulate,
                precision=precision, seed=seed, validation=validation, metrics=metrics,
                checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks,
                progress=progress, freeze=freeze, output=output, workers=workers,
                strategy=strategy, stages=stages, explain=explain, loss_options=loss_options,
                quantize=quantize, **options)
    if cluster is not None:
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) \
                or max_failures < 0:
            raise OptionError(f"max_failures must be an int >= 0, got {max_failures!r}")
        _check_arrays(data, validation, f"cluster={cluster!r}")
        if checkpoint_dir is not None or resume:
            raise OptionError("a cluster run keeps its checkpoints in Ray's storage "
                              "(storage_path=), not checkpoint_dir/resume")
        call.pop("checkpoint_dir"), call.pop("resume")
        storage = call.pop("storage_path", None)
        return ray_cluster.run_on_ray(call, cluster, dev.backend.name, max_failures, storage)
    launch = None
    if parallel.active:
        launch = dev.backend.launch_training(dev, parallel)
        if not launch.here:
            _check_arrays(data, validation, f"workers={workers} on {dev.string} ({launch.why})")
            _explain(explain, dev, parallel, launch)
            return launcher.run_elsewhere(launch, call, timeout)
        parallel = joined(parallel, launch)
        _explain(explain, dev, parallel, launch)
    qat_options = {k: options.pop(k) for k in qat.OPTIONS if k in options}
    plan = None
    if quantize is not None:
        plan = qat.prepare(hal_model, quantize, data, qat_options)
        hal_model = plan.model
    elif qat_options:
        raise OptionError(f"{sorted(qat_options)} configure quantization-aware training: pass "
                          f"quantize='int8' with them")
    tg = build(hal_model, loss, freeze, output, loss_options)
    feed = Feed(hal_model.inputs, _target_spec(tg), _extra_specs(tg, hal_model))
    data_src = source(data, feed, "data")
    val_src = None if validation is None else source(validation, feed, "validation")
    per_epoch = data_src.batches_per_epoch(batch_size)
    steps = None if per_epoch is None else -(-per_epoch // accumulate)
    opt = optimizer_spec(optimizer, lr, options)
    spec = train_spec(opt, steps * epochs if steps else None, precision, seed, options,
                      parallel)
    if parallel.world > 1 and parallel.strategy == "data":
        check_shards(parallel, batch_size, data_src.samples)
    run_settings = {"loss": loss, "optimizer": {k: v for k, v in asdict(spec.optimizer).items()
                                                if k != "total_steps"},
                    "batch_size": batch_size, "accumulate": accumulate, "precision": precision,
                    "seed": seed, "freeze": list(freeze), "output": output,
                    "samples": data_src.samples}
    if plan is not None:
        run_settings["quantize"] = {"precision": quantize, "quantizer": plan.detail}
    if loss_options:
        run_settings["loss_options"] = dict(loss_options)
    if parallel.active:
        run_settings["parallel"] = {"workers": parallel.workers, "strategy": parallel.strategy,
                                    "processes": parallel.world, "engine": launch.why}
        if parallel.strategy == "pipeline":
            run_settings["parallel"]["stages"] = parallel.stages
    classification = feed.target.dtype.kind == "i"
    evaluation = (lambda: Evaluation(tg, tg.outputs.index(output) if output else 0,
                                     check(metrics, classification))) if val_src else None
    trainer = _call(dev, "compile the training graph", dev.backend.compile_training, tg, dev, spec)
    run = Run(trainer, tg, hal_model, dev, spec, run_settings, data_src, val_src, evaluation,
              list(callbacks), Path(checkpoint_dir) if checkpoint_dir is not None else None,
              epochs, steps)
    if resume:
        run.resume()
    result = run.fit(progress)
    if plan is not None:
        result.model = qat.convert(plan, result.model)
    return result


def _arrays(data: Any) -> bool:
    return isinstance(data, dict) or (isinstance(data, (tuple, list)) and len(data) == 2)


def _check_arrays(data: Any, validation: Any, what: str) -> None:
    if not _arrays(data) or not (validation is None or _arrays(validation)):
        raise OptionError(f"{what} runs in other processes, which take data as (x, y) arrays "
                          f"or a dict of arrays, not an iterable of batches")


def _explain(explain: bool, dev: Device, parallel: Parallel, launch: Launch) -> None:
    where = "this process" if launch.here else f"{launch.processes} fresh worker process(es)"
    msg = (f"hal.train on {dev.string}: strategy {parallel.strategy!r}, {parallel.workers} "
           f"workers, in {where}: {launch.why}")
    log.info(msg)
    if explain and parallel.rank == 0:
        print(msg, file=sys.stderr)


def shard(group: Sequence[dict], parallel: Parallel) -> tuple[list[dict], list[float]]:
    """This process's rows of each micro-batch of ``group``, and weights such that the engine's
    gradient average over the processes is the gradient of the whole group:
    ``n_local * world / n_group``."""
    total = sum(len(b[TARGET]) for b in group)
    mine, w = [], []
    for b in group:
        rows = np.array_split(np.arange(len(b[TARGET])), parallel.world)[parallel.rank]
        mine.append({k: v[rows] for k, v in b.items()})
        w.append(len(rows) * parallel.world / total)
    return mine, w


def _target_spec(tg: TrainGraph) -> TensorSpec:
    return _input_spec(next(v for v in tg.model.graph.inputs if v.name == tg.target))


def _extra_specs(tg: TrainGraph, model: Model) -> list[TensorSpec]:
    """The training graph's inputs besides the model's and the target (the teacher's logits)."""
    known = {*(s.name for s in model.inputs), tg.target, *tg.model.graph.initializers}
    return [_input_spec(v) for v in tg.model.graph.inputs if v.name not in known]


def _input_spec(v: Any) -> TensorSpec:
    dims = tuple(d if isinstance(d, int) else str(d) for d in v.shape) if v.shape else ()
    return TensorSpec(v.name, dims, np.dtype(v.dtype.numpy()))


def _call(dev: Device, what: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)``; a framework's exception becomes a BackendError naming the device."""
    try:
        return fn(*args)
    except HalError:
        raise
    except Exception as exc:
        raise BackendError(f"{dev.string} failed to {what}: {type(exc).__name__}: {exc}") \
            from exc


class Run:
    """One training run: the trainer, the data and the loop's own state (what a checkpoint
    holds besides the trainer's)."""

    def __init__(self, trainer: Trainer, tg: TrainGraph, model: Model, dev: Device,
                 spec: TrainSpec, settings: dict, data: ArrayData | BatchStream,
                 validation: ArrayData | BatchStream | None,
                 evaluation: Callable[[], Evaluation] | None, callbacks: list[Callback],
                 checkpoint_dir: Path | None, epochs: int, steps_per_epoch: int | None):
        self.trainer, self.tg, self.model, self.dev, self.spec = trainer, tg, model, dev, spec
        self.settings, self.data, self.validation = settings, data, validation
        self.evaluation, self.epochs, self.steps_per_epoch = evaluation, epochs, steps_per_epoch
        self.checkpoint_dir = checkpoint_dir
        if checkpoint_dir is not None and not any(isinstance(c, BestCheckpoint)
                                                  for c in callbacks):
            callbacks = [*callbacks, BestCheckpoint()]
        self.callbacks = callbacks
        self.history: list[dict] = []
        self.epoch = self.position = self.step = self.samples = 0  # epoch: epochs done
        self.loss_sum = self.seconds = 0.0
        self.rng_state: dict = {}
        self.losses: list[float] = []  # the last step's micro-batch losses
        self.stop = self.in_step = False
        self.boundary: StepBoundary | SharedBoundary | nullcontext = nullcontext()
        self.best_checkpoint: Path | None = None
        self.last_checkpoint: Path | None = None

    # -- what callbacks read ------------------------------------------------
    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints and shows progress: rank 0 of a run over
        several processes, or the only process."""
        return self.spec.parallel.rank == 0

    @property
    def has_validation(self) -> bool:
        return self.validation is not None

    @property
    def record_keys(self) -> list[str]:
        keys = ["loss", "seconds", "samples_per_s", "lr"]
        if self.evaluation is not None:
            keys += list(self.evaluation().result())
        return keys

    @property
    def default_monitor(self) -> str:
        return "val_loss" if self.has_validation else "loss"

    # -- the loop -------------------------------------------------------------
    def fit(self, progress: bool) -> TrainResult:
        for cb in self.callbacks:
            cb.on_train_begin(self)
        bar = Progress(progress and self.writes, self.epochs)
        self.boundary = self._boundary()
        try:
            with self.boundary:
                while self.epoch < self.epochs and not self.stop:
                    self._epoch(bar)
                    record = self._end_epoch()
                    bar.end_epoch(record)
                    for cb in self.callbacks:
                        cb.on_epoch_end(self, record)
                    if self.checkpoint_dir is not None:
                        self.last_checkpoint = self.save(self.checkpoint_dir / checkpoint.LAST)
                        for cb in self.callbacks:
                            cb.on_checkpoint(self, self.last_checkpoint)
                    self._between_steps()
        except KeyboardInterrupt:
            saved = None
            if self.checkpoint_dir is not None and not self.in_step:
                saved = self.last_checkpoint = self.save(self.checkpoint_dir / checkpoint.LAST)
            raise TrainingInterrupted(saved, self.epoch, self.step) from None
        finally:
            bar.close()
        weights = _call(self.dev, "return the trained weights", self.trainer.weights)
        settings = dict(self.settings)
        if "parallel" in settings:  # what ran where, as the trainer saw it
            settings["parallel"] = {**settings["parallel"],
                                    "trainer": self.trainer.description}
        return TrainResult(trained_model(self.model, weights), self.history, self.dev.string,
                           self.step, self.best_checkpoint, self.last_checkpoint, self.stop,
                           settings)

    def _epoch(self, bar: Progress) -> None:
        batch_size, accumulate = self.settings["batch_size"], self.settings["accumulate"]
        batches, self.rng_state = self.data.epoch(self.spec.seed, self.epoch, batch_size,
                                                  start=self.position)
        bar.start_epoch(self.epoch, self.steps_per_epoch, self.position // accumulate)
        start, before = time.perf_counter(), self.seconds
        for group in grouped(batches, accumulate):
            self.in_step = True
            parallel = self.spec.parallel
            split = parallel.world > 1 and parallel.strategy == "data"
            mine, w = shard(group, parallel) if split else (group, weights(group))
            losses = _call(self.dev, f"run training step {self.step}", self.trainer.step,
                           mine, w)
            self.in_step = False
            self.losses = [float(v) for v in losses]
            sizes = [len(b[TARGET]) for b in group]
            self.loss_sum += float(np.dot(np.asarray(losses, np.float64), sizes))
            self.samples += sum(sizes)
            self.position += len(group)
            self.step += 1
            self.seconds = before + time.perf_counter() - start
            bar.step(self.loss_sum / self.samples, self.samples / max(self.seconds, 1e-9))
            for cb in self.callbacks:
                cb.on_step_end(self)
            self._between_steps()

    def _between_steps(self) -> None:
        """Where a Ctrl-C held back during the step stops the run (``hal.training.interrupt``)."""
        if not isinstance(self.boundary, nullcontext):
            self.boundary.check(self.step)

    def _boundary(self) -> StepBoundary | SharedBoundary | nullcontext:
        """Where Ctrl-C may stop the run. The workers ``hal.training.launcher`` started stop
        where it tells them, through its folder (several processes must stop after the same
        step); one process on its own holds Ctrl-C until its step ends; the processes of a Ray
        Train group or of torchrun stop at once."""
        folder = os.environ.get(launcher.WORKER_ENV)
        if folder:
            return SharedBoundary(Path(folder), self.spec.parallel.rank)
        return StepBoundary() if self.spec.parallel.world == 1 else nullcontext()

    def _end_epoch(self) -> dict:
        if not self.samples:
            raise HalError(f"epoch {self.epoch + 1} had no training batches")
        record = {"epoch": self.epoch + 1, "step": self.step,
                  "loss": self.loss_sum / self.samples, "seconds": self.seconds,
                  "samples_per_s": self.samples / max(self.seconds, 1e-9),
                  "lr": self.spec.optimizer.lr_at(max(0, self.step - 1))}
        if self.validation is not None:
            record.update(self._validate())
        self.history.append(record)
        self.epoch += 1
        self.position = self.samples = 0
        self.loss_sum = self.seconds = 0.0
        return record

    def _validate(self) -> dict[str, float]:
        ev = self.evaluation()
        batches, _ = self.validation.epoch(self.spec.seed, 0, self.settings["batch_size"],
                                           shuffle=False)
        for b in batches:
            inputs = {s.name: b[s.name] for s in self.model.inputs}
            ev.add(_call(self.dev, "evaluate", self.trainer.evaluate, inputs), b)
        return ev.result()

    # -- checkpoints ----------------------------------------------------------
    def identity(self) -> dict:
        """What a checkpoint must agree on to be resumed by this run."""
        inits = self.model.graph.initializers
        run = dict(self.settings)
        if run.get("parallel", {}).get("strategy") == "data":
            # the step of N data-parallel workers is the step of one: a run may resume on
            # another count, one worker included (an elastic cluster's restart)
            del run["parallel"]
        return {"backend": self.dev.backend.name, "model": self.model.digest(),
                "params": {n: list(inits[n].shape) for n in self.tg.params},
                "run": run}

    def loop_state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "step": self.step,
                "samples": self.samples, "loss_sum": self.loss_sum, "seconds": self.seconds,
                "rng": self.rng_state, "history": self.history,
                "callbacks": [cb.state() for cb in self.callbacks]}

    def save(self, path: str | Path) -> Path:
        """Write the run's state to ``path`` (atomically; rank 0 only); returns the path.
        Every rank asks its trainer for the state: a pipeline's gathers it from all ranks."""
        state = _call(self.dev, "return its training state", self.trainer.state)
        if not self.writes:
            return Path(path)
        tensors = {k: np.asarray(v) for k, v in state.items()}
        return checkpoint.save(path, tensors, {**self.identity(), "loop": self.loop_state(),
                                               "device": self.dev.string})

    def resume(self) -> None:
        path = self.checkpoint_dir / checkpoint.LAST
        if not path.exists():
            msg = f"resume=True but {str(path)!r} does not exist: training starts from epoch 1"
            log.warning(msg)
            warnings.warn(msg, stacklevel=3)
            return
        ckpt = checkpoint.load(path)
        checkpoint.check_matches(ckpt, self.identity())
        loop = ckpt.meta["loop"]
        if len(loop["callbacks"]) != len(self.callbacks):
            raise checkpoint.CheckpointError(
                f"checkpoint {str(path)!r} was written with {len(loop['callbacks'])} callbacks, "
                f"this run has {len(self.callbacks)}: resume with the same callbacks")
        try:
            self.trainer.load_state(ckpt.tensors)
        except HalError as exc:
            raise checkpoint.CheckpointError(f"checkpoint {str(path)!r} does not fit the "
                                             f"trainer: {exc}") from None
        for cb, state in zip(self.callbacks, loop["callbacks"]):
            cb.load_state(state)
        for key in ("epoch", "position", "step", "samples", "loss_sum", "seconds", "history"):
            setattr(self, key, loop[key])
        self.rng_state = loop["rng"]
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch + 1, self.step)
