"""Layer and neuron attribution: GradCAM, CAM, activations, conductance, neurons.

Layer attribution by gradients is not here: ``fa.integrated_gradients(f, wrt=layer)`` *is*
Captum's LayerIntegratedGradients, ``fa.input_x_gradient(f, wrt=layer)`` its
LayerGradientXActivation, ``fa.saliency(f, abs=False, wrt=layer)`` the plain layer gradient
(LayerGradientXActivation with ``multiply_by_inputs=False``). This
module holds the methods that need a layer's value and its gradient from the *same* forward
(GradCAM, CAM, conductance), the activation reader, and ``fa.neuron``, which turns one neuron
of a layer into a score function so that any method applied to it is neuron attribution.

Every layer is named by a module (its output) or ``fa.input_of(module)`` (its input); the
module's value is read with a hook of the call's own (``_sites.capture``) that is gone when
the call returns.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _executor, _fold, _quadrature
from ._autodiff import grads, traced
from ._call import begin, check_fn, mark
from ._inputs import as_tuple, broadcast_baseline, check_inputs
from ._sites import InputOf, Sites, read, site_of

__all__ = ["gradcam", "upsample", "cam", "activation", "conductance", "neuron", "Neuron"]


# --------------------------------------------------------------------------- shared pieces


def _layer_site(layer: Any, name: str = "layer") -> Sites:
    """A module, ``fa.input_of(module)``, or a list of them (several layers in one forward)."""
    if isinstance(layer, (nn.Module, InputOf, list, tuple)):
        return site_of(layer, name)
    raise TypeError(f"{name} must be an nn.Module, fa.input_of(module) or a list of them, got {type(layer).__name__}")


def _spatial(t: Tensor, first: int) -> tuple[int, ...]:
    return tuple(range(first, t.dim()))


# --------------------------------------------------------------------------- GradCAM / CAM


def gradcam(
    f: Callable,
    layer: Any,
    relu: bool = False,
    *,
    sum_channels: bool = True,
    batch_size=None,
    precision=None,
    progress=None,
):
    """GradCAM (Selvaraju et al. 2017), Captum's ``LayerGradCam`` exactly: the gradient of the
    score w.r.t. the layer's output is averaged over the spatial dims (every dim from 2 on),
    multiplied by the activations and summed over channels; ``relu=True`` keeps the positive
    part. One forward and one backward::

        cam = fa.gradcam(fa.target(model, 3), model.layer4)(x)   # [B, 3, 224, 224] -> [B, 1, 7, 7]
        fa.upsample(cam, x.shape[-2:])                             # [B, 1, 224, 224]
        fa.gradcam(fa.outputs(model, [3, 5]), model.layer4)(x)     # [B, 2, 1, 7, 7]

    ``layer`` is a module (its output) or ``fa.input_of(module)`` (its input; Captum's
    ``attribute_to_layer_input``). ``sum_channels=False`` (Captum's ``attr_dim_summation``)
    returns the per-channel terms ``[B, C, *spatial]``. A layer without spatial dims
    (``[B, C]``) gets no averaging, like Captum's. A layer whose output is a tuple (or whose
    several inputs, with ``fa.input_of``) gives a tuple of maps, one per tensor; a list of
    layers gives a list of maps, from one forward.
    """
    check_fn(f)
    _layer_site(layer)  # validate now, at construction
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=layer) as c:

            def one(g, A):
                g = g[0]  # [B, K, C, *spatial]
                if g.dim() > 3:
                    g = g.mean(_spatial(g, 3), keepdim=True)
                t = g * A.unsqueeze(1)
                if sum_channels:
                    t = t.sum(2, keepdim=True)
                return F.relu(t) if relu else t

            def step(lo, hi):
                gs, values = c.grads_and_value(c.xs, 1)
                return tuple(one(g, A) for g, A in zip(gs, values))

            return c.finish(c.run(step, 1, "gradcam", relu, sum_channels, desc="gradcam"))

    return mark(attr_fn, "gradcam")


def upsample(attr: Tensor, size, mode: str = "nearest") -> Tensor:
    """Resize a layer map to the input's spatial size (Captum's
    ``LayerAttribution.interpolate``: ``F.interpolate`` over the spatial dims)::

        fa.upsample(cam, x.shape[-2:])             # [B, 1, 7, 7] -> [B, 1, 224, 224]
        fa.upsample(cam_k, (224, 224), "bilinear") # [B, K, 1, 7, 7] -> [B, K, 1, 224, 224]

    ``size`` is the new spatial shape; its length says how many trailing dims are spatial, so a
    K-target map ``[B, K, C, *spatial]`` is resized per target. An int ``size`` applies to
    every dim after the first two (``F.interpolate``'s rule).
    """
    if not isinstance(attr, Tensor):
        raise TypeError(f"attr must be a Tensor, got {type(attr).__name__}")
    if isinstance(size, int) and not isinstance(size, bool):
        if attr.dim() < 3:
            raise ValueError(f"attr of shape {tuple(attr.shape)} has no spatial dims to upsample")
        return F.interpolate(attr, size, mode=mode)
    try:
        size = tuple(int(s) for s in size)
    except TypeError:
        raise TypeError(f"size must be an int or a sequence of ints, got {type(size).__name__}") from None
    if not size or any(s < 1 for s in size):
        raise ValueError(f"size must hold positive ints, got {size}")
    n = len(size)
    if attr.dim() == n + 2:
        return F.interpolate(attr, size, mode=mode)
    if attr.dim() == n + 3:  # [B, K, C, *spatial]
        B, K = attr.shape[:2]
        out = F.interpolate(attr.flatten(0, 1), size, mode=mode)
        return out.view(B, K, *out.shape[1:])
    raise ValueError(
        f"attr of shape {tuple(attr.shape)} does not fit size {size}: expected [B, C, *spatial] or "
        f"[B, K, C, *spatial] with {n} spatial dims"
    )


def cam(f: Callable, layer: Any, *, batch_size=None, precision=None, progress=None):
    """Class activation map (Zhou et al. 2016) for networks whose head after ``layer`` is
    global average pooling followed by a linear layer: ``CAM_k = Σ_c w_kc · A_c`` (no bias),
    the classifier's weights applied at every position of the layer's output ``A``::

        f = fa.target(model, 3)                  # model: ... -> layer4 -> avgpool -> fc
        fa.cam(f, model.layer4)(x)               # [B, 3, 224, 224] -> [B, 1, 7, 7]

    The weights are read through the gradient rather than from a named ``fc``: for such a head
    ``∂score/∂A_c(i, j) = w_kc / (H·W)`` at every position, so ``CAM = H·W · Σ_c ∇_c · A_c``.
    ``fa.cam`` checks that requirement and raises a ValueError when the head does not fit: the
    gradient must be the same at every position of each channel (the score sees ``A`` only
    through its spatial mean) and the same again with ``A`` replaced by zeros (the score is
    affine in those means). For any other head use ``fa.gradcam`` (which, on a head that fits,
    is this map divided by ``H·W``). K-score functions give ``[B, K, 1, *spatial]``.
    """
    check_fn(f)
    site = _layer_site(layer)
    opts = _executor.resolve(batch_size, precision, progress)
    what = "fa.cam needs a layer whose output the score reads only through global average pooling and a linear layer"

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=layer) as c:
            return c.finish(c.run(lambda lo, hi: step(c), 1, "cam", desc="cam"))

    def step(c):
        gs, values = c.grads_and_value(c.xs, 1)
        if len(gs) != 1:
            raise ValueError(f"{what}; {site.name} holds {len(gs)} tensors: give one layer with a single output")
        g, A = gs[0][0], values[0]  # [B, K, C, *spatial], [B, C, *spatial]
        if g.dim() < 4:
            raise ValueError(f"{what}; {site.name} has shape {tuple(A.shape)}, with no spatial dims")
        sp = _spatial(g, 3)
        mean = g.mean(sp, keepdim=True)
        tol = (2e-2 if c.opts.precision == "bf16" else 1e-4) * g.abs().amax().clamp_min(1e-30)
        var = (g - mean).abs().amax()
        if var > tol:
            raise ValueError(
                f"{what} (CAM, Zhou et al.): the gradient w.r.t. {site.name} varies over the spatial "
                f"positions of a channel (by {var.item():.3g}, max |grad| {g.abs().amax().item():.3g}), so "
                "the head after it is not global-average-pool + linear. Use fa.gradcam(f, layer) instead."
            )
        (g0,) = c.grads(c.xs, 1, inject=(torch.zeros_like(A),))
        g0 = g0[0]
        gap = (g0 - g).abs().amax()
        if gap > tol:
            raise ValueError(
                f"{what} (CAM, Zhou et al.): the gradient w.r.t. {site.name} changes when the activations "
                f"change (by {gap.item():.3g}), so the head after the average pool is not linear. "
                "Use fa.gradcam(f, layer) instead."
            )
        hw = A[0, 0].numel()
        return ((mean * A.unsqueeze(1)).sum(2, keepdim=True) * hw,)

    return mark(attr_fn, "cam")


# --------------------------------------------------------------------------- reading a layer


def activation(model: Callable, layer: Any):
    """A layer's activations (Captum's ``LayerActivation``), without gradients::

        act = fa.activation(model, model.layer3)     # or fa.input_of(model.layer3)
        act(x)                                        # [B, 3, 224, 224] -> [B, 256, 14, 14]

    ``act(x, *args, **kwargs)`` calls ``model(*x, *args, **kwargs)`` and stops the forward as
    soon as the layer has run.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    site = _layer_site(layer)

    def act_fn(x, *args, **kwargs):
        xs, _ = as_tuple(x)
        check_inputs(xs, grad=False)
        with torch.no_grad():
            box = read(model, site, xs, args, kwargs)
        return box.layout.restore(tuple(v.detach() for v in box.values))

    act_fn.__name__ = act_fn.__qualname__ = "activation"
    return act_fn


