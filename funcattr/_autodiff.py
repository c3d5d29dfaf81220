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
from ._sites import Site, capture, read

__all__ = ["traced", "value_and_grad", "evaluate", "evaluate_batches", "grads", "site_value"]


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
    site: Site | None = None,
    mode: str = "leaf",
    inject: Tensor | None = None,
    rules: Callable | None = None,
):
    """The forward of ``f`` with autograd on, for the block: yields ``(scores[N, K], leaves,
    capture)``. Without a site, or with ``mode="observe"``, the leaves are the inputs and the
    site's value (``capture.value``) stays in the graph between them and the scores; with
    ``mode="leaf"`` (or ``inject``) the leaf is the site's value and the forward before the
    site records nothing."""
    kwargs = kwargs or {}
    rows = xs[0].shape[0]
    try:
        with _autograd_on(), _rules_ctx(rules, xs):
            if site is None or mode == "observe":
                leaves = tuple(_ordinary(x).requires_grad_(True) for x in xs)
                with capture(site) if site is not None else contextlib.nullcontext() as box:
                    s = as_scores(f(*leaves, *args, **kwargs), rows)
            else:
                inj = None if inject is None else _ordinary(inject).requires_grad_(True)
                with torch.no_grad(), capture(site, "leaf" if inj is None else "inject", inject=inj, grad_after=True) as box:
                    s = as_scores(f(*xs, *args, **kwargs), rows)
                leaves = (box.value,)
            if not s.requires_grad:
                raise ValueError(
                    "the scores do not depend on "
                    + (site.name if site is not None and mode != "observe" else "the inputs")
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
    site: Site | None = None,
    inject: Tensor | None = None,
    rules: Callable | None = None,
    with_value: bool = False,
):
    """``(scores[N, K], grads)``; grads are w.r.t. ``xs`` or the site's value, each
    ``[N, K, ...]`` in that tensor's dtype. ``with_value=True`` appends the site's value
    (detached). ``inject`` replaces the site's value (gradients are then w.r.t. it)."""
    with traced(f, xs, args, kwargs, site=site, inject=inject, rules=rules) as (s, leaves, _):
        gs = grads(s, leaves)
    out = s.detach(), tuple(g.to(x.dtype) for g, x in zip(gs, leaves))
    return (*out, leaves[0].detach()) if with_value else out


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


def site_value(f: Callable, site: Site, xs: tuple[Tensor, ...], args: tuple = (), kwargs: dict | None = None) -> Tensor:
    """The site's value (detached) when ``f`` runs on ``xs``; the forward stops there."""
    with torch.no_grad():
        return read(f, site, xs, args, kwargs).detach()
