"""``hal.compare``: every model on every device, measured the same way, checked against
``cpu@reference``. One failing row never stops the run."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal import compiler, registry
from hal import models as zoo
from hal.backend import CompileOptions
from hal.comparison import interrupt
from hal.comparison.policy import default_devices
from hal.comparison.results import Results
from hal.comparison.rounds import device_order, merge
from hal.comparison.row import Row, failure
from hal.comparison.timing import PeakMemory, Timing, measure
from hal.comparison.arguments import (as_list, batches, check_calibration, device_strings,
                                      precisions)
from hal.comparison.train import (TRAIN_STEPS, check_precisions, check_steps, run_training,
                                  settings, training_devices)
from hal.errors import HalError, OptionError
from hal.frontends import to_model
from hal.ir.model import Model

__all__ = ["Job", "Reference", "Row", "Timing", "compare", "measure"]

REFERENCE = "cpu@reference"
DEFAULT_BUDGET_S = 0.3


@dataclass
class Reference:
    """Inputs for one (model, batch) and the reference outputs at fp32 (or why there are none)."""

    inputs: list[np.ndarray]
    outputs: list[np.ndarray] | None = None
    error: str | None = None


@dataclass
class Job:
    """One device's share of the work: models x precisions x batches."""

    device: str
    models: list[str]
    batch: list[int]
    precision: list[str]
    budget_s: float
    scenario: str | None = None
    warmup: int = 3
    min_runs: int = 5
    max_runs: int = 1000
    latency_bound_ms: float | None = None  # MLPerf Server only
    task: str = "inference"  # or "training" (hal.comparison.train)
    train_steps: int = 0  # training: updates behind each row's losses
    calibration: str | None = None  # "dynamic": int8 rows quantize activations at run time


Progress = Callable[..., Any]


