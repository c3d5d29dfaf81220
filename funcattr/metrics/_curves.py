"""Deletion and insertion curves (Petsiuk et al. 2018): remove (or put back) the most
important features first and integrate the score. All steps of all examples are one folded
batch through the executor."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from .. import _executor
from .._call import begin, check_fn
from .._inputs import as_tuple, broadcast_baseline
from ._checks import _as_args, _check_count, _check_k, _flat_attrs

__all__ = ["deletion", "insertion"]


def _element_ranks(A: tuple[Tensor, ...], mask: Any, xs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """Each element's position in its example's removal order, ``int32 [Kr, B, D]``, and the
    number of features of each example ``[B]``.

    Features are elements, or the segments of ``mask`` (ids shared across inputs); a segment's
    attribution is the sum over it; order: decreasing attribution, ties by increasing feature
    index (element: flat position, inputs in order; segment: id).
    """
    B = xs[0].shape[0]
    Kr = A[0].shape[1]
    flat = torch.cat([a.to(torch.float64) for a in A], 2).permute(1, 0, 2)  # [Kr, B, D]
    D = flat.shape[2]
    dev = flat.device
    if D == 0:
        raise ValueError("x has no features (every input has zero elements per example)")
    if mask is None:
        order = torch.sort(flat, dim=2, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(2, order, torch.arange(D, device=dev).expand_as(order))
        return rank.to(torch.int32), torch.full((B,), D, device=dev)
    ms, _ = as_tuple(mask, "mask")
    if len(ms) != len(xs):
        raise ValueError(f"mask has {len(ms)} tensors but x has {len(xs)}; give one mask per input")
    ids = []
    for i, (mk, x) in enumerate(zip(ms, xs)):
        where = f"mask[{i}]" if len(xs) > 1 else "mask"
        if mk.is_floating_point() or mk.is_complex():
            raise ValueError(f"{where} must hold integer feature ids, got dtype {mk.dtype}")
        mk = mk.to(x.device)
        if mk.dim() == x.dim() - 1:
            mk = mk.unsqueeze(0)
        try:
            ok = mk.dim() == x.dim() and torch.broadcast_shapes(mk.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{where} of shape {tuple(ms[i].shape)} does not broadcast to the input of shape {tuple(x.shape)} "
                "(give one example's shape, [1, ...] or the input's shape)"
            )
        ids.append(mk.expand(x.shape).reshape(B, -1).long())
    uniq, seg = torch.unique(torch.cat(ids, 1), return_inverse=True)  # ids -> 0..G-1 in id order
    G = uniq.numel()
    seg = seg.to(dev)
    present = torch.zeros(B, G, dtype=torch.bool, device=dev).scatter_(1, seg, torch.ones_like(seg, dtype=torch.bool))
    segx = seg.unsqueeze(0).expand(Kr, B, D)
    s = torch.zeros(Kr, B, G, dtype=torch.float64, device=dev).scatter_add_(2, segx, flat)
    s = torch.where(present, s, torch.full_like(s, -math.inf))  # absent segments rank last
    order = torch.sort(s, dim=2, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(2, order, torch.arange(G, device=dev).expand_as(order))
    return rank.gather(2, segx).to(torch.int32), present.sum(1)


def _curve(kind, f, x, attributions, steps, baseline, mask, return_curve, args, kwargs, batch_size, precision, progress):
    check_fn(f)
    _check_count(steps, "steps")
    opts = _executor.resolve(batch_size, precision, progress)
    with begin(f, x, _as_args(args), dict(kwargs or {}), opts, grad=False) as c:
        return _curve_in(c, kind, attributions, steps, baseline, mask, return_curve)


def _curve_in(c, kind, attributions, steps, baseline, mask, return_curve):
    A, K_attr = _flat_attrs(attributions, c.xs)
    bs = broadcast_baseline(baseline, c.xs)
    rank, F = _element_ranks(A, mask, c.xs)  # [Kr, B, D], [B]
    Kr, B, dev = rank.shape[0], c.B, c.device
    j = torch.arange(steps + 1, device=dev)
    counts = (j.view(-1, 1) * F.view(1, -1)) // steps  # [steps+1, B] features removed (added) after step j
    sizes = [math.prod(t.shape[1:]) for t in c.xs]
    delete = kind == "deletion"

    def step(lo, hi):
        m = hi - lo
        item = torch.arange(lo, hi, device=dev)
        r = rank if Kr == 1 else rank.index_select(0, item % Kr)  # [m or 1, B, D]
        chosen = r < counts[item // Kr].unsqueeze(-1).to(torch.int32)  # [m, B, D]
        pts = []
        for t, b, part in zip(c.xs, bs, chosen.split(sizes, dim=2)):
            sel = part.reshape(m, B, *t.shape[1:])
            p = torch.where(sel, b, t) if delete else torch.where(sel, t, b)
            pts.append(p.reshape(m * B, *t.shape[1:]))
        s = c.scores(tuple(pts), m)  # [m, B, K]
        if Kr > 1:
            _check_k(K_attr, c.is_k(s.shape[2]), s.shape[2], kind)
            s = s.gather(2, (item % Kr).view(m, 1, 1).expand(m, B, 1))
        return s

    out = c.run(step, (steps + 1) * Kr, kind, Kr, mask is None, combine="cat", desc=kind)  # [(steps+1)*Kr, B, K']
    out = out.view(steps + 1, Kr, B, out.shape[2])
    curve = out[:, :, :, 0].permute(2, 1, 0) if Kr > 1 else out[:, 0].permute(1, 2, 0)  # [B, K, steps+1]
    y = curve if curve.dtype in (torch.float32, torch.float64) else curve.float()
    frac = (counts.to(y.dtype) / F.to(y.dtype)).t().unsqueeze(1)  # [B, 1, steps+1]
    auc = ((frac[..., 1:] - frac[..., :-1]) * (y[..., 1:] + y[..., :-1]) / 2).sum(-1)
    if not c.is_k(out.shape[3]):
        curve, auc = curve[:, 0], auc[:, 0]
    return (auc, curve) if return_curve else auc


_CURVE_DOC = """
    Features are the elements of ``x`` (all inputs of a tuple together), or with ``mask`` the
    segments of integer ids (as in feature ablation: one mask per input, broadcastable to it,
    ids shared across inputs; a segment's attribution is the sum over it). Each example ranks
    its ``F`` features by decreasing attribution, ties broken by increasing feature index
    (element: flat position, inputs in order; segment: id). After step ``j = 0..steps`` the
    first ``n_j = ⌊j·F / steps⌋`` features of the ranking (``F`` may differ per example with a
    per-example mask) are {what}; the curve is the score
    ``s_j = f(x_j)`` and the result the trapezoid area under it over the fraction
    ``t_j = n_j / F`` in ``[0, 1]``. ``baseline`` is a number or a tensor broadcastable to the
    inputs (per example allowed). All ``steps + 1`` points of all examples are one folded batch
    through the executor; each step's inputs are built inside the executor's chunk from the
    per-example ranking.

    Returns the area ``[B]`` (``[B, K]`` for a K-score ``f``), and with ``return_curve`` also
    the curve ``[B, steps+1]`` (``[B, K, steps+1]``). With a K-score ``f``, attributions shaped
    like ``x`` rank once for all K scores; attributions ``[B, K, *x.shape[1:]]`` rank each
    score by its own map.
    """


def deletion(
    f: Callable,
    x: Any,
    attributions: Any,
    steps: int = 20,
    baseline: Any = 0.0,
    mask: Any = None,
    return_curve: bool = False,
    *,
    args: Any = (),
    kwargs: dict | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    progress: bool | None = None,
):
    return _curve(
        "deletion", f, x, attributions, steps, baseline, mask, return_curve, args, kwargs, batch_size, precision, progress
    )


def insertion(
    f: Callable,
    x: Any,
    attributions: Any,
    steps: int = 20,
    baseline: Any = 0.0,
    mask: Any = None,
    return_curve: bool = False,
    *,
    args: Any = (),
    kwargs: dict | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    progress: bool | None = None,
):
    return _curve(
        "insertion", f, x, attributions, steps, baseline, mask, return_curve, args, kwargs, batch_size, precision, progress
    )


deletion.__doc__ = (
    """Deletion (Petsiuk et al. 2018, RISE): remove the most important features first,
    replacing them with ``baseline``, and measure how fast the score falls (lower area =
    more faithful attribution)::

        fa.metrics.deletion(f, x, attrs, steps=20)                        # [B]
        auc, curve = fa.metrics.deletion(f, x, attrs, return_curve=True)  # [B], [B, 21]
        fa.metrics.deletion(f, x, attrs, mask=superpixels)                # features = segments
    """
    + _CURVE_DOC.format(what="replaced by the baseline (``x_0 = x``, ``x_steps`` = baseline)")
)
insertion.__doc__ = (
    """Insertion (Petsiuk et al. 2018, RISE): start from ``baseline`` and put the most
    important features of ``x`` back first, measuring how fast the score rises (higher area =
    more faithful attribution)::

        fa.metrics.insertion(f, x, attrs, steps=20, baseline=blurred)     # [B]
    """
    + _CURVE_DOC.format(what="taken from ``x``, the rest from the baseline (``x_0`` = baseline, ``x_steps = x``)")
)


