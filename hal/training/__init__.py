"""HAL's training library: the training graph every backend compiles, and the loop around it.

    result = hal.train(model, (x, y), device="cpu@torch", epochs=5)
    result.model      # a new hal.Model with the trained weights
    result.history    # one record per epoch

``build`` makes the training graph (``hal.trainer.TrainGraph``); ``train`` runs the loop.
"""

from hal.training.callbacks import BestCheckpoint, Callback, EarlyStopping
from hal.training.checkpoint import CheckpointError
from hal.training.graph import LOSSES, build
from hal.training.interrupt import TrainingInterrupted
from hal.training.loop import train
from hal.training.result import TrainResult
from hal.training.settings import trainable_devices

__all__ = ["LOSSES", "BestCheckpoint", "Callback", "CheckpointError", "EarlyStopping",
           "TrainResult", "TrainingInterrupted", "build", "train", "trainable_devices"]
