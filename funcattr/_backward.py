"""Methods that change how gradients flow through nonlinearities: guided backprop,
deconvolution, DeepLift, DeepLift SHAP and guided GradCAM.

Each is an ordinary gradient of ``f`` taken while ``_rules`` swaps rule Functions in for the
nonlinearities ``f`` calls (DESIGN §4): no module hooks, nothing left behind, and functional
activations (``F.relu``, ``torch.sigmoid``, ``Tensor.relu``, in-place and reused ones) get the
rule exactly like ``nn.ReLU`` modules. DeepLift evaluates ``[x; baseline]`` as one batch of
``2B`` rows (two folded work items); DeepLift SHAP folds every (example, baseline) pair.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from . import _executor, _fold, _rules
from ._call import Call, begin, check_fn, mark
from ._gradient import _distribution
from ._inputs import as_tuple, broadcast_baseline, restore

__all__ = ["guided_backprop", "deconvolution", "deeplift", "deeplift_shap", "guided_gradcam"]


# --------------------------------------------------------------------------- modified ReLU gradients


def _modified_relu(f: Callable, kind: str, name: str, wrt, batch_size, precision, progress):
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)

    rules = _rules.mode(kind)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt, rules=rules, rules_key=kind) as c:
            gs = c.run(lambda lo, hi: tuple(g[0] for g in c.grads(c.xs, 1)), 1, "grad", desc=name.replace("_", " "))
            return c.finish(gs)

    return mark(attr_fn, name)


def guided_backprop(f: Callable, *, wrt=None, batch_size=None, precision=None, progress=None):
    """Guided backpropagation (Springenberg et al. 2015), Captum's ``GuidedBackprop``: the
    gradient with every ReLU's backward replaced by ``relu(grad_out) · [x > 0]``::

        fa.guided_backprop(fa.target(model, 3))(x)     # [B, 3, H, W] -> [B, 3, H, W]

    Every ReLU that runs inside ``f`` gets the rule — ``nn.ReLU`` modules, ``F.relu``,
    ``torch.relu``, ``Tensor.relu``, in-place and reused ones (Captum's hooks see only
    ``nn.ReLU`` modules). Other nonlinearities keep their plain gradients, as in Captum.
    """
    return _modified_relu(f, "guided", "guided_backprop", wrt, batch_size, precision, progress)


def deconvolution(f: Callable, *, wrt=None, batch_size=None, precision=None, progress=None):
    """Deconvolution (Zeiler & Fergus 2014), Captum's ``Deconvolution``: the gradient with
    every ReLU's backward replaced by ``relu(grad_out)`` (the forward mask is ignored)::

        fa.deconvolution(fa.target(model, 3))(x)       # [B, 3, H, W] -> [B, 3, H, W]
    """
    return _modified_relu(f, "deconv", "deconvolution", wrt, batch_size, precision, progress)


# --------------------------------------------------------------------------- DeepLift


def _pairs(xs: tuple[Tensor, ...], bs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``[x rows; baseline rows]``: the DeepLift batch, two folded items of ``[N, ...]``."""
    return tuple(torch.cat([x, b.expand_as(x)]) for x, b in zip(xs, bs))


def _deeplift_step(c: Call, xs, bs, m: int, multiply_by_inputs: bool) -> tuple[Tensor, ...]:
    """Attributions of ``m`` folded items of (x, baseline) pairs, summed over the items:
    ``xs``/``bs`` are ``[m, B, ...]``. Returns ``[B, K, ...]`` per input (or the layer)."""
    pts = _pairs(tuple(_fold.fold(x) for x in xs), tuple(_fold.fold(b) for b in bs))
    if c.site is None:
        gs = tuple(g[:m] for g in c.grads(pts, 2 * m))  # the x half: [m, B, K, ...]
        if not multiply_by_inputs:
            return tuple(g.sum(0) for g in gs)
        return tuple((g * (x - b).unsqueeze(2)).sum(0) for g, x, b in zip(gs, xs, bs))
    gs, values = c.grads_and_value(pts, 2 * m)
    gs = tuple(g[:m] for g in gs)
    if not multiply_by_inputs:
        return tuple(g.sum(0) for g in gs)
    n = m * c.B
    diffs = tuple((v[:n] - v[n:]).view(m, c.B, *v.shape[1:]) for v in values)
    return tuple((g * d.unsqueeze(2)).sum(0) for g, d in zip(gs, diffs))


