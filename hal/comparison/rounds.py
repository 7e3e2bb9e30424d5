"""``rounds``: the whole table measured several times, one row per key in the end.

One run's per-call spread (MAD) cannot see what moves between runs: the machine's clock,
other load, where the run starts in a noisy neighbour's cycle. Measuring the whole table
``rounds`` times, the devices in a rotated order each round, spreads each row's samples over
the whole run; the row's p50 is then the median of the per-round p50s and its spread
(``p50_spread_ms``) half the range they cover -- the figure two runs are compared against.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from hal.comparison.row import Row

#: latency figures taken as the median over rounds (each round's own percentile)
_MEDIAN_OF_ROUNDS = ("p50_ms", "p90_ms", "p99_ms", "iqr_ms", "mad_ms", "first_call_ms",
                     "compile_s")


def device_order(devices: Sequence[str], round_index: int) -> list[str]:
    """Round ``r`` starts at device ``r``: no device is always measured first or last."""
    n = len(devices)
    k = round_index % n if n else 0
    return list(devices[k:]) + list(devices[:k])


def merge(per_round: Sequence[Sequence[Row]]) -> list[Row]:
    """One row per key from the rows of every round (in the first round's order)."""
    by_key: dict[tuple, list[Row]] = {}
    for rows in per_round:
        for r in rows:
            by_key.setdefault(r.key, []).append(r)
    return [_merge_one(rows) for rows in by_key.values()]


def spread(p50s: Sequence[float]) -> float:
    """Half the range of the per-round p50s: how far a p50 of this row moves between rounds."""
    return (max(p50s) - min(p50s)) / 2


def _merge_one(rows: list[Row]) -> Row:
    last = rows[-1]
    failed = [(i, r) for i, r in enumerate(rows, 1) if r.error]
    if failed:
        i, r = failed[0]
        last.error = r.error if len(rows) == 1 else f"round {i} of {len(rows)}: {r.error}"
        last.rounds = len(rows)
        return last
    p50s = [r.p50_ms for r in rows if r.p50_ms is not None]
    for name in _MEDIAN_OF_ROUNDS:
        vals = [getattr(r, name) for r in rows if getattr(r, name) is not None]
        setattr(last, name, statistics.median(vals) if vals else None)
    runs = sum(r.runs for r in rows)
    if last.scenario is None and runs and all(r.mean_ms is not None for r in rows):
        last.mean_ms = sum(r.mean_ms * r.runs for r in rows) / runs
        last.throughput_per_s = last.batch / (last.mean_ms / 1e3) if last.mean_ms else None
    else:  # MLPerf rows: LoadGen's own throughput per round
        tps = [r.throughput_per_s for r in rows if r.throughput_per_s is not None]
        last.throughput_per_s = statistics.median(tps) if tps else None
    mins = [r.min_ms for r in rows if r.min_ms is not None]
    last.min_ms = min(mins) if mins else None
    mems = [r.peak_mem_mb for r in rows if r.peak_mem_mb is not None]
    last.peak_mem_mb = max(mems) if mems else None
    last.runs = runs
    last.rounds = len(rows)
    last.round_p50_ms = p50s
    last.p50_spread_ms = spread(p50s) if len(p50s) > 1 else None
    return last
