"""``hal.distill``: a student trained to match a compiled teacher (Hinton et al., 2015).

    result = hal.distill(teacher, student, (x, y), device="cpu@jax", teacher_device="fpga@emu",
                         teacher_options={"precision": "int8", "calibration": x[:256]})

The teacher runs compiled on any inference device (``hal.compile(teacher, teacher_device,
**teacher_options)``); its logits are data, never differentiated. The student trains through
``hal.train`` on ``device`` with loss "distill" (``hal.training.graph``), as ONNX operators
that every training backend runs unchanged:

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

``t``: the teacher's logits, ``s``: the student's, ``y``: the labels; the KL is summed over
classes and averaged over samples. ``alpha`` weighs the teacher's term, ``1 - alpha`` the
labels'; ``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T``
grows. Log-probabilities (a LogSoftmax output) serve as logits unchanged (softmax ignores a
per-sample shift); probabilities (a Softmax output) are taken through log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.compiler import compile as compile_model
from hal.compression.distill_teacher import Teacher, accuracy, with_teacher
from hal.errors import ModelError, OptionError
from hal.ir import shapes
from hal.ir.model import Model, TensorSpec
from hal.training.batches import TARGET, Feed
from hal.training.graph import distillation_options
from hal.training.loop import train
from hal.training.result import TrainResult

#: hal.train options that distillation sets itself
_OWN = ("loss", "loss_options")
#: options that place a model rather than train it
_MODEL_OPTIONS = ("input_shape", "example_input")


@dataclass(frozen=True)
class DistillationReport:
    """What ``hal.distill`` did: ``Model.compression`` of the student it returns."""

    teacher: str
    teacher_device: str
    teacher_precision: str
    temperature: float
    alpha: float
    #: "per sample, before training" (arrays) or "per batch, as drawn" (an iterable)
    teacher_logits: str
    #: on ``validation`` (None without it)
    teacher_accuracy: float | None
    student_accuracy: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f} %"

        rows = [("teacher", f"{self.teacher} on {self.teacher_device} "
                            f"({self.teacher_precision})"),
                ("temperature T", f"{self.temperature:g}"),
                ("alpha (teacher's weight)", f"{self.alpha:g}"),
                ("teacher logits", self.teacher_logits),
                ("teacher accuracy", pct(self.teacher_accuracy)),
                ("student accuracy", pct(self.student_accuracy))]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def distill(teacher: Any, student: Any, data: Any, device: str = "cpu@jax",
            teacher_device: str = "cpu", temperature: float = 4.0, alpha: float = 0.5,
            validation: Any = None, teacher_options: dict | None = None,
            **train_options: Any) -> TrainResult:
    """Train ``student`` on ``data`` (``(x, y)``, a dict with ``"target"``, or an iterable of
    such batches) to match ``teacher`` compiled for ``teacher_device``; returns
    ``hal.train``'s result, whose ``model.compression`` is a ``DistillationReport``.

    ``teacher``/``student``: anything ``hal.compile`` takes (``input_shape=`` for a
    ``hal.nn.Module`` student goes in ``train_options``, for a teacher in
    ``teacher_options``); ``temperature`` > 0; ``alpha`` in [0, 1] weighs the teacher's term
    (0: the labels alone, plain cross-entropy training). ``validation``: as in ``hal.train``
    (the student's accuracy on its own outputs), and the teacher's accuracy on it is reported.
    ``teacher_options``: ``hal.compile``'s (``precision="int8"``, ``calibration=``, ...);
    ``train_options``: ``hal.train``'s (epochs, lr, batch_size, seed, ...).
    """
    from hal.frontends import to_model

    temperature, alpha = distillation_options({"temperature": temperature, "alpha": alpha})
    _check_train_options(train_options)
    teacher_options = dict(teacher_options or {})
    teacher_model = to_model(teacher, **_pop(teacher_options, _MODEL_OPTIONS))
    student_model = to_model(student, **_pop(train_options, _MODEL_OPTIONS))
    scores = _scores(student_model, train_options.get("output"))
    _check_compatible(teacher_model, student_model, scores)
    compiled = compile_model(teacher_model, teacher_device, **teacher_options)
    producer = teacher_model.graph.outputs[0].producer()
    probabilities = producer is not None and producer.op_type == "Softmax"
    names = [s.name for s in student_model.inputs]
    teacher_run = Teacher(compiled, names, probabilities)
    target = TensorSpec(TARGET, ("N", *scores.shape[2:]), np.dtype(np.int64))
    feed = Feed(student_model.inputs, target)
    train_data = with_teacher(data, feed, teacher_run, "data")
    val_data = None if validation is None else with_teacher(validation, feed, teacher_run,
                                                            "validation")
    result = train(student_model, train_data, device=device, loss="distill",
                   loss_options={"temperature": temperature, "alpha": alpha},
                   validation=val_data, **train_options)
    last = result.history[-1] if result.history else {}
    result.model.compression = DistillationReport(
        teacher=teacher_model.name, teacher_device=compiled.device.string,
        teacher_precision=compiled.options.precision, temperature=temperature, alpha=alpha,
        teacher_logits="per sample, before training" if isinstance(train_data, dict)
        else "per batch, as drawn",
        teacher_accuracy=None if val_data is None else accuracy(val_data),
        student_accuracy=last.get("val_accuracy"))
    return result


def _pop(options: dict, keys: tuple[str, ...]) -> dict:
    return {k: options.pop(k) for k in keys if k in options}


def _check_train_options(options: dict) -> None:
    own = [k for k in _OWN if k in options]
    if own:
        raise OptionError(f"hal.distill sets {own} itself (loss 'distill'); pass temperature= "
                          f"and alpha= instead")
    workers, strategy = options.get("workers", 1), options.get("strategy", "data")
    if workers != 1 or options.get("cluster") is not None or strategy != "data":
        raise OptionError("hal.distill trains the student on one worker for now: leave out "
                          "workers=, strategy= and cluster=")


def _inferred(model: Model, name: str) -> TensorSpec:
    """Output ``name`` of ``model`` with its shape as ONNX shape inference gives it."""
    shape, dtype = shapes.infer(model.to_proto()).get(name, (None, None))
    return TensorSpec(name, tuple(shape) if shape is not None else (None, None),
                      np.dtype(dtype if dtype is not None else np.float32))


def _scores(student: Model, output: str | None) -> TensorSpec:
    """The student's output that the loss reads."""
    outs = student.outputs
    if output is None:
        if len(outs) != 1:
            raise ModelError(f"the student {student.name!r} has {len(outs)} outputs "
                             f"{[s.name for s in outs]}: pass output=NAME naming its class "
                             f"scores")
        return _inferred(student, outs[0].name)
    for spec in outs:
        if spec.name == output:
            return _inferred(student, spec.name)
    raise ModelError(f"output={output!r} is not an output of the student {student.name!r}; "
                     f"its outputs are {[s.name for s in outs]}")


def _check_compatible(teacher: Model, student: Model, scores: TensorSpec) -> None:
    """Same inputs (in order, batch dimension aside) and the same classes on axis 1."""
    t_in, s_in = teacher.inputs, student.inputs
    if len(t_in) != len(s_in) or any(not _fits(a.shape, b.shape) for a, b in zip(t_in, s_in)):
        raise ModelError(f"teacher {teacher.name!r} and student {student.name!r} must take the "
                         f"same inputs: the teacher takes {[str(s) for s in t_in]}, the student "
                         f"{[str(s) for s in s_in]}")
    if len(teacher.outputs) != 1:
        raise ModelError(f"the teacher {teacher.name!r} has {len(teacher.outputs)} outputs; "
                         f"distillation reads one: give it a model with its class scores as "
                         f"its only output")
    t_out = _inferred(teacher, teacher.outputs[0].name)
    if len(scores.shape) < 2 or not isinstance(scores.shape[1], int) \
            or not _fits(t_out.shape, scores.shape):
        raise ModelError(f"teacher {teacher.name!r} and student {student.name!r} must give the "
                         f"same classes on axis 1: the teacher's output is {t_out}, the "
                         f"student's {scores}")


def _fits(a: tuple, b: tuple) -> bool:
    """Same rank and the same static sizes beyond the batch dimension."""
    return len(a) == len(b) and all(x == y for x, y in zip(a[1:], b[1:])
                                    if isinstance(x, int) and isinstance(y, int))