class Neuron:
    """``fa.neuron(model, layer, index)``: ``x -> Tensor[B]``, one neuron of a layer as the score.

    Callable like any score function; ``.select(value)`` applies the index to a layer value.
    """

    k_form = False

    def __init__(self, model: Callable, layer: Any, index: Any):
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        self.site = _layer_site(layer)
        self.index = _check_index(index)

    def __call__(self, *inputs, **kwargs):
        box = read(self.model, self.site, inputs, (), kwargs)
        return self.select(box.layout.restore(box.values))

    def select(self, value: Tensor | tuple) -> Tensor:
        """The neuron's value per row of a layer value ``[N, *layer] -> [N]`` (a callable
        index also gets a layer's tuple of tensors)."""
        idx = self.index
        N = (value[0] if isinstance(value, (tuple, list)) else value).shape[0]
        if callable(idx):
            out = idx(value)
            if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != N or out[0].numel() != 1:
                raise ValueError(
                    f"the neuron index function must return one value per example, shape ({N},), got "
                    f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
                )
            return out.reshape(N)
        if isinstance(value, (tuple, list)):
            raise ValueError(
                f"{self.site.name} gives {len(value)} tensors; name the neuron with a callable index "
                "(value tuple -> one value per example)"
            )
        shape = tuple(value.shape[1:])
        where = f"neuron index {idx} for {self.site.name}, whose values have shape {shape} per example"
        if len(idx) > len(shape):
            raise ValueError(f"{where}: too many indices")
        for d, i in enumerate(idx):
            if isinstance(i, int) and not -shape[d] <= i < shape[d]:
                raise ValueError(f"{where}: index {i} is out of range for dim {d} of size {shape[d]}")
        has_slice = any(isinstance(i, slice) for i in idx)
        if not has_slice and len(idx) < len(shape) and any(d != 1 for d in shape[len(idx) :]):
            raise ValueError(
                f"{where}: give {len(shape)} indices to name one neuron (or slices to sum a group of them)"
            )
        out = value[(slice(None), *idx)]
        if not has_slice and out.dim() > 1:  # a partial index over singleton dims names one neuron
            out = out.reshape(N)
        if has_slice:
            if out[0].numel() == 0:
                raise ValueError(f"{where}: the slices select no neurons")
            out = out.reshape(N, -1).sum(1)
        return out

    def __repr__(self):
        return f"fa.neuron({type(self.model).__name__}, {self.site.name}, {self.index!r})"


