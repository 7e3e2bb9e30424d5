"""Device comparison: run models on devices and measure them the same way.

``hal.compare()`` with no arguments runs every zoo model on every usable device
(simulated ones included and labelled) and checks each against cpu@reference.
``Results`` writes the rows as JSON, CSV, HTML (with plots) or a pandas DataFrame;
``regressions`` compares two runs against their own noise.
"""

from hal.comparison.baseline import Change, regressions
from hal.comparison.harness import compare, measure
from hal.comparison.interrupt import CompareInterrupted
from hal.comparison.results import Results
from hal.comparison.row import FIELDS, Row
from hal.comparison.timing import Timing

__all__ = ["FIELDS", "Change", "CompareInterrupted", "Results", "Row", "Timing", "compare",
           "measure", "regressions"]
