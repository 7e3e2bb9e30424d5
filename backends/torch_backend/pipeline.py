"""Pipeline-parallel training on torch: the training graph cut into stages, one per process,
run by ``torch.distributed.pipelining`` (a GPipe schedule over micro-batches).

The model's nodes (the training graph without its loss) are cut in graph order into
``stages`` pieces of about equal cost (weight elements times output positions, a
multiply-accumulate count per sample). Every value produced before a cut and read after it
crosses the cut, so a stage hands its successor all it needs. Each process lowers its own
stage over its own parameters; the last one also lowers the loss, which the schedule calls
as its ``loss_fn`` on each micro-batch. Micro-batch ``m`` of ``n_m`` samples scales its loss by
``n_m * M / N`` (the schedule divides the gradients by ``M``), so a step is the step of the
whole batch even when the chunks are uneven.

Each rank holds only its stage's weights and optimizer state; ``weights``, ``state`` and
``evaluate`` gather them (every rank evaluates the whole model on the gathered weights).
Models with BatchNorm running statistics or Dropout, and 16-bit precisions, are refused.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
import onnx_ir as ir
import torch
import torch.distributed as dist

from hal.backend import Device
from hal.backends.torch_backend import parallel as dp
from hal.backends.torch_backend.optimizers import build_optimizer, build_schedule
from hal.backends.torch_backend.train_lowering import SharedLowering
from hal.errors import InputError, ModelError, OptionError
from hal.ir import shapes as S
from hal.trainer import Trainer, TrainGraph, TrainSpec

#: micro-batches per step, at most (fewer when the batch is smaller)
MICRO_BATCHES = 4


def cut(graph: TrainGraph, stages: int) -> tuple[list[list[str]], str]:
    """The names crossing into each stage after the first (``stages - 1`` lists, in producer
    order) and the model output the loss reads."""
    g = graph.model.graph
    if len(graph.outputs) != 1:
        raise ModelError(f"strategy='pipeline' trains a model with one output; this one has "
                         f"{graph.outputs}")
    read = graph.outputs[0]
    nodes = _ancestors(g, read)
    if len(nodes) < stages:
        raise ModelError(f"strategy='pipeline' with stages={stages} needs at least {stages} "
                         f"nodes; the model has {len(nodes)}")
    info = S.infer(ir.to_proto(graph.model))
    costs = [_cost(n, info, g.initializers) for n in nodes]
    total, run, cuts = sum(costs), 0.0, []
    for i, c in enumerate(costs[:-1]):
        run += c
        if len(cuts) < stages - 1 and run >= total * (len(cuts) + 1) / stages:
            cuts.append(i + 1)
    while len(cuts) < stages - 1:  # cheap tails: one node per remaining stage
        cuts.append(min(len(nodes) - (stages - 1 - len(cuts)), (cuts[-1] if cuts else 0) + 1))
    order = {id(n): i for i, n in enumerate(nodes)}
    inputs = [v.name for v in g.inputs if v.name != graph.target]
    crossing = []
    for c in cuts:
        names = [v for v in inputs if _read_after(g, v, c, order)]
        for n in nodes[:c]:
            names += [o.name for o in n.outputs if o.name and (o.name == read or
                                                               _read_after(g, o.name, c, order))]
        crossing.append(list(dict.fromkeys(names)))
    return crossing, read


def _ancestors(g: ir.Graph, name: str) -> list[ir.Node]:
    """The nodes ``name`` depends on, in graph order."""
    by_output = {o.name: n for n in g for o in n.outputs if o.name}
    seen: set[int] = set()
    todo = [by_output[name]] if name in by_output else []
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        todo += [by_output[v.name] for v in n.inputs if v is not None and v.name in by_output]
    return [n for n in g if id(n) in seen]


def _read_after(g: ir.Graph, name: str, c: int, order: dict) -> bool:
    return any(id(n) in order and order[id(n)] >= c and
               any(v is not None and v.name == name for v in n.inputs) for n in g)


def _cost(node: ir.Node, info: dict, inits) -> float:
    weights = sum(int(np.prod(inits[v.name].shape)) for v in node.inputs
                  if v is not None and v.name in inits)
    shape = info.get(node.outputs[0].name, (None, None))[0] if node.outputs else None
    positions = int(np.prod([d for d in shape[2:] if isinstance(d, int)])) \
        if shape and len(shape) > 2 else 1
    return float(max(1, weights) * positions)


def _extract(model: ir.Model, inputs: list[str], outputs: list[str]) -> ir.Model:
    proto = onnx.shape_inference.infer_shapes(ir.to_proto(model))  # types of the cut values
    sub = onnx.utils.Extractor(proto).extract_model(inputs, outputs)
    return ir.from_proto(sub)


class _Stage(torch.nn.Module):
    """One stage's lowered module, returning a lone tensor as itself (what the schedule
    hands to the loss or to the next stage)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *xs):
        outs = self.module(*xs)
        return outs[0] if len(outs) == 1 else tuple(outs)


