"""How many channels each group keeps when ``ratio`` applies to the whole network rather than
to every group alike (``hal.prune(allocation="global")``).

    sel = select_global(cg, ratio=0.5, importance="l1")     # kept channels per group

The prunable channels of every group together lose ``ratio`` of their count; which ones go is
decided across groups by each unit's importance divided by the mean importance of its group,
so that groups of different widths, depths and weight scales compare: a group whose units
matter about equally keeps more of them, one with a few dominant units keeps those and loses
the rest. Every group keeps at least ``min_keep`` of its units.
"""

from __future__ import annotations

from math import lcm

import numpy as np

from hal.passes.channel_graph import ChannelGraph
from hal.passes.prune_channels import Selection, scored_groups

#: the fraction of its units every group keeps under global allocation: a layer left with
#: one or two channels starves everything after it
MIN_KEEP = 0.25


def select_global(cg: ChannelGraph, ratio: float, importance: str = "l1",
                  round_to: int | None = None, keep_residual: bool = False,
                  min_keep: float = MIN_KEEP) -> Selection:
    """The units to keep when ``ratio`` of all prunable channels (the groups ``keep_residual``
    or ``importance`` leave whole not counted) are removed, weakest first by importance
    relative to their group's mean, each group keeping at least ``min_keep`` of its units
    (at least one); kept counts are then rounded up to a multiple of ``round_to``."""
    sel = Selection()
    candidates = []  # (gid, normalized unit scores)
    for gid, g, unit_scores in scored_groups(cg, importance, keep_residual, sel):
        mean = float(unit_scores.mean())
        candidates.append((gid, unit_scores / mean if mean > 0 else np.ones(g.units)))
    total = sum(cg.groups[gid].size for gid, _ in candidates)
    to_remove = int(np.floor(total * ratio + 0.5))
    floor = {gid: max(1, int(np.ceil(min_keep * cg.groups[gid].units)))
             for gid, _ in candidates}
    # every unit above its group's floor, weakest first (ties: the earlier group, then unit)
    ranked = sorted((float(s), n, int(u), gid)
                    for n, (gid, norm) in enumerate(candidates)
                    for u, s in enumerate(norm) if _rank(norm, u) >= floor[gid])
    removed: dict[int, set] = {gid: set() for gid, _ in candidates}
    for _, _, u, gid in ranked:
        if to_remove <= 0:
            break
        block = cg.groups[gid].block
        if block > to_remove:  # a whole head would overshoot the count
            continue
        removed[gid].add(u)
        to_remove -= block
    for gid, norm in candidates:
        g = cg.groups[gid]
        keep = g.units - len(removed[gid])
        if round_to:
            step = lcm(int(round_to), g.block) // g.block
            keep = min(g.units, -(-keep // step) * step)
        if keep >= g.units:
            sel.skipped[gid] = (f"allocation='global' with ratio={ratio} removes none of its "
                                f"{g.units} units" + (f" (round_to={round_to})" if round_to
                                                      else ""))
            continue
        order = np.sort(np.argsort(-norm, kind="stable")[:keep])
        sel.kept[gid] = (order[:, None] * g.block + np.arange(g.block)[None, :]).reshape(-1)
    return sel


def _rank(norm: np.ndarray, unit: int) -> int:
    """Position of ``unit`` in its group from the strongest (0) down, ties to the earlier."""
    return int(np.flatnonzero(np.argsort(-norm, kind="stable") == unit)[0])
