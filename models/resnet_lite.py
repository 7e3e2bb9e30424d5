"""ResNet-lite: a 3×3 stem, residual blocks with batch norm, dropout before the classifier.

One block downsamples; the dropout is active only in training (hal.train).
"""

from hal import nn

INPUT_SHAPE = (None, 3, 32, 32)
CLASSES = 10


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


def build() -> nn.Module:
    from hal.models import randomize_batchnorm

    net = nn.Sequential(
        _conv_bn(3, 16, 3), nn.ReLU(),
        Block(16, 16), Block(16, 16), Block(16, 32, stride=2), Block(32, 32),
        nn.GlobalAvgPool(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 10),
    )
    randomize_batchnorm(net)
    return net
