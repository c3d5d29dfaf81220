"""``ShapesNet``: a small CNN for the synthetic shapes data set.

Architecture (input ``[B, 3, 64, 64]`` images in ``[0, 1]``, no normalization)::

    features                       nn.Sequential (named children)
      block1  Conv3x3(3->16)  + BatchNorm2d + ReLU      64x64
      pool1   MaxPool2d(2)                              32x32
      block2  Conv3x3(16->32) + BatchNorm2d + ReLU      32x32
      pool2   MaxPool2d(2)                              16x16
      block3  Conv3x3(32->64) + BatchNorm2d + ReLU      16x16
      block4  Conv3x3(64->64) + BatchNorm2d + ReLU      16x16
      pool3   MaxPool2d(2)                               8x8
      block5  Conv3x3(64->64) + BatchNorm2d + ReLU       8x8   <- last conv block
    pool      AdaptiveAvgPool2d(1)                       global average pool
    flatten   Flatten
    fc        Linear(64 -> n_classes)                    logits

Each ``blockK`` is an ``nn.Sequential`` with children ``conv``, ``bn`` and
``relu`` (a non in-place ``nn.ReLU``, so hook-based methods work).

Layers to target with attribution methods:

* **GradCAM / layer attributions**: ``model.features.block5`` (equivalently
  ``model.features[-1]`` or the alias ``model.last_conv``): its output is the
  post-ReLU ``[B, 64, 8, 8]`` map. For a finer 16x16 map use
  ``model.features.block4``.
* **CAM** (global-average-pool + linear head): feature map = output of
  ``model.features`` (== output of ``model.features.block5``), class weights =
  ``model.fc.weight`` (``[n_classes, 64]``), bias ``model.fc.bias``; then
  ``logits = fc(pool(features(x)))`` exactly, i.e.
  ``logit_c = mean_hw(sum_k W[c,k] A_k) + b_c``.
* ``model.forward_features(x)`` returns that feature map directly.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["ShapesNet"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
            bn=nn.BatchNorm2d(cout),
            relu=nn.ReLU(),
        )
    )


class ShapesNet(nn.Module):
    """Small CNN with a global-average-pool + linear head (CAM-compatible).

    See the module docstring for the layer layout and the layer names to use
    for GradCAM (``model.features.block5`` / ``model.last_conv``) and CAM
    (``model.features`` output + ``model.fc.weight``).

    Args:
        n_classes: number of output classes (6 for the shapes data set).
        width: channel width of the last blocks (default 64).
    """

    def __init__(self, n_classes: int = 6, width: int = 64) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.features = nn.Sequential(
            OrderedDict(
                block1=_block(3, 16),
                pool1=nn.MaxPool2d(2),
                block2=_block(16, 32),
                pool2=nn.MaxPool2d(2),
                block3=_block(32, width),
                block4=_block(width, width),
                pool3=nn.MaxPool2d(2),
                block5=_block(width, width),
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width, n_classes)

    @property
    def last_conv(self) -> nn.Module:
        """The last conv block (``features.block5``), the usual GradCAM target."""
        return self.features.block5

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map ``[B, width, H/8, W/8]`` (post-ReLU)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))
