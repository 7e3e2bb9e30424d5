"""``hal.compress``: the accuracy-aware search over pruning and precision for one device.

    result = hal.compress(model, (x, y), validation=(xv, yv), device="cpu",
                          max_accuracy_drop=0.01, objective="latency")
    print(result)              # the candidates: accuracy, p50, size, Pareto front, the choice
    result.model               # the chosen model, in the form it runs in
    hal.compile(result.model, "cpu", **result.compile_options)

Each pruning ratio gives a structurally pruned model (``hal.prune``) fine-tuned with
``hal.train``; each of those runs in every precision asked (fp32, bf16, int8 static, int8
dynamic) that the device takes. Every candidate's accuracy is measured on the device itself,
its latency by ``hal.compare``'s harness on the device (one run per precision, all
candidates of that precision in it), its size as its ONNX file. The choice is the best by
``objective`` among the candidates within ``max_accuracy_drop`` of the model given.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hal.errors import HalError, InputError, OptionError
from hal.ir.model import Model

#: the precisions the search tries -> what ``hal.compile`` takes to make them
PRECISIONS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
              "int8": {"precision": "int8"},
              "int8-dynamic": {"precision": "int8", "calibration": "dynamic"},
              "int8-qat": {"precision": "int8"}}
#: the precision a candidate's model, once transformed, compiles with (a QDQ model runs as
#: given in int8; a dynamic int8 model carries its integer ops and compiles as it is)
RUNS_AS = {"fp32": "fp32", "bf16": "bf16", "int8": "int8", "int8-dynamic": "fp32",
           "int8-qat": "int8"}
#: what ``compress`` tries unless told (quantization-aware training, "int8-qat", trains once
#: more per candidate: asked for by name)
DEFAULT_PRECISIONS = ("fp32", "bf16", "int8", "int8-dynamic")
OBJECTIVES = ("latency", "size")
CALIBRATION_SAMPLES = 512


@dataclass
class Candidate:
    name: str  # e.g. "pruned 0.5, int8"
    ratio: float  # channels removed (0: the model given)
    precision: str  # a key of PRECISIONS
    accuracy: float | None = None
    p50_ms: float | None = None
    size_bytes: int | None = None
    flops: int | None = None
    params: int | None = None
    within_bound: bool = False
    pareto: bool = False
    note: str = ""  # why it was not measured (the device refuses the precision, an error)
    model: Model | None = field(default=None, repr=False)

    @property
    def compile_options(self) -> dict:
        """How ``model`` (already in its int8 form when int8) compiles."""
        return {"precision": RUNS_AS[self.precision]}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("model")
        return d


@dataclass
class CompressResult:
    candidates: list[Candidate]
    chosen: Candidate
    baseline: Candidate
    device: str
    batch: int
    max_accuracy_drop: float
    objective: str

    @property
    def model(self) -> Model:
        return self.chosen.model

    @property
    def compile_options(self) -> dict:
        return self.chosen.compile_options

    def to_dict(self) -> dict:
        return {"device": self.device, "batch": self.batch, "objective": self.objective,
                "max_accuracy_drop": self.max_accuracy_drop, "chosen": self.chosen.name,
                "baseline_accuracy": self.baseline.accuracy,
                "candidates": [c.to_dict() for c in self.candidates]}

    def __str__(self) -> str:
        from hal.compression.search_report import table

        return table(self)

    def html(self) -> str:
        from hal.compression.search_report import html

        return html(self)


def compress(model: Any, data: Any, *, validation: Any = None, device: str = "cpu",
             max_accuracy_drop: float = 0.01, objective: str = "latency", batch: int = 64,
             prune_ratios: Sequence[float] = (0.25, 0.5),
             precisions: Sequence[str] = DEFAULT_PRECISIONS, train_device: str = "cpu@torch",
             finetune_epochs: int = 2, lr: float = 1e-3, budget_s: float = 0.5, seed: int = 0,
             log: Any = None) -> CompressResult:
    """Search pruning ratios x precisions for ``device``; see the module docstring.

    ``data``: ``(x, y)`` training arrays (fine-tuning, int8 calibration); ``validation``:
    ``(x, y)`` arrays the accuracy is measured on (default: a seeded fifth of ``data``, held
    out of fine-tuning). ``max_accuracy_drop``: the largest fall in top-1 accuracy allowed
    (0.01 is one point). ``log``: called with a line of text as each step starts.
    """
    from hal.frontends import to_model

    base = to_model(model)
    _check(max_accuracy_drop, objective, batch, prune_ratios, precisions)
    precisions = ["fp32", *(p for p in precisions if p != "fp32")]  # fp32 first: the baseline
    (x, y), (xv, yv) = _split(data, validation, seed)
    say = log or (lambda line: None)
    sources = [(0.0, base)]
    for ratio in prune_ratios:
        say(f"pruning {ratio:.0%} of the channels and fine-tuning for {finetune_epochs} "
            f"epoch(s) on {train_device}")
        sources.append((ratio, _pruned(base, ratio, (x, y), train_device, finetune_epochs,
                                       lr, seed)))
    candidates = []
    for ratio, source in sources:
        refused: dict[str, str] = {}  # compile precision -> why the device refused it
        for precision in precisions:
            c = Candidate(_name(ratio, precision), ratio, precision)
            candidates.append(c)
            if RUNS_AS[precision] in refused:  # e.g. no int8: no quantization-aware training
                c.note = refused[RUNS_AS[precision]]
                continue
            say(f"measuring {c.name} on {device}")
            _build(c, source, (x, y), (train_device, finetune_epochs, lr, seed))
            if c.model is not None:
                _accuracy(c, device, xv, yv, batch)
            if c.accuracy is None and c.note.startswith(f"{device} refuses"):
                refused[RUNS_AS[precision]] = c.note
    _latency([c for c in candidates if c.model is not None], device, batch, budget_s)
    return _choose(candidates, device, batch, max_accuracy_drop, objective)


def _check(drop, objective, batch, ratios, precisions) -> None:
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 1:
        raise OptionError(f"max_accuracy_drop is a fraction of top-1 accuracy in [0, 1) (0.01 "
                          f"is one point), got {drop!r}")
    if objective not in OBJECTIVES:
        raise OptionError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise OptionError(f"batch must be a positive int, got {batch!r}")
    bad = [r for r in ratios if isinstance(r, bool) or not isinstance(r, (int, float))
           or not 0 < r < 1]
    if bad:
        raise OptionError(f"prune_ratios are fractions of channels in (0, 1), got {bad}")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise OptionError(f"precisions are among {list(PRECISIONS)}, got {list(precisions)}")


def _split(data: Any, validation: Any, seed: int):
    def arrays(d, what):
        if not (isinstance(d, (tuple, list)) and len(d) == 2
                and all(isinstance(a, np.ndarray) for a in d)):
            raise InputError(f"{what} must be (x, y) numpy arrays, got {type(d).__name__}")
        if len(d[0]) != len(d[1]) or len(d[0]) == 0:
            raise InputError(f"{what}: x and y must hold the same number of samples, at least "
                             f"one; got {len(d[0])} and {len(d[1])}")
        return d[0], d[1]

    x, y = arrays(data, "data")
    if validation is not None:
        return (x, y), arrays(validation, "validation")
    order = np.random.default_rng(seed).permutation(len(x))
    held = order[: max(1, len(x) // 5)]
    kept = order[max(1, len(x) // 5):]
    return (x[kept], y[kept]), (x[held], y[held])


def _name(ratio: float, precision: str) -> str:
    return f"{'pruned ' + format(ratio, 'g') if ratio else 'as given'}, {precision}"


def _pruned(base: Model, ratio: float, data, device: str, epochs: int, lr: float,
            seed: int) -> Model:
    from hal.compression import prune
    from hal.training import train

    pruned = prune(base, ratio=ratio, structured=True)
    if epochs <= 0:
        return pruned
    tuned = train(pruned, data, device=device, epochs=epochs, lr=lr, seed=seed,
                  progress=False).model
    tuned.compression = pruned.compression
    return tuned


def _build(c: Candidate, source: Model, data, tuning) -> None:
    """The candidate's model in the form it runs in: int8 static is its QDQ model (calibrated
    on the training inputs), int8 dynamic its dynamic form, int8-qat the QDQ model of
    quantization-aware fine-tuning; fp32 and bf16 the model itself."""
    from hal.backend import CompileOptions
    from hal.compression.cost import flops, params
    from hal.passes import quantize_flow
    from hal.passes.calibration import calibration_batches
    from hal.passes.dead_code import DeadCodeElimination
    from hal.training import train

    x = data[0]
    try:
        if c.precision in ("fp32", "bf16"):
            c.model = source
        elif c.precision == "int8-qat":
            train_device, epochs, lr, seed = tuning
            c.model = train(source, data, device=train_device, epochs=max(1, epochs),
                            lr=lr / 10, seed=seed, quantize="int8", progress=False).model
        else:
            dynamic = c.precision == "int8-dynamic"
            opts = CompileOptions(precision="int8", calibration="dynamic" if dynamic else None)
            batches = None if dynamic else calibration_batches(source.inputs,
                                                               x[:CALIBRATION_SAMPLES])
            ir_model, _ = quantize_flow(opts, batches, "training inputs").run(source.copy().ir)
            c.model = Model(DeadCodeElimination()(ir_model).model, source.name)  # no float weights
    except HalError as exc:
        c.note = f"{c.precision} could not be made: {str(exc).splitlines()[0]}"
        return
    c.size_bytes = len(c.model.to_proto().SerializeToString())
    c.flops, c.params = flops(source), params(source)


def _accuracy(c: Candidate, device: str, x: np.ndarray, y: np.ndarray, batch: int) -> None:
    """Top-1 on the validation arrays, from the one compile of the candidate for ``device``
    (a refusal leaves its reason in ``c.note`` and no accuracy)."""
    from hal.compiler import compile as hal_compile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fallbacks: the candidate's report says where
            compiled = hal_compile(c.model, device, **c.compile_options)
    except HalError as exc:
        c.note = f"{device} refuses it: {str(exc).splitlines()[0]}"
        c.model = None
        return
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((compiled(x[i:i + batch])[0].argmax(1) == y[i:i + batch]).sum())
    c.accuracy = hits / len(x)


def _latency(candidates: list[Candidate], device: str, batch: int, budget_s: float) -> None:
    """p50 per call at ``batch`` from ``hal.compare``, one run per compile precision."""
    from hal.comparison.harness import compare

    with tempfile.TemporaryDirectory(prefix="hal-compress-") as tmp:
        paths = {}
        for i, c in enumerate(candidates):
            path = Path(tmp) / f"candidate{i}.onnx"
            c.model.save(path)
            paths[str(path)] = c
        for precision in sorted({RUNS_AS[c.precision] for c in candidates}):
            group = [p for p, c in paths.items() if RUNS_AS[c.precision] == precision]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results = compare(models=group, devices=[device], batch=[batch],
                                  precision=[precision], budget_s=budget_s)
            for row in results:
                c = next((paths[p] for p in group if Path(p).stem == Path(row.model).stem),
                         None)
                if c is None:
                    continue
                if row.error:
                    c.note = f"hal.compare: {row.error.splitlines()[0]}"
                else:
                    c.p50_ms = row.p50_ms


def _choose(candidates: list[Candidate], device: str, batch: int, drop: float,
            objective: str) -> CompressResult:
    baseline = candidates[0]  # the model as given, fp32 (``compress`` puts it first)
    if baseline.accuracy is None:
        raise HalError(f"the model as given could not run in fp32 on {device} "
                       f"({baseline.note}); the search needs it as the accuracy baseline")
    measured = [c for c in candidates if c.accuracy is not None and c.p50_ms is not None]
    for c in measured:
        c.within_bound = c.accuracy >= baseline.accuracy - drop - 1e-12
        c.pareto = not any(_dominates(o, c) for o in measured if o is not c)
    key = (lambda c: c.p50_ms) if objective == "latency" else (lambda c: c.size_bytes)
    eligible = [c for c in measured if c.within_bound]
    chosen = min(eligible, key=lambda c: (key(c), -c.accuracy)) if eligible else baseline
    return CompressResult(candidates, chosen, baseline, device, batch, drop, objective)


def _dominates(a: Candidate, b: Candidate) -> bool:
    ge = a.accuracy >= b.accuracy and a.p50_ms <= b.p50_ms and a.size_bytes <= b.size_bytes
    gt = a.accuracy > b.accuracy or a.p50_ms < b.p50_ms or a.size_bytes < b.size_bytes
    return ge and gt