def compare(models: Sequence[str] | str | None = None, devices: Sequence[str] | str | None = None,
            batch: Sequence[int] | int = (1, 64), precision: Sequence[str] | str | None = None,
            budget_s: float = DEFAULT_BUDGET_S, isolate: bool = False,
            progress: Progress | None = None, scenario: str | None = None,
            warmup: int = 3, min_runs: int = 5, max_runs: int = 1000,
            latency_bound_ms: float | None = None, rounds: int = 1, train: bool = False,
            train_steps: int = TRAIN_STEPS, cluster: str | None = None,
            calibration: str | None = None) -> Results:
    """Measure every model on every device at every batch size and precision.

    ``models``: zoo names or .onnx paths (default: the whole zoo). ``devices``: device
    strings (default: ``policy.default_devices``: every usable device, simulated ones
    included, aliases and slow simulations skipped, the latter listed with why in
    ``environment["run"]["left_out"]``).
    ``precision``: one or more of fp32/fp16/bf16/int8 for every device (default: each
    device's own ``default_precision``, fp32 except on int8-only accelerators).
    ``budget_s``: seconds of timed calls per row after warm-up (at least ``min_runs``
    calls, at most ``max_runs``). ``isolate``: run each device in its own process
    (``python -m hal.comparison.worker``), so one backend's threads, caches and memory cannot
    skew another's; only entry-point backends are visible there, not ``register_backend``
    ones. ``scenario``: drive each row through MLPerf LoadGen ("single-stream", "offline",
    "server") instead of HAL's own timing loop. ``progress``: called as
    ``progress(done=, total=, current=, row=)`` before and after each row. ``rounds``:
    measure the whole table this many times, devices in a rotated order each round, and
    report per row the median of the rounds and ``p50_spread_ms``, half the range of the
    per-round p50s: drift across the run that one row's own spread cannot show (3 or more
    for figures meant to be compared with another run's). ``train``: measure a full training
    step (forward, backward, AdamW update) instead of inference, on the devices whose backend
    trains (the others are left out with why), each row also recording the losses of its
    first ``train_steps`` steps from the model's initial weights on fixed data
    (``hal.comparison.train``); ``precision`` is then among fp32/bf16/fp16 (default fp32).

    ``cluster``: "ray" (``RAY_ADDRESS``, else the cluster ``ray start`` began on this machine),
    "ray://HOST:PORT" or "HOST:PORT": measure on every alive node of that Ray cluster the
    devices it advertises (``hal devices --ray-resources``) that ``devices`` selects (a bare
    kind: each node's best usable backend of the kind; none given: every advertised device
    but slow simulations), each row's ``host`` naming its node, nodes in parallel and one
    device at a time per node, in a Ray worker process of the node (``isolate``: a fresh one
    per device) (``hal.comparison.fleet``).

    ``calibration``: "dynamic" compiles the int8 rows with ``calibration="dynamic"`` (int8
    weights, activations quantized at run time, ``hal.passes.dynamic_quantize``) instead of
    static scales calibrated on each model's own example inputs; their rows say so.

    Names and devices are checked before any work (a typo raises at once); after that a
    failure -- reference, compile, a call, a whole worker -- becomes an ``error`` row.
    Ctrl-C stops the run at once (an isolated worker too) and raises ``CompareInterrupted``
    (``hal.comparison.interrupt``), whose ``results`` are the rows finished before it.
    """
    from hal.comparison.environment import environment

    models = as_list(models) or zoo.list()
    batch = batches(batch)
    precision = precisions(precision)
    check_calibration(calibration, precision, train)
    if train:
        precision = check_precisions(precision)
        check_steps(train_steps)
        if scenario is not None:
            raise OptionError("--scenario drives inference through MLPerf LoadGen; leave it "
                              "out with --train")
    if scenario is not None:
        from hal.comparison.scenarios import check_scenario

        check_scenario(scenario)
        if scenario == "single-stream":
            batch = [1]  # MLPerf SingleStream: one sample per query
    if not isinstance(budget_s, (int, float)) or budget_s < 0:
        raise OptionError(f"budget_s must be a number of seconds >= 0, got {budget_s!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise OptionError(f"rounds must be a whole number >= 1, got {rounds!r}")
    if cluster is not None:
        if train:
            raise OptionError("--cluster measures inference; run --train without --cluster")
        return _compare_on_cluster(cluster, models, devices, batch, precision, budget_s,
                                   isolate, progress, scenario, warmup, min_runs, max_runs,
                                   latency_bound_ms, rounds, calibration)
    if devices is None:
        devices, left_out = default_devices(registry.devices())
    elif train:
        devices, left_out = as_list(devices), {}
    else:
        devices, left_out = device_strings(devices), {}
    if train:
        devices, left_out = training_devices(devices, left_out)
    loaded = {name: to_model(name) for name in models}  # ModelError names the zoo on a typo

    total = len(models) * len(devices) * len(batch) * max(len(precision), 1)  # [] = one each
    tick = _Ticker(progress, total * rounds)
    started = time.time()
    worker_envs: dict[str, dict] = {}
    per_round: list[list[Row]] = []
    stopped = None
    try:
        refs = {} if train else {name: _references(loaded[name], name, batch, tick)
                                 for name in models}
        for r in range(rounds):
            per_round.append([])
            for dev in device_order(devices, r):
                job = Job(dev, models, batch, precision or [_default_precision(dev)], budget_s,
                          scenario, warmup, min_runs, max_runs, latency_bound_ms,
                          "training" if train else "inference", train_steps if train else 0,
                          calibration)
                if isolate:
                    from hal.comparison.isolate import run_isolated

                    it = run_isolated(job, refs, tick, worker_envs)
                else:
                    it = run_job(job, loaded, refs, tick, mem_scope="in-process")
                with closing(it):  # on Ctrl-C too: an isolated worker is stopped at once
                    for row in it:
                        per_round[-1].append(row)
    except KeyboardInterrupt:  # keep what was finished; the row being measured is dropped
        stopped = max(len(per_round), 1)
        if tick.last is not None and not any(r is tick.last for rows in per_round
                                             for r in rows):
            per_round[-1].append(tick.last)  # shown as done, stopped on its way here
    rows = merge(per_round) if rounds > 1 else (per_round or [[]])[0]
    rows.sort(key=lambda r: (models.index(r.model), batch.index(r.batch), devices.index(r.device)
                             if r.device in devices else len(devices),
                             CompileOptions.PRECISIONS.index(r.precision)))
    env = environment()
    env["run"] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                  "wall_s": round(time.time() - started, 2), "budget_s": budget_s,
                  "rounds": rounds,
                  "isolate": bool(isolate), "scenario": scenario, "reference": REFERENCE,
                  "calibration": calibration,
                  "memory": PeakMemory().method,
                  "left_out": left_out}
    if train:
        env["run"]["train"] = settings(train_steps)
    # probing every backend takes seconds: after Ctrl-C, the devices as their rows name them
    env["devices"] = _device_info(devices) if stopped is None else {
        r.device: {"name": r.device_name, "simulated": r.simulated, "backend": r.backend}
        for r in rows if r.backend}
    if isolate:
        env["workers"] = worker_envs
    if stopped is not None:
        env["run"]["interrupted"] = interrupt.note(sum(map(len, per_round)), total * rounds,
                                                   stopped, rounds)
        raise interrupt.CompareInterrupted(Results(rows, env))
    return Results(rows, env)


