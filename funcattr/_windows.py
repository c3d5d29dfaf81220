"""Occlusion windows, built from shapes, and the scatter that perturbs a chunk of copies.

A plan says which elements each perturbation replaces, as small index tensors, so that a
chunk of perturbations ``lo:hi`` becomes its ``[m, B, ...]`` inputs in a few tensor ops —
never a Python loop over windows at call time:

* **Windows** (occlusion) are boxes. Along each non-batch dim ``d`` the window origins are
  ``0, s, 2s, ...`` (``ceil((D - w) / s) + 1`` of them, Captum's count); the last window is
  truncated at the border, not shifted back. A box is the outer product of one interval per
  dim, so a plan holds per dim the ``[n_d, D_d]`` interval matrix and the covered indices;
  a chunk is ``m`` copies of ``x`` with the boxes' elements scattered in (``overwrite``), and
  spreading the per-window output drops back onto elements is a chain of small contractions.

Feature-id masks (ablation, Shapley, KernelSHAP, LIME) are ``_features``'s.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["WindowPlan", "windows", "check_windows", "overwrite", "values_at"]


# --------------------------------------------------------------------------- windows


@dataclasses.dataclass(frozen=True, eq=False)
class WindowPlan:
    """Windows over one input's non-batch shape ``S``, numbered row-major over origins."""

    shape: tuple[int, ...]
    counts: tuple[int, ...]  # windows per dim
    intervals: tuple[Tensor, ...]  # per dim: bool [n_d, S_d], True where window j covers i
    cells: tuple[Tensor, ...]  # per dim: long [n_d, w_d], the covered indices (clamped at the border)
    coverage: Tensor  # float [*S]: how many windows cover each element

    @property
    def n(self) -> int:
        return math.prod(self.counts)

    def offsets(self, ids: Tensor) -> Tensor:
        """Flat element offsets (within one example) covered by windows ``ids`` ``[m]`` →
        long ``[m, E]``, ``E = prod(window)``; a window truncated at the border repeats its
        last index, so every row has the same length."""
        m, D = ids.shape[0], len(self.shape)
        rem = ids.clamp(0, self.n - 1)
        off = torch.zeros((m,) + (1,) * D, dtype=torch.long, device=ids.device)
        step = 1
        for d in range(D - 1, -1, -1):
            j = rem % self.counts[d]
            rem = rem // self.counts[d]
            shape = [m] + [1] * D
            shape[1 + d] = self.cells[d].shape[1]
            off = off + self.cells[d][j].view(shape) * step
            step *= self.shape[d]
        return off.reshape(m, -1)

    def perturb(self, x: Tensor, base: Tensor, lo: int, hi: int) -> Tensor:
        """``x[B, *S]`` with windows ``lo..hi-1`` each set to ``base`` → ``[m, B, *S]``; ids
        outside ``0..n-1`` (a prefix or suffix of the range) leave ``x`` whole."""
        ids = torch.arange(max(lo, 0), min(hi, self.n), device=x.device)
        idx = self.offsets(ids).unsqueeze(1)  # [m', 1, E]
        return overwrite(x, idx, values_at(base, x, idx), m=hi - lo, start=max(0, -lo))

    def spread(self, drops: Tensor) -> Tensor:
        """Per-window drops ``[n, B, K]`` → per-element mean over covering windows ``[B, K, *S]``."""
        n, B, K = drops.shape
        dt = torch.promote_types(drops.dtype, torch.float32)
        t = drops.to(dt).reshape(*self.counts, B * K)
        for iv in self.intervals:  # contract the leading window axis, append the element axis
            t = torch.tensordot(t, iv.to(dt), dims=([0], [0]))
        return (t / self.coverage.to(dt)).view(B, K, *self.shape)


