"""Ctrl-C during ``hal.compare``: the rows finished so far, kept and marked as interrupted."""

from __future__ import annotations


class CompareInterrupted(KeyboardInterrupt):
    """What ``hal.compare`` raises on Ctrl-C (SIGINT) instead of a bare KeyboardInterrupt.

    ``results`` holds the rows finished before it, their environment's ``run["interrupted"]``
    saying how far the run got (``Results.interrupted``), so a caller can still show and write
    them. Being a KeyboardInterrupt, it stops code that does not look for it as any Ctrl-C
    does: a loop over ``compare`` calls ends instead of going on to the next one.
    """

    def __init__(self, results):
        super().__init__(results.interrupted)
        self.results = results


def note(measured: int, planned: int, round_index: int, rounds: int) -> str:
    """The line every writer shows for an interrupted run; ``measured`` and ``planned`` count
    rows over all rounds."""
    if rounds > 1:
        return (f"interrupted (Ctrl-C) in round {round_index} of {rounds}, after {measured} of "
                f"{planned} row measurements; the rest were not made")
    return f"interrupted (Ctrl-C) after {measured} of {planned} rows; the other rows were not " \
           f"measured"
