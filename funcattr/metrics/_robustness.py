"""Infidelity and max-sensitivity (Yeh et al. 2019), Captum's numbers: does an attribution
predict the output change under perturbation, and how much does it move when the input does?
Every sample of a call is one folded batch through the executor."""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable

import torch
from torch import Tensor

from .. import _executor, _fold
from .._call import attributions_of, begin, check_attr_fn, check_fn
from .._inputs import as_tuple, broadcast_baseline, check_inputs, restore
from ._checks import _as_args, _check_count, _check_k, _describe, _flat_attrs, _float_dtype

__all__ = ["infidelity", "with_perturbations", "sensitivity_max"]


def _perturbation_pair(res: Any, xs: tuple[Tensor, ...], is_tuple: bool) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    shapes = ", ".join(str(list(x.shape)) for x in xs)
    each = f"a tuple of {len(xs)} tensors" if is_tuple else "a Tensor"
    want = f"(perturbations, perturbed_inputs), each {each} shaped like the {xs[0].shape[0]} input rows it was given ({shapes})"
    hint = " (a function that returns only perturbed inputs can be wrapped with fa.metrics.with_perturbations)"
    if not isinstance(res, (tuple, list)) or len(res) != 2:
        raise ValueError(f"perturb must return {want}; got {_describe(res)}{hint}")
    out = []
    for what, part in zip(("perturbations", "perturbed_inputs"), res):
        parts = tuple(part) if isinstance(part, (tuple, list)) else (part,)
        if len(parts) != len(xs) or not all(isinstance(p, Tensor) for p in parts):
            raise ValueError(f"perturb must return {want}; its {what} are {_describe(part)}{hint}")
        for p, x in zip(parts, xs):
            if p.shape != x.shape:
                raise ValueError(
                    f"perturb must return {want}; its {what} have shape {tuple(p.shape)}, expected {tuple(x.shape)}"
                )
        out.append(tuple(p.to(x.device) for p, x in zip(parts, xs)))
    return out[0], out[1]


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    return num / torch.where(den != 0, den, torch.ones_like(den))


def with_perturbations(perturb: Callable | None = None, *, multiply_by_inputs: bool = True):
    """Turn ``perturb(inputs[, baselines]) -> perturbed_inputs`` into the
    ``(perturbations, perturbed_inputs)`` form :func:`infidelity` takes (Captum's
    ``infidelity_perturb_func_decorator``): the perturbation is
    ``(x − x̃) / (x − baseline)`` (``/ x`` without baselines; a zero denominator counts as 1)
    when ``multiply_by_inputs``, else ``x − x̃``. Use ``multiply_by_inputs=False`` for local
    attributions (saliency, IG with ``multiply_by_inputs=False``)::

        noisy = fa.metrics.with_perturbations(lambda x: x + 0.01 * torch.randn_like(x))
        fa.metrics.infidelity(f, noisy, x, fa.integrated_gradients(f)(x))    # [B]

        @fa.metrics.with_perturbations(multiply_by_inputs=False)
        def noisy(x): ...
    """

    def wrap(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"perturb must be callable, got {type(fn).__name__}")

        def pair(inputs, baselines=None):
            xs, is_tuple = as_tuple(inputs, "inputs")
            res = fn(inputs) if baselines is None else fn(inputs, baselines)
            if not isinstance(res, (Tensor, tuple, list)):
                raise ValueError(
                    f"perturb (wrapped by with_perturbations) must return the perturbed inputs; got {_describe(res)}"
                )
            xp = tuple(res) if isinstance(res, (tuple, list)) else (res,)
            if len(xp) != len(xs) or not all(isinstance(p, Tensor) and p.shape == x.shape for p, x in zip(xp, xs)):
                raise ValueError(
                    "perturb (wrapped by with_perturbations) must return perturbed inputs shaped like its inputs "
                    f"({', '.join(str(list(x.shape)) for x in xs)}); got {_describe(res)}"
                )
            if baselines is None:
                bs = (0.0,) * len(xs)
            else:
                bs = tuple(baselines) if isinstance(baselines, (tuple, list)) else (baselines,) * len(xs)
            pert = tuple(
                _safe_div(x - p, x - b) if multiply_by_inputs else x - p for x, p, b in zip(xs, xp, bs)
            )
            return restore(pert, is_tuple), restore(xp, is_tuple)

        pair.__wrapped__ = fn
        return pair

    return wrap if perturb is None else wrap(perturb)


