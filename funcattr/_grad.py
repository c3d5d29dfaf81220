"""Gradient primitives: scores and their gradients for one folded chunk.

``value_and_grad(f, xs, args, kwargs)`` returns ``scores[N, K]`` and, for each input,
``grad[N, K, ...]``: one forward, and for K > 1 one backward with K cotangents batched by
vmap (``is_grads_batched``), never a loop over targets.

With ``site=`` the gradient is taken with respect to a module's output (or, with
``fa.input_of(module)``, its input) instead of the inputs. The module's value can be read
(``capture``) or replaced (``inject=``) for that call; the temporary forward hook is removed
before returning, so nothing stays attached to the model.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ._scores import as_scores

__all__ = ["InputOf", "input_of", "Site", "site_of", "value_and_grad", "forward", "layer_values"]


class InputOf:
    """Marks a module's *input* as the place to attribute to: ``wrt=fa.input_of(layer)``."""

    def __init__(self, module: nn.Module):
        if not isinstance(module, nn.Module):
            raise TypeError(f"fa.input_of needs an nn.Module, got {type(module).__name__}")
        self.module = module

    def __repr__(self):
        return f"fa.input_of({type(self.module).__name__})"


def input_of(module: nn.Module) -> InputOf:
    """``wrt=fa.input_of(layer)`` attributes to the tensor going *into* ``layer``."""
    return InputOf(module)


class Site:
    """A module's output (or input) inside ``f``."""

    def __init__(self, module: nn.Module, of_input: bool):
        self.module = module
        self.of_input = of_input

    @property
    def name(self) -> str:
        kind = "input of" if self.of_input else "output of"
        return f"the {kind} {type(self.module).__name__}"

    @contextlib.contextmanager
    def hook(self, inject: Tensor | None = None, detach: bool = True, grad_after: bool = False):
        """While active, the site's value is captured into ``box["value"]`` (as a fresh leaf
        that requires grad when ``detach``) or replaced by ``inject``. With ``grad_after``,
        autograd is switched on once the site has run, so a forward started under
        ``no_grad`` records only the part after the site (all a site gradient needs)."""
        box: dict[str, Any] = {"calls": 0}

        def take(value):
            box["calls"] += 1
            if box["calls"] > 1:
                raise RuntimeError(
                    f"wrt={type(self.module).__name__} runs more than once inside f; attribute to a module "
                    "that runs once per forward (wrap each use in its own module)"
                )
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"{self.name} is a {type(value).__name__}, not a Tensor; attribute to a layer whose "
                    f"{'input' if self.of_input else 'output'} is a single tensor"
                )
            if inject is not None:
                if inject.shape != value.shape:
                    raise ValueError(f"{self.name}: injected shape {tuple(inject.shape)} != {tuple(value.shape)}")
                new = inject
            elif detach:
                new = value.detach().requires_grad_(True)
            else:
                new = value
            box["value"] = new
            if grad_after:
                torch.set_grad_enabled(True)
            # an in-place layer (ReLU(inplace=True)) must not overwrite the value we keep
            return new.clone() if self.of_input else new

        if self.of_input:

            def pre(mod, args, kwargs):
                if len(args) < 1:
                    raise TypeError(f"{self.name}: the module was called without a positional input")
                return (take(args[0]), *args[1:]), kwargs

            handle = self.module.register_forward_pre_hook(pre, with_kwargs=True)
        else:

            def post(mod, args, out):
                return take(out)

            handle = self.module.register_forward_hook(post)
        try:
            yield box
        finally:
            handle.remove()
        if box["calls"] == 0:
            raise ValueError(
                f"the layer {type(self.module).__name__} never ran inside f; pass a module that the model "
                "calls in its forward"
            )


def site_of(wrt: Any) -> Site | None:
    if wrt is None:
        return None
    if isinstance(wrt, InputOf):
        return Site(wrt.module, True)
    if isinstance(wrt, nn.Module):
        return Site(wrt, False)
    raise TypeError(f"wrt must be an nn.Module or fa.input_of(module), got {type(wrt).__name__}")


def _grads(s: Tensor, leaves: tuple[Tensor, ...], k_form: bool) -> tuple[Tensor, ...]:
    """d scores[:, k] / d leaves for every k → tuple of [N, K, ...] (K = 1 when not k_form)."""
    K = s.shape[1]
    if K == 1:
        gs = torch.autograd.grad(s.sum(), leaves, allow_unused=True)
        return tuple(_zero_if_none(g, x).unsqueeze(1) for g, x in zip(gs, leaves))
    eye = torch.eye(K, dtype=s.dtype, device=s.device)
    cot = eye[:, None, :].expand(K, s.shape[0], K)
    gs = torch.autograd.grad(s, leaves, grad_outputs=cot, is_grads_batched=True, allow_unused=True)
    return tuple(
        g.movedim(0, 1) if g is not None else x.new_zeros(x.shape[0], K, *x.shape[1:])
        for g, x in zip(gs, leaves)
    )


def _zero_if_none(g, x):
    return torch.zeros_like(x) if g is None else g


def value_and_grad(
    f: Callable,
    xs: tuple[Tensor, ...],
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    site: Site | None = None,
    inject: Tensor | None = None,
    with_value: bool = False,
):
    """``(scores[N, K], grads, k_form)``; grads are w.r.t. ``xs`` or the site's value,
    each ``[N, K, ...]``, in the inputs' dtype. ``with_value=True`` appends the site's value
    (detached). With a site, the forward up to the site runs without autograd."""
    kwargs = kwargs or {}
    if site is None:
        with torch.enable_grad():
            leaves = tuple(x.detach().requires_grad_(True) for x in xs)
            s, k_form = as_scores(f(*leaves, *args, **kwargs))
    else:
        if inject is not None:
            inject = inject.detach().requires_grad_(True)
        with torch.no_grad(), site.hook(inject=inject, grad_after=True) as box:
            s, k_form = as_scores(f(*xs, *args, **kwargs))
        leaves = (box["value"],)
    if not s.requires_grad:
        raise ValueError(
            "the scores do not depend on the inputs through differentiable operations"
            + (f" ({site.name})" if site else "")
        )
    grads = _grads(s, leaves, k_form)
    dtypes = [x.dtype for x in xs] if site is None else [leaves[0].dtype]
    out = s.detach(), tuple(g.to(dt) for g, dt in zip(grads, dtypes)), k_form
    return (*out, leaves[0].detach()) if with_value else out


def forward(f: Callable, xs: tuple[Tensor, ...], args: tuple = (), kwargs: dict | None = None) -> tuple[Tensor, bool]:
    """Scores without gradients: ``([N, K], k_form)``."""
    with torch.no_grad():
        return as_scores(f(*xs, *args, **(kwargs or {})))


def layer_values(f: Callable, site: Site, xs: tuple[Tensor, ...], args: tuple = (), kwargs: dict | None = None) -> Tensor:
    """The site's value (detached) when ``f`` runs on ``xs``."""
    with torch.no_grad(), site.hook(detach=False) as box:
        f(*xs, *args, **(kwargs or {}))
    return box["value"].detach()
