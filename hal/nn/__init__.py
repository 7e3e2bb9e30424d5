"""Write-once models: PyTorch-like layers and a functional style that build HAL IR.

    from hal import nn
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    model = net.to_model((None, 1, 28, 28))     # None: dynamic batch
"""

from hal.nn import functional
from hal.nn.modules import (GELU, AvgPool2d, BatchNorm2d, Concat, Conv2d, Dropout, Flatten,
                            GlobalAvgPool, LayerNorm, Linear, LogSoftmax, MaxPool2d, Module, ReLU,
                            ReLU6, Residual, Sequential, Sigmoid, Softmax, Tanh, manual_seed, seed)
from hal.nn.tracing import Tensor, scope, trace

F = functional

__all__ = ["GELU", "AvgPool2d", "BatchNorm2d", "Concat", "Conv2d", "Dropout", "F", "Flatten",
           "GlobalAvgPool", "LayerNorm", "Linear", "LogSoftmax", "MaxPool2d", "Module", "ReLU",
           "ReLU6", "Residual", "Sequential", "Sigmoid", "Softmax", "Tanh", "Tensor", "functional",
           "manual_seed", "scope", "seed", "trace"]
