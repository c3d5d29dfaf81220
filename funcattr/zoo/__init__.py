"""Embedded default model and data: the synthetic *shapes* task.

Nothing is downloaded: the data are generated on the fly by
:func:`make_shapes` and the trained weights ship inside the package
(``funcattr/zoo/shapes_net.pt``, an fp32 ``state_dict``).

Example::

    >>> from funcattr import zoo
    >>> model = zoo.load()                                   # eval mode, CPU
    >>> x, y, masks = zoo.make_shapes(16, seed=zoo.TEST_SEED)  # held-out images
    >>> model(x).argmax(1)                                   # ~= y
    >>> zoo.CLASSES[y[0]]

Layers for attribution methods (see :class:`ShapesNet`): GradCAM target
``model.features.block5`` (== ``model.last_conv`` == ``model.features[-1]``,
``[B, 64, 8, 8]``); CAM uses the ``model.features`` output with
``model.fc.weight``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import ShapesNet
from .shapes import CLASSES, TEST_SEED, TRAIN_SEED, make_shapes

__all__ = ["load", "available", "CLASSES", "TEST_SEED", "TRAIN_SEED", "make_shapes", "ShapesNet"]

_WEIGHTS = {"shapes": Path(__file__).with_name("shapes_net.pt")}


def available() -> tuple[str, ...]:
    """Names accepted by :func:`load`."""
    return tuple(_WEIGHTS)


def load(name: str = "shapes", device: str | torch.device = "cpu") -> ShapesNet:
    """Return the pretrained model ``name`` in eval mode on ``device``.

    ``"shapes"``: :class:`ShapesNet` trained on :func:`make_shapes` images
    (``[B, 3, 64, 64]`` in ``[0, 1]``, no normalization), 6 classes
    :data:`CLASSES`. Weights are read from the package with
    ``torch.load(..., weights_only=True)``.

    Raises:
        ValueError: for an unknown ``name``.
    """
    if name not in _WEIGHTS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(map(repr, _WEIGHTS))}")
    path = _WEIGHTS[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} is missing; regenerate it with `python -m funcattr.zoo.train`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = ShapesNet(n_classes=len(CLASSES))
    model.load_state_dict(state)
    return model.to(device).eval()
