"""A training graph (``hal.trainer.TrainGraph``) on the shared lowering: one pure function
that a backend differentiates with its own autodiff.

``lower_training(graph, table, backend)`` lowers the training graph once (``TrainingPlan``);
``training_function(tp, cx)`` is ``f(params, state, inputs, random) -> (loss, outputs,
new_state)``, traced by the framework like an inference segment:

- ``params``: every float weight the plan takes as an argument, by initializer name: the
  trainable ones (``tp.params``) and the fixed ones (``tp.fixed``: frozen, or computed from
  constants at lowering). Pass fp32 master weights: in bf16/fp16 they are cast to the
  compute type inside ``f``, so gradients reach them in fp32. Differentiate with respect to
  ``tp.params`` only (jax: ``value_and_grad`` of a closure over the fixed ones; tf: a
  ``GradientTape`` watching the trainable variables).
- ``state``: the running statistics by initializer name (``tp.state``); ``new_state`` holds
  their values after this micro-batch, under the same names: feed them to the next one.
  They are never differentiated and stay in their own dtype (fp32).
- ``inputs``: the graph's inputs by name (``target`` included) as framework arrays.
- ``random``: a ``RandomSource`` for this call (Dropout's masks) that the backend makes
  from its own seeded generator (jax: a key derived from the seed and the update step; tf:
  a stateless seed), so a resumed run draws what the uninterrupted one would have. None
  refuses training-mode Dropout.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hal.backend import Device
from hal.backends.common.context import Context, numpy_dtype
from hal.backends.common.lowering import FLOAT_TYPES, Plan, lower
from hal.backends.common.table import KernelTable
from hal.backends.common.trace import Trace
from hal.errors import ModelError, OptionError
from hal.trainer import TrainGraph, TrainSpec


class RandomSource:
    """Training-mode randomness for one call of the training function.

    A backend implements ``draw``; kernels call ``uniform``. Draws are made in the plan's
    order, so the n-th draw of a call is the same random stream in every trace of it.
    """

    def __init__(self) -> None:
        self.draws = 0

    def uniform(self, shape: list) -> Any:
        """float32 values uniform in [0, 1) of ``shape`` (framework scalars for dynamic dims),
        independent of every other draw of this call."""
        self.draws += 1
        return self.draw(self.draws - 1, shape)

    def draw(self, index: int, shape: list) -> Any:
        """The ``index``-th draw of this call (see ``uniform``)."""
        raise NotImplementedError


@dataclass
class TrainingPlan:
    plan: Plan
    params: list[str]  # trainable weights taken as arguments
    fixed: list[str]  # other float weights taken as arguments, never trained
    state: list[str]  # running statistics, replaced after each micro-batch
    updates: dict[str, str]  # training-graph output -> the state it replaces
    loss: str
    outputs: list[str]  # the model's own outputs
    inputs: list[str]  # the graph's inputs, target included
    initial: dict[str, np.ndarray]  # the initializers' values: params, fixed and state
    #: a value computed while tracing needs 64-bit types (integer inputs excepted: class
    #: indices fit 32 bits, so a backend may feed them narrower)
    wide_types: bool = False


def lower_training(graph: TrainGraph, table: KernelTable, backend: str) -> TrainingPlan:
    """The plan of ``graph``'s training model, checked against the training-graph contract."""
    _check_contract(graph)
    variables = set(graph.params) | set(graph.updates.values())
    plan = lower(graph.model, table, backend, params=True, variables=variables)
    if plan.static_inputs:
        names = [plan.input_names[i] for i in plan.static_inputs]
        raise ModelError(f"training graph inputs {names} fix shapes inside the graph (a "
                         f"Reshape's shape, say); {backend} trains graphs whose inputs are data: "
                         f"make those values constants of the model")
    taken = set(plan.param_names)
    state = [n for n in graph.updates.values()]
    lost = [n for n in state if n not in taken]
    if lost:
        raise ModelError(f"running statistics {lost} fix shapes in the training graph; they "
                         f"must be data")
    params = [n for n in graph.params if n in taken]  # a float fixing a shape is a constant
    fixed = [n for n in plan.param_names if n not in variables]
    initial = dict(zip(plan.param_names, plan.param_values))
    return TrainingPlan(plan, params, fixed, state, dict(graph.updates), graph.loss,
                        list(graph.outputs), list(plan.input_names), initial,
                        _wide(plan))