def _compare_on_cluster(cluster, models, devices, batch, precision, budget_s, isolate,
                        progress, scenario, warmup, min_runs, max_runs, latency_bound_ms,
                        rounds, calibration=None) -> Results:
    """``compare`` on the nodes of a Ray cluster (``hal.comparison.fleet``)."""
    from hal.comparison.environment import environment
    from hal.comparison.fleet import Fleet, RoundInterrupted

    loaded = {name: to_model(name) for name in models}  # ModelError names the zoo on a typo
    fleet = Fleet(cluster, isolate)  # checks the address and connects, or says how to start one
    try:
        fleet.plan(as_list(devices))
        total = sum(len(models) * len(batch) * max(len(precision), 1)
                    for entries in fleet.entries.values() for _ in entries)
        tick = _Ticker(progress, total * rounds)
        started = time.time()
        refs = {name: _references(loaded[name], name, batch, tick) for name in models}

        def job_for(device: str, default_precision: str) -> Job:
            return Job(device, models, batch, precision or [default_precision], budget_s,
                       scenario, warmup, min_runs, max_runs, latency_bound_ms,
                       calibration=calibration)

        per_round: list[list[Row]] = []
        stopped = None
        try:
            for r in range(rounds):
                per_round.append(fleet.run(job_for, loaded, refs, tick, r))
        except RoundInterrupted as stop:  # keep the rows the nodes had sent back
            per_round.append(stop.rows)
            stopped = len(per_round)
        except KeyboardInterrupt:
            stopped = max(len(per_round), 1)
    finally:
        fleet.close()
    rows = merge(per_round) if rounds > 1 else (per_round or [[]])[0]
    hosts, devs = fleet.host_order(), fleet.device_order()
    rows.sort(key=lambda r: (models.index(r.model), batch.index(r.batch),
                             hosts.index(r.host) if r.host in hosts else len(hosts),
                             devs.index(r.device) if r.device in devs else len(devs),
                             CompileOptions.PRECISIONS.index(r.precision)))
    env = environment()
    env["run"] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                  "wall_s": round(time.time() - started, 2), "budget_s": budget_s,
                  "rounds": rounds, "isolate": bool(isolate), "scenario": scenario,
                  "calibration": calibration, "reference": REFERENCE, "memory": PeakMemory().method,
                  "left_out": fleet.left_out}
    env["fleet"] = fleet.environment()
    if stopped is not None:
        env["run"]["interrupted"] = interrupt.note(sum(map(len, per_round)), total * rounds,
                                                   stopped, rounds)
        raise interrupt.CompareInterrupted(Results(rows, env))
    return Results(rows, env)


