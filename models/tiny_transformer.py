"""Tiny transformer encoder (no embedding): 2 pre-norm layers of 4-head attention and a GELU MLP."""

import math

from hal import nn
from hal.nn import functional as F

INPUT_SHAPE = (None, 16, 64)
CLASSES = 10
DIM, HEADS, HIDDEN = 64, 4, 128


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x):  # [N, T, D] -> [N, H, T, D/H]
        return x.reshape(0, 0, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(self.head_dim))
        y = F.softmax(scores, -1) @ v
        return self.out(y.transpose(0, 2, 1, 3).reshape(0, 0, self.heads * self.head_dim))


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
        return self.head(F.mean(x, [1]))


def build() -> nn.Module:
    return TinyTransformer()
