"""The torch trainer: HAL's training graph differentiated by autograd, updated by torch.optim.

Float parameters are fp32 ``nn.Parameter``s (the master weights also under bf16/fp16
autocast); running statistics are buffers that take the graph's ``updates`` outputs after each
micro-batch; the evaluation graph runs on the same tensors. Dropout masks come from a
generator reseeded from ``TrainSpec.seed`` and the update number at each update, so a resumed
run draws the masks the uninterrupted one would have without any generator state to save.

Data-parallel (``spec.parallel``: strategy "data", world > 1): this process is one rank of a
torch process group (gloo on CPU, nccl on CUDA, where each rank uses ``cuda:LOCAL_RANK``), and
the training module runs through ``DistributedDataParallel`` (``parallel.py``): the backward of
a step's last micro-batch averages the gradients over the ranks (the others accumulate under
``no_sync``), so with HAL's weights (``n_local * world / N_global``) every rank makes the
update of the global batch. ``step`` returns each micro-batch's global loss (the same on every
rank). Each rank draws its own dropout masks (the rank folded into the seed; rank 0 draws what a
single process would). BatchNorm running statistics: each rank updates them from its shard and
then takes rank 0's, so every rank holds rank 0's. ``close()`` leaves the process group (also
done at exit).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
import torch

from hal.backend import Device
from hal.backends.torch_backend import parallel as dp
from hal.backends.torch_backend import torch_device
from hal.backends.torch_backend.optimizers import (array_entry, build_optimizer, build_schedule,
                                                   check_state, flatten, load_optimizer_state,
                                                   optimizer_state, state_keys, unflatten)
from hal.backends.torch_backend.train_lowering import SharedLowering
from hal.errors import BackendError, InputError, ModelError, OptionError
from hal.trainer import Trainer, TrainGraph, TrainSpec

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def trainable_precisions(device_type: str) -> list[str]:
    """The precisions torch trains in on this kind of device: bf16 and fp16 need its autocast,
    fp16 also its GradScaler (dynamic loss scaling)."""
    out = ["fp32"]
    if not torch.amp.is_autocast_available(device_type):
        return out
    if device_type != "cuda" or torch.cuda.is_bf16_supported():
        out.append("bf16")
    with warnings.catch_warnings():  # an unsupported device warns and disables the scaler
        warnings.simplefilter("ignore")
        if torch.amp.GradScaler(device_type).is_enabled():
            out.append("fp16")
    return out


def draw_seed(seed: int, step: int) -> int:
    """The dropout generator's seed for update ``step``: a well-mixed function of both
    (splitmix64's finalizer over the pair; a few integer operations, since it runs every
    step)."""
    mask = 2 ** 64 - 1
    z = (seed * 0x9E3779B97F4A7C15 + step + 1) & mask
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = ((z ^ (z >> shift)) * mult) & mask
    return (z ^ (z >> 31)) >> 1


class TorchTrainer(Trainer):
    def __init__(self, graph: TrainGraph, device: Device, spec: TrainSpec):
        if spec.extra:
            raise OptionError(f"the torch trainer takes no backend options; got "
                              f"{sorted(spec.extra)}")
        self.device, self.spec = device, spec
        self.tdev = torch_device(device)
        par = spec.parallel
        self.distributed = par.strategy == "data" and par.world > 1
        if par.active and not self.distributed:
            dp.launch(self.tdev.type, par)  # the refusal of a strategy torch does not run
            raise OptionError(f"workers={par.workers} (strategy {par.strategy!r}) runs one "
                              f"process per worker on torch, but this trainer was given rank "
                              f"{par.rank} of world={par.world}; train through hal.train(..., "
                              f"workers={par.workers}) or torchrun, which start the processes")
        if self.distributed:
            self.tdev = dp.rank_device(self.tdev, par)
            dp.join(par, self.tdev)
        self.autocast = _autocast_dtype(spec.precision, self.tdev, device.string)
        if self.tdev.type == "cuda" and self.autocast is None:
            # true fp32, as in inference: TF32 would not agree with the other backends
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        inits = graph.model.graph.initializers
        _check_graph(graph)
        self.params = {n: torch.nn.Parameter(_fp32(inits[n], self.tdev)) for n in graph.params}
        self.stats = {n: _fp32(inits[n], self.tdev) for n in dict.fromkeys(graph.updates.values())}
        frozen = {n: torch.from_numpy(np.array(inits[n].const_value.numpy())).to(self.tdev)
                  for n in graph.frozen}
        tensors = {**frozen, **self.stats, **self.params}
        cast = self.autocast is not None
        low = SharedLowering(graph.model, self.tdev, tensors, draws=True, cast_outputs=cast)
        self.train_module = low.lower()
        self.train_inputs = _declared(graph.model, low.input_names)
        self.target_index = low.input_names.index(graph.target)
        outs = [v.name for v in graph.model.graph.outputs]
        self.loss_index = outs.index(graph.loss)
        self.update_slots = [(outs.index(out), self.stats[init])
                             for out, init in graph.updates.items()]
        shared = {n: t for n, t in tensors.items() if n in graph.eval_model.graph.initializers}
        ev = SharedLowering(graph.eval_model, self.tdev, shared, draws=False, cast_outputs=cast)
        self.eval_module = ev.lower()
        self.eval_inputs = _declared(graph.eval_model, ev.input_names)
        self.optimizer = build_optimizer(spec.optimizer, list(self.params.values()))
        self.schedule = build_schedule(spec.optimizer, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.tdev.type) if spec.precision == "fp16" else None
        self.rng = torch.Generator(device=self.tdev)
        self.steps = 0
        self.closed = False
        self.run = (dp.DataParallelRun(self.train_module, list(self.stats.values()), par,
                                       self.tdev, self.loss_index)
                    if self.distributed else None)

    # -- training ---------------------------------------------------------------------------
    def step(self, batches: Sequence[dict[str, np.ndarray]],
             weights: Sequence[float]) -> list[float]:
        if len(batches) == 0 or len(batches) != len(weights):
            raise InputError(f"step() takes one or more micro-batches and one weight each; got "
                             f"{len(batches)} batches and {len(weights)} weights")
        if self.closed or (self.run is not None and self.run.ddp is None):
            raise BackendError("this data-parallel trainer was closed (it left its process "
                               "group, or another trainer of this process closed it); "
                               "compile a new one to train again")
        seed = draw_seed(self.spec.seed, self.steps)
        if self.run is not None:
            self.run.check_micro_batches(len(batches))
            if self.run.rank:
                seed = draw_seed(seed, self.run.rank)  # each rank its own dropout masks
        self.rng.manual_seed(seed)
        self.optimizer.zero_grad(set_to_none=True)
        losses, counts = [], []
        module = self.train_module if self.run is None else self.run.ddp
        with torch.enable_grad():
            for i, (batch, weight) in enumerate(zip(batches, weights)):
                xs = self._tensors(batch, self.train_inputs)
                with self._sync(i == len(batches) - 1):
                    with self._precision():
                        outs = self._run(module, *xs, self.rng)
                    loss = outs[self.loss_index]
                    scaled = loss * float(weight)
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                with torch.no_grad():
                    for index, stat in self.update_slots:
                        stat.copy_(outs[index])
                losses.append(loss.detach())
                counts.append(int(xs[self.target_index].shape[0]))
        self._update()
        self.steps += 1
        if self.run is None:
            host = torch.stack(losses).float().cpu().numpy()
        else:
            self.run.share_stats()
            host = self.run.global_losses(losses, counts).float().cpu().numpy()
        self._count_d2h([host])
        return [float(v) for v in host]

    def _update(self) -> None:
        clip = self.spec.optimizer.clip_norm
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        with warnings.catch_warnings():  # a skipped fp16 step is expected, not a misuse
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.schedule.step()

    def _sync(self, last: bool):
        return contextlib.nullcontext() if self.run is None else self.run.sync(last)

    def close(self) -> None:
        """Leave the process group of a data-parallel run (nothing for a single process);
        the trainer steps no more after it."""
        if self.run is not None:
            self.run, self.closed = None, True
            dp.close()

    def evaluate(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        xs = self._tensors(inputs, self.eval_inputs)
        with torch.no_grad(), self._precision():
            outs = self._run(self.eval_module, *xs)
        # 16-bit results (autocast's, where the graph declares no output dtype) come back as
        # float32: numpy has no bfloat16
        host = [_host(t) if t.dtype in _AUTOCAST.values() else t.detach().cpu().numpy().copy()
                for t in outs]
        self._count_d2h(host)
        return host

    def _precision(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.tdev.type, dtype=self.autocast)

    def _run(self, module, *args):
        try:
            return module.forward(*args)
        except RuntimeError as exc:
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            raise BackendError(f"torch training graph failed on {self.device.string} with "
                               f"inputs of shapes {shapes}: {exc}") from exc

    def _tensors(self, batch: Mapping[str, np.ndarray], declared) -> list[torch.Tensor]:
        missing = [name for name, _, _ in declared if name not in batch]
        if missing:
            raise InputError(f"the batch lacks {missing}; it must hold "
                             f"{[name for name, _, _ in declared]} (by input name)")
        xs = [_tensor(batch[name], name, dtype, shape, self.tdev)
              for name, dtype, shape in declared]
        if not self.device.info.host_memory:  # counted as every device copy in HAL is
            self.device.transfers.h2d_count += len(xs)
            self.device.transfers.h2d_bytes += sum(x.numel() * x.element_size() for x in xs)
        return xs

    def _count_d2h(self, arrays: list[np.ndarray]) -> None:
        if not self.device.info.host_memory:
            self.device.transfers.d2h_count += len(arrays)
            self.device.transfers.d2h_bytes += sum(a.nbytes for a in arrays)

    # -- state --------------------------------------------------------------------------------
    @property
    def description(self) -> dict:
        out = {"device": str(self.tdev), "precision": self.spec.precision}
        if self.run is not None:
            out["parallel"] = {"engine": "DistributedDataParallel",
                               "backend": "nccl" if self.tdev.type == "cuda" else "gloo",
                               "rank": self.run.rank, "world": self.run.world}
        return out

    def weights(self) -> dict[str, np.ndarray]:
        return {name: _host(t) for name, t in {**self.params, **self.stats}.items()}

    def set_params(self, arrays: dict[str, np.ndarray]) -> None:
        unknown = [n for n in arrays if n not in self.params]
        if unknown:
            raise InputError(f"no trainable parameter(s) {unknown} in this model")
        with torch.no_grad():
            for name, a in arrays.items():
                p = self.params[name]
                p.copy_(torch.from_numpy(np.ascontiguousarray(a)).to(p.device, p.dtype))

    def state(self) -> dict[str, np.ndarray]:
        out = {f"param/{n}": _host(p) for n, p in self.params.items()}
        out.update((f"update/{n}", _host(t)) for n, t in self.stats.items())
        out.update(optimizer_state(self.optimizer, list(self.params)))
        flatten("sched", self.schedule.state_dict(), out)
        if self.scaler is not None:
            flatten("scaler", self.scaler.state_dict(), out)
        out["step"] = np.asarray(self.steps, np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if not isinstance(state, Mapping):
            raise ModelError(f"a training state is a dict of named arrays, got "
                             f"{type(state).__name__}")
        problems: list[str] = []
        step = array_entry(state, "step", (), problems)
        tensors = {f"param/{n}": p for n, p in self.params.items()}
        tensors.update((f"update/{n}", t) for n, t in self.stats.items())
        values = {key: array_entry(state, key, tuple(t.shape), problems)
                  for key, t in tensors.items()}
        problems += [f"{k!r} is {v.dtype}, not a float array" for k, v in values.items()
                     if v is not None and v.dtype.kind != "f"]
        problems += [f"{k!r} names no trainable parameter or running statistic of this model"
                     for k in state if k.startswith(("param/", "update/")) and k not in tensors]
        opt = load_optimizer_state(self.optimizer, list(self.params),
                                   [tuple(p.shape) for p in self.params.values()],
                                   state_keys(self.spec.optimizer), state,
                                   bool(step is not None and int(step) > 0), problems)
        sched = unflatten("sched", self.schedule.state_dict(), state, problems)
        scaler = (unflatten("scaler", self.scaler.state_dict(), state, problems)
                  if self.scaler is not None else None)
        check_state(problems, f"the torch trainer on {self.device.string}")
        with torch.no_grad():
            for key, t in tensors.items():
                t.copy_(torch.from_numpy(np.asarray(values[key], np.float32)))
        self.optimizer.load_state_dict(opt)
        self.schedule.load_state_dict(sched)
        if scaler is not None:
            self.scaler.load_state_dict(scaler)
        self.steps = int(step)


def _autocast_dtype(precision: str, tdev: torch.device, where: str) -> torch.dtype | None:
    if precision not in TrainSpec.PRECISIONS:
        raise OptionError(f"precision {precision!r} is not one of {list(TrainSpec.PRECISIONS)}")
    usable = trainable_precisions(tdev.type)
    if precision not in usable:
        raise OptionError(f"{where} cannot train in {precision}; it trains in {usable}")
    return _AUTOCAST.get(precision)


def _check_graph(graph: TrainGraph) -> None:
    g = graph.model.graph
    outs, ins = [v.name for v in g.outputs], [v.name for v in g.inputs]
    problems = [f"the loss output {graph.loss!r} is not an output"] if graph.loss not in outs else []
    problems += [f"the target {graph.target!r} is not an input"] if graph.target not in ins else []
    problems += [f"update output {o!r} is not an output" for o in graph.updates if o not in outs]
    stats = set(graph.updates.values())
    for name in [*graph.params, *graph.frozen, *stats]:
        v = g.initializers.get(name)
        if v is None or v.const_value is None:
            problems.append(f"{name!r} is not an initializer with a value")
        elif not v.dtype.is_floating_point():
            problems.append(f"{name!r} is {v.dtype.name}; only float initializers train")
    problems += [f"{n!r} is both trained and frozen or updated" for n in graph.params
                 if n in stats or n in graph.frozen]
    if problems:
        raise ModelError(f"not a valid training graph: {'; '.join(problems)}")


def _fp32(value: ir.Value, tdev: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(value.const_value.numpy(), np.float32)).to(tdev)


def _host(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().copy()


def _declared(model: ir.Model, names: list[str]) -> list[tuple[str, np.dtype, tuple]]:
    """(name, numpy dtype, shape with None for a dynamic dim) of each graph input."""
    by_name = {v.name: v for v in model.graph.inputs}
    out = []
    for name in names:
        v = by_name[name]
        dtype = np.dtype(v.dtype.numpy()) if v.dtype is not None else None
        shape = None if v.shape is None else tuple(d if isinstance(d, int) else None
                                                   for d in v.shape)
        out.append((name, dtype, shape))
    return out


def _tensor(array, name: str, dtype: np.dtype | None, shape, tdev: torch.device) -> torch.Tensor:
    a = np.asarray(array)
    if dtype is not None and a.dtype != dtype:
        if not np.can_cast(a.dtype, dtype, "same_kind"):
            raise InputError(f"input {name!r} is {a.dtype}; the graph takes {dtype}")
        a = a.astype(dtype)
    if shape is not None and (a.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(a.shape, shape))):
        raise InputError(f"input {name!r} has shape {a.shape}; the graph takes "
                         f"{tuple('N' if d is None else d for d in shape)}")
    if not a.flags.writeable or not a.flags.c_contiguous:  # torch shares writable memory only
        a = np.array(a, order="C")
    return torch.from_numpy(a).to(tdev)