def _check_index(index: Any):
    if callable(index):
        return index
    if isinstance(index, Tensor) and index.dim() == 0 and not index.is_floating_point():
        index = int(index)
    if isinstance(index, (int, slice)) and not isinstance(index, bool):
        index = (index,)
    if isinstance(index, list):
        index = tuple(index)
    if not isinstance(index, tuple) or not index or not all(
        isinstance(i, slice) or (isinstance(i, int) and not isinstance(i, bool)) for i in index
    ):
        raise TypeError(
            f"index must be an int, a tuple of ints and slices, or a callable on the layer's value "
            f"returning one value per example, got {index!r}"
        )
    return index


def neuron(model: Callable, layer: Any, index: Any) -> Neuron:
    """One neuron of a layer as the function to explain: ``x[B, ...] -> Tensor[B]``. Any method
    applied to it is neuron attribution (Captum's Neuron* classes)::

        n = fa.neuron(model, model.layer3, (12, 4, 4))        # channel 12 at (4, 4)
        fa.saliency(n, abs=False)(x)                           # NeuronGradient
        fa.integrated_gradients(n)(x)                          # NeuronIntegratedGradients
        fa.gradient_shap(n, baselines)(x)                      # NeuronGradientShap
        fa.conductance(fa.target(model, 3), n)(x)              # NeuronConductance

    ``index`` names the neuron in the layer's value without the batch dim: an int, a tuple of
    ints (fewer than the layer's dims when the rest are singletons, ``(c,)`` on ``[B, C, 1, 1]``),
    a tuple with slices (the selected neurons are summed, as in Captum), or a callable
    ``value[N, *layer] -> Tensor[N]`` — any aggregate per example, e.g. ``lambda h: h.sum((1, 2, 3))``
    (it gets the tuple of tensors of a layer with a tuple output). ``fa.input_of(module)`` reads the module's input
    (Captum's ``attribute_to_neuron_input``). The forward stops once the layer has run, so
    the rest of the model is not evaluated; the model's output is not used.
    """
    return Neuron(model, layer, index)


