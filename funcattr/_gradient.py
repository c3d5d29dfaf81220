"""Gradient-family methods, each a short composition of the primitives.

Every method is ``fa.<method>(f, **hyperparameters) -> attr_fn`` and
``attr_fn(x, *args, **kwargs)`` returns attributions shaped like ``x`` (``[B, K, ...]`` when
``f`` returns K scores per example). All integration steps / samples of a call are folded into
the batch and evaluated by the executor in memory-sized chunks.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from . import _executor, _quadrature
from ._call import Call, begin, check_fn, finish, mark
from ._inputs import as_tuple, broadcast_baseline, check_inputs, restore, tile, tile_args

__all__ = [
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "path_integral",
    "gradient_shap",
    "expected_gradients",
    "noise_tunnel",
    "blur_integrated_gradients",
]


# --------------------------------------------------------------------------- local gradients


def saliency(f: Callable, abs: bool = True, *, wrt=None, batch_size=None, precision=None, progress=None):
    """Gradient of the score w.r.t. the input (|grad| by default, Captum's ``Saliency``)::

        fa.saliency(fa.target(model, 3))(x)     # [B, C, H, W] -> [B, C, H, W]
    """
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        c = begin(f, x, args, kwargs, opts, grad=True, wrt=wrt)
        gs = c.run(lambda lo, hi: tuple(g[0] for g in c.grads(c.xs, 1)), 1, c.key("grad"))
        return finish(c, tuple(g.abs() if abs else g for g in gs))

    return mark(attr_fn, "saliency")


def input_x_gradient(f: Callable, *, wrt=None, batch_size=None, precision=None, progress=None):
    """Input × gradient (Captum's ``InputXGradient``; with ``wrt=layer`` its
    ``LayerGradientXActivation``)::

        fa.input_x_gradient(f)(x)               # [B, ...] -> [B, ...]
    """
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        c = begin(f, x, args, kwargs, opts, grad=True, wrt=wrt)
        gs = c.run(lambda lo, hi: tuple(g[0] for g in c.grads(c.xs, 1)), 1, c.key("grad"))
        vals = c.xs if c.site is None else (c.layer(c.xs),)
        return finish(c, tuple(g * v.unsqueeze(1) for g, v in zip(gs, vals)))

    return mark(attr_fn, "input_x_gradient")


# --------------------------------------------------------------------------- path methods


def integrated_gradients(
    f: Callable,
    baseline: Any = 0.0,
    steps: int = 50,
    method: str = "gausslegendre",
    multiply_by_inputs: bool = True,
    return_delta: bool = False,
    *,
    wrt=None,
    batch_size=None,
    precision=None,
    progress=None,
):
    """Integrated gradients (Sundararajan et al. 2017) with Captum's quadrature exactly::

        ig = fa.integrated_gradients(f, baseline=0.0, steps=200)
        ig(x)                                    # [B, 3, 224, 224] -> [B, 3, 224, 224]

    ``wrt=layer`` integrates in that layer's activation space between the activations of
    ``baseline`` (an *input* baseline) and of ``x`` (Captum's LayerIntegratedGradients).
    """
    check_fn(f)
    _quadrature.check(method, steps)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        c = begin(f, x, args, kwargs, opts, grad=True, wrt=wrt)
        bs = broadcast_baseline(baseline, c.xs)
        alphas, weights = _quadrature.nodes(method, steps, c.device, c.xs[0].dtype if c.xs[0].is_floating_point() else torch.float32)
        if c.site is None:
            starts, diffs = bs, tuple(x - b for x, b in zip(c.xs, bs))
        else:  # the path runs between the layer's values at the baseline and at x
            pair = c.layer(tuple(torch.cat([x, b.expand_as(x)]) for x, b in zip(c.xs, bs)))
            starts, diffs = (pair[c.B:],), (pair[: c.B] - pair[c.B:],)

        def step(lo, hi):
            m = hi - lo
            a = alphas[lo:hi]
            path = tuple(  # start + α·diff as one fused op, [m, B, ...]
                torch.addcmul(s.unsqueeze(0), a.view(m, *[1] * d.dim()), d.unsqueeze(0)).expand(m, c.B, *d.shape[1:])
                for s, d in zip(starts, diffs)
            )
            if c.site is None:
                gs = c.grads(c.fold(path), m)
            else:
                gs = c.grads(tuple(tile(x, m) for x in c.xs), m, inject=c.fold(path)[0])
            w = weights[lo:hi]
            return tuple(torch.tensordot(w, g.float(), dims=([0], [0])) for g in gs)

        total = c.run(step, steps, c.key("ig"), desc="integrated gradients")
        attrs = tuple(t * d.unsqueeze(1) for t, d in zip(total, diffs)) if multiply_by_inputs else total
        delta = c.delta(attrs, bs, c.xs) if return_delta else None
        return finish(c, attrs, delta)

    return mark(attr_fn, "integrated_gradients", return_delta)


def path_integral(
    f: Callable,
    path: Callable[[tuple[Tensor, ...], Tensor], tuple[Tensor, ...]],
    steps: int = 50,
    method: str = "gausslegendre",
    return_delta: bool = False,
    *,
    batch_size=None,
    precision=None,
    progress=None,
):
    """The path-integral primitive: ``∫ ∇f(γ(α)) · γ'(α) dα`` along any differentiable path.

    ``path(xs, alphas)`` takes the inputs (a tuple of ``[B, ...]``) and ``alphas[m]`` and returns
    a tuple of ``[m, B, ...]`` points with ``γ(1) = x``; ``γ'(α)`` comes from ``torch.func.jvp``.
    Integrated gradients is the straight line ``b + α (x − b)``::

        line = lambda xs, a: tuple(a.view(-1, 1, 1, 1, 1) * x for x in xs)   # baseline 0
        fa.path_integral(f, line, steps=50)(x)     # == fa.integrated_gradients(f)(x)
    """
    check_fn(f)
    if not callable(path):
        raise TypeError(f"path must be a callable (xs, alphas) -> points, got {type(path).__name__}")
    _quadrature.check(method, steps)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        c = begin(f, x, args, kwargs, opts, grad=True)
        alphas, weights = _quadrature.nodes(method, steps, c.device, c.xs[0].dtype)

        def step(lo, hi):
            m = hi - lo
            a = alphas[lo:hi]
            pts, vel = torch.func.jvp(lambda t: tuple(path(c.xs, t)), (a,), (torch.ones_like(a),))
            for p, x in zip(pts, c.xs):
                if p.shape != (m, *x.shape):
                    raise ValueError(f"path returned points of shape {tuple(p.shape)}, expected {(m, *x.shape)}")
            gs = c.grads(c.fold(tuple(p.detach() for p in pts)), m)
            w = weights[lo:hi]
            return tuple(torch.tensordot(w, g.float() * v.unsqueeze(2).float(), dims=([0], [0])) for g, v in zip(gs, vel))

        attrs = c.run(step, steps, c.key("path", id(path)), desc="path integral")
        delta = None
        if return_delta:
            start = tuple(p[0] for p in path(c.xs, torch.zeros(1, device=c.device, dtype=c.xs[0].dtype)))
            delta = c.delta(attrs, start, c.xs)
        return finish(c, attrs, delta)

    return mark(attr_fn, "path_integral", return_delta)


def _gaussian_blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Blur the last two dims of ``x[m, B, C, H, W]`` with per-item ``sigma[m]`` (differentiable)."""
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3).view(-1, 1)
    k = torch.exp(-(t**2) / (2 * s**2))
    k = k / k.sum(1, keepdim=True)  # [m, 2r+1]
    m, rest = x.shape[0], x.shape[1:-2]
    H, W = x.shape[-2:]
    y = x.reshape(m, -1, H, W)
    pad = torch.nn.functional.pad(y, (radius, radius, radius, radius), mode="replicate")
    # separable blur: rows then columns, one kernel per item
    win = pad.unfold(-1, 2 * radius + 1, 1)  # [m, n, H+2r, W, K]
    y = (win * k.view(m, 1, 1, 1, -1)).sum(-1)
    win = y.unfold(-2, 2 * radius + 1, 1)  # [m, n, H, W, K]
    y = (win * k.view(m, 1, 1, 1, -1)).sum(-1)
    return y.reshape(m, *rest, H, W)


def blur_integrated_gradients(
    f: Callable, sigma: float = 10.0, steps: int = 50, method: str = "riemann_middle", return_delta=False, **opts
):
    """Blur integrated gradients (Xu et al. 2020), a composition: the path integral along
    ``γ(α) = blur(x, σ·(1 − α))`` from a fully blurred image (α = 0) to ``x`` (α = 1)::

        fa.blur_integrated_gradients(f, sigma=10.0)(x)    # [B, C, H, W] -> [B, C, H, W]
    """
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    radius = max(1, int(math.ceil(3 * sigma)))

    def blur_path(xs, alphas):
        for x in xs:
            if x.dim() < 3:
                raise ValueError(f"blur_integrated_gradients needs image inputs [B, ..., H, W], got {tuple(x.shape)}")
        return tuple(
            _gaussian_blur(x.unsqueeze(0).expand(alphas.shape[0], *x.shape), sigma * (1 - alphas), radius) for x in xs
        )

    return mark(path_integral(f, blur_path, steps, method, return_delta, **opts), "blur_integrated_gradients", return_delta)


# --------------------------------------------------------------------------- sampling methods


def _check_samples(samples, name="samples"):
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"{name} must be a positive int, got {samples!r}")


