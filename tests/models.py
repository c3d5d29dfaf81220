"""Models the tests share: ones we did not design for funcattr (eval BatchNorm, residual adds,
max-pool, functional activations), with fixed seeds."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResConvNet(nn.Module):
    """Conv net with eval BatchNorm, a residual add, max-pool and functional activations."""

    def __init__(self, in_ch: int = 3, classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        h = F.relu(h + self.bn2(self.conv2(h)))  # residual add, functional relu
        h = self.pool(h)
        h = torch.tanh(self.conv3(h))
        h = h.mean(dim=(2, 3))
        return self.fc(h)


def res_conv_net(seed: int = 0, **kw) -> ResConvNet:
    torch.manual_seed(seed)
    m = ResConvNet(**kw)
    # non-trivial running statistics, then eval mode
    with torch.no_grad():
        for bn in (m.bn1, m.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    return m.eval()


class TwoInputNet(nn.Module):
    """forward(x1, x2, scale, offset=0): two tensor inputs and extra args."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 6)
        self.l2 = nn.Linear(3, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x1, x2, scale, offset=0.0):
        h = F.softplus(self.l1(x1)) * scale + torch.sigmoid(self.l2(x2)) + offset
        return self.out(h)


def two_input_net(seed: int = 0) -> TwoInputNet:
    torch.manual_seed(seed)
    return TwoInputNet().eval()


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor, b: float = 0.0):
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)
        self.b = b

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1, keepdim=True) + self.b
