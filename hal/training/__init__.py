"""HAL's training library: the training graph every backend compiles, and the loop around it.

``hal.training.build`` makes the training graph (``hal.trainer.TrainGraph``).
"""

from hal.training.graph import LOSSES, build

__all__ = ["LOSSES", "build"]