# --------------------------------------------------------------------------- conductance


def conductance(
    f: Callable,
    layer: Any,
    steps: int = 50,
    method: str = "gausslegendre",
    baseline: Any = 0.0,
    return_delta: bool = False,
    *,
    batch_size=None,
    precision=None,
    progress=None,
):
    """Conductance (Dhamdhere et al. 2018): the flow of integrated gradients through a hidden
    layer or one neuron, along the straight path from ``baseline`` to ``x`` in input space.

    ``layer`` a module (or ``fa.input_of(module)``): Captum's ``LayerConductance``, one value
    per unit of the layer, ``Σ_k ∇_h f(x_k) · (h(x_{k+1}) − h(x_k))`` over Captum's
    ``steps + 1`` path points (its numbers exactly)::

        fa.conductance(fa.target(model, 3), model.layer2)(x)   # [B, 3, H, W] -> [B, 128, H/8, W/8]

    ``layer`` a neuron, ``fa.neuron(model, layer, index)``: Captum's ``NeuronConductance``,
    attributions to the *inputs* of the flow of ``f`` through that neuron,
    ``(x − b) · Σ_k w_k ∂f/∂n(x_k) · ∂n/∂x(x_k)``::

        n = fa.neuron(model, model.layer2, (5, 3, 3))
        fa.conductance(fa.target(model, 3), n)(x)              # [B, 3, H, W] -> [B, 3, H, W]

    For a neuron index with slices both factors are Captum's: the gradient w.r.t. the summed
    neurons times the sum of the score's gradients w.r.t. each of them.

    The default rule is Gauss-Legendre for both; Captum's NeuronConductance defaults to
    ``method="riemann_trapezoid"`` (whose weights sum to (n − 1)/n); pass that to reproduce
    its default numbers. ``return_delta`` (layer form) gives Σ attr − (f(x) − f(baseline)).
    K-score functions give ``[B, K, ...]``.
    """
    check_fn(f)
    _quadrature.check(method, steps)
    if not isinstance(layer, (Neuron, nn.Module, InputOf)):
        raise TypeError(
            f"layer must be an nn.Module, fa.input_of(module) or fa.neuron(model, layer, index), got {type(layer).__name__}"
        )
    if isinstance(layer, Neuron) and return_delta:
        raise ValueError("return_delta is defined for layer conductance; neuron conductance has no completeness gap")
    opts = _executor.resolve(batch_size, precision, progress)
    if isinstance(layer, Neuron):
        return _neuron_conductance(f, layer, steps, method, baseline, opts)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=layer) as c:
            _check_float(c.xs)
            bs = broadcast_baseline(baseline, c.xs)
            alphas, _ = _quadrature.nodes(method, steps + 1, c.device, c.xs[0].dtype)

            def step(lo, hi):  # terms lo..hi-1 need path points lo..hi (the last one shared with the next chunk)
                m, a = hi - lo + 1, alphas[lo : hi + 1]
                pts = tuple(
                    _fold.fold(b.unsqueeze(0) + a.view(m, *[1] * x.dim()) * (x - b).unsqueeze(0)) for x, b in zip(c.xs, bs)
                )
                gs, hs = c.grads_and_value(pts, m)
                out = []
                for g, h in zip(gs, hs):
                    h = _fold.unfold(h, m)
                    acc = torch.promote_types(g.dtype, torch.float32)
                    out.append((g[:-1].to(acc) * (h[1:] - h[:-1]).unsqueeze(2).to(acc)).sum(0))
                return tuple(out)

            attrs = c.run(step, steps, "conductance", method, desc="conductance")
            delta = c.delta(attrs, bs, c.xs) if return_delta else None
            return c.finish(attrs, delta)

    return mark(attr_fn, "conductance", return_delta)