def _stdevs(stdev, n: int) -> tuple[float, ...]:
    st = tuple(stdev) if isinstance(stdev, (tuple, list)) else (stdev,) * n
    if len(st) != n or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 for s in st):
        raise ValueError(f"stdev must be a non-negative number or a tuple of {n} of them, got {stdev!r}")
    return tuple(float(s) for s in st)


def gradient_shap(
    f: Callable,
    baselines: Any,
    samples: int = 5,
    stdev: float = 0.0,
    multiply_by_inputs: bool = True,
    return_delta: bool = False,
    *,
    wrt=None,
    batch_size=None,
    precision=None,
    progress=None,
):
    """Gradient SHAP (Captum's ``GradientShap``): the mean over ``samples`` draws per example of
    ``(x̃ − b) · ∇f(b + α (x̃ − b))`` with ``b`` drawn from ``baselines`` (a ``[N_b, ...]``
    distribution, or a callable returning one), ``α ~ U(0, 1)`` and ``x̃ = x + N(0, stdev²)``::

        fa.gradient_shap(f, baselines=torch.zeros(8, 3, 32, 32), samples=20)(x)
    """
    check_fn(f)
    _check_samples(samples)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        c = begin(f, x, args, kwargs, opts, grad=True, wrt=wrt)
        dist = baselines(*c.xs) if callable(baselines) else baselines
        dist, _ = as_tuple(dist, "baselines")
        if len(dist) != len(c.xs):
            raise ValueError(f"baselines has {len(dist)} tensors but there are {len(c.xs)} inputs")
        for i, (d, x) in enumerate(zip(dist, c.xs)):
            if d.dim() != x.dim() or d.shape[1:] != x.shape[1:]:
                raise ValueError(
                    f"baselines{'[%d]' % i if len(dist) > 1 else ''} must be a distribution [N_b, {', '.join(map(str, x.shape[1:]))}], "
                    f"got shape {tuple(d.shape)}"
                )
        st = _stdevs(stdev, len(c.xs))
        S, B, dev = samples, c.B, c.device
        # one draw for the whole call: baseline ids, α and noise, sample-major [S, B, ...]
        idx = torch.randint(dist[0].shape[0], (S, B), device=dev)
        alpha = torch.rand(S, B, device=dev)
        noisy = tuple(x.unsqueeze(0) + s * torch.randn(S, *x.shape, device=dev, dtype=x.dtype) if s > 0 else x.unsqueeze(0).expand(S, *x.shape) for x, s in zip(c.xs, st))
        base = tuple(d.to(dev, x.dtype)[idx] for d, x in zip(dist, c.xs))  # [S, B, ...]

        def bcast(t, like):
            return t.view(*t.shape, *[1] * (like.dim() - t.dim()))

        def step(lo, hi):
            m = hi - lo
            nz, bz, al = tuple(n[lo:hi] for n in noisy), tuple(b[lo:hi] for b in base), alpha[lo:hi]
            pts = tuple(b + bcast(al, n).to(n.dtype) * (n - b) for n, b in zip(nz, bz))
            gs = c.grads(c.fold(pts), m)
            if not multiply_by_inputs:
                return tuple(g.float().sum(0) for g in gs)
            if c.site is None:
                diffs = tuple(n - b for n, b in zip(nz, bz))
            else:
                la = c.layer(c.fold(nz)) - c.layer(c.fold(bz))
                diffs = (la.view(m, B, *la.shape[1:]),)
            return tuple((g.float() * d.unsqueeze(2)).sum(0) for g, d in zip(gs, diffs))

        total = c.run(step, S, c.key("gshap", multiply_by_inputs), desc="gradient shap")
        attrs = tuple(t / S for t in total)
        delta = None
        if return_delta:  # Captum: per example and sample, against the sample's noisy input and baseline
            delta = _sample_deltas(c, attrs, noisy, base)
        return finish(c, attrs, delta)

    return mark(attr_fn, "gradient_shap", return_delta)


