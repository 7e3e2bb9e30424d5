"""A training step written directly in torch: eager modules, autograd, ``torch.optim.AdamW``.

``build(name, state_dict) -> step(batch) -> float``: the zoo model ``name`` as plain
``torch.nn`` with the given weights in training mode; each ``step`` takes numpy arrays
(``input``, ``target``), runs forward, the loss, backward and one AdamW update, and returns
the loss as a Python float, as HAL's ``Trainer.step`` does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 128),
                         nn.Tanh(), nn.Linear(128, 10), nn.Softmax(dim=1))


def lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10), nn.LogSoftmax(dim=1))


#: model -> (module, whether its output is probabilities rather than log-probabilities)
MODELS = {"lenet": (lenet, False), "mlp": (mlp, True)}


def build(name: str, state_dict: dict, lr: float = 1e-3, weight_decay: float = 0.01):
    make, probabilities = MODELS[name]
    net = make()
    net.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in
                         state_dict.items()})
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=weight_decay)

    def step(batch: dict) -> float:
        x, y = torch.from_numpy(batch["input"]), torch.from_numpy(batch["target"])
        opt.zero_grad(set_to_none=True)
        out = net(x)
        loss = nn.functional.nll_loss(torch.log(out) if probabilities else out, y)
        loss.backward()
        opt.step()
        return loss.item()

    return step
