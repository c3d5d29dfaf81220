"""Localization against ground-truth masks: the pointing game and the mass inside."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["pointing_game", "mass_inside"]


def _heat_map(attributions: Any) -> Tensor:
    if not isinstance(attributions, Tensor):
        raise TypeError(f"attributions must be a Tensor [B, H, W] or [B, C, H, W], got {type(attributions).__name__}")
    if attributions.dim() == 4:
        a = attributions.sum(1)
    elif attributions.dim() == 3:
        a = attributions
    else:
        raise ValueError(
            "attributions must be [B, H, W], [B, 1, H, W] or [B, C, H, W] (channels are summed), "
            f"got shape {tuple(attributions.shape)}"
        )
    if a.is_floating_point() and not bool(torch.isfinite(a).all()):
        raise ValueError("attributions contain NaN or inf values")
    if a.shape[0] == 0:
        raise ValueError("attributions is an empty batch (dim 0 has size 0)")
    return a if a.is_floating_point() else a.float()


def _mask_map(masks: Any, a: Tensor) -> Tensor:
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a Tensor [B, H, W], got {type(masks).__name__}")
    m = masks[:, 0] if masks.dim() == 4 and masks.shape[1] == 1 else masks
    if m.shape != a.shape:
        raise ValueError(
            f"masks of shape {tuple(masks.shape)} do not match the attribution maps {tuple(a.shape)} "
            "(give masks [B, H, W] with the maps' batch and spatial size)"
        )
    return m.to(a.device) != 0


def pointing_game(attributions: Tensor, masks: Tensor, tolerance: float = 0) -> Tensor:
    """Pointing game (Zhang et al. 2016): a hit when the location of the maximum of each
    attribution map (channels summed) lies inside the ground-truth mask, or within
    ``tolerance`` pixels (Euclidean) of it, as in the original's 15-pixel tolerance::

        fa.metrics.pointing_game(A, masks)               # [B, C, H, W], [B, H, W] -> bool [B]
        fa.metrics.pointing_game(A, masks).float().mean()    # accuracy

    The maximum's location is the first one in row-major order when it is not unique (a
    constant map points at its top-left pixel); masks are nonzero inside (bool or integer).
    An empty mask is always a miss.
    """
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative number of pixels, got {tolerance!r}")
    a = _heat_map(attributions)
    m = _mask_map(masks, a)
    B, H, W = a.shape
    idx = a.reshape(B, -1).argmax(1)
    if tolerance == 0:
        return m.reshape(B, -1).gather(1, idx.unsqueeze(1))[:, 0]
    py, px = (idx // W).view(B, 1, 1), (idx % W).view(B, 1, 1)
    yy = torch.arange(H, device=a.device).view(1, H, 1)
    xx = torch.arange(W, device=a.device).view(1, 1, W)
    near = (yy - py) ** 2 + (xx - px) ** 2 <= tolerance**2
    return (near & m).reshape(B, -1).any(1)


def mass_inside(attributions: Tensor, masks: Tensor) -> Tensor:
    """Share of the positive attribution mass inside the mask, per example::

        fa.metrics.mass_inside(A, masks)     # [B, C, H, W], [B, H, W] -> [B] in [0, 1]

    Channels are summed first, then ``Σ_inside max(a, 0) / Σ max(a, 0)``; an example with no
    positive mass gets 0.
    """
    a = _heat_map(attributions).clamp_min(0)
    m = _mask_map(masks, a)
    total = a.reshape(a.shape[0], -1).sum(1)
    inside = (a * m).reshape(a.shape[0], -1).sum(1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(total))


