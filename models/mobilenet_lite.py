"""MobileNet-lite: inverted residual blocks (expand 1×1, depthwise 3×3, project 1×1), ReLU6."""

from hal import nn

INPUT_SHAPE = (None, 3, 32, 32)
CLASSES = 10


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
        self.body = nn.Sequential(
            _cbr(c_in, hidden, 1),
            _cbr(hidden, hidden, 3, stride, groups=hidden),
            _cbr(hidden, c_out, 1, act=False),
        )
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.use_residual else y


def build() -> nn.Module:
    from hal.models import randomize_batchnorm

    net = nn.Sequential(
        _cbr(3, 16, 3, stride=2),
        InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2), InvertedResidual(24, 24, 1),
        _cbr(24, 64, 1),
        nn.GlobalAvgPool(), nn.Flatten(), nn.Linear(64, 10),
    )
    randomize_batchnorm(net)
    return net