class PipelineTrainer(Trainer):
    def __init__(self, graph: TrainGraph, device: Device, spec: TrainSpec,
                 tdev: torch.device):
        from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

        par = spec.parallel
        if par.world != par.stages or par.world < 2:
            raise OptionError(f"strategy='pipeline' runs one process per stage: stages="
                              f"{par.stages} needs {par.stages} processes, this one is rank "
                              f"{par.rank} of {par.world}")
        if graph.updates or any(n.op_type == "Dropout" for n in graph.model.graph):
            raise ModelError("strategy='pipeline' trains models without BatchNorm running "
                             "statistics or Dropout for now; use strategy='data'")
        if spec.precision != "fp32":
            raise OptionError("strategy='pipeline' trains in fp32 for now")
        self.spec, self.device, self.tdev = spec, device, tdev
        self.rank, self.stages = par.rank, par.stages
        dp.join(par, tdev)
        crossing, read = cut(graph, par.stages)
        feeds = [v.name for v in graph.model.graph.inputs if v.name != graph.target]
        bounds = [feeds, *crossing, [read]]
        models = [_extract(graph.model, bounds[k], bounds[k + 1]) for k in range(par.stages)]
        self.placement = {n: f"stage {k}" for k, m in enumerate(models)
                          for n in graph.params if n in m.graph.initializers}
        self.inputs, stage_model = bounds[self.rank], models[self.rank]
        inits = graph.model.graph.initializers
        mine = [n for n in graph.params if n in stage_model.graph.initializers]
        self.params = {n: torch.nn.Parameter(torch.from_numpy(
            np.array(inits[n].const_value.numpy(), np.float32)).to(tdev)) for n in mine}
        self.all_params = list(graph.params)
        module = SharedLowering(stage_model, tdev, dict(self.params), draws=False,
                                cast_outputs=False).lower()
        module.train()
        self.last = self.rank == self.stages - 1
        self.loss_module = None
        if self.last:
            loss_model = _extract(graph.model, [read, graph.target], [graph.loss])
            self.loss_module = SharedLowering(loss_model, tdev, {}, draws=False,
                                              cast_outputs=False).lower()
        self.graph, self.target = graph, graph.target
        self.module = _Stage(module)
        self.scale = 1.0
        # a stage fixes the shapes it passes at its first step: one stage and schedule per
        # (micro-batches, rows each), which every rank derives alike from the batch size
        self.schedule_of: dict[tuple[int, int], ScheduleGPipe] = {}
        self.make_schedule = lambda m: ScheduleGPipe(
            PipelineStage(self.module, self.rank, self.stages, tdev), m, loss_fn=self._loss)
        self.optimizer = build_optimizer(spec.optimizer, list(self.params.values()))
        self.lr = build_schedule(spec.optimizer, self.optimizer)
        self.eval_module = None
        self.steps = 0

    @property
    def description(self) -> dict:
        return {"device": str(self.tdev), "precision": "fp32",
                "parallel": {"engine": "torch.distributed.pipelining, ScheduleGPipe",
                             "stages": self.stages, "micro_batches": f"up to {MICRO_BATCHES}",
                             "placement": dict(self.placement)}}

    def _loss(self, output, target):
        loss = self.loss_module(output, target)[0]
        return loss * (len(target) * self.scale)

    def step(self, batches: Sequence[dict[str, np.ndarray]],
             weights: Sequence[float]) -> list[float]:
        if not batches or len(batches) != len(weights):
            raise InputError(f"step() takes one or more micro-batches and one weight each; got "
                             f"{len(batches)} batches and {len(weights)} weights")
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        for batch, weight in zip(batches, weights):
            n = len(batch[self.target])
            m = max(d for d in range(1, min(MICRO_BATCHES, n) + 1) if n % d == 0)
            if (m, n // m) not in self.schedule_of:
                self.schedule_of[m, n // m] = self.make_schedule(m)
            schedule = self.schedule_of[m, n // m]
            self.scale = float(weight) * m / n  # each chunk's mean times n_m * M / N
            args = [torch.from_numpy(np.ascontiguousarray(batch[k])).to(self.tdev)
                    for k in self.inputs] if self.rank == 0 else []
            parts: list = []
            if self.last:
                y = torch.from_numpy(np.asarray(batch[self.target], np.int64)).to(self.tdev)
                schedule.step(target=y, losses=parts)
            else:
                schedule.step(*args)
            total = torch.tensor([float(sum(p.detach() for p in parts)) / m / max(weight, 1e-30)
                                  if self.last else 0.0], dtype=torch.float64)
            dist.broadcast(total, self.stages - 1)
            losses.append(float(total[0]))
        self.optimizer.step()
        self.lr.step()
        self.steps += 1
        return losses

    # -- the whole model, gathered -------------------------------------------------------
    def _gather(self, local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts: list = [None] * self.stages
        dist.all_gather_object(parts, local)
        out: dict[str, np.ndarray] = {}
        for p in parts:
            out.update(p)
        return out

    def weights(self) -> dict[str, np.ndarray]:
        local = {n: p.detach().cpu().numpy().copy() for n, p in self.params.items()}
        return self._gather(local)

    def evaluate(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = {n: torch.from_numpy(a).to(self.tdev) for n, a in self.weights().items()}
        module = SharedLowering(self.graph.eval_model, self.tdev, tensors, draws=False,
                                cast_outputs=False).lower()
        names = [v.name for v in self.graph.eval_model.graph.inputs]
        with torch.no_grad():
            outs = module(*[torch.from_numpy(np.ascontiguousarray(inputs[k])).to(self.tdev)
                            for k in names])
        return [o.detach().cpu().numpy().copy() for o in outs]

    def state(self) -> dict[str, np.ndarray]:
        local = {f"param/{n}": p.detach().cpu().numpy().copy() for n, p in self.params.items()}
        index = {id(p): n for n, p in self.params.items()}
        for p, st in self.optimizer.state.items():
            for k, v in st.items():
                local[f"opt/{index[id(p)]}/{k}"] = np.asarray(
                    v.detach().cpu().numpy() if torch.is_tensor(v) else v)
        out = self._gather(local)
        out["step"] = np.asarray(self.steps, np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        missing = [f"param/{n}" for n in self.all_params if f"param/{n}" not in state]
        if missing or "step" not in state:
            raise InputError(f"the training state lacks {(missing + ['step'])[:5]}")
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(torch.from_numpy(np.asarray(state[f"param/{n}"])))
        for n, p in self.params.items():
            st = {k.split("/", 2)[2]: torch.from_numpy(np.array(v))
                  for k, v in state.items() if k.startswith(f"opt/{n}/")}
            if st:
                self.optimizer.state[p] = st
        self.steps = int(state["step"])
        for _ in range(self.steps):
            self.lr.step()
