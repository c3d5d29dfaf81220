"""The one primitive for gradients: scores and their gradients at the inputs or at a site,
for one folded chunk, with optional backward rules.

``value_and_grad(f, xs, args, kwargs, site=, inject=, rules=)`` returns ``scores[N, K]`` and,
for each input (or for the site's value), ``grad[N, K, ...]``: one forward, and for K > 1 one
backward with K cotangents batched by vmap (``is_grads_batched``), never a loop over targets.
Every gradient method, layer method and backward-rule method goes through it. It

* turns autograd on itself, so methods work inside ``torch.no_grad()`` and
  ``torch.inference_mode()`` (inputs made there are cloned into ordinary tensors);
* with a site, captures the site's value as a fresh leaf (the forward up to the site runs
  without autograd) and hands the model a clone, so in-place layers after it are fine; the
  hook is this call's and this thread's alone (``_sites``);
* takes backward rules as an argument (``rules=``: a callable giving the context in which
  ``f`` runs, see ``_rules``), active for the whole forward whatever the grad mode.

``evaluate`` is the same evaluation without gradients (perturbation methods, deltas).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor

from ._scores import as_scores, batch_value
from ._sites import Sites, capture, read

__all__ = ["traced", "value_and_grad", "evaluate", "evaluate_batches", "grads", "site_values"]


@contextlib.contextmanager
def _autograd_on():
    """Autograd on, also inside ``torch.inference_mode()``."""
    if torch.is_inference_mode_enabled():
        with torch.inference_mode(False), torch.enable_grad():
            yield
    else:
        with torch.enable_grad():
            yield


def _ordinary(x: Tensor) -> Tensor:
    """``x`` detached; a tensor made under inference mode becomes an ordinary copy."""
    return x.clone() if x.is_inference() else x.detach()


def _rules_ctx(rules, xs):
    return rules(xs) if rules is not None else contextlib.nullcontext()


def grads(s: Tensor, leaves: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """d scores[:, k] / d leaves for every k → tuple of ``[N, K, ...]``."""
    K = s.shape[1]
    if K == 1:
        gs = torch.autograd.grad(s.sum(), leaves, allow_unused=True)
        return tuple((torch.zeros_like(x) if g is None else g).unsqueeze(1) for g, x in zip(gs, leaves))
    eye = torch.eye(K, dtype=s.dtype, device=s.device)
    cot = eye[:, None, :].expand(K, s.shape[0], K)
    gs = torch.autograd.grad(s, leaves, grad_outputs=cot, is_grads_batched=True, allow_unused=True)
    return tuple(
        g.movedim(0, 1) if g is not None else x.new_zeros(x.shape[0], K, *x.shape[1:]) for g, x in zip(gs, leaves)
    )


def _explain_inference(err: RuntimeError) -> None:
    if "Inference tensors" in str(err):
        raise ValueError(
            "the model holds tensors created under torch.inference_mode() (its parameters or buffers), which "
            "autograd cannot use; create or load the model outside inference_mode (torch.no_grad() is fine)"
        ) from None


@contextlib.contextmanager
def traced(
    f: Callable,
    xs: tuple[Tensor, ...],
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    sites: Sites | None = None,
    mode: str = "leaf",
    inject: list[tuple] | None = None,
    rules: Callable | None = None,
):
    """The forward of ``f`` with autograd on, for the block: yields ``(scores[N, K], leaves,
    capture)``. Without sites, or with ``mode="observe"``, the leaves are the inputs and the
    sites' values (``capture.values``) stay in the graph between them and the scores; with
    ``mode="leaf"`` (or ``inject``, per site a tuple) the leaves are the sites' values and the
    forward before the first site records nothing."""
    kwargs = kwargs or {}
    rows = xs[0].shape[0]
    try:
        with _autograd_on(), _rules_ctx(rules, xs):
            if sites is None or mode == "observe":
                leaves = tuple(_ordinary(x).requires_grad_(True) for x in xs)
                with capture(sites) if sites is not None else contextlib.nullcontext() as box:
                    s = as_scores(f(*leaves, *args, **kwargs), rows)
            else:
                inj = None if inject is None else [tuple(_ordinary(t).requires_grad_(True) for t in part) for part in inject]
                with torch.no_grad(), capture(sites, "leaf" if inj is None else "inject", inject=inj, grad_after=True) as box:
                    s = as_scores(f(*xs, *args, **kwargs), rows)
                leaves = box.values
            if not s.requires_grad:
                raise ValueError(
                    "the scores do not depend on "
                    + (sites.name if sites is not None and mode != "observe" else "the inputs")
                    + " through differentiable operations"
                )
            yield s, leaves, box
    except RuntimeError as err:
        _explain_inference(err)
        raise


def value_and_grad(
    f: Callable,
    xs: tuple[Tensor, ...],
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    sites: Sites | None = None,
    inject: list[tuple] | None = None,
    rules: Callable | None = None,
):
    """``(scores[N, K], grads, values, layout)``: grads are w.r.t. ``xs`` or the sites'
    values, each ``[N, K, ...]`` in that tensor's dtype; with sites, also their values
    (detached, flat) and how they map back (``layout``), else ``None, None``. ``inject``
    replaces the sites' values (gradients are then w.r.t. it)."""
    with traced(f, xs, args, kwargs, sites=sites, inject=inject, rules=rules) as (s, leaves, box):
        gs = grads(s, leaves)
    gs = tuple(g.to(x.dtype) for g, x in zip(gs, leaves))
    if sites is None:
        return s.detach(), gs, None, None
    return s.detach(), gs, tuple(v.detach() for v in leaves), box.layout


def evaluate(
    f: Callable, xs: tuple[Tensor, ...], args: tuple = (), kwargs: dict | None = None, *, rules: Callable | None = None
) -> Tensor:
    """Scores without gradients, ``[N, K]`` (``rules``: a context for the forward, as in
    ``value_and_grad``)."""
    with torch.no_grad(), _rules_ctx(rules, xs):
        return as_scores(f(*xs, *args, **(kwargs or {})), xs[0].shape[0])


def evaluate_batches(f: Callable, pts: tuple[Tensor, ...], args: tuple = (), kwargs: dict | None = None) -> Tensor:
    """Values of a function giving one value per batch (a dataset-level loss) at ``m``
    perturbed batches ``pts[i]: [m, B, ...]`` → ``[m]``: vectorized with ``torch.func.vmap``
    over the items, or one item at a time when ``f`` cannot be vmapped (a Python number,
    data-dependent control flow). Arguments are the batch's, untouched."""
    kwargs = kwargs or {}
    rows = pts[0].shape[1]

    def one(*p):
        v = batch_value(f(*p, *args, **kwargs), rows)
        if v is None:
            raise ValueError("the function to explain gave one value for the batch on the unperturbed input but not here")
        return v

    with torch.no_grad():
        try:
            return torch.func.vmap(one)(*pts)
        except Exception:  # noqa: BLE001 - not vmappable: evaluate the items one by one
            return torch.stack([torch.as_tensor(one(*(p[j] for p in pts)), device=pts[0].device) for j in range(pts[0].shape[0])])


def site_values(f: Callable, sites: Sites, xs: tuple[Tensor, ...], args: tuple = (), kwargs: dict | None = None):
    """The sites' values (detached, flat) and their layout when ``f`` runs on ``xs``; the
    forward stops once every site has run."""
    with torch.no_grad():
        box = read(f, sites, xs, args, kwargs)
    return tuple(v.detach() for v in box.values), box.layout
