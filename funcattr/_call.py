"""One attribution call: validated inputs, the prepared score function, options, device.

Methods describe their work as ``step(lo, hi)`` over items and let ``Call.run`` (the
executor) evaluate it; ``Call`` holds the shared plumbing so no method repeats it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from . import _executor
from ._grad import Site, forward, layer_values, site_of, value_and_grad
from ._inputs import as_tuple, check_inputs, check_no_train_batchnorm, restore, tile_args
from ._scores import prepare

__all__ = ["Call", "begin", "finish", "check_fn", "mark"]


class Call:
    """One attribution call, after validation: inputs as a tuple, batch size, the prepared
    score function, options and device."""

    def __init__(self, f, x, args, kwargs, opts, *, grad: bool, wrt=None, name="x"):
        self.xs, self.is_tuple = as_tuple(x, name)
        self.B = check_inputs(self.xs, grad=grad and wrt is None, name=name)
        check_no_train_batchnorm(f)
        self.args, self.kwargs = args, kwargs
        self.f0 = f  # the user's function: the key of cached plans and costs
        self.f = prepare(f, self.xs, args, kwargs)
        self.opts = opts()
        self.device = self.xs[0].device
        self.site: Site | None = site_of(wrt)
        self.k_form: bool | None = None

    def fold(self, tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """``[m, B, ...] -> [m*B, ...]`` for each tensor."""
        return tuple(t.reshape(t.shape[0] * t.shape[1], *t.shape[2:]) for t in tensors)

    def tiled(self, m: int) -> tuple[tuple, dict]:
        return tile_args(self.args, self.kwargs, self.B, m)

    def grads(self, pts: tuple[Tensor, ...], m: int, inject: Tensor | None = None) -> tuple[Tensor, ...]:
        """Gradients at ``m`` folded items, viewed ``[m, B, K, ...]``."""
        a, kw = self.tiled(m)
        _, gs, self.k_form = value_and_grad(self.f, pts, a, kw, site=self.site, inject=inject)
        return tuple(g.view(m, self.B, *g.shape[1:]) for g in gs)

    def grads_and_value(self, pts: tuple[Tensor, ...], m: int) -> tuple[Tensor, Tensor]:
        """Gradient w.r.t. the site's value, ``[m, B, K, *layer]``, and that value
        ``[m*B, *layer]``, from one forward and one backward."""
        a, kw = self.tiled(m)
        _, (g,), self.k_form, value = value_and_grad(self.f, pts, a, kw, site=self.site, with_value=True)
        return g.view(m, self.B, *g.shape[1:]), value

    def scores(self, pts: tuple[Tensor, ...], m: int) -> Tensor:
        """Scores at ``m`` folded items, ``[m, B, K]`` (no grad)."""
        a, kw = self.tiled(m)
        s, self.k_form = forward(self.f, pts, a, kw)
        return s.view(m, self.B, s.shape[1])

    def run(self, step, n: int, key: Any, combine="sum", desc="funcattr"):
        return _executor.run(step, n, self.B, opts=self.opts, device=self.device, key=key, combine=combine, desc=desc)

    def key(self, tag: str, *extra) -> tuple:
        return (tag, id(self.f0), tuple((t.shape[1:], t.dtype) for t in self.xs), id(self.site and self.site.module), extra)

    def layer(self, xs: tuple[Tensor, ...]) -> Tensor:
        """The site's value at ``xs`` (a batch of B rows or a folded multiple)."""
        m = xs[0].shape[0] // self.B
        a, kw = self.tiled(m)
        return layer_values(self.f, self.site, xs, a, kw)

    def out(self, attrs: tuple[Tensor, ...], like: tuple[Tensor, ...] | None = None):
        """Drop the K axis for single-score functions; cast to the inputs' dtype; restore."""
        like = like if like is not None else self.xs
        res = tuple(
            (a if self.k_form else a.squeeze(1)).to(l.dtype if l.is_floating_point() else a.dtype)
            for a, l in zip(attrs, like)
        )
        if self.site is not None:
            return res[0]
        return restore(res, self.is_tuple)

    def delta(self, attrs: tuple[Tensor, ...], start: tuple[Tensor, ...], end: tuple[Tensor, ...]) -> Tensor:
        """Completeness gap per example: Σ attr − (f(end) − f(start)), ``[B]`` or ``[B, K]``."""
        pts = tuple(torch.cat([e.expand_as(x), s.expand_as(x)]) for e, s, x in zip(end, start, self.xs))
        s = self.scores(pts, 2)
        return self.gap(attrs, s[0], s[1])

    def gap(self, attrs: tuple[Tensor, ...], s_end: Tensor, s_start: Tensor) -> Tensor:
        """Σ attr − (s_end − s_start) per example from ``[B, K]`` scores; ``[B]`` or ``[B, K]``."""
        total = sum(a.reshape(*a.shape[:2], -1).sum(2) for a in attrs)  # 1-D inputs have no feature dims
        d = total - (s_end - s_start).to(total.dtype)
        return d if self.k_form else d[:, 0]


def begin(f, x, args, kwargs, opts, **kw) -> Call:
    return Call(f, x, args, kwargs, opts, **kw)


def finish(call: Call, attrs, delta=None):
    out = call.out(attrs)
    return (out, delta) if delta is not None else out


def check_fn(f: Callable, name: str = "f") -> None:
    if not callable(f):
        raise TypeError(f"{name} must be a callable returning scores, got {type(f).__name__}")


def mark(attr_fn, name: str, returns_delta: bool = False):
    attr_fn.__name__ = name
    attr_fn.__qualname__ = name
    attr_fn.returns_delta = returns_delta
    return attr_fn
