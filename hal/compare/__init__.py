"""Device comparison: run models on devices and measure them the same way.

``hal.compare()`` with no arguments runs every zoo model on every usable device
(simulated ones included and labelled) and checks each against cpu@reference.
"""

from hal.compare.harness import Results, Row, compare, measure

__all__ = ["Results", "Row", "compare", "measure"]