def deeplift(
    f: Callable,
    baseline: Any = 0.0,
    multiply_by_inputs: bool = True,
    return_delta: bool = False,
    *,
    eps: float = _rules.EPS,
    wrt=None,
    batch_size=None,
    precision=None,
    progress=None,
):
    """DeepLift with the Rescale rule (Shrikumar et al. 2017), Captum's ``DeepLift``; with
    ``wrt=layer`` its ``LayerDeepLift``::

        dl = fa.deeplift(fa.target(model, 3), baseline=0.0)
        dl(x)                                         # [B, 3, H, W] -> [B, 3, H, W]
        fa.deeplift(fa.outputs(model, [3, 5]))(x)    # [B, 2, 3, H, W]

    ``x`` and the baseline run as one batch of ``2B`` rows; every ReLU, ELU, LeakyReLU,
    Sigmoid, Tanh, Softplus, GELU and SiLU inside ``f`` — module or functional — back-propagates
    the multiplier ``Δout/Δin`` (the plain gradient where ``|Δin| < eps``); max-pool and softmax
    use Captum's rules. Another elementwise nonlinearity on the batch (``torch.exp``,
    ``F.hardswish``, ...) raises ``NotImplementedError`` naming it. The attribution is
    ``(x − baseline) ×`` that gradient (``multiply_by_inputs=False``: the gradient alone);
    with ``wrt=layer``, ``(a(x) − a(baseline)) ×`` the gradient w.r.t. the layer's value,
    where ``baseline`` is still an *input* baseline. ``f`` must keep the batch in dim 0 at the
    nonlinearities (row ``i`` of the batch pairs with row ``i + B``).

    Where Captum 0.9.0's hooks go wrong, funcattr keeps DeepLift's definition (and
    completeness): two nonlinear modules chained directly (``ReLU`` → ``MaxPool2d``) or the
    input of a nonlinear layer (Captum's hook reads a stale gradient), overlapping max-pool
    windows (Captum's ``max_unpool`` drops all but one), the softmax normalization (Captum
    subtracts the mean over the whole batch, mixing examples; here the mean over the softmax
    dim, which is Captum's number for one example), and reused or functional activations.
    """
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)

    rules = _rules.mode("deeplift", eps)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt, rules=rules, rules_key=("deeplift", eps)) as c:
            bs = broadcast_baseline(baseline, c.xs)
            xs1 = tuple(x.unsqueeze(0) for x in c.xs)
            bs1 = tuple(b.expand_as(x).unsqueeze(0) for b, x in zip(bs, c.xs))
            attrs = c.run(lambda lo, hi: _deeplift_step(c, xs1, bs1, 1, multiply_by_inputs), 1, "deeplift", multiply_by_inputs, desc="deeplift")
            delta = c.delta(attrs, bs, c.xs) if return_delta else None
            return c.finish(attrs, delta)

    return mark(attr_fn, "deeplift", return_delta)


