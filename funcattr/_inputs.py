"""Inputs and baselines: tuple handling and validation.

A call is ``attr_fn(x, *args, **kwargs)`` where ``x`` is a Tensor or a tuple of Tensors.
Internally inputs are always a tuple ``xs``; ``restore`` gives the user's structure back.
Laying per-example values out for a folded batch is ``_fold``'s.
"""

from __future__ import annotations

import cmath
import math
from typing import Any

import torch
from torch import Tensor

from . import _fold

__all__ = ["as_tuple", "restore", "batch_size_of", "check_inputs", "broadcast_baseline", "promote", "check_finite"]


def as_tuple(x: Any, name: str = "x") -> tuple[tuple[Tensor, ...], bool]:
    """``x`` → ``(xs, is_tuple)``; raises a TypeError naming ``name`` for non-tensors."""
    is_tuple = isinstance(x, (tuple, list))
    xs = tuple(x) if is_tuple else (x,)
    if not xs:
        raise ValueError(f"{name} is an empty tuple; give at least one input tensor")
    for i, t in enumerate(xs):
        if not isinstance(t, Tensor):
            where = f"{name}[{i}]" if is_tuple else name
            raise TypeError(f"{where} must be a torch.Tensor, got {type(t).__name__}")
    return xs, is_tuple


def restore(xs: tuple, is_tuple: bool):
    return tuple(xs) if is_tuple else xs[0]


def batch_size_of(xs: tuple[Tensor, ...], name: str = "x") -> int:
    for i, t in enumerate(xs):
        if t.dim() == 0:
            raise ValueError(f"{name} must have a batch dimension (dim 0); got a 0-d tensor")
    sizes = {t.shape[0] for t in xs}
    if len(sizes) != 1:
        raise ValueError(
            f"all tensors in {name} must have the same batch size (dim 0); got {[t.shape[0] for t in xs]}"
        )
    B = sizes.pop()
    if B == 0:
        raise ValueError(f"{name} is an empty batch (dim 0 has size 0)")
    for i, t in enumerate(xs):
        if t.numel() == 0:
            where = f"{name}[{i}]" if len(xs) > 1 else name
            raise ValueError(f"{where} of shape {tuple(t.shape)} has an empty feature dim: there is nothing to attribute")
    return B


def check_inputs(xs: tuple[Tensor, ...], *, grad: bool, name: str = "x") -> int:
    """Validate inputs; returns the batch size."""
    B = batch_size_of(xs, name)
    for i, t in enumerate(xs):
        where = f"{name}[{i}]" if len(xs) > 1 else name
        if grad and not (t.is_floating_point() or t.is_complex()):
            raise TypeError(
                f"{where} has dtype {t.dtype}; gradient methods need floating-point inputs. "
                "For token ids or other integer inputs attribute to the embedding layer instead: "
                "pass wrt=model.embedding (the layer whose output is differentiable)."
            )
        check_finite(t, where)
    return B


def check_finite(t: Tensor, where: str) -> None:
    # one reduction: the sum is finite unless some element is NaN/inf (or the sum overflows,
    # which the exact check below then clears)
    if (t.is_floating_point() or t.is_complex()) and not cmath.isfinite(t.sum().item()) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{where} contains NaN or inf values")


def _baseline_dtype(b: Any, x: Tensor) -> torch.dtype:
    """Captum's semantics on integer inputs: a fractional float baseline makes the perturbed
    inputs float; one with integer values (0.0, the default) keeps the input's dtype."""
    if x.is_floating_point() or x.is_complex():
        return x.dtype
    if isinstance(b, Tensor):
        if not b.is_floating_point():
            return x.dtype
        return x.dtype if bool((b == b.round()).all()) else b.dtype
    if isinstance(b, float) and not b.is_integer():
        return torch.get_default_dtype()
    return x.dtype


def broadcast_baseline(baseline: Any, xs: tuple[Tensor, ...], name: str = "baseline") -> tuple[Tensor, ...]:
    """Captum's baseline forms → one tensor per input, broadcastable to it as ``[B or 1, ...]``.

    Accepts a scalar, a tensor shaped like the input (one row per example, or 1) or like one
    example, and a tuple of those (one per input). Per-example baselines follow a folded
    batch (``_fold.layout``). NaN/inf baselines are refused. On integer inputs see
    ``_baseline_dtype``.
    """
    if isinstance(baseline, (tuple, list)):
        if len(baseline) != len(xs):
            raise ValueError(f"{name} is a tuple of {len(baseline)} but there are {len(xs)} inputs")
        parts = baseline
    else:
        parts = (baseline,) * len(xs)
    out = []
    for i, (b, x) in enumerate(zip(parts, xs)):
        where = f"{name}[{i}]" if len(xs) > 1 else name
        if b is None:
            b = 0
        if isinstance(b, bool) or not isinstance(b, (Tensor, int, float)):
            raise TypeError(f"{where} must be a number or a tensor, got {type(b).__name__}")
        if not isinstance(b, Tensor):
            if not math.isfinite(b):
                raise ValueError(f"{where} is {b}; baselines must be finite")
            out.append(torch.full((1,) * x.dim(), b, dtype=_baseline_dtype(b, x), device=x.device))
            continue
        check_finite(b, where)
        b = b.to(device=x.device, dtype=_baseline_dtype(b, x))
        if b.dim() == x.dim() - 1:
            b = b.unsqueeze(0)
        if b.dim() == x.dim() and b.shape[0] not in (1, x.shape[0]):
            b = _fold.layout(b, x.shape[0], where)
        try:
            shape = torch.broadcast_shapes(b.shape, x.shape)
        except RuntimeError:
            shape = None
        if b.dim() != x.dim() or shape != x.shape or b.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"{where} of shape {tuple(b.shape)} does not broadcast to the input of shape "
                f"{tuple(x.shape)} (give a number, one example's shape, or the input's shape)"
            )
        out.append(b)
    return tuple(out)


def promote(xs: tuple[Tensor, ...], bases: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Inputs in the dtype their perturbed copies take (float for a fractional baseline on
    integer inputs, as Captum's ``x * (1 - mask) + baseline * mask`` does)."""
    return tuple(x if b.dtype == x.dtype else x.to(torch.promote_types(x.dtype, b.dtype)) for x, b in zip(xs, bases))