def training_function(tp: TrainingPlan, cx: Context, trace: type[Trace] = Trace) -> Callable:
    """``f(params, state, inputs, random) -> (loss, outputs, new_state)`` (module docstring)."""
    plan = tp.plan
    weights = tp.params + tp.fixed

    def f(params: dict, state: dict, inputs: dict, random: RandomSource | None):
        plan.traces += 1  # once per trace
        run = copy.copy(cx)  # this call's random source, on its own copy of the context
        run.random = random
        values: dict[str, Any] = dict(plan.consts)
        for name in weights:
            p, dtype = params[name], tp.initial[name].dtype
            values[name] = run.enter(p if numpy_dtype(p) == dtype else run.cast(p, dtype))
        values.update((name, state[name]) for name in tp.state)
        values.update((name, run.enter(inputs[name])) for name in tp.inputs)
        out = dict(zip(plan.output_names, trace(plan, run, values).run()))
        return (out[tp.loss], tuple(out[n] for n in tp.outputs),
                {init: out[name] for name, init in tp.updates.items()})

    return f


def check_precision(spec: TrainSpec, device: Device) -> None:
    """The tracing backends train in fp32 and bf16 on every kind, in fp16 on GPUs only: XLA on
    CPU widens fp16 to fp32 (no faster, no closer to a GPU's fp16), TensorFlow's CPU kernels
    ran it 100x slower than fp32, and TPUs compute in bf16."""
    if spec.precision not in TrainSpec.PRECISIONS:
        raise OptionError(f"precision {spec.precision!r} is not one of "
                          f"{list(TrainSpec.PRECISIONS)} for training")
    if spec.precision == "fp16" and device.info.kind != "gpu":
        raise OptionError(f"precision 'fp16' trains on gpu@{device.backend.name}; on "
                          f"{device.string} use precision='bf16' (fp32 master weights, bf16 "
                          f"compute)")


def _check_contract(graph: TrainGraph) -> None:
    g = graph.model.graph
    outputs = {v.name for v in g.outputs}
    inits = g.initializers
    problems = []
    if graph.loss not in outputs:
        problems.append(f"the loss {graph.loss!r} is not a graph output")
    if graph.target not in {v.name for v in g.inputs}:
        problems.append(f"the target {graph.target!r} is not a graph input")
    problems += [f"model output {n!r} is not a graph output" for n in graph.outputs
                 if n not in outputs]
    problems += [f"update {out!r} -> {init!r} names no graph output" for out, init in
                 graph.updates.items() if out not in outputs]
    for name in list(graph.params) + list(graph.updates.values()):
        v = inits.get(name)
        if v is None or v.const_value is None:
            problems.append(f"{name!r} is not an initializer with a value")
        elif v.const_value.numpy().dtype.type not in FLOAT_TYPES:
            problems.append(f"{name!r} is not a float initializer")
    if problems:
        raise ModelError("not a training graph (see hal.trainer.TrainGraph): "
                         + "; ".join(problems))


def _wide(plan: Plan) -> bool:
    """Whether a value computed while tracing is 64-bit (integer graph inputs excepted)."""
    traced = [n for s in plan.steps if not s.static for n in s.outputs if n]
    traced += [n for n in plan.param_names]
    traced += [plan.input_names[i] for i in plan.dynamic_inputs
               if np.dtype(plan.input_specs[i][1]).kind not in "iu"]
    for name in traced:
        dt = plan.dtypes.get(name)
        if dt is not None and np.dtype(dt).itemsize == 8 and np.dtype(dt).kind in "iuf":
            return True
    return False
