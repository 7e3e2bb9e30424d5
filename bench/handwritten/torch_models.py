"""Zoo models written directly in plain torch.nn: the eager-torch peer HAL is measured against.

``build(name, hal_module)`` returns a torch.nn.Module in eval mode with the weights of
``hal_module`` (a ``hal.models.build(name)`` module). Module names mirror the hal.nn
ones, so ``state_dict()`` keys match one to one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _cbr(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = c_in * expand
        self.body = nn.Sequential(_cbr(c_in, hidden, 1),
                                  _cbr(hidden, hidden, 3, stride, groups=hidden),
                                  _cbr(hidden, c_out, 1, act=False))
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.use_residual else y


def mobilenet_lite() -> nn.Module:
    return nn.Sequential(
        _cbr(3, 16, 3, stride=2),
        InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2), InvertedResidual(24, 24, 1),
        _cbr(24, 64, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv_bn(c_out, c_out, 3)
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else None
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.conv2(self.relu1(self.conv1(x)))
        s = self.shortcut(x) if self.shortcut is not None else x
        return self.relu2(y + s)


def resnet_lite() -> nn.Module:
    return nn.Sequential(
        _conv_bn(3, 16, 3), nn.ReLU(),
        Block(16, 16), Block(16, 16), Block(16, 32, stride=2), Block(32, 32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 10))


def lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10), nn.LogSoftmax(dim=1))


DIM, HEADS, HIDDEN, CLASSES = 64, 4, 128, 10


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x):  # [N, T, D] -> [N, H, T, D/H]
        n, t, _ = x.shape
        return x.reshape(n, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        y = torch.softmax(scores, -1) @ v
        n, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(n, t, self.heads * self.head_dim))


class EncoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(DIM), Attention(DIM, HEADS)
        self.norm2 = nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, DIM))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer0, self.layer1 = EncoderLayer(), EncoderLayer()
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x):
        x = self.norm(self.layer1(self.layer0(x)))
        return self.head(x.mean(dim=1))


MODELS = {"lenet": lenet, "mobilenet_lite": mobilenet_lite, "resnet_lite": resnet_lite,
          "tiny_transformer": TinyTransformer}


def build(name: str, hal_module) -> nn.Module:
    """The hand-written torch twin of zoo model ``name``, carrying ``hal_module``'s weights."""
    if name not in MODELS:
        raise KeyError(f"no hand-written torch model {name!r}; have {sorted(MODELS)}")
    net = MODELS[name]()
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in
             hal_module.state_dict().items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"{name}: weights do not match the torch twin: missing {missing}, "
                       f"unexpected {unexpected}")
    return net.eval()
