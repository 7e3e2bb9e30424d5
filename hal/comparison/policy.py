"""What ``hal compare`` decides, in one place: which devices a default run measures, and which
row is the best of its (model, batch, precision) in the table, the JSON and the HTML report.

Devices only state facts about themselves (``DeviceInfo.simulated``, ``slow_simulation``);
these rules turn the facts into choices.
"""

from __future__ import annotations

from collections.abc import Iterable

from hal.comparison.row import Row
from hal.device import DeviceInfo


def left_out(info: DeviceInfo) -> str | None:
    """Why a default run skips this usable device, or None: a slow simulation (the whole zoo
    would take an hour) is measured only when named in ``devices``."""
    return info.slow_simulation or None


def default_devices(infos: Iterable[DeviceInfo]) -> tuple[list[str], dict[str, str]]:
    """(the devices a run without ``devices`` measures, the usable ones it leaves out -> why):
    every usable device once (aliases skipped), simulated ones included and labelled."""
    chosen, skipped = [], {}
    for d in infos:
        if not d.usable or d.alias_of:
            continue
        why = left_out(d)
        if why:
            skipped[d.string] = why
        else:
            chosen.append(d.string)
    return chosen, skipped


def score(row: Row) -> float | None:
    """Lower is better: p50 (p90 for MLPerf SingleStream, throughput negated for Offline and
    Server); None for a failed row."""
    if row.error:
        return None
    if row.scenario in ("Offline", "Server"):
        return -row.throughput_per_s if row.throughput_per_s else None
    if row.scenario == "SingleStream":
        return row.p90_ms
    return row.p50_ms


def best_rows(rows: Iterable[Row]) -> dict[tuple, Row]:
    """The best row per (model, batch, precision) by ``score``. A simulated device's time is
    its simulator's, not the hardware's: it is best only where no real device was measured."""
    out: dict[tuple, Row] = {}
    for r in rows:
        s = score(r)
        if s is None:
            continue
        key = (r.model, r.batch, r.precision)
        have = out.get(key)
        if have is None or (r.simulated, s) < (have.simulated, score(have)):
            out[key] = r
    return out
