"""Integration rules for path methods, with Captum's nodes and weights exactly.

``riemann_trapezoid`` keeps Captum's quirk: alphas ``linspace(0, 1, n)`` and weights ``1/n``
with both ends halved, so the weights sum to ``(n - 1)/n``; results then match Captum.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def check(method: str, steps: int) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if method != "gausslegendre" and steps < 2:
        raise ValueError(f"steps must be at least 2 for method={method!r}, got {steps}")


@functools.lru_cache(maxsize=64)
def _nodes(method: str, steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    n = steps
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return tuple((0.5 * (1 + x)).tolist()), tuple((0.5 * w).tolist())
    w = [1 / n] * n
    if method == "riemann_trapezoid":
        w[0] /= 2
        w[-1] /= 2
        a = torch.linspace(0, 1, n)
    elif method == "riemann_left":
        a = torch.linspace(0, 1 - 1 / n, n)
    elif method == "riemann_middle":
        a = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        a = torch.linspace(1 / n, 1, n)
    return tuple(a.tolist()), tuple(w)


def nodes(method: str, steps: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alphas[steps], weights[steps])``: alphas in ``dtype``, weights in ``dtype``'s
    precision but at least float32 (Captum's step sizes are float32). The tensors are cached
    per device and dtype: treat them as read-only."""
    check(method, steps)
    return _tensors(method, steps, torch.device(device), dtype)


@functools.lru_cache(maxsize=64)
def _tensors(method: str, steps: int, device: torch.device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    a, w = _nodes(method, steps)
    return torch.tensor(a, device=device, dtype=dtype), torch.tensor(w, device=device, dtype=torch.promote_types(dtype, torch.float32))