@functools.lru_cache(maxsize=64)
def windows(shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...], device: torch.device) -> WindowPlan:
    """The occlusion plan for one input (cached by shapes); arguments already checked."""
    counts, intervals, cells, cover = [], [], [], []
    for D, w, s in zip(shape, window, stride):
        n = -(-(D - w) // s) + 1
        origin = torch.arange(n, device=device).view(n, 1) * s
        i = torch.arange(D, device=device).view(1, D)
        iv = (i >= origin) & (i < origin + w)
        counts.append(n)
        intervals.append(iv)
        cells.append((origin + torch.arange(w, device=device)).clamp_max(D - 1))
        cover.append(iv.sum(0).double())
    coverage = torch.ones((), dtype=torch.float64, device=device)
    for cv in cover:
        coverage = coverage.unsqueeze(-1) * cv
    return WindowPlan(tuple(shape), tuple(counts), tuple(intervals), tuple(cells), coverage)


def _int_tuple(v: Any, rank: int, name: str, scalar_ok: bool) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool) and (scalar_ok or rank == 1):
        return (v,) * rank
    if not isinstance(v, (tuple, list)) or not all(isinstance(e, int) and not isinstance(e, bool) for e in v):
        raise TypeError(f"{name} must be a tuple of {rank} ints (one per non-batch dim of the input), got {v!r}")
    if len(v) != rank:
        raise ValueError(
            f"{name} {tuple(v)} has {len(v)} entries but the input has {rank} non-batch dims; "
            "give one entry per non-batch dim, channels included (Captum's convention)"
        )
    return tuple(v)


def check_windows(window: Any, stride: Any, xs: tuple[Tensor, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Validate ``window``/``stride`` against the inputs; returns ``(window, stride)`` per input."""
    n = len(xs)
    if n > 1:
        if not (isinstance(window, (tuple, list)) and len(window) == n):
            raise ValueError(f"window must be a tuple of {n} window shapes, one per input tensor, got {window!r}")
        wins = list(window)
        if stride is None or isinstance(stride, int):
            strides = [stride] * n
        elif isinstance(stride, (tuple, list)) and len(stride) == n:
            strides = list(stride)
        else:
            raise ValueError(f"stride must be an int or a tuple of {n} strides, one per input tensor, got {stride!r}")
    else:
        wins, strides = [window], [stride]
    out = []
    for i, (x, w, s) in enumerate(zip(xs, wins, strides)):
        at = f"[{i}]" if n > 1 else ""
        S = tuple(x.shape[1:])
        w = _int_tuple(w, len(S), f"window{at}", scalar_ok=False)
        s = _int_tuple(1 if s is None else s, len(S), f"stride{at}", scalar_ok=True)
        if any(e < 1 for e in w):
            raise ValueError(f"window{at} {w} must have positive sizes")
        if any(e < 1 for e in s):
            raise ValueError(f"stride{at} {s} must be positive in every dim (zero or negative strides never move)")
        for d, (D, we, se) in enumerate(zip(S, w, s)):
            if we > D:
                raise ValueError(f"window{at} {w} is larger than the input's non-batch shape {S} in dim {d + 1}")
            if se > we and we < D:
                raise ValueError(
                    f"stride{at} {s} is larger than window{at} {w} in dim {d + 1}, which the window does not "
                    "fully cover: elements between windows would never be occluded"
                )
        out.append((w, s))
    return out


def values_at(t: Tensor, x: Tensor, idx: Tensor) -> Tensor:
    """Values of ``t`` (broadcastable to ``x[B, *S]``) at flat per-example offsets
    ``idx[m, 1|B, E]`` → ``[m, B, E]``."""
    m, B, E = idx.shape[0], x.shape[0], idx.shape[2]
    if t.numel() == 1:  # a scalar baseline: nothing to gather
        return t.reshape(()).expand(m, B, E)
    src = t.expand(B, *x.shape[1:]).reshape(1, B, -1).expand(m, B, -1)
    return src.gather(2, idx.expand(m, B, E))


def overwrite(x: Tensor, idx: Tensor, vals: Tensor, m: int | None = None, start: int = 0) -> Tensor:
    """``m`` copies of ``x[B, *S]`` where copy ``start + j`` has the flat elements
    ``idx[j, 1|B, E]`` of each example set to ``vals[j, B, E]`` → ``[m, B, *S]``: one copy of
    ``x`` per item plus a scatter of only the perturbed elements (no per-element mask).
    Repeated offsets must carry equal values."""
    k, B = idx.shape[0], x.shape[0]
    m = k if m is None else m
    out = x.reshape(1, B, -1).expand(m, B, -1).clone()
    if k:
        out[start : start + k].scatter_(2, idx.expand(k, B, idx.shape[2]), vals.to(out.dtype))
    return out.view(m, B, *x.shape[1:])
