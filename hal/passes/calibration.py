"""int8 calibration: the user's arrays checked and batched, the float model run on
``cpu@reference``, and per-tensor statistics of |x| (its maximum, or a percentile).

A percentile comes from a histogram of |x| whose range doubles (merging bin pairs) when a
later batch goes beyond it, so any number of batches takes bounded memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from hal.errors import HalError, InputError, OptionError

METHODS = ("minmax", "percentile")
BINS = 8192


def calibration_batches(inputs: Sequence[Any], calibration: Any) -> list[dict[str, np.ndarray]]:
    """``calibration`` as a list of {input name: array} batches, checked against ``inputs``
    (the model's TensorSpecs). Accepts an array (one batch of the single input), a list of
    arrays (batches of the single input), a dict name -> array, or a list of such dicts.
    The arrays are copied: nothing the caller holds is touched."""
    names = [s.name for s in inputs]
    if isinstance(calibration, (np.ndarray, dict)):
        items = [calibration]
    elif isinstance(calibration, (list, tuple)):
        items = list(calibration)
    else:
        raise InputError(f"calibration must be a numpy array, a list of arrays, a dict "
                         f"input name -> array or a list of such dicts, got "
                         f"{type(calibration).__name__}")
    if not items:
        raise InputError("calibration is empty: give at least one batch of inputs")
    batches = []
    for i, item in enumerate(items):
        where = f"calibration batch {i}" if len(items) > 1 else "calibration"
        if isinstance(item, dict):
            missing = [n for n in names if n not in item]
            extra = [k for k in item if k not in names]
            if missing or extra:
                raise InputError(f"{where} has inputs {sorted(map(str, item))}, the model takes "
                                 f"{', '.join(str(s) for s in inputs)}"
                                 + (f"; missing {missing}" if missing else "")
                                 + (f"; unknown {extra}" if extra else ""))
            batch = dict(item)
        elif len(names) == 1:
            batch = {names[0]: item}
        else:
            raise InputError(f"{where}: the model has {len(names)} inputs "
                             f"({', '.join(str(s) for s in inputs)}); give a dict input name "
                             f"-> array per batch")
        batches.append({s.name: _checked(s, batch[s.name], where) for s in inputs})
    return batches


def _checked(spec, a: Any, where: str) -> np.ndarray:
    expected = f"expected {spec.dtype} of shape {list(spec.shape)} (names are dynamic dims)"
    if not isinstance(a, np.ndarray):
        raise InputError(f"{where} for input {spec.name!r} is a {type(a).__name__}, not a "
                         f"numpy array; {expected}")
    if a.dtype != spec.dtype:
        raise InputError(f"{where} for input {spec.name!r} has dtype {a.dtype}; {expected} "
                         f"(convert it with .astype(np.{spec.dtype}))")
    if a.ndim != len(spec.shape) or any(isinstance(e, int) and e != d
                                        for e, d in zip(spec.shape, a.shape)):
        raise InputError(f"{where} for input {spec.name!r} has shape {list(a.shape)}; "
                         f"{expected}")
    if a.size == 0:
        raise InputError(f"{where} for input {spec.name!r} is empty (shape {list(a.shape)})")
    return a.copy()


def check_method(method: Any, percentile: Any) -> None:
    if method not in METHODS:
        raise OptionError(f"calibration_method must be one of {list(METHODS)}, got {method!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) \
            or not 50 < percentile <= 100:
        raise OptionError(f"calibration_percentile must be a number in (50, 100], got "
                          f"{percentile!r}")


class TensorStats:
    """The running maximum of |x| and a histogram of |x| over [0, hi)."""

    def __init__(self) -> None:
        self.absmax = 0.0
        self.hi = 0.0
        self.counts = np.zeros(BINS, np.int64)

    def update(self, a: np.ndarray) -> None:
        v = np.abs(np.asarray(a, np.float32).reshape(-1))
        if v.size == 0:
            return
        m = float(v.max())
        if not np.isfinite(m):
            raise HalError("calibration produced non-finite values (inf or NaN) in the float "
                           "model; check the calibration data")
        self.absmax = max(self.absmax, m)
        if self.hi == 0.0:
            self.hi = m if m > 0 else 0.0
        while m > self.hi > 0:  # widen: each pair of bins becomes one, the range doubles
            self.counts = np.concatenate([self.counts.reshape(-1, 2).sum(1),
                                          np.zeros(BINS // 2, np.int64)])
            self.hi *= 2
        if self.hi > 0:
            self.counts += np.histogram(v, bins=BINS, range=(0.0, self.hi))[0]
        else:
            self.counts[0] += v.size

    def percentile(self, p: float) -> float:
        total = int(self.counts.sum())
        if total == 0 or self.hi == 0.0:
            return self.absmax
        cum = np.cumsum(self.counts)
        target = p / 100.0 * total
        i = int(np.searchsorted(cum, target))
        below = cum[i - 1] if i > 0 else 0
        frac = (target - below) / self.counts[i] if self.counts[i] else 1.0
        return min(self.absmax, (i + frac) * self.hi / BINS)

    def squared_error(self, scale: float, qmax: int = 127) -> float:
        """The histogram's estimate of sum (dequant(quant(|x|)) - |x|)^2 at ``scale``."""
        centers = (np.arange(BINS) + 0.5) * (self.hi / BINS)
        q = np.minimum(np.rint(centers / scale), qmax) * scale
        return float(np.sum(self.counts * (q - centers) ** 2))

    def range(self, method: str, p: float) -> float:
        return self.absmax if method == "minmax" else self.percentile(p)


def collect(model: ir.Model, names: Sequence[str], batches: Sequence[dict[str, np.ndarray]]
            ) -> dict[str, TensorStats]:
    """Run ``model`` (float) through the oracle over ``batches``; statistics of ``names``."""
    from hal.oracle.interpreter import Interpreter

    g = model.graph
    values = {v.name: v for v in g.inputs}
    values.update({o.name: o for n in g for o in n.outputs if o.name})
    wanted = [values[n] for n in dict.fromkeys(names)]
    added = [v for v in wanted if not v.is_graph_output()]
    g.outputs.extend(added)  # temporarily: the interpreter reads the graph once
    try:
        exe = Interpreter(g, "calibration")
    finally:
        for _ in added:
            g.outputs.pop()
    stats = {v.name: TensorStats() for v in wanted}
    index = {n: i for i, n in enumerate(exe.output_names)}
    for batch in batches:
        outs = exe([batch[n] for n in exe.input_names])
        for name, s in stats.items():
            s.update(outs[index[name]])
    return stats
