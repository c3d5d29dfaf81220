"""Inputs and arguments as small pytrees: tuple handling, validation, folding.

A call is ``attr_fn(x, *args, **kwargs)`` where ``x`` is a Tensor or a tuple of Tensors.
Internally inputs are always a tuple ``xs``; ``restore`` gives the user's structure back.

Folding (DESIGN §3): ``S`` work items of a batch of ``B`` examples are laid out work-major,
``[S, B, ...] -> [S*B, ...]``, so row ``r`` belongs to example ``r mod B``. Arguments whose
dim 0 is the batch (tensors) or whose length is the batch (lists) are tiled the same way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "as_tuple",
    "restore",
    "batch_size_of",
    "check_inputs",
    "tile",
    "tile_args",
    "slice_args",
    "broadcast_baseline",
    "modules_of",
    "check_no_train_batchnorm",
]


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
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where} contains NaN or inf values")
    return B


def tile(t: Tensor, reps: int) -> Tensor:
    """``[B, ...] -> [reps*B, ...]`` work-major (row r is example r mod B)."""
    if reps == 1:
        return t
    return t.repeat(reps, *([1] * (t.dim() - 1)))


def _tile_value(v: Any, B: int, reps: int) -> Any:
    if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == B:
        return tile(v, reps)
    if isinstance(v, list) and len(v) == B:
        return v * reps
    return v


def tile_args(args: tuple, kwargs: dict, B: int, reps: int) -> tuple[tuple, dict]:
    """Tile batch-aligned positional and keyword arguments ``reps`` times."""
    if reps == 1:
        return args, kwargs
    return (
        tuple(_tile_value(a, B, reps) for a in args),
        {k: _tile_value(v, B, reps) for k, v in kwargs.items()},
    )


def _slice_value(v: Any, B: int, idx: Tensor) -> Any:
    if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == B:
        return v[idx.to(v.device)]
    if isinstance(v, list) and len(v) == B:
        return [v[i] for i in idx.tolist()]
    return v


def slice_args(args: tuple, kwargs: dict, B: int, idx: Tensor) -> tuple[tuple, dict]:
    """Select rows ``idx`` of batch-aligned arguments (for per-row gathers such as noise tunnel)."""
    return (
        tuple(_slice_value(a, B, idx) for a in args),
        {k: _slice_value(v, B, idx) for k, v in kwargs.items()},
    )


def broadcast_baseline(baseline: Any, xs: tuple[Tensor, ...], name: str = "baseline") -> tuple[Tensor, ...]:
    """Captum's baseline forms → one tensor per input, broadcastable to it as ``[B or 1, ...]``.

    Accepts a scalar, a tensor shaped like the input (batch B or 1) or like one example, and a
    tuple of those (one per input).
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
            b = 0.0
        if not isinstance(b, Tensor):
            if not isinstance(b, (int, float)):
                raise TypeError(f"{where} must be a number or a tensor, got {type(b).__name__}")
            out.append(torch.full((1,) * x.dim(), float(b), dtype=x.dtype, device=x.device))
            continue
        b = b.to(device=x.device, dtype=x.dtype if x.is_floating_point() else b.dtype)
        if b.dim() == x.dim() - 1:
            b = b.unsqueeze(0)
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


def modules_of(f: Any, _depth: int = 0) -> list[nn.Module]:
    """Best-effort: the nn.Modules a function closes over (for checks such as BatchNorm)."""
    if _depth > 4 or f is None:
        return []
    if isinstance(f, nn.Module):
        return [f]
    found: list[nn.Module] = []
    for attr in ("model", "func", "__self__", "fn"):
        sub = getattr(f, attr, None)
        if sub is not None and sub is not f:
            found += modules_of(sub, _depth + 1)
    for cell in getattr(f, "__closure__", None) or ():
        try:
            found += modules_of(cell.cell_contents, _depth + 1)
        except ValueError:  # empty cell
            pass
    return found


_BATCH_COUPLED = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


def check_no_train_batchnorm(f: Any, name: str = "f") -> None:
    for root in modules_of(f):
        for mname, m in root.named_modules():
            if isinstance(m, _BATCH_COUPLED) and m.training:
                raise ValueError(
                    f"{name} contains {type(m).__name__} '{mname or type(root).__name__}' in training mode: "
                    "its statistics would mix the examples (and the folded steps) of a batch. "
                    "Call model.eval() before attributing."
                )


def numel_per_row(xs: tuple[Tensor, ...]) -> int:
    return sum(math.prod(t.shape[1:]) * t.element_size() for t in xs)