def _sample_deltas(c: Call, attrs, ends, starts) -> Tensor:
    """Σ attr − mean_s (f(end_s) − f(start_s)), per example: the completeness gap of the mean."""
    S = ends[0].shape[0]
    s_end = c.scores(c.fold(ends), S).mean(0)
    s_start = c.scores(c.fold(starts), S).mean(0)
    return c.gap(attrs, s_end, s_start)


def expected_gradients(f: Callable, baselines: Any, samples: int = 5, **kw):
    """Expected gradients (Erion et al. 2021): ``E_{b∼D, α∼U(0,1)} (x − b)·∇f(b + α(x − b))``,
    a Monte-Carlo integrated gradients over a baseline distribution — i.e. gradient SHAP
    without input noise, so it is written as exactly that::

        fa.expected_gradients(f, baselines=train_images[:64], samples=32)(x)
    """
    if "stdev" in kw:
        raise TypeError("expected_gradients takes no stdev (use fa.gradient_shap for noisy inputs)")
    return mark(gradient_shap(f, baselines, samples=samples, stdev=0.0, **kw), "expected_gradients", kw.get("return_delta", False))


KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def noise_tunnel(attr_fn: Callable, samples: int = 5, stdev: float = 1.0, kind: str = "smoothgrad"):
    """SmoothGrad and friends around *any* attribution function (Captum's ``NoiseTunnel``).

    The ``samples`` noisy copies are folded into one batch of ``samples * B`` rows and handed to
    ``attr_fn`` once when memory allows (else in chunks of samples, sized by the executor), so a
    wrapped path method evaluates samples × steps as one folded batch::

        sg_ig = fa.noise_tunnel(fa.integrated_gradients(f), samples=10, stdev=0.1)
        sg_ig(x)                                   # [B, ...] -> [B, ...]

    ``stdev`` is absolute (per input tensor if a tuple), like Captum's ``stdevs``; kinds:
    ``smoothgrad`` (mean), ``smoothgrad_sq`` (mean of squares), ``vargrad`` (variance).
    """
    if not callable(attr_fn):
        raise TypeError(f"attr_fn must be an attribution function, got {type(attr_fn).__name__}")
    _check_samples(samples)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    with_delta = getattr(attr_fn, "returns_delta", False)

    def nt_fn(x, *args, **kwargs):
        xs, is_tuple = as_tuple(x)
        B = check_inputs(xs, grad=False)
        st = _stdevs(stdev, len(xs))
        S = samples
        noisy = tuple(  # sample-major: rows s*B .. s*B + B - 1 are sample s
            tile(x, S) + (s * torch.randn(S * B, *x.shape[1:], device=x.device, dtype=x.dtype) if s > 0 else 0)
            for x, s in zip(xs, st)
        )
        shape: dict = {}

        def step(lo, hi):  # samples lo..hi-1 as one folded batch of (hi - lo) * B rows
            m = hi - lo
            a, kw = tile_args(args, kwargs, B, m)
            res = attr_fn(restore(tuple(n[lo * B : hi * B] for n in noisy), is_tuple), *a, **kw)
            if with_delta:
                res, d = res
            parts, shape["tuple"] = as_tuple(res, "attributions")
            out = tuple(r.view(m, B, *r.shape[1:]) for r in parts)
            return out + ((d.view(m, B, *d.shape[1:]),) if with_delta else ())

        # all samples in one call to attr_fn when memory allows, else in chunks of samples
        key = ("noise_tunnel", id(attr_fn), tuple((t.shape[1:], t.dtype) for t in xs))
        res = _executor.run(step, S, B, opts=_executor._current.get(), device=xs[0].device, key=key, combine="cat")
        parts, delta = (res[:-1], res[-1].movedim(0, 1)) if with_delta else (res, None)
        outs = []
        for r in parts:
            if kind == "smoothgrad":
                outs.append(r.mean(0))
            elif kind == "smoothgrad_sq":
                outs.append((r * r).mean(0))
            else:
                mean = r.mean(0)
                outs.append((r * r).mean(0) - mean * mean)
        out = restore(tuple(outs), shape["tuple"])
        return (out, delta) if with_delta else out

    return mark(nt_fn, f"noise_tunnel({getattr(attr_fn, '__name__', 'attr_fn')})", with_delta)