def infidelity(
    f: Callable,
    perturb: Callable,
    x: Any,
    attributions: Any,
    baseline: Any = None,
    samples: int = 10,
    normalize: bool = False,
    *,
    args: Any = (),
    kwargs: dict | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    progress: bool | None = None,
) -> Tensor:
    """Explanation infidelity (Yeh et al. 2019), Captum's ``infidelity`` and numbers::

        infid(x) = mean over samples I of (Σ attr · I − (f(x) − f(x̃)))²

    ``perturb(inputs[, baselines]) -> (perturbations I, perturbed inputs x̃)`` receives the
    inputs of all ``samples`` draws folded work-major, ``[samples*B, ...]`` (a tuple for tuple
    inputs; in chunks of whole samples only when ``batch_size`` caps the rows), and
    ``baseline`` (tiled the same way when its dim 0 is the batch) only when one is given —
    Captum's contract, so the same perturbation function gives the same value. Wrap
    a function that returns only ``x̃`` with :func:`with_perturbations`.

    ``f`` is the score function (``fa.target(model, t)``), called as ``f(*x, *args, **kwargs)``;
    tensors (and lists) among ``args``/``kwargs`` whose dim 0 is the batch are tiled with the
    inputs (pass an open target as ``kwargs={"target": y}``). ``normalize=True`` first rescales
    the attributions by Captum's optimal β = Σ(a·b) / Σ a². All samples are one folded batch
    through the executor (``batch_size`` rows per model call at most)::

        fa.metrics.infidelity(f, perturb, x, attrs, samples=10)     # [B]   ([B, K] for K scores)

    For a K-score ``f`` give one map per score, attributions ``[B, K, *x.shape[1:]]``.
    """
    check_fn(f)
    if not callable(perturb):
        raise TypeError(
            "perturb must be a callable (inputs[, baselines]) -> (perturbations, perturbed_inputs), "
            f"got {type(perturb).__name__}"
        )
    _check_count(samples, "samples")
    opts = _executor.resolve(batch_size, precision, progress)
    with begin(f, x, _as_args(args), dict(kwargs or {}), lambda: _all_samples(opts(), samples, x), grad=False) as c:
        A, K_attr = _flat_attrs(attributions, c.xs)
        s0 = c.scores(c.xs, 1)[0]  # [B, K]
        k = c.is_k(s0.shape[1])
        _check_k(K_attr, k, s0.shape[1], "infidelity")
        if baseline is not None:
            broadcast_baseline(baseline, c.xs)  # validates; perturb gets the user's form
            bparts = tuple(baseline) if isinstance(baseline, (tuple, list)) else (baseline,) * len(c.xs)
        dt = _float_dtype(s0, *A)

        def step(lo, hi):
            m, B = hi - lo, c.B
            xs = tuple(_fold.tile(t, m) for t in c.xs)
            with torch.no_grad():
                if baseline is None:
                    res = perturb(restore(xs, c.is_tuple))
                else:
                    bs = tuple(
                        _fold.tile(b, m) if isinstance(b, Tensor) and b.dim() == t.dim() and b.shape[0] == B else b
                        for b, t in zip(bparts, c.xs)
                    )
                    res = perturb(restore(xs, c.is_tuple), restore(bs, c.is_tuple))
                pert, xp = _perturbation_pair(res, xs, c.is_tuple)
                s = c.scores(xp, m).to(dt)  # [m, B, K]
                dot = sum(torch.einsum("mbd,bkd->mbk", p.reshape(m, B, -1).to(dt), a.to(dt)) for p, a in zip(pert, A))
                diff = s0.to(dt).unsqueeze(0) - s
                if normalize:
                    return ((dot * dot).sum(0), (dot * diff).sum(0), (diff * diff).sum(0))
                return (((dot - diff) ** 2).sum(0),)

        tot = c.run(step, samples, "infidelity", id(perturb), normalize, desc="infidelity")
    if normalize:
        aa, ab, bb = tot
        beta = _safe_div(ab, aa)
        val = beta * beta * aa - 2 * beta * ab + bb
    else:
        val = tot[0]
    val = val / samples
    return val if k else val[:, 0]


def _all_samples(opts: _executor.Options, samples: int, x: Any) -> _executor.Options:
    """All samples in one chunk unless ``batch_size`` caps the rows: ``perturb`` then sees
    every sample at once, on the first call too."""
    if opts.batch_size is not None:
        return opts
    B = as_tuple(x)[0][0].shape[0]
    return dataclasses.replace(opts, batch_size=samples * B)


# --------------------------------------------------------------------------- sensitivity


_NORMS = "'fro' or a number (1, 2, float('inf'), ...)"


def _norm_ord(norm: Any) -> float:
    if norm == "fro":
        return 2.0
    if isinstance(norm, (int, float)) and not isinstance(norm, bool) and not math.isnan(norm):
        return float(norm)
    raise ValueError(f"norm must be {_NORMS} (a vector norm of each example's flattened explanation), got {norm!r}")


def _takes_radius(perturb: Callable) -> bool:
    try:
        return len(inspect.signature(perturb).parameters) > 1
    except (TypeError, ValueError):
        return False


