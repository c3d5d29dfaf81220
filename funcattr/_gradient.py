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

from . import _executor, _fold, _quadrature, _random
from ._call import Call, attributions_of, begin, check_attr_fn, check_fn, mark
from ._inputs import as_tuple, broadcast_baseline, check_finite, check_inputs, restore

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


def _acc(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in the values' precision, at least float32."""
    return torch.promote_types(dtype, torch.float32)


# --------------------------------------------------------------------------- local gradients


def saliency(f: Callable, abs: bool = True, *, wrt=None, batch_size=None, precision=None, progress=None):
    """Gradient of the score w.r.t. the input (|grad| by default, Captum's ``Saliency``)::

        fa.saliency(fa.target(model, 3))(x)     # [B, C, H, W] -> [B, C, H, W]
    """
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt) as c:
            gs = c.run(lambda lo, hi: tuple(g[0] for g in c.grads(c.xs, 1)), 1, "grad")
            return c.finish(tuple(g.abs() if abs else g for g in gs))

    return mark(attr_fn, "saliency")


def input_x_gradient(f: Callable, *, wrt=None, batch_size=None, precision=None, progress=None):
    """Input × gradient (Captum's ``InputXGradient``; with ``wrt=layer`` its
    ``LayerGradientXActivation``)::

        fa.input_x_gradient(f)(x)               # [B, ...] -> [B, ...]
    """
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt) as c:
            if c.site is None:
                gs = c.run(lambda lo, hi: tuple(g[0] for g in c.grads(c.xs, 1)), 1, "grad")
                return c.finish(tuple(g * v.unsqueeze(1) for g, v in zip(gs, c.xs)))

            def step(lo, hi):
                gs, values = c.grads_and_value(c.xs, 1)
                return tuple(g[0] * v.unsqueeze(1) for g, v in zip(gs, values))

            return c.finish(c.run(step, 1, "grad_value"))

    return mark(attr_fn, "input_x_gradient")


# --------------------------------------------------------------------------- path methods


def _integral(c: Call, path: Callable, steps: int, method: str, dtype: torch.dtype, tag: tuple, desc: str):
    """The path-integral primitive, ``Σ_k w_k ∇f(γ(α_k)) · γ'(α_k)`` over the quadrature
    nodes, for ``[B, K, ...]`` per input (or for the site).

    ``path(alphas[m]) -> (points, velocity)``: points a tuple of ``[m, B, ...]`` (at the
    inputs, or at the site's value when the call has a site) and the velocity ``γ'`` a tuple
    of ``[m, B, ...]``, or None for a straight line, whose constant velocity the caller
    applies once to the sum."""
    alphas, weights = _quadrature.nodes(method, steps, c.device, dtype)

    def step(lo, hi):
        m = hi - lo
        pts, vel = path(alphas[lo:hi])
        if c.site is None:
            gs = c.grads(tuple(_fold.fold(p) for p in pts), m)
        else:
            gs = c.grads(tuple(_fold.tile(x, m) for x in c.xs), m, inject=tuple(_fold.fold(p) for p in pts))
        if vel is not None:
            gs = tuple(g * v.unsqueeze(2) for g, v in zip(gs, vel))
        return tuple(
            torch.tensordot(weights[lo:hi].to(_acc(g.dtype)), g.to(_acc(g.dtype)), dims=([0], [0])) for g in gs
        )

    return c.run(step, steps, "path", method, *tag, desc=desc)