def deeplift_shap(
    f: Callable,
    baselines: Any,
    multiply_by_inputs: bool = True,
    return_delta: bool = False,
    *,
    eps: float = _rules.EPS,
    wrt=None,
    batch_size=None,
    precision=None,
    progress=None,
):
    """DeepLift SHAP, Captum's ``DeepLiftShap`` (with ``wrt=layer`` its ``LayerDeepLiftShap``):
    the mean over a baseline distribution ``baselines[N_b, ...]`` (or a callable returning one)
    of DeepLift against each baseline. All (example, baseline) pairs are folded into one batch
    and evaluated in memory-sized chunks::

        fa.deeplift_shap(f, baselines=background[:16])(x)   # [B, 3, H, W] -> [B, 3, H, W]

    ``return_delta=True`` gives per example ``Σ attr − (f(x) − mean_j f(b_j))``, the mean of
    Captum's per-pair deltas.
    """
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)

    rules = _rules.mode("deeplift", eps)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt, rules=rules, rules_key=("deeplift", eps)) as c:
            dist = _distribution(baselines, c.xs)
            Nb, B = dist[0].shape[0], c.B

            def items(lo, hi):
                m = hi - lo
                xs = tuple(x.unsqueeze(0).expand(m, *x.shape) for x in c.xs)
                bs = tuple(d[lo:hi].unsqueeze(1).expand(m, B, *d.shape[1:]) for d in dist)
                return xs, bs, m

            def step(lo, hi):
                xs, bs, m = items(lo, hi)
                return _deeplift_step(c, xs, bs, m, multiply_by_inputs)

            total = c.run(step, Nb, "deeplift_shap", multiply_by_inputs, desc="deeplift shap")
            attrs = tuple(t / Nb for t in total)
            delta = None
            if return_delta:

                def scores(lo, hi):
                    _, bs, m = items(lo, hi)
                    return c.scores(tuple(_fold.fold(b) for b in bs), m).sum(0)

                s_base = c.run(scores, Nb, "deeplift_shap_scores", desc="deeplift shap delta") / Nb
                delta = c.gap(attrs, c.scores(c.xs, 1)[0], s_base)
            return c.finish(attrs, delta)

    return mark(attr_fn, "deeplift_shap", return_delta)


# --------------------------------------------------------------------------- guided GradCAM


def guided_gradcam(
    f: Callable, layer: Any, mode: str = "nearest", *, batch_size=None, precision=None, progress=None
):
    """Guided GradCAM (Selvaraju et al. 2017), Captum's ``GuidedGradCam``: guided backprop
    times ``relu(GradCAM)`` of ``layer`` upsampled to the input's spatial size (``mode`` as in
    ``fa.upsample``)::

        fa.guided_gradcam(fa.target(model, 3), model.layer4)(x)   # [B, 3, H, W] -> [B, 3, H, W]

    ``layer`` is a module (its output) or ``fa.input_of(module)`` (Captum's
    ``attribute_to_layer_input``).
    """
    from ._layers import gradcam, upsample

    check_fn(f)
    cam_fn = gradcam(f, layer, relu=True, batch_size=batch_size, precision=precision, progress=progress)
    gbp_fn = guided_backprop(f, batch_size=batch_size, precision=precision, progress=progress)

    def attr_fn(x, *args, **kwargs):
        cam = cam_fn(x, *args, **kwargs)  # [B, 1, *s] or [B, K, 1, *s]
        gbp, _ = as_tuple(gbp_fn(x, *args, **kwargs), "attributions")
        xs, is_tuple = as_tuple(x)
        out = []
        for i, (g, xi) in enumerate(zip(gbp, xs)):
            size = tuple(xi.shape[2:])
            k_form = g.dim() == xi.dim() + 1
            if len(size) != cam.dim() - (3 if k_form else 2):
                where = f"x[{i}]" if is_tuple else "x"
                raise ValueError(
                    f"guided_gradcam: {where} of shape {tuple(xi.shape)} has {len(size)} spatial dims but the "
                    f"GradCAM map of the layer has shape {tuple(cam.shape)}; the layer must keep the input's spatial layout"
                )
            out.append(g * upsample(cam, size, mode).to(g.dtype))
        return restore(tuple(out), is_tuple)

    return mark(attr_fn, "guided_gradcam")
