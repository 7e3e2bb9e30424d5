"""What ``hal.train`` returns, and the trained model it carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from hal.errors import BackendError
from hal.ir.model import Model


@dataclass
class TrainResult:
    """``model``: a new hal.Model with the trained weights and running statistics (the one
    passed in is unchanged); ``history``: one record per epoch (``epoch``, ``step``, ``loss``,
    ``seconds``, ``samples_per_s``, ``lr`` and the validation metrics ``val_loss``,
    ``val_accuracy``...); ``best_checkpoint``: the file of the best epoch, when one was kept."""

    model: Model
    history: list[dict]
    device: str
    steps: int
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    stopped_early: bool = False
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"device": self.device, "steps": self.steps, "history": self.history,
                "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
                "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                "stopped_early": self.stopped_early, "settings": self.settings}

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else {}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items()
                          if k in ("loss", "val_loss", "val_accuracy") and v is not None)
        return (f"<TrainResult {self.model.name!r} on {self.device}: {len(self.history)} "
                f"epochs, {self.steps} steps{', ' + shown if shown else ''}>")


def trained_model(model: Model, weights: dict[str, np.ndarray]) -> Model:
    """A copy of ``model`` whose initializers take ``weights`` (in their own dtypes)."""
    out = model.copy()
    inits = out.graph.initializers
    unknown = sorted(set(weights) - set(inits))
    if unknown:
        raise BackendError(f"the trainer returned weights for {unknown[:5]}, which are not "
                           f"initializers of {model.name!r}")
    for name, array in weights.items():
        v = inits[name]
        old = v.const_value
        array = np.asarray(array)
        if tuple(array.shape) != tuple(old.shape):
            raise BackendError(f"the trainer returned {name!r} of shape {list(array.shape)}; "
                               f"the model's is {list(old.shape)}")
        v.const_value = ir.tensor(array.astype(old.dtype.numpy(), copy=False), name=name)
    return out