# -- the work of one device (in this process, or inside a worker) ------------------------------
def run_job(job: Job, models: dict[str, Model], refs: dict[str, dict[int, Reference]],
            tick: _Ticker | None = None, mem_scope: str = "in-process") -> Iterator[Row]:
    """Rows for one device: each model compiled once per precision, then run at every batch."""
    if job.task == "training":
        yield from run_training(job, models, tick, mem_scope)
        return
    for name in job.models:
        for prec in job.precision:
            calibration = job.calibration if prec == "int8" else None
            rows = [Row(model=name, device=job.device, batch=b, precision=prec,
                        calibration=calibration, scenario=_scenario_name(job.scenario),
                        mem_scope=mem_scope)
                    for b in job.batch]
            compiled, err, base_mb, compile_s = _compile(models[name], job.device, prec, rows,
                                                         calibration)
            for row in rows:
                if tick:
                    tick.start(row)
                ref = refs[name][row.batch]
                if err or ref.error:
                    row.error = err or ref.error
                else:
                    row.compile_s = compile_s
                    _measure_row(row, compiled, ref, job, base_mb)
                if tick:
                    tick.done(row)
                yield row
            del compiled
            gc.collect()


def _default_precision(device: str) -> str:
    try:
        return registry.device(device).backend.default_precision
    except Exception:  # noqa: BLE001 - an unusable device turns into error rows later
        return "fp32"


def _compile(model, device: str, prec: str, rows: list[Row], calibration: str | None = None):
    gc.collect()
    mem = PeakMemory()
    with mem:
        base = mem.start_mb
        t0 = time.perf_counter()
        try:
            more = {"calibration": calibration} if calibration else {}  # else the model's own
            compiled = compiler.compile(model, device, precision=prec, **more)
        except Exception as exc:  # a broken backend must not abort the comparison
            return None, failure(exc, f"compile on {device}"), base, None
        compile_s = time.perf_counter() - t0
    dev = compiled.device
    for row in rows:
        row.device, row.backend = dev.string, dev.backend.name
        row.simulated = any(d.simulated for d in compiled.devices)
        row.device_name = dev.info.name
        row.placement, row.segments = _placement(compiled)
    return compiled, None, base, compile_s


def _measure_row(row: Row, compiled, ref: Reference, job: Job, base_mb: float) -> None:
    mem = PeakMemory()
    try:
        with mem:
            start = mem.start_mb
            if job.scenario:
                from hal.comparison.scenarios import run_scenario

                outs = run_scenario(row, compiled, ref.inputs, job)
            else:
                timing, outs = measure(compiled, ref.inputs, job.budget_s, job.warmup,
                                       job.max_runs, job.min_runs)
                row.first_call_ms = timing.first_call_ms
                for k, v in timing.stats().items():
                    setattr(row, k, v)
                row.throughput_per_s = row.batch / (row.mean_ms / 1e3) if row.mean_ms else None
        # memory above what the process held before this model was compiled
        row.peak_mem_mb = round(max(0.0, mem.peak_mb + start - base_mb), 2)
        row.transfers = compiled.last_transfers.to_dict()
        row.accelerator = _accelerator_figures(compiled)
        record_accuracy(row, outs, ref.outputs)
    except Exception as exc:
        row.error = failure(exc, f"run on {row.device}")


def _accelerator_figures(compiled) -> dict:
    """Segment index -> the accelerator's own figures for the last call (``stats``: cycles,
    estimates), for the segments that report them (FPGA devices)."""
    return {str(i): exe.stats.to_dict() for i, exe in enumerate(compiled.executables)
            if getattr(exe, "stats", None) is not None}


