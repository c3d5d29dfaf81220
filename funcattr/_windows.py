"""Perturbation plans built from shapes: occlusion windows and feature-id masks.

A plan says which elements each perturbation replaces, as small index tensors, so that a
chunk of perturbations ``lo:hi`` becomes its ``[m, B, ...]`` inputs in a few tensor ops —
never a Python loop over windows or features at call time:

* **Windows** (occlusion) are boxes. Along each non-batch dim ``d`` the window origins are
  ``0, s, 2s, ...`` (``ceil((D - w) / s) + 1`` of them, Captum's count); the last window is
  truncated at the border, not shifted back. A box is the outer product of one interval per
  dim, so a plan holds per dim the ``[n_d, D_d]`` interval matrix and the covered indices;
  a chunk is ``m`` copies of ``x`` with the boxes' elements scattered in (``overwrite``), and
  spreading the per-window output drops back onto elements is a chain of small contractions.
* **Feature ids** (ablation, permutation, Shapley, KernelSHAP, LIME) are integers per element;
  ids are compacted to ``0..F-1`` over all input tensors together, so one id that appears in
  several tensors is one feature. Single features are scattered in through a table of each
  feature's element offsets; coalitions (many features at once) select through the ids.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import torch
from torch import Tensor

from . import _fold

__all__ = ["WindowPlan", "windows", "check_windows", "Features", "features", "spread", "overwrite", "values_at"]


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

    def masks(self, ids: Tensor) -> Tensor:
        """Window ids ``[m]`` (any out of ``0..n-1`` mean "no window") → bool ``[m, 1, *S]``."""
        m, D = ids.shape[0], len(self.shape)
        valid = (ids >= 0) & (ids < self.n)
        rem = ids.clamp(0, self.n - 1)
        out = valid.view(m, *[1] * D)
        for d in range(D - 1, -1, -1):  # row-major: the last dim varies fastest
            j = rem % self.counts[d]
            rem = rem // self.counts[d]
            shape = [m] + [1] * D
            shape[1 + d] = self.shape[d]
            out = out & self.intervals[d][j].view(shape)
        return out.unsqueeze(1)

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


# --------------------------------------------------------------------------- feature ids


@dataclasses.dataclass(frozen=True, eq=False)
class Features:
    """Compact feature ids per input: ``ids[i]`` is long ``[1 or B, ...]`` broadcastable to
    ``xs[i]`` with values in ``0..F-1``; ``span[i]`` the (min, max) id it holds."""

    ids: tuple[Tensor, ...]
    F: int
    span: tuple[tuple[int, int], ...]
    _tables: dict = dataclasses.field(default_factory=dict, repr=False)

    def touches(self, lo: int, hi: int, i: int) -> bool:
        """Whether any feature id in ``lo..hi-1`` occurs in input ``i``."""
        return lo <= self.span[i][1] and hi - 1 >= self.span[i][0]

    def masks(self, feats: Tensor, i: int) -> Tensor:
        """Bool ``[m, 1 or B, ...]``: elements of input ``i`` in feature ``feats[j]``."""
        ids = self.ids[i]
        return ids.unsqueeze(0) == feats.view(-1, *[1] * ids.dim())

    def complete(self, i: int, shape: torch.Size) -> bool:
        """Whether every feature has elements in input ``i`` for every example."""
        key = ("complete", i)
        if key not in self._tables:
            tab = self.table(i, shape)
            self._tables[key] = tab is not None and bool(tab[1].all())
        return self._tables[key]

    def flat(self, i: int, shape: torch.Size) -> Tensor:
        """The ids of input ``i`` broadcast to one example's full shape, flattened ``[N]``
        (batch-1 masks only)."""
        key = ("flat", i)
        if key not in self._tables:
            self._tables[key] = self.ids[i].expand(1, *shape[1:]).reshape(-1)
        return self._tables[key]

    def table(self, i: int, shape: torch.Size) -> tuple[Tensor, Tensor] | None:
        """The elements of each feature in input ``i`` (of ``shape``) as flat per-example
        offsets: ``(offsets long [1|B, F, E], has bool [1|B, F])``, a feature with fewer than
        ``E`` elements repeating its first one. None when that table would be much larger than
        the input (very unequal feature sizes); callers then use ``masks``."""
        if i not in self._tables:
            ids = self.ids[i].expand(self.ids[i].shape[0], *shape[1:]).reshape(self.ids[i].shape[0], -1)
            Bm, N = ids.shape
            counts = torch.zeros(Bm, self.F, dtype=torch.long, device=ids.device)
            counts.scatter_add_(1, ids, torch.ones_like(ids))
            E = int(counts.max()) if N else 0
            if E * self.F > 4 * N + 1024:
                self._tables[i] = None
            else:
                order = ids.argsort(dim=1, stable=True)
                starts = counts.cumsum(1) - counts
                a = torch.arange(E, device=ids.device)
                pos = starts.unsqueeze(2) + torch.minimum(a, (counts - 1).clamp_min(0).unsqueeze(2))
                offs = order.gather(1, pos.reshape(Bm, -1).clamp_max(max(N - 1, 0))).view(Bm, self.F, E)
                self._tables[i] = (offs, counts > 0)
        return self._tables[i]

    def present(self, keep: Tensor, i: int) -> Tensor:
        """Coalitions ``keep`` bool ``[m, F]`` → bool ``[m, 1 or B, ...]``: elements kept."""
        return keep[:, self.ids[i]]


@functools.lru_cache(maxsize=64)
def _default_ids(shapes: tuple[tuple[int, ...], ...], device: torch.device) -> Features:
    ids, off, span = [], 0, []
    for S in shapes:
        n = math.prod(S)
        ids.append((off + torch.arange(n, device=device)).view(1, *S))
        span.append((off, off + n - 1))
        off += n
    return Features(tuple(ids), off, tuple(span))


def features(mask: Any, xs: tuple[Tensor, ...], B: int, name: str = "mask", cache: dict | None = None) -> Features:
    """Validate ``mask`` (None, a tensor, a tuple of tensors, or a callable of the inputs
    returning one) and compact its ids over all inputs. With ``cache`` (a method's own dict),
    the plan of a fixed mask is built once per input shape (and rebuilt if the mask is
    modified in place)."""
    if callable(mask) and not isinstance(mask, Tensor):
        mask = mask(*xs)
        cache = None
    if mask is None:
        return _default_ids(tuple(tuple(x.shape[1:]) for x in xs), xs[0].device)
    if cache is not None:
        parts = mask if isinstance(mask, (tuple, list)) else (mask,)
        key = (
            tuple(x.shape for x in xs),
            xs[0].device,
            tuple((id(m), m._version) if isinstance(m, Tensor) else id(m) for m in parts),
        )
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[key] = features(mask, xs, B, name)
        return cache[key]
    if isinstance(mask, (tuple, list)):
        if len(mask) != len(xs):
            raise ValueError(f"{name} is a tuple of {len(mask)} masks but there are {len(xs)} inputs; give one per input")
        parts = tuple(mask)
    elif len(xs) > 1:
        raise ValueError(f"{name} must be a tuple of {len(xs)} masks, one per input tensor")
    else:
        parts = (mask,)
    shaped = []
    for i, (m, x) in enumerate(zip(parts, xs)):
        at = f"{name}[{i}]" if len(xs) > 1 else name
        if not isinstance(m, Tensor):
            raise TypeError(f"{at} must be a tensor of integer feature ids, got {type(m).__name__}")
        if m.is_floating_point() or m.is_complex():
            raise TypeError(f"{at} must hold integer feature ids, got dtype {m.dtype}")
        m = m.to(device=x.device, dtype=torch.long)
        if m.dim() > x.dim():
            raise ValueError(f"{at} of shape {tuple(m.shape)} has more dims than the input of shape {tuple(x.shape)}")
        m = m.reshape(*[1] * (x.dim() - m.dim()), *m.shape)  # Captum: prepend dims
        if m.shape[0] not in (1, x.shape[0]):  # one mask per example, of a folded batch
            m = _fold.layout(m, x.shape[0], at)
        try:
            ok = torch.broadcast_shapes(m.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok or m.shape[0] not in (1, B):
            raise ValueError(
                f"{at} of shape {tuple(parts[i].shape)} does not broadcast to the input of shape {tuple(x.shape)} "
                f"(give feature ids shaped like the input, with batch dim 1 or {B}, or like one example)"
            )
        shaped.append(m)
    flat = torch.cat([m.reshape(-1) for m in shaped])
    uniq, inv = torch.unique(flat, return_inverse=True)
    ids, span, off = [], [], 0
    for m in shaped:
        part = inv[off : off + m.numel()].view(m.shape)
        off += m.numel()
        ids.append(part)
        span.append((int(part.min()), int(part.max())) if part.numel() else (0, -1))
    return Features(tuple(ids), int(uniq.numel()), tuple(span))


def spread(values: Tensor, feats: Features, i: int, shape: torch.Size) -> Tensor:
    """Per-feature values ``[B, K, F]`` → per-element ``[B, K, *shape[1:]]`` for input ``i``."""
    B, K, _ = values.shape
    ids = feats.ids[i]
    if ids.shape[0] == 1:  # one mask for the whole batch: a cached flat index, broadcast
        idx = feats.flat(i, shape).view(1, 1, -1).expand(B, K, -1)
    else:
        idx = ids.expand(shape).reshape(B, 1, -1).expand(B, K, -1)
    return values.gather(2, idx).view(B, K, *shape[1:])