def sensitivity_max(
    attr_fn: Callable,
    x: Any,
    radius: float = 0.02,
    samples: int = 10,
    norm: Any = "fro",
    perturb: Callable | None = None,
    *,
    args: Any = (),
    batch_size: int | None = None,
    progress: bool | None = None,
    **attr_kwargs,
) -> Tensor:
    """Max-sensitivity (Yeh et al. 2019), Captum's ``sensitivity_max``: per example, the
    largest ``‖φ(x) − φ(x̃)‖ / ‖φ(x)‖`` over ``samples`` perturbed inputs ``x̃`` (a zero
    ``‖φ(x)‖`` counts as 1; ``norm`` is taken over each example's flattened explanation,
    all inputs together)::

        fa.metrics.sensitivity_max(fa.saliency(g), x, radius=0.02, target=labels)   # [B]

    ``perturb(inputs[, radius]) -> perturbed inputs`` (``radius`` is passed when it takes two
    parameters) receives all samples folded work-major ``[samples*B, ...]``; the default adds
    uniform noise in ``[−radius, radius]``. ``attr_fn`` is called once on ``x`` and ONCE on the
    folded batch of all samples, with ``*args`` and ``**attr_kwargs``; per-example values
    (``target=``, the method's per-example baselines or masks) keep one entry per example and
    follow the copies. ``batch_size`` caps the rows per
    ``attr_fn`` call (whole samples, at least one); attribution functions returning
    ``(attributions, delta)`` are read for their attributions.
    """
    check_attr_fn(attr_fn, "sensitivity_max")
    _check_count(samples, "samples")
    if not isinstance(radius, (int, float)) or isinstance(radius, bool) or not radius >= 0:
        raise ValueError(f"radius must be a non-negative number, got {radius!r}")
    if perturb is not None and not callable(perturb):
        raise TypeError(f"perturb must be a callable (inputs[, radius]) -> perturbed inputs, got {type(perturb).__name__}")
    p = _norm_ord(norm)
    _executor.resolve(batch_size, None, progress)  # validates batch_size
    xs, is_tuple = as_tuple(x)
    B = check_inputs(xs, grad=False)
    args = _as_args(args)
    with_delta = getattr(attr_fn, "returns_delta", False)

    def explain(inp):
        res = attr_fn(inp, *args, **attr_kwargs)
        if with_delta:
            res = res[0]
        parts, _ = attributions_of(res, as_tuple(inp)[0], "sensitivity_max", attr_fn)
        return parts

    with _fold.examples(xs, args, attr_kwargs):  # per-example values of attr_fn follow the perturbed copies
        return _sensitivity(explain, xs, is_tuple, B, radius, samples, p, perturb, batch_size, progress)


def _sensitivity(explain, xs, is_tuple, B, radius, samples, p, perturb, batch_size, progress) -> Tensor:
    base = explain(restore(xs, is_tuple))
    base_flat = torch.cat([t.detach().reshape(B, -1) for t in base], 1)
    dt = _float_dtype(base_flat)
    base_flat = base_flat.to(dt)
    base_norm = torch.linalg.vector_norm(base_flat, ord=p, dim=1)
    base_norm = torch.where(base_norm == 0, torch.ones_like(base_norm), base_norm)

    def step(lo, hi):
        m = hi - lo
        tiled = tuple(_fold.tile(t, m) for t in xs)
        if perturb is None:
            pert = tuple(
                t + torch.empty(t.shape, dtype=_float_dtype(t), device=t.device).uniform_(-radius, radius) for t in tiled
            )
        else:
            inp = restore(tiled, is_tuple)
            res = perturb(inp, radius) if _takes_radius(perturb) else perturb(inp)
            pert = tuple(res) if isinstance(res, (tuple, list)) else (res,)
            if len(pert) != len(tiled) or not all(isinstance(q, Tensor) and q.shape == t.shape for q, t in zip(pert, tiled)):
                raise ValueError(
                    "perturb must return the perturbed inputs, "
                    + (f"a tuple of {len(tiled)} tensors" if is_tuple else "a Tensor")
                    + f" shaped like the inputs it was given ({', '.join(str(list(t.shape)) for t in tiled)});"
                    + f" got {_describe(res)}"
                )
        res = explain(restore(pert, is_tuple))
        flat = torch.cat([r.detach().reshape(m, B, -1) for r in res], 2).to(dt)
        return torch.linalg.vector_norm(flat - base_flat, ord=p, dim=2) / base_norm  # [m, B]

    opts = _executor.Options(batch_size=batch_size or samples * B, progress=bool(progress))
    sens = _executor.run(step, samples, B, opts=opts, device=xs[0].device, combine="cat", desc="sensitivity")
    return sens.max(0).values.to(base[0].dtype if base[0].is_floating_point() else dt)