def record_accuracy(row: Row, outs: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> None:
    """Set ``row.max_abs_err`` (NaN if any output is NaN) and ``row.top1_agreement`` of
    ``outs`` against the reference outputs ``ref``; HalError when their count or shapes
    differ."""
    if len(outs) != len(ref):
        raise HalError(f"{len(outs)} outputs, the reference has {len(ref)}")
    err = 0.0
    for i, (y, r) in enumerate(zip(outs, ref)):
        y = np.asarray(y)
        if y.shape != r.shape:
            raise HalError(f"output {i} has shape {list(y.shape)}, the reference "
                           f"{list(r.shape)}")
        if y.size:
            diff = np.abs(y.astype(np.float64) - r.astype(np.float64))
            err = max(err, float(np.nanmax(diff)) if not np.isnan(diff).all() else float("nan"))
            if np.isnan(diff).any():
                err = float("nan")
    row.max_abs_err = err
    row.top1_agreement = _top1(np.asarray(outs[0]), ref[0])


def _top1(y: np.ndarray, ref: np.ndarray) -> float | None:
    if y.ndim < 2 or y.shape != ref.shape or y.shape[-1] < 2:
        return None
    return float(np.mean(y.reshape(-1, y.shape[-1]).argmax(-1) ==
                         ref.reshape(-1, ref.shape[-1]).argmax(-1)))


def _placement(compiled) -> tuple[dict, list]:
    placement: dict[str, dict] = {}
    segs = []
    for s in compiled.segments:
        d = s.device.string
        p = placement.setdefault(d, {"segments": 0, "nodes": 0})
        p["segments"] += 1
        p["nodes"] += len(s.node_indices)
        segs.append([d, len(s.node_indices)])
    return placement, segs


# -- references -----------------------------------------------------------------------------
def _references(model, name: str, batch: list[int], tick: _Ticker) -> dict[int, Reference]:
    """cpu@reference at fp32 for every batch; a failure makes error rows for that model."""
    from hal.inputs import example_inputs

    tick.note(f"{name}: reference outputs")
    refs: dict[int, Reference] = {}
    try:
        ref = compiler.compile(model, REFERENCE)
    except Exception as exc:
        why = f"no reference for {name!r}: {failure(exc, 'compile on ' + REFERENCE)}"
        return {b: Reference(example_inputs(model, b), error=why) for b in batch}
    for b in batch:
        x = example_inputs(model, b)
        try:
            refs[b] = Reference(x, [np.asarray(y) for y in ref(*x)])
        except Exception as exc:
            refs[b] = Reference(x, error=f"no reference for {name!r} at batch {b}: "
                                         f"{failure(exc, 'run on ' + REFERENCE)}")
    return refs


def _device_info(devices: Iterable[str]) -> dict:
    out = {}
    infos = {d.string: d for d in registry.devices()}
    for s in devices:
        d = infos.get(s)
        if d is not None:
            out[s] = {"name": d.name, "simulated": d.simulated, "backend": d.backend}
    return out


def _scenario_name(s: str | None) -> str | None:
    from hal.comparison.scenarios import MLPERF_NAMES

    return MLPERF_NAMES[s] if s else None


class _Ticker:
    """Adapts the user's progress callback; silent when there is none."""

    def __init__(self, callback: Progress | None, total: int):
        self.callback = callback
        self.total = total
        self.finished = 0
        self.last: Row | None = None  # the row finished last

    def _call(self, current: str, row: Row | None) -> None:
        if self.callback is not None:
            self.callback(done=self.finished, total=self.total, current=current, row=row)

    def note(self, text: str) -> None:
        self._call(text, None)

    def start(self, row: Row) -> None:
        self._call(f"{row.model} b{row.batch} {row.precision} on {row.device}", None)

    def done(self, row: Row) -> None:
        self.finished += 1
        self.last = row
        self._call(f"{row.model} b{row.batch} {row.precision} on {row.device}", row)