def _check_float(xs: tuple[Tensor, ...]) -> None:
    for t in xs:
        if not t.is_floating_point():
            raise TypeError(
                f"conductance interpolates the inputs, which must be floating point (got {t.dtype}); for "
                "token ids use fa.integrated_gradients(f, wrt=embedding), which interpolates in the layer"
            )


def _neuron_conductance(f: Callable, nrn: Neuron, steps: int, method: str, baseline: Any, opts):
    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True) as c:
            bs = broadcast_baseline(baseline, c.xs)
            alphas, weights = _quadrature.nodes(method, steps, c.device, c.xs[0].dtype)
            diffs = tuple(x - b for x, b in zip(c.xs, bs))

            def step(lo, hi):
                m, a = hi - lo, alphas[lo:hi]
                pts = tuple(_fold.fold(b.unsqueeze(0) + a.view(m, *[1] * d.dim()) * d.unsqueeze(0)) for b, d in zip(bs, diffs))
                a_, kw = c.tiled(m * c.B)
                # one forward: the neuron's gradient w.r.t. the inputs and the scores' w.r.t. the layer
                with traced(c.f, pts, a_, kw, sites=nrn.site, mode="observe") as (s, leaves, box):
                    if len(box.values) != 1:
                        raise ValueError(f"neuron conductance needs a layer with one tensor; {nrn.site.name} gives {len(box.values)}")
                    h = box.value
                    n = nrn.select(h)
                    if not n.requires_grad:
                        raise ValueError(f"the neuron must depend on the inputs ({nrn!r})")
                    gx = torch.autograd.grad(n.sum(), leaves, retain_graph=True, allow_unused=True)
                    (gh,) = grads(s, (h,))  # [N, K, *layer]
                N, K = gh.shape[:2]
                mid = _fold.unfold(nrn.select(gh.reshape(N * K, *gh.shape[2:])).view(N, K), m)
                acc = torch.promote_types(c.xs[0].dtype, torch.float32)
                w = weights[lo:hi].view(m, 1, 1).to(acc) * mid.to(acc)
                return tuple(
                    torch.zeros(c.B, K, *x.shape[1:], device=c.device, dtype=acc)
                    if gi is None
                    else (w.view(m, c.B, K, *[1] * (x.dim() - 1)) * _fold.unfold(gi, m).unsqueeze(2).to(acc)).sum(0)
                    for gi, x in zip(gx, c.xs)
                )

            total = c.run(step, steps, "neuron_conductance", id(nrn), method, desc="neuron conductance")
            return c.finish(tuple(t * d.unsqueeze(1) for t, d in zip(total, diffs)))

    return mark(attr_fn, "conductance")