def _line(starts: tuple[Tensor, ...], diffs: tuple[Tensor, ...], B: int) -> Callable:
    """The straight path ``start + α·diff`` as ``[m, B, ...]`` points (one fused op)."""

    def path(a):
        m = a.shape[0]
        return tuple(
            torch.addcmul(s.unsqueeze(0), a.view(m, *[1] * d.dim()).to(d.dtype), d.unsqueeze(0)).expand(m, B, *d.shape[1:])
            for s, d in zip(starts, diffs)
        ), None

    return path


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
    """Integrated gradients (Sundararajan et al. 2017) with Captum's quadrature exactly: the
    path integral (``fa.path_integral``'s primitive) along the straight line from
    ``baseline`` to ``x``, times ``x − baseline``::

        ig = fa.integrated_gradients(f, baseline=0.0, steps=200)
        ig(x)                                    # [B, 3, 224, 224] -> [B, 3, 224, 224]

    ``wrt=layer`` integrates in that layer's activation space between the activations of
    ``baseline`` (an *input* baseline) and of ``x`` (Captum's LayerIntegratedGradients).
    Gradients are accumulated in the inputs' precision (at least float32).
    """
    check_fn(f)
    _quadrature.check(method, steps)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt) as c:
            bs = broadcast_baseline(baseline, c.xs)
            if c.site is None:
                starts, diffs = bs, tuple(x - b for x, b in zip(c.xs, bs))
            else:  # the path runs between the layers' values at the baseline and at x
                pair = c.layer(tuple(torch.cat([x, b.expand_as(x)]) for x, b in zip(c.xs, bs)))
                starts, diffs = tuple(h[c.B :] for h in pair), tuple(h[: c.B] - h[c.B :] for h in pair)
            dtype = diffs[0].dtype
            total = _integral(c, _line(starts, diffs, c.B), steps, method, dtype, ("ig",), "integrated gradients")
            attrs = tuple(t * d.unsqueeze(1) for t, d in zip(total, diffs)) if multiply_by_inputs else total
            delta = c.delta(attrs, bs, c.xs) if return_delta else None
            return c.finish(attrs, delta)

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
        with begin(f, x, args, kwargs, opts, grad=True) as c:

            def curve(a):
                pts, vel = torch.func.jvp(lambda t: tuple(path(c.xs, t)), (a,), (torch.ones_like(a),))
                for p, x in zip(pts, c.xs):
                    if p.shape != (a.shape[0], *x.shape):
                        raise ValueError(f"path returned points of shape {tuple(p.shape)}, expected {(a.shape[0], *x.shape)}")
                return tuple(p.detach() for p in pts), vel

            attrs = _integral(c, curve, steps, method, c.xs[0].dtype, ("path", id(path)), "path integral")
            delta = None
            if return_delta:
                start = tuple(p[0] for p in path(c.xs, torch.zeros(1, device=c.device, dtype=c.xs[0].dtype)))
                delta = c.delta(attrs, start, c.xs)
            return c.finish(attrs, delta)

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
    if len(st) != n or not all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s >= 0 for s in st
    ):
        raise ValueError(f"stdev must be a non-negative, finite number or a tuple of {n} of them, got {stdev!r}")
    return tuple(float(s) for s in st)


def _noise_float(xs: tuple[Tensor, ...], st: tuple[float, ...], what: str) -> None:
    for i, (x, s) in enumerate(zip(xs, st)):
        if s > 0 and not x.is_floating_point():
            where = f"x[{i}]" if len(xs) > 1 else "x"
            raise TypeError(
                f"{what} adds Gaussian noise to the inputs, which must be floating point; {where} has dtype {x.dtype}. "
                "For token ids attribute at the embedding (wrt=embedding) without input noise (stdev=0)"
            )


