"""Feature-id masks (ablation, permutation, Shapley, KernelSHAP, LIME): integers per
element, compacted to ``0..F-1`` over all input tensors together, so one id that appears in
several tensors is one feature. Single features are scattered in through a table of each
feature's element offsets; coalitions (many features at once) select through the ids.
Per-example masks follow a folded batch (``_fold.layout``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import torch
from torch import Tensor

from . import _fold

__all__ = ["Features", "features", "spread"]


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
        """Coalitions ``keep`` bool ``[m, F]`` (shared by the batch) or ``[m, B, F]`` (one per
        example) → bool ``[m, 1 or B, ...]``: elements kept."""
        if keep.dim() == 2:
            return keep[:, self.ids[i]]
        m, B = keep.shape[:2]
        ids = self.ids[i].expand(B, *self.ids[i].shape[1:])
        return keep.gather(2, ids.reshape(1, B, -1).expand(m, B, -1)).view(m, *ids.shape)


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
    parts = mask if isinstance(mask, (tuple, list)) else (mask,)
    if cache is not None and not any(isinstance(m, Tensor) and m.is_inference() for m in parts):  # no version counter
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
