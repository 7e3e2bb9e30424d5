"""Regression guard: which rows of a new run are slower or less accurate than a baseline.

Each row carries its spread (the median absolute deviation of its calls, ``mad_ms``). Two
medians differ beyond noise when their gap exceeds ``k`` robust standard deviations of
the difference, ``k * 1.4826 * sqrt(mad_old**2 + mad_new**2)``, and also a relative floor
(``floor`` of the old value) that stands for what one run's spread cannot show: drift
between runs (clocks, other load on the machine). Rows measured over several rounds
(``hal compare --rounds``) carry that drift too, ``p50_spread_ms``: their p50s may then
differ by the two spreads added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hal.comparison.row import Row

K = 3.0
FLOOR = 0.10
MAD_TO_SIGMA = 1.4826


@dataclass
class Change:
    kind: str  # "slower", "faster", "less accurate", "now failing", "fixed", "missing", "new"
    model: str
    device: str
    batch: int
    precision: str
    old: float | None = None
    new: float | None = None
    threshold: float | None = None
    detail: str = ""

    @property
    def regression(self) -> bool:
        return self.kind in ("slower", "less accurate", "now failing", "missing")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {**asdict(self), "regression": self.regression}


def metric(row: Row) -> tuple[str, float | None, bool]:
    """The figure a row is judged by: (name, value, higher_is_better)."""
    if row.scenario in ("Offline", "Server"):
        return "throughput_per_s", row.throughput_per_s, True
    if row.scenario == "SingleStream":
        return "p90_ms", row.p90_ms, False
    return "p50_ms", row.p50_ms, False


def noise(old: Row, new: Row, k: float = K, floor: float = FLOOR) -> float:
    """How far the metric may move between these two rows and still be noise (its units)."""
    _, value, higher = metric(old)
    spread = MAD_TO_SIGMA * math.hypot(old.mad_ms or 0.0, new.mad_ms or 0.0)
    if higher:  # a throughput: express the latency spread relative to the latency
        rel = spread / old.p50_ms if old.p50_ms else 0.0
        return abs(value) * max(floor, k * rel)
    drift = (old.p50_spread_ms or 0.0) + (new.p50_spread_ms or 0.0)
    return max(k * spread, drift, floor * abs(value))


def regressions(old, new, k: float = K, floor: float = FLOOR) -> list[Change]:
    """Every meaningful change from ``old`` to ``new`` (Results, or paths to --json files)."""
    from hal.comparison.results import Results

    old = old if isinstance(old, Results) else Results.from_json(old)
    new = new if isinstance(new, Results) else Results.from_json(new)
    before = {r.key: r for r in old.rows}
    after = {r.key: r for r in new.rows}
    out: list[Change] = []
    for key, n in after.items():
        o = before.get(key)
        c = {"model": n.model, "device": n.device, "batch": n.batch, "precision": n.precision}
        if o is None:
            out.append(Change("new", **c, detail="no such row in the baseline"))
            continue
        if o.error or n.error:
            if n.error and not o.error:
                out.append(Change("now failing", **c, detail=n.error))
            elif o.error and not n.error:
                out.append(Change("fixed", **c, detail=f"failed before: {o.error}"))
            continue
        out += _speed(o, n, c, k, floor) + _accuracy(o, n, c)
    for key, o in before.items():
        if key not in after:
            out.append(Change("missing", model=o.model, device=o.device, batch=o.batch,
                              precision=o.precision, detail="in the baseline, not in this run"))
    return out


def _speed(o: Row, n: Row, c: dict, k: float, floor: float) -> list[Change]:
    name, ov, higher = metric(o)
    _, nv, _ = metric(n)
    if ov is None or nv is None:
        return []
    limit = noise(o, n, k, floor)
    worse = (ov - nv) if higher else (nv - ov)
    if abs(worse) <= limit:
        return []
    ratio = nv / ov if ov else float("inf")
    return [Change("slower" if worse > 0 else "faster", **c, old=ov, new=nv, threshold=limit,
                   detail=f"{name} {ov:.4g} -> {nv:.4g} (x{ratio:.2f}; noise ±{limit:.3g})")]


def _accuracy(o: Row, n: Row, c: dict) -> list[Change]:
    out = []
    if o.max_abs_err is not None and n.max_abs_err is not None:
        # numerics are close to deterministic: flag doubling plus a tiny absolute slack
        limit = 2 * o.max_abs_err + 1e-6
        if n.max_abs_err > limit or (math.isnan(n.max_abs_err) and not math.isnan(o.max_abs_err)):
            out.append(Change("less accurate", **c, old=o.max_abs_err, new=n.max_abs_err,
                              threshold=limit, detail=f"max_abs_err {o.max_abs_err:.2e} -> "
                                                      f"{n.max_abs_err:.2e}"))
    if o.top1_agreement is not None and n.top1_agreement is not None \
            and n.top1_agreement < o.top1_agreement - 1e-9:
        out.append(Change("less accurate", **c, old=o.top1_agreement, new=n.top1_agreement,
                          threshold=0.0, detail=f"top-1 agreement {o.top1_agreement:.1%} -> "
                                                f"{n.top1_agreement:.1%}"))
    return out
