"""One attribution call: validated inputs, the prepared score function, options, device,
and the evaluations methods ask for.

A method writes ``with begin(f, x, args, kwargs, opts, ...) as c:`` and describes its work as
``step(lo, hi)`` over items for ``c.run`` (the executor). The block is the call: the
examples of the call are in force for folding (``_fold``), and batch-coupled layers are
refused among the modules that run (``_sites.guard``); both end with the block, also on an
error. A ``Call`` is read-only once built: what a method learns it passes on as values.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from . import _executor, _fold
from ._autodiff import evaluate, evaluate_batches, site_values, value_and_grad
from ._inputs import as_tuple, check_inputs, restore
from ._scores import batch_value, gives_rows, k_form, prepare
from ._sites import Layout, Sites, guard, site_of

__all__ = ["Call", "begin", "check_fn", "mark", "check_attr_fn", "attributions_of"]


class Call:
    """One attribution call, after validation: inputs as a tuple, rows ``B``, the prepared
    score function, options, device, the site (``wrt=``) and the backward rules."""

    def __init__(self, f, xs, is_tuple, args, kwargs, opts, *, site: Sites | None, rules=None, rules_key=None):
        self.xs, self.is_tuple, self.B = xs, is_tuple, xs[0].shape[0]
        self.args, self.kwargs = args, kwargs
        self.f0 = f  # the user's function: the key of cached costs
        self.f = prepare(f, xs, args, kwargs)
        self.k_form = k_form(self.f)  # None: the outputs tell (K > 1)
        self.opts = opts()
        self.device = xs[0].device
        self.site = site
        self.rules = rules
        self.rules_key = rules_key
        self._layout: Layout | None = None  # how the sites' tensors map back, known once they ran

    # ------------------------------------------------------------------ evaluations

    def tiled(self, rows: int) -> tuple[tuple, dict]:
        return _fold.tile_args(self.args, self.kwargs, rows)

    def _seen(self, layout: Layout | None) -> None:
        if layout is not None:
            self._layout = layout

    def grads(self, pts: tuple[Tensor, ...], m: int, inject: tuple[Tensor, ...] | None = None, rules=None) -> tuple[Tensor, ...]:
        """Gradients at ``m`` folded items, ``[m, B, K, ...]`` per input (or per tensor of the
        sites; ``inject`` replaces those, flat). ``rules`` overrides the call's backward rules
        for this evaluation."""
        a, kw = self.tiled(m * self.B)
        split = None if inject is None else self._layout.split(inject)
        _, gs, _, layout = value_and_grad(self.f, pts, a, kw, sites=self.site, inject=split, rules=rules or self.rules)
        self._seen(layout)
        return tuple(_fold.unfold(g, m) for g in gs)

    def grads_and_value(self, pts: tuple[Tensor, ...], m: int, rules=None) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Gradients w.r.t. each tensor of the sites, ``[m, B, K, *layer]``, and those tensors
        ``[m*B, *layer]``, from one forward and one backward."""
        a, kw = self.tiled(m * self.B)
        _, gs, values, layout = value_and_grad(self.f, pts, a, kw, sites=self.site, rules=rules or self.rules)
        self._seen(layout)
        return tuple(_fold.unfold(g, m) for g in gs), values

    def scores(self, pts: tuple[Tensor, ...], m: int, rules=None) -> Tensor:
        """Scores at ``m`` folded items, ``[m, B, K]`` (no grad); ``rules`` as in ``grads``."""
        a, kw = self.tiled(m * self.B)
        return _fold.unfold(evaluate(self.f, pts, a, kw, rules=rules), m)

    def scores_or_value(self, pts: tuple[Tensor, ...]) -> tuple[Tensor, bool]:
        """Scores of one item (``B`` rows), ``[1, B, K]``, or — when ``f`` gives one value for
        the whole batch — that value as ``[1, 1, 1]``; and whether it was the latter."""
        if not gives_rows(self.f, self.kwargs):
            with torch.no_grad():
                v = batch_value(self.f(*pts, *self.args, **self.kwargs), pts[0].shape[0])
            if v is not None:
                return v.view(1, 1, 1), True
        return self.scores(pts, 1), False

    def batch_values(self, pts: tuple[Tensor, ...]) -> Tensor:
        """Values of a one-value-per-batch ``f`` at ``m`` perturbed batches ``[m, B, ...]`` → ``[m, 1, 1]``."""
        return evaluate_batches(self.f, pts, self.args, self.kwargs).view(-1, 1, 1)

    def layer(self, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The sites' tensors at ``xs`` (a batch of B rows or a folded multiple), flat."""
        a, kw = self.tiled(xs[0].shape[0])
        values, layout = site_values(self.f, self.site, xs, a, kw)
        self._seen(layout)
        return values

    def run(self, step, n: int, tag: str, *extra, combine="sum", desc="funcattr"):
        key = (
            tag,
            tuple((t.shape, t.dtype) for t in self.xs),
            tuple((id(p.module), p.of_input) for p in self.site.parts) if self.site else None,
            self.rules_key,
            extra,
        )
        return _executor.run(
            step, n, self.B, opts=self.opts, device=self.device, key=key, owner=self.f0, combine=combine, desc=desc
        )

    # ------------------------------------------------------------------ results

    def is_k(self, K: int) -> bool:
        return self.k_form if self.k_form is not None else K > 1

    def out(self, attrs: tuple[Tensor, ...]):
        """Drop the K axis for single-score functions; cast to the inputs' dtype; give the
        user's structure back (the inputs', or what ``wrt=`` named)."""
        k = self.is_k(attrs[0].shape[1])
        dt = self.xs[0].dtype if self.xs[0].is_floating_point() else None
        if self.site is not None:
            return self._layout.restore(tuple((a if k else a.squeeze(1)).to(dt or a.dtype) for a in attrs))
        res = tuple(
            (a if k else a.squeeze(1)).to(x.dtype if x.is_floating_point() else a.dtype) for a, x in zip(attrs, self.xs)
        )
        return restore(res, self.is_tuple)

    def finish(self, attrs: tuple[Tensor, ...], delta: Tensor | None = None):
        out = self.out(attrs)
        return (out, delta) if delta is not None else out

    def delta(self, attrs: tuple[Tensor, ...], start: tuple[Tensor, ...], end: tuple[Tensor, ...]) -> Tensor:
        """Completeness gap per example: Σ attr − (f(end) − f(start)), ``[B]`` or ``[B, K]``."""
        pts = tuple(torch.cat([e.expand_as(x), s.expand_as(x)]) for e, s, x in zip(end, start, self.xs))
        s = self.scores(pts, 2)
        return self.gap(attrs, s[0], s[1])

    def gap(self, attrs: tuple[Tensor, ...], s_end: Tensor, s_start: Tensor) -> Tensor:
        """Σ attr − (s_end − s_start) per example from ``[B, K]`` scores; ``[B]`` or ``[B, K]``."""
        total = sum(a.reshape(*a.shape[:2], -1).sum(2) for a in attrs)  # 1-D inputs have no feature dims
        d = total - (s_end - s_start).to(total.dtype)
        return d if self.is_k(d.shape[1]) else d[:, 0]


@contextlib.contextmanager
def begin(f, x, args, kwargs, opts, *, grad: bool, wrt=None, rules=None, rules_key=None, name="x"):
    """Validate ``x``, enter the call (examples for folding, the batch-coupling guard) and
    yield its :class:`Call`."""
    xs, is_tuple = as_tuple(x, name)
    site = site_of(wrt)
    check_inputs(xs, grad=grad and site is None, name=name)
    with contextlib.ExitStack() as stack:
        if torch.is_inference_mode_enabled():  # the call runs as under no_grad: autograd may record
            stack.enter_context(torch.inference_mode(False))
            xs, args, kwargs = _ordinary((xs, args, kwargs))
        stack.enter_context(_fold.examples(xs, args, kwargs))
        stack.enter_context(guard(f))
        yield Call(f, xs, is_tuple, args, kwargs, opts, site=site, rules=rules, rules_key=rules_key)


def _ordinary(tree):
    """Tensors made under ``torch.inference_mode()`` as ordinary copies (autograd can save
    those); everything else as it is."""
    return tree_map(lambda t: t.clone() if isinstance(t, Tensor) and t.is_inference() else t, tree)


def check_fn(f: Callable, name: str = "f") -> None:
    if not callable(f):
        raise TypeError(f"{name} must be a callable returning scores, got {type(f).__name__}")


def mark(attr_fn, name: str, returns_delta: bool = False):
    attr_fn.__name__ = name
    attr_fn.__qualname__ = name
    attr_fn.returns_delta = returns_delta
    attr_fn.is_attribution = True
    return attr_fn


def _not_attribution(attr_fn: Any) -> str | None:
    """Why ``attr_fn`` is a model or a score function rather than an attribution function."""
    from ._layers import Neuron
    from ._scores import Outputs, Target

    if isinstance(attr_fn, torch.nn.Module):
        return "a model (nn.Module)"
    if isinstance(attr_fn, (Target, Outputs, Neuron)):
        return f"a score function ({attr_fn!r})"
    return None


def check_attr_fn(attr_fn: Any, what: str) -> None:
    """``attr_fn`` must be an attribution function ``x -> attributions shaped like x``."""
    if not callable(attr_fn):
        raise TypeError(f"{what} needs an attribution function, got {type(attr_fn).__name__}")
    why = _not_attribution(attr_fn)
    if why is not None:
        raise TypeError(
            f"{what} needs an attribution function such as fa.saliency(f), got {why}; wrap it in a method first"
        )


def attributions_of(res: Any, xs: tuple[Tensor, ...], what: str, attr_fn: Any = None) -> tuple[tuple[Tensor, ...], bool]:
    """An attribution function's result checked against its inputs: one tensor per input
    shaped like it (or ``[N, K, ...]``), or a layer's map (one row per input row; from a
    funcattr method, or with spatial dims). Scores ``[N]`` and logits ``[N, C]`` are refused:
    they mean a model or a score function was passed where a method belongs."""
    parts, is_tuple = as_tuple(res, "attributions")
    rows = xs[0].shape[0]
    like_inputs = len(parts) == len(xs) and all(
        p.shape == x.shape or (p.dim() == x.dim() + 1 and p.shape[0] == x.shape[0] and p.shape[2:] == x.shape[1:])
        for p, x in zip(parts, xs)
    )
    layer_map = all(p.dim() > 0 and p.shape[0] == rows for p in parts) and (
        getattr(attr_fn, "is_attribution", False) or all(p.dim() > 2 for p in parts)
    )
    if not (like_inputs or layer_map):
        raise TypeError(
            f"{what}: the attribution function returned {[tuple(p.shape) for p in parts]} for inputs of shape "
            f"{[tuple(x.shape) for x in xs]}; it must return attributions shaped like its inputs (did you pass a model "
            "or a score function? wrap it in a method such as fa.saliency(f))"
        )
    return parts, is_tuple