def _distribution(baselines: Any, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A baseline distribution ``[N_b, ...]`` per input (a tensor, a tuple, or a callable of
    the inputs returning one), checked: same example shape, at least one, finite."""
    dist = baselines(*xs) if callable(baselines) else baselines
    dist, _ = as_tuple(dist, "baselines")
    if len(dist) != len(xs):
        raise ValueError(f"baselines has {len(dist)} tensors but there are {len(xs)} inputs")
    out = []
    for i, (d, x) in enumerate(zip(dist, xs)):
        where = f"baselines[{i}]" if len(xs) > 1 else "baselines"
        if d.dim() != x.dim() or d.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"{where} must be a distribution [N_b, {', '.join(map(str, x.shape[1:]))}] of baselines, "
                f"got shape {tuple(d.shape)}"
            )
        if d.shape[0] < 1:
            raise ValueError(f"{where} holds no baselines (dim 0 is 0); give at least one")
        check_finite(d, where)
        out.append(d.to(x.device, x.dtype if x.is_floating_point() else d.dtype))
    if len({d.shape[0] for d in out}) != 1:
        raise ValueError(f"all baselines tensors must hold the same number of baselines, got {[d.shape[0] for d in out]}")
    return tuple(out)


def gradient_shap(
    f: Callable,
    baselines: Any,
    samples: int = 5,
    stdev: float = 0.0,
    multiply_by_inputs: bool = True,
    return_delta: bool | str = False,
    *,
    generator: torch.Generator | None = None,
    wrt=None,
    batch_size=None,
    precision=None,
    progress=None,
):
    """Gradient SHAP (Captum's ``GradientShap``): the mean over ``samples`` draws per example of
    ``(x̃ − b) · ∇f(b + α (x̃ − b))`` with ``b`` drawn from ``baselines`` (a ``[N_b, ...]``
    distribution, or a callable returning one), ``α ~ U(0, 1)`` and ``x̃ = x + N(0, stdev²)``::

        fa.gradient_shap(f, baselines=torch.zeros(8, 3, 32, 32), samples=20)(x)

    Draws come from ``generator`` (a ``torch.Generator``) when given, so a result is
    reproducible without touching the global RNG. With ``wrt=layer`` the points are
    interpolated in input space and the gradient taken at the layer (Captum's
    ``LayerGradientShap``); integer inputs (token ids) are interpolated in the layer's space
    instead, between its values at the baseline and at ``x``.

    ``return_delta=True`` gives ``(attributions, delta)`` with one completeness gap per example
    (``Σ attr − mean_s (f(x̃_s) − f(b_s))``); ``return_delta="per_sample"`` gives Captum's
    per-sample deltas instead, ``[B, samples]`` (``[B, samples, K]`` for K scores): for each draw,
    the sum of that draw's own attribution ``(x̃_s − b_s)·∇f`` minus ``f(x̃_s) − f(b_s)``. Captum
    returns the same numbers flat and example-major: ``delta.reshape(-1)``.
    """
    check_fn(f)
    _check_samples(samples)
    per_sample = _delta_mode(return_delta, multiply_by_inputs)
    _random.check_generator(generator)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt) as c:
            dist = _distribution(baselines, c.xs)
            st = _stdevs(stdev, len(c.xs))
            _noise_float(c.xs, st, "gradient_shap")
            S, B, dev = samples, c.B, c.device
            # one draw for the whole call: baseline ids, α and noise, sample-major [S, B, ...]
            idx = _random.randint(dist[0].shape[0], (S, B), generator, dev)
            alpha = _random.rand((S, B), generator, dev)
            noisy = tuple(
                x.unsqueeze(0) + s * _random.randn((S, *x.shape), generator, dev, x.dtype) if s > 0 else x.unsqueeze(0).expand(S, *x.shape)
                for x, s in zip(c.xs, st)
            )
            base = tuple(d[idx] for d in dist)  # [S, B, ...]
            in_layer = c.site is not None and not all(x.is_floating_point() for x in c.xs)

            def bcast(t, like):
                return t.view(*t.shape, *[1] * (like.dim() - t.dim())).to(like.dtype)

            def step(lo, hi):
                m = hi - lo
                nz, bz, al = tuple(n[lo:hi] for n in noisy), tuple(b[lo:hi] for b in base), alpha[lo:hi]
                if in_layer:  # interpolate between the layers' values (token ids do not interpolate)
                    hn = tuple(_fold.unfold(h, m) for h in c.layer(tuple(_fold.fold(n) for n in nz)))
                    hb = tuple(_fold.unfold(h, m) for h in c.layer(tuple(_fold.fold(b) for b in bz)))
                    pts = tuple(b + bcast(al, n) * (n - b) for n, b in zip(hn, hb))
                    gs = c.grads(tuple(_fold.fold(n) for n in nz), m, inject=tuple(_fold.fold(p) for p in pts))
                    diffs = tuple(n - b for n, b in zip(hn, hb))
                else:
                    pts = tuple(b + bcast(al, n) * (n - b) for n, b in zip(nz, bz))
                    gs = c.grads(tuple(_fold.fold(p) for p in pts), m)
                    if multiply_by_inputs and c.site is not None:
                        hn = c.layer(tuple(_fold.fold(n) for n in nz))
                        hb = c.layer(tuple(_fold.fold(b) for b in bz))
                        diffs = tuple(_fold.unfold(n - b, m) for n, b in zip(hn, hb))
                    else:
                        diffs = tuple(n - b for n, b in zip(nz, bz))
                if not multiply_by_inputs:
                    return tuple(g.to(_acc(g.dtype)).sum(0) for g in gs)
                terms = tuple(g.to(_acc(g.dtype)) * d.unsqueeze(2) for g, d in zip(gs, diffs))
                sums = tuple(t.sum(0) for t in terms)
                if not per_sample:
                    return sums
                # each draw's own attribution sum, placed at its rows of an [S, B, K] total
                own = sum(t.reshape(*t.shape[:3], -1).sum(3) for t in terms)
                rows = own.new_zeros(S, *own.shape[1:])
                rows[lo:hi] = own
                return (*sums, rows)

            total = c.run(step, S, "gshap", multiply_by_inputs, in_layer, per_sample, desc="gradient shap")
            if per_sample:
                total, own = total[:-1], total[-1]
            attrs = tuple(t / S for t in total)
            delta = None
            if per_sample:
                delta = _per_sample_deltas(c, own, noisy, base)
            elif return_delta:  # per example: against the samples' noisy inputs and baselines
                delta = _sample_deltas(c, attrs, noisy, base)
            return c.finish(attrs, delta)

    return mark(attr_fn, "gradient_shap", bool(return_delta))


def _delta_mode(return_delta, multiply_by_inputs: bool) -> bool:
    """Whether ``return_delta`` asks for per-sample deltas (``"per_sample"``); checks the value."""
    if return_delta not in (True, False, "per_sample"):
        raise ValueError(f"return_delta must be True, False or 'per_sample', got {return_delta!r}")
    if return_delta == "per_sample" and not multiply_by_inputs:
        raise ValueError(
            "return_delta='per_sample' compares each draw's attribution with f(x̃) − f(b), which needs "
            "multiply_by_inputs=True"
        )
    return return_delta == "per_sample"


def _per_sample_deltas(c: Call, own: Tensor, ends, starts) -> Tensor:
    """``[B, S]`` (``[B, S, K]``): each draw's attribution sum minus ``f(end_s) − f(start_s)``."""
    S = ends[0].shape[0]
    s_end = c.scores(tuple(_fold.fold(e) for e in ends), S)
    s_start = c.scores(tuple(_fold.fold(s) for s in starts), S)
    d = (own - (s_end - s_start).to(own.dtype)).transpose(0, 1)  # [B, S, K]
    return d if c.is_k(d.shape[2]) else d[..., 0]


def _sample_deltas(c: Call, attrs, ends, starts) -> Tensor:
    """Σ attr − mean_s (f(end_s) − f(start_s)), per example: the completeness gap of the mean."""
    S = ends[0].shape[0]
    s_end = c.scores(tuple(_fold.fold(e) for e in ends), S).mean(0)
    s_start = c.scores(tuple(_fold.fold(s) for s in starts), S).mean(0)
    return c.gap(attrs, s_end, s_start)


def expected_gradients(f: Callable, baselines: Any, samples: int = 5, **kw):
    """Expected gradients (Erion et al. 2021): ``E_{b∼D, α∼U(0,1)} (x − b)·∇f(b + α(x − b))``,
    a Monte-Carlo integrated gradients over a baseline distribution — i.e. gradient SHAP
    without input noise, so it is written as exactly that::

        fa.expected_gradients(f, baselines=train_images[:64], samples=32)(x)
    """
    if "stdev" in kw:
        raise TypeError("expected_gradients takes no stdev (use fa.gradient_shap for noisy inputs)")
    return mark(gradient_shap(f, baselines, samples=samples, stdev=0.0, **kw), "expected_gradients", bool(kw.get("return_delta", False)))


KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def noise_tunnel(
    attr_fn: Callable, samples: int = 5, stdev: float = 1.0, kind: str = "smoothgrad", *, generator: torch.Generator | None = None
):
    """SmoothGrad and friends around *any* attribution function (Captum's ``NoiseTunnel``).

    The ``samples`` noisy copies are folded into one batch of ``samples * B`` rows and handed to
    ``attr_fn`` once when memory allows (else in chunks of samples, sized by the executor), so a
    wrapped path method evaluates samples × steps as one folded batch::

        sg_ig = fa.noise_tunnel(fa.integrated_gradients(f), samples=10, stdev=0.1)
        sg_ig(x)                                   # [B, ...] -> [B, ...]

    ``stdev`` is absolute (per input tensor if a tuple), like Captum's ``stdevs``; kinds:
    ``smoothgrad`` (mean), ``smoothgrad_sq`` (mean of squares), ``vargrad`` (variance).
    Per-example values of the wrapped method (targets, baselines, masks, arguments) keep one
    entry per example: they follow the noisy copies. Noise comes from ``generator`` when given.
    """
    check_attr_fn(attr_fn, "noise_tunnel")
    _check_samples(samples)
    _random.check_generator(generator)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    with_delta = getattr(attr_fn, "returns_delta", False)

    def nt_fn(x, *args, **kwargs):
        xs, is_tuple = as_tuple(x)
        B = check_inputs(xs, grad=False)
        st = _stdevs(stdev, len(xs))
        _noise_float(xs, st, "noise_tunnel")
        S = samples
        with _fold.examples(xs, args, kwargs):
            noisy = tuple(  # sample-major: rows s*B .. s*B + B - 1 are sample s
                _fold.tile(x, S) + s * _random.randn((S * B, *x.shape[1:]), generator, x.device, x.dtype) if s > 0 else _fold.tile(x, S)
                for x, s in zip(xs, st)
            )
            shape: dict = {}

            def step(lo, hi):  # samples lo..hi-1 as one folded batch of (hi - lo) * B rows
                m = hi - lo
                chunk = tuple(n[lo * B : hi * B] for n in noisy)
                res = attr_fn(restore(chunk, is_tuple), *args, **kwargs)
                if with_delta:
                    res, d = res
                parts, shape["tuple"] = attributions_of(res, chunk, "noise_tunnel", attr_fn)
                out = tuple(_fold.unfold(r, m) for r in parts)
                return out + ((_fold.unfold(d, m),) if with_delta else ())

            # all samples in one call to attr_fn when memory allows, else in chunks of samples
            key = ("noise_tunnel", tuple((t.shape, t.dtype) for t in xs))
            res = _executor.run(
                step, S, B, opts=_executor._current.get(), device=xs[0].device, key=key, owner=attr_fn, combine="cat"
            )
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
