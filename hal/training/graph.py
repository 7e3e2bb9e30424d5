"""The training graph: a model's graph in training mode plus its loss as ONNX operators.

``build(model, loss, freeze)`` returns the ``hal.trainer.TrainGraph`` every training backend
compiles (the contract is in ``hal.trainer``'s docstring). The user's model is copied, never
modified.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

import numpy as np
import onnx_ir as ir

from hal.errors import ModelError, OptionError
from hal.ir import shapes as S
from hal.ir.attributes import attribute
from hal.ir.graph import add_initializer, set_input
from hal.ir.model import Model
from hal.ir.validate import validate
from hal.trainer import TrainGraph

#: loss name -> what it expects of the model's output
LOSSES = {
    "cross_entropy": "class scores (logits), probabilities (Softmax) or log-probabilities "
                     "(LogSoftmax) on axis 1, with int64 class indices as target",
    "nll": "log-probabilities on axis 1, with int64 class indices as target",
    "mse": "any float output, with a float target of the same shape",
    "distill": "class scores as for cross_entropy, with int64 class indices as target and the "
               "teacher's logits (float, the output's shape) as input 'teacher_logits'; "
               "loss_options temperature (> 0) and alpha (in [0, 1]) (hal.distill)",
}
#: the training graph's input that carries the teacher's logits (loss "distill")
TEACHER_LOGITS = "teacher_logits"
#: inputs that are settings, not weights: a float initializer read only here never trains
SETTING_INPUTS = {
    "BatchNormalization": {3, 4},  # running statistics: updated by the step, not the optimizer
    "Clip": {1, 2}, "Dropout": {1, 2}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Upsample": {1},
    "QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "Shape": {0}, "Size": {0},
    "FakeQuantize": {1},  # quantization-aware training's activation scale (hal.training.qat)
}
FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}


def build(model: Model, loss: str = "cross_entropy", freeze: Iterable[str] = (),
          output: str | None = None, loss_options: dict | None = None) -> TrainGraph:
    """``model`` prepared for training with ``loss`` (a name in ``LOSSES``) on its output
    ``output`` (needed when the model has several); ``freeze``: fnmatch patterns of
    initializer names kept fixed; ``loss_options``: the settings of a loss that has some
    ("distill": temperature, alpha)."""
    if not isinstance(model, Model):
        raise ModelError(f"the training graph is built from a hal.Model, got "
                         f"{type(model).__name__}; load it first with hal.load(...)")
    if loss not in LOSSES:
        known = "; ".join(f"{k!r}: {v}" for k, v in LOSSES.items())
        raise ModelError(f"unknown loss {loss!r}; the known losses are {known}")
    freeze = [freeze] if isinstance(freeze, str) else list(freeze)
    eval_model = model.copy()
    for node in eval_model.graph:
        if node.op_type == "BatchNormalization" and attribute(node, "training_mode", 0):
            node.attributes["training_mode"] = ir.AttrInt64("training_mode", 0)
    work = model.copy()
    g = work.graph
    info = S.infer(work.to_proto())
    read = _read_output(work, output)
    own_outputs = [v.name for v in g.outputs]
    updates = _batchnorm_training(g)
    _dropout_training(g)
    loss_value, target_value = _append_loss(g, loss, read, info)
    if loss == "distill":
        loss_value = _append_distillation(g, read, info, loss_value, loss_options or {})
    elif loss_options:
        raise ModelError(f"loss {loss!r} takes no loss_options, got {sorted(loss_options)}")
    g.outputs.clear()
    g.outputs.extend([loss_value, *(_value(g, n) for n in own_outputs)])
    g.outputs.extend(_value(g, n) for n in updates)
    params, frozen = _trainable(g, freeze, set(updates.values()))
    try:
        validate(work)
    except ModelError as exc:
        raise ModelError(f"the training graph of {model.name!r} (loss {loss!r}) is invalid: "
                         f"{exc}") from None
    return TrainGraph(model=work.ir, eval_model=eval_model.ir, params=params, frozen=frozen,
                      updates=updates, loss=loss_value.name, target=target_value.name,
                      outputs=own_outputs)


def _value(g: ir.Graph, name: str) -> ir.Value:
    for v in g.outputs:
        if v.name == name:
            return v
    for node in g:
        for v in node.outputs:
            if v.name == name:
                return v
    raise ModelError(f"no value named {name!r} in the graph")


def _read_output(model: Model, output: str | None) -> ir.Value:
    outs = list(model.graph.outputs)
    names = [v.name for v in outs]
    if output is None:
        if len(outs) != 1:
            raise ModelError(f"{model.name!r} has {len(outs)} outputs {names}: pass output=NAME "
                             f"naming the one the loss reads")
        return outs[0]
    if output not in names:
        raise ModelError(f"output={output!r} is not an output of {model.name!r}; its outputs "
                         f"are {names}")
    return outs[names.index(output)]


def _used_names(g: ir.Graph) -> set[str]:
    names = {v.name for v in g.inputs} | set(g.initializers)
    for node in g:
        names.update(v.name for v in node.outputs if v.name)
    return names


def _fresh(g: ir.Graph, base: str) -> str:
    used, name, n = _used_names(g), base, 0
    while name in used:
        n += 1
        name = f"{base}_{n}"
    return name


def _batchnorm_training(g: ir.Graph) -> dict[str, str]:
    """Every BatchNormalization in training mode, its new running mean and variance wired to
    graph outputs; returns output name -> the initializer it replaces."""
    updates: dict[str, str] = {}
    for node in list(g):
        if node.op_type != "BatchNormalization":
            continue
        stats = node.inputs[3:5]
        for v in stats:
            if v is None or v.name not in g.initializers:
                raise ModelError(f"node {node.name!r} (BatchNormalization): running statistic "
                                 f"{getattr(v, 'name', None)!r} is not an initializer, so "
                                 f"training cannot update it; make mean and var initializers")
            if v.name in updates.values():
                raise ModelError(f"node {node.name!r} (BatchNormalization): running statistic "
                                 f"{v.name!r} is shared with another BatchNormalization; give "
                                 f"each its own statistics to train")
        node.attributes["training_mode"] = ir.AttrInt64("training_mode", 1)
        if len(node.outputs) < 3:
            node.resize_outputs(3)
        for out, stat in zip(node.outputs[1:3], stats):
            if not out.name:
                out.name = _fresh(g, f"{stat.name}.updated")
            out.type, out.shape = stat.type, stat.shape
            updates[out.name] = stat.name
    return updates


def _dropout_training(g: ir.Graph) -> None:
    drops = [n for n in g if n.op_type == "Dropout"]
    if not drops:
        return
    on = add_initializer(g, np.array(True), _fresh(g, "dropout_training_mode"))
    for node in drops:
        set_input(node, 2, on)


def _class_axis_ok(node: ir.Node | None, rank: int | None) -> bool:
    axis = attribute(node, "axis", -1)
    return axis == 1 or (rank is None and axis == -1) or (rank is not None and axis % rank == 1)


def _append_loss(g: ir.Graph, loss: str, read: ir.Value,
                 info: dict) -> tuple[ir.Value, ir.Value]:
    shape, dtype = info.get(read.name, (None, None))
    if dtype is not None and not np.issubdtype(dtype, np.floating):
        raise ModelError(f"the loss reads output {read.name!r}, which is {dtype}, not float")
    rank = len(shape) if shape is not None else None
    producer = read.producer()
    op = producer.op_type if producer is not None else None
    ftype = ir.DataType.FLOAT if dtype is None else ir.DataType.from_numpy(dtype)
    if loss == "mse":
        target = _target(g, ftype, shape)
        diff = _node(g, "Sub", [read, target])
        square = _node(g, "Mul", [diff, diff])
        return _node(g, "ReduceMean", [square], "loss", ftype, keepdims=0), target
    if rank is not None and rank < 2:
        raise ModelError(f"loss {loss!r} reads class scores on axis 1 of output {read.name!r}, "
                         f"whose shape {S.fmt(shape)} has no axis 1 ({LOSSES[loss]})")
    if op in ("Softmax", "LogSoftmax") and not _class_axis_ok(producer, rank):
        raise ModelError(f"output {read.name!r} is a {op} over axis "
                         f"{attribute(producer, 'axis', -1)}; loss {loss!r} reads classes on "
                         f"axis 1: transpose the classes to axis 1 in the model")
    target_shape = None if shape is None else (shape[0], *shape[2:])
    target = _target(g, ir.DataType.INT64, target_shape)
    if loss == "nll" or op == "LogSoftmax":
        return _node(g, "NegativeLogLikelihoodLoss", [read, target], "loss", ftype,
                     reduction="mean"), target
    if op == "Softmax":
        log_prob = _node(g, "Log", [read])
        return _node(g, "NegativeLogLikelihoodLoss", [log_prob, target], "loss", ftype,
                     reduction="mean"), target
    return _node(g, "SoftmaxCrossEntropyLoss", [read, target], "loss", ftype,
                 reduction="mean"), target


def _append_distillation(g: ir.Graph, read: ir.Value, info: dict, hard: ir.Value,
                         options: dict) -> ir.Value:
    """Hinton et al.'s loss: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) *
    cross_entropy(s, target)``, the KL summed over classes (axis 1) and averaged over samples
    (and positions), ``t`` the teacher's logits (an input), ``s`` the student's class scores
    (logits or log-probabilities as they are, probabilities through Log)."""
    temperature, alpha = distillation_options(options)
    shape, dtype = info.get(read.name, (None, None))
    classes = shape[1] if shape is not None and len(shape) > 1 else None
    if not isinstance(classes, int):
        raise ModelError(f"loss 'distill' needs a static number of classes on axis 1 of output "
                         f"{read.name!r}; its shape is {S.fmt(shape) if shape else 'unknown'}")
    if TEACHER_LOGITS in _used_names(g):
        raise ModelError(f"the model has a value named {TEACHER_LOGITS!r}, the name of the "
                         f"training input that carries the teacher's logits; rename it")
    ftype = ir.DataType.FLOAT if dtype is None else ir.DataType.from_numpy(dtype)
    np_type = ftype.numpy()
    dims = ir.Shape([d if isinstance(d, int) else "batch" for d in shape])
    teacher = ir.Value(name=TEACHER_LOGITS, type=ir.TensorType(ftype), shape=dims)
    g.inputs.append(teacher)
    hard.name = _fresh(g, "loss.cross_entropy")
    producer = read.producer()
    student = _node(g, "Log", [read]) if producer is not None and \
        producer.op_type == "Softmax" else read

    def constant(value: float, name: str) -> ir.Value:
        return _node(g, "Constant", [], name, value=ir.tensor(np.array(value, np_type)))

    inverse_t = constant(1.0 / temperature, "loss.inverse_temperature")
    log_p = [_node(g, "LogSoftmax", [_node(g, "Mul", [v, inverse_t])], axis=1)
             for v in (teacher, student)]
    p_teacher = _node(g, "Exp", [log_p[0]])
    kl_terms = _node(g, "Mul", [p_teacher, _node(g, "Sub", log_p)])
    # the mean over every element times the classes: the sum over classes, averaged
    mean_kl = _node(g, "ReduceMean", [kl_terms], keepdims=0)
    soft = _node(g, "Mul", [mean_kl, constant(alpha * temperature ** 2 * classes,
                                              "loss.soft_weight")])
    hard_part = _node(g, "Mul", [hard, constant(1.0 - alpha, "loss.hard_weight")])
    return _node(g, "Add", [soft, hard_part], "loss", ftype)


def distillation_options(options: dict) -> tuple[float, float]:
    """(temperature, alpha) of loss "distill", checked: temperature > 0, 0 <= alpha <= 1."""
    unknown = sorted(set(options) - {"temperature", "alpha"})
    if unknown:
        raise OptionError(f"loss 'distill' takes loss_options temperature and alpha, got "
                          f"unknown {unknown}")
    temperature, alpha = options.get("temperature", 4.0), options.get("alpha", 0.5)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not np.isfinite(temperature) or temperature <= 0:
        raise OptionError(f"temperature must be a finite number > 0 (4.0 is usual), got "
                          f"{temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise OptionError(f"alpha weighs the teacher's term against the labels' and must be a "
                          f"number in [0, 1] (0: labels only, 1: teacher only), got {alpha!r}")
    return float(temperature), float(alpha)


def _target(g: ir.Graph, dtype: ir.DataType, shape) -> ir.Value:
    dims = None if shape is None else ir.Shape([d if d is not None else "batch" for d in shape])
    target = ir.Value(name=_fresh(g, "target"), type=ir.TensorType(dtype), shape=dims)
    g.inputs.append(target)
    return target


def _node(g: ir.Graph, op: str, inputs: list, name: str | None = None,
          dtype: ir.DataType = ir.DataType.FLOAT, **attrs) -> ir.Value:
    node = ir.Node("", op, inputs=inputs, name=_fresh(g, f"loss/{op}"),
                   attributes=[ir.convenience.convert_attribute(k, v) for k, v in attrs.items()])
    g.append(node)
    out = node.outputs[0]
    out.name = _fresh(g, name or f"loss.{op}")
    if name == "loss":  # a scalar of the scores' float type
        out.type, out.shape = ir.TensorType(dtype), ir.Shape([])
    return out


def _trainable(g: ir.Graph, freeze: list[str], stats: set[str]) -> tuple[list[str], list[str]]:
    """(params, frozen): float initializers the graph reads as weights, split by ``freeze``."""
    weights = []
    for name, v in g.initializers.items():
        if v.dtype not in FLOAT_TYPES or name in stats or not v.uses():
            continue
        if all(i in SETTING_INPUTS.get(node.op_type, ()) for node, i in v.uses()):
            continue
        weights.append(name)
    for pattern in freeze:
        if not isinstance(pattern, str):
            raise ModelError(f"freeze= takes initializer name patterns (str), got {pattern!r}")
        if not any(fnmatch.fnmatchcase(n, pattern) for n in weights):
            raise ModelError(f"freeze pattern {pattern!r} matches no trainable initializer; "
                             f"they are {weights[:20]}{' ...' if len(weights) > 20 else ''}")
    frozen = [n for n in weights if any(fnmatch.fnmatchcase(n, p) for p in freeze)]
    params = [n for n in weights if n not in frozen]
    if not params:
        raise ModelError("nothing to train: the model has no float initializers left to train "
                         f"(frozen: {frozen})")
    return params, frozen
