"""Metrics: is an attribution faithful, robust and right?

Every metric evaluates all of its perturbations / steps / samples of a call as one folded
batch (work-major, row ``r`` belongs to example ``r mod B``) through the executor, like the
methods do::

    f = fa.target(model, labels)
    A = fa.integrated_gradients(f)(x)
    fa.metrics.infidelity(f, perturb, x, A)            # [B]   (Captum's numbers)
    fa.metrics.sensitivity_max(fa.saliency(f), x)      # [B]
    fa.metrics.deletion(f, x, A, steps=20)             # [B]   area under the deletion curve
    fa.metrics.insertion(f, x, A, steps=20)            # [B]
    fa.metrics.pointing_game(A, masks)                 # bool [B]
    fa.metrics.mass_inside(A, masks)                   # [B]
    fa.metrics.randomization_check(lambda m: fa.saliency(fa.target(m, 3)), model, x)
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import _executor
from ._call import begin, check_fn
from ._inputs import as_tuple, broadcast_baseline, check_inputs, restore, tile, tile_args

__all__ = [
    "infidelity",
    "with_perturbations",
    "sensitivity_max",
    "deletion",
    "insertion",
    "pointing_game",
    "mass_inside",
    "randomization_check",
]


# --------------------------------------------------------------------------- shared checks


def _check_count(v: Any, name: str) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {v!r}")


def _as_args(args: Any) -> tuple:
    return tuple(args) if isinstance(args, tuple) else (args,)


def _describe(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"a Tensor of shape {tuple(v.shape)}"
    if isinstance(v, (tuple, list)):
        return f"a {type(v).__name__} of {len(v)} (" + ", ".join(_describe(p) for p in v) + ")"
    return f"a {type(v).__name__}"


def _flat_attrs(attributions: Any, xs: tuple[Tensor, ...], name: str = "attributions") -> tuple[tuple[Tensor, ...], int | None]:
    """Attributions in the inputs' structure → ``(tuple of [B, Kr, D_i], K)``.

    Maps shaped like the inputs give ``Kr = 1`` and ``K = None``; maps with one map per score
    of a K-score function, ``[B, K, *x.shape[1:]]``, give ``Kr = K``.
    """
    at, _ = as_tuple(attributions, name)
    if len(at) != len(xs):
        raise ValueError(f"{name} has {len(at)} tensors but x has {len(xs)}; give one attribution tensor per input")
    ks, out = set(), []
    for i, (a, x) in enumerate(zip(at, xs)):
        where = f"{name}[{i}]" if len(xs) > 1 else name
        if a.shape == x.shape:
            ks.add(None)
            out.append(a.reshape(x.shape[0], 1, -1))
        elif a.dim() == x.dim() + 1 and a.shape[0] == x.shape[0] and a.shape[2:] == x.shape[1:]:
            ks.add(a.shape[1])
            out.append(a.reshape(a.shape[0], a.shape[1], -1))
        else:
            raise ValueError(
                f"{where} has shape {tuple(a.shape)} but the input has shape {tuple(x.shape)}; attributions must be "
                "shaped like the inputs (or [B, K, *x.shape[1:]], one map per score of a K-score function)"
            )
        if a.is_floating_point() and not bool(torch.isfinite(a).all()):
            raise ValueError(f"{where} contains NaN or inf values")
    if len(ks) > 1:
        raise ValueError(f"{name}: some tensors are shaped like the inputs and some carry a K axis; use one layout")
    return tuple(a.to(x.device) for a, x in zip(out, xs)), ks.pop()


def _check_k(K_attr: int | None, k_form: bool, K: int, what: str) -> None:
    if K_attr is None:
        if k_form and K > 1:
            raise ValueError(
                f"attributions: f returns {K} scores per example, so {what} needs one map per score, "
                f"attributions of shape [B, {K}, *x.shape[1:]]"
            )
    elif not k_form or K != K_attr:
        raise ValueError(
            f"attributions carry {K_attr} maps per example ([B, {K_attr}, ...]) but f returns "
            + (f"{K} scores per example" if k_form else "one score per example")
        )


def _float_dtype(*ts: Tensor) -> torch.dtype:
    dt = ts[0].dtype
    for t in ts[1:]:
        dt = torch.promote_types(dt, t.dtype)
    return dt if dt.is_floating_point else torch.float32


# --------------------------------------------------------------------------- infidelity


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
    inputs), and ``baseline`` (tiled the same way when its dim 0 is the batch) only when one is
    given — Captum's contract, so the same perturbation function gives the same value. Wrap
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
    c = begin(f, x, _as_args(args), dict(kwargs or {}), opts, grad=False)
    A, K_attr = _flat_attrs(attributions, c.xs)
    s0 = c.scores(c.xs, 1)[0]  # [B, K]
    _check_k(K_attr, c.k_form, s0.shape[1], "infidelity")
    if baseline is not None:
        broadcast_baseline(baseline, c.xs)  # validates; perturb gets the user's form
        bparts = tuple(baseline) if isinstance(baseline, (tuple, list)) else (baseline,) * len(c.xs)
    dt = _float_dtype(s0, *A)

    def step(lo, hi):
        m, B = hi - lo, c.B
        xs = tuple(tile(t, m) for t in c.xs)
        with torch.no_grad():
            if baseline is None:
                res = perturb(restore(xs, c.is_tuple))
            else:
                bs = tuple(
                    tile(b, m) if isinstance(b, Tensor) and b.dim() == t.dim() and b.shape[0] == B else b
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

    tot = c.run(step, samples, c.key("infidelity", id(perturb), normalize), desc="infidelity")
    if normalize:
        aa, ab, bb = tot
        beta = _safe_div(ab, aa)
        val = beta * beta * aa - 2 * beta * ab + bb
    else:
        val = tot[0]
    val = val / samples
    return val if c.k_form else val[:, 0]


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
    folded batch of all samples, with ``*args`` and ``**attr_kwargs`` (tensors/lists whose
    dim 0 is the batch, e.g. ``target=``, are tiled). ``batch_size`` caps the rows per
    ``attr_fn`` call (whole samples, at least one); attribution functions returning
    ``(attributions, delta)`` are read for their attributions.
    """
    if not callable(attr_fn):
        raise TypeError(f"attr_fn must be an attribution function, got {type(attr_fn).__name__}")
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

    def explain(inp, a, kw):
        res = attr_fn(inp, *a, **kw)
        if with_delta:
            res = res[0]
        parts, _ = as_tuple(res, "attr_fn's result")
        return parts

    base = explain(x, args, attr_kwargs)
    base_flat = torch.cat([t.detach().reshape(B, -1) for t in base], 1)
    dt = _float_dtype(base_flat)
    base_flat = base_flat.to(dt)
    base_norm = torch.linalg.vector_norm(base_flat, ord=p, dim=1)
    base_norm = torch.where(base_norm == 0, torch.ones_like(base_norm), base_norm)

    def step(lo, hi):
        m = hi - lo
        tiled = tuple(tile(t, m) for t in xs)
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
        a, kw = tile_args(args, attr_kwargs, B, m)
        res = explain(restore(pert, is_tuple), a, kw)
        if len(res) != len(base) or any(r.shape != (m * B, *b.shape[1:]) for r, b in zip(res, base)):
            raise ValueError(
                f"attr_fn returned {_describe(res if len(res) > 1 else res[0])} for {m * B} folded rows; expected "
                + ", ".join(str([m * B, *b.shape[1:]]) for b in base)
            )
        flat = torch.cat([r.detach().reshape(m, B, -1) for r in res], 2).to(dt)
        return torch.linalg.vector_norm(flat - base_flat, ord=p, dim=2) / base_norm  # [m, B]

    opts = _executor.Options(batch_size=batch_size or samples * B, progress=bool(progress))
    sens = _executor.run(step, samples, B, opts=opts, device=xs[0].device, combine="cat", desc="sensitivity")
    return sens.max(0).values.to(base[0].dtype if base[0].is_floating_point() else dt)


# --------------------------------------------------------------------------- deletion / insertion


def _element_ranks(A: tuple[Tensor, ...], mask: Any, xs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """Each element's position in its example's removal order, ``int32 [Kr, B, D]``, and the
    number of features of each example ``[B]``.

    Features are elements, or the segments of ``mask`` (ids shared across inputs); a segment's
    attribution is the sum over it; order: decreasing attribution, ties by increasing feature
    index (element: flat position, inputs in order; segment: id).
    """
    B = xs[0].shape[0]
    Kr = A[0].shape[1]
    flat = torch.cat([a.to(torch.float64) for a in A], 2).permute(1, 0, 2)  # [Kr, B, D]
    D = flat.shape[2]
    dev = flat.device
    if D == 0:
        raise ValueError("x has no features (every input has zero elements per example)")
    if mask is None:
        order = torch.sort(flat, dim=2, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(2, order, torch.arange(D, device=dev).expand_as(order))
        return rank.to(torch.int32), torch.full((B,), D, device=dev)
    ms, _ = as_tuple(mask, "mask")
    if len(ms) != len(xs):
        raise ValueError(f"mask has {len(ms)} tensors but x has {len(xs)}; give one mask per input")
    ids = []
    for i, (mk, x) in enumerate(zip(ms, xs)):
        where = f"mask[{i}]" if len(xs) > 1 else "mask"
        if mk.is_floating_point() or mk.is_complex():
            raise ValueError(f"{where} must hold integer feature ids, got dtype {mk.dtype}")
        mk = mk.to(x.device)
        if mk.dim() == x.dim() - 1:
            mk = mk.unsqueeze(0)
        try:
            ok = mk.dim() == x.dim() and torch.broadcast_shapes(mk.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{where} of shape {tuple(ms[i].shape)} does not broadcast to the input of shape {tuple(x.shape)} "
                "(give one example's shape, [1, ...] or the input's shape)"
            )
        ids.append(mk.expand(x.shape).reshape(B, -1).long())
    uniq, seg = torch.unique(torch.cat(ids, 1), return_inverse=True)  # ids -> 0..G-1 in id order
    G = uniq.numel()
    seg = seg.to(dev)
    present = torch.zeros(B, G, dtype=torch.bool, device=dev).scatter_(1, seg, torch.ones_like(seg, dtype=torch.bool))
    segx = seg.unsqueeze(0).expand(Kr, B, D)
    s = torch.zeros(Kr, B, G, dtype=torch.float64, device=dev).scatter_add_(2, segx, flat)
    s = torch.where(present, s, torch.full_like(s, -math.inf))  # absent segments rank last
    order = torch.sort(s, dim=2, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(2, order, torch.arange(G, device=dev).expand_as(order))
    return rank.gather(2, segx).to(torch.int32), present.sum(1)


def _curve(kind, f, x, attributions, steps, baseline, mask, return_curve, args, kwargs, batch_size, precision, progress):
    check_fn(f)
    _check_count(steps, "steps")
    opts = _executor.resolve(batch_size, precision, progress)
    c = begin(f, x, _as_args(args), dict(kwargs or {}), opts, grad=False)
    A, K_attr = _flat_attrs(attributions, c.xs)
    bs = broadcast_baseline(baseline, c.xs)
    rank, F = _element_ranks(A, mask, c.xs)  # [Kr, B, D], [B]
    Kr, B, dev = rank.shape[0], c.B, c.device
    j = torch.arange(steps + 1, device=dev)
    counts = (j.view(-1, 1) * F.view(1, -1)) // steps  # [steps+1, B] features removed (added) after step j
    sizes = [math.prod(t.shape[1:]) for t in c.xs]
    delete = kind == "deletion"

    def step(lo, hi):
        m = hi - lo
        item = torch.arange(lo, hi, device=dev)
        r = rank if Kr == 1 else rank.index_select(0, item % Kr)  # [m or 1, B, D]
        chosen = r < counts[item // Kr].unsqueeze(-1).to(torch.int32)  # [m, B, D]
        pts = []
        for t, b, part in zip(c.xs, bs, chosen.split(sizes, dim=2)):
            sel = part.reshape(m, B, *t.shape[1:])
            p = torch.where(sel, b, t) if delete else torch.where(sel, t, b)
            pts.append(p.reshape(m * B, *t.shape[1:]))
        s = c.scores(tuple(pts), m)  # [m, B, K]
        if Kr > 1:
            _check_k(K_attr, c.k_form, s.shape[2], kind)
            s = s.gather(2, (item % Kr).view(m, 1, 1).expand(m, B, 1))
        return s

    out = c.run(step, (steps + 1) * Kr, c.key(kind, Kr, mask is None), combine="cat", desc=kind)  # [(steps+1)*Kr, B, K']
    out = out.view(steps + 1, Kr, B, out.shape[2])
    curve = out[:, :, :, 0].permute(2, 1, 0) if Kr > 1 else out[:, 0].permute(1, 2, 0)  # [B, K, steps+1]
    y = curve if curve.dtype in (torch.float32, torch.float64) else curve.float()
    frac = (counts.to(y.dtype) / F.to(y.dtype)).t().unsqueeze(1)  # [B, 1, steps+1]
    auc = ((frac[..., 1:] - frac[..., :-1]) * (y[..., 1:] + y[..., :-1]) / 2).sum(-1)
    if not c.k_form:
        curve, auc = curve[:, 0], auc[:, 0]
    return (auc, curve) if return_curve else auc


_CURVE_DOC = """
    Features are the elements of ``x`` (all inputs of a tuple together), or with ``mask`` the
    segments of integer ids (as in feature ablation: one mask per input, broadcastable to it,
    ids shared across inputs; a segment's attribution is the sum over it). Each example ranks
    its ``F`` features by decreasing attribution, ties broken by increasing feature index
    (element: flat position, inputs in order; segment: id). After step ``j = 0..steps`` the
    first ``n_j = ⌊j·F / steps⌋`` features of the ranking (``F`` may differ per example with a
    per-example mask) are {what}; the curve is the score
    ``s_j = f(x_j)`` and the result the trapezoid area under it over the fraction
    ``t_j = n_j / F`` in ``[0, 1]``. ``baseline`` is a number or a tensor broadcastable to the
    inputs (per example allowed). All ``steps + 1`` points of all examples are one folded batch
    through the executor; each step's inputs are built inside the executor's chunk from the
    per-example ranking.

    Returns the area ``[B]`` (``[B, K]`` for a K-score ``f``), and with ``return_curve`` also
    the curve ``[B, steps+1]`` (``[B, K, steps+1]``). With a K-score ``f``, attributions shaped
    like ``x`` rank once for all K scores; attributions ``[B, K, *x.shape[1:]]`` rank each
    score by its own map.
    """


def deletion(
    f: Callable,
    x: Any,
    attributions: Any,
    steps: int = 20,
    baseline: Any = 0.0,
    mask: Any = None,
    return_curve: bool = False,
    *,
    args: Any = (),
    kwargs: dict | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    progress: bool | None = None,
):
    return _curve(
        "deletion", f, x, attributions, steps, baseline, mask, return_curve, args, kwargs, batch_size, precision, progress
    )


def insertion(
    f: Callable,
    x: Any,
    attributions: Any,
    steps: int = 20,
    baseline: Any = 0.0,
    mask: Any = None,
    return_curve: bool = False,
    *,
    args: Any = (),
    kwargs: dict | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    progress: bool | None = None,
):
    return _curve(
        "insertion", f, x, attributions, steps, baseline, mask, return_curve, args, kwargs, batch_size, precision, progress
    )


deletion.__doc__ = (
    """Deletion (Petsiuk et al. 2018, RISE): remove the most important features first,
    replacing them with ``baseline``, and measure how fast the score falls (lower area =
    more faithful attribution)::

        fa.metrics.deletion(f, x, attrs, steps=20)                        # [B]
        auc, curve = fa.metrics.deletion(f, x, attrs, return_curve=True)  # [B], [B, 21]
        fa.metrics.deletion(f, x, attrs, mask=superpixels)                # features = segments
    """
    + _CURVE_DOC.format(what="replaced by the baseline (``x_0 = x``, ``x_steps`` = baseline)")
)
insertion.__doc__ = (
    """Insertion (Petsiuk et al. 2018, RISE): start from ``baseline`` and put the most
    important features of ``x`` back first, measuring how fast the score rises (higher area =
    more faithful attribution)::

        fa.metrics.insertion(f, x, attrs, steps=20, baseline=blurred)     # [B]
    """
    + _CURVE_DOC.format(what="taken from ``x``, the rest from the baseline (``x_0`` = baseline, ``x_steps = x``)")
)


# --------------------------------------------------------------------------- localization


def _heat_map(attributions: Any) -> Tensor:
    if not isinstance(attributions, Tensor):
        raise TypeError(f"attributions must be a Tensor [B, H, W] or [B, C, H, W], got {type(attributions).__name__}")
    if attributions.dim() == 4:
        a = attributions.sum(1)
    elif attributions.dim() == 3:
        a = attributions
    else:
        raise ValueError(
            "attributions must be [B, H, W], [B, 1, H, W] or [B, C, H, W] (channels are summed), "
            f"got shape {tuple(attributions.shape)}"
        )
    if a.is_floating_point() and not bool(torch.isfinite(a).all()):
        raise ValueError("attributions contain NaN or inf values")
    if a.shape[0] == 0:
        raise ValueError("attributions is an empty batch (dim 0 has size 0)")
    return a if a.is_floating_point() else a.float()


def _mask_map(masks: Any, a: Tensor) -> Tensor:
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a Tensor [B, H, W], got {type(masks).__name__}")
    m = masks[:, 0] if masks.dim() == 4 and masks.shape[1] == 1 else masks
    if m.shape != a.shape:
        raise ValueError(
            f"masks of shape {tuple(masks.shape)} do not match the attribution maps {tuple(a.shape)} "
            "(give masks [B, H, W] with the maps' batch and spatial size)"
        )
    return m.to(a.device) != 0


def pointing_game(attributions: Tensor, masks: Tensor, tolerance: float = 0) -> Tensor:
    """Pointing game (Zhang et al. 2016): a hit when the location of the maximum of each
    attribution map (channels summed) lies inside the ground-truth mask, or within
    ``tolerance`` pixels (Euclidean) of it, as in the original's 15-pixel tolerance::

        fa.metrics.pointing_game(A, masks)               # [B, C, H, W], [B, H, W] -> bool [B]
        fa.metrics.pointing_game(A, masks).float().mean()    # accuracy

    The maximum's location is the first one in row-major order when it is not unique (a
    constant map points at its top-left pixel); masks are nonzero inside (bool or integer).
    An empty mask is always a miss.
    """
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative number of pixels, got {tolerance!r}")
    a = _heat_map(attributions)
    m = _mask_map(masks, a)
    B, H, W = a.shape
    idx = a.reshape(B, -1).argmax(1)
    if tolerance == 0:
        return m.reshape(B, -1).gather(1, idx.unsqueeze(1))[:, 0]
    py, px = (idx // W).view(B, 1, 1), (idx % W).view(B, 1, 1)
    yy = torch.arange(H, device=a.device).view(1, H, 1)
    xx = torch.arange(W, device=a.device).view(1, 1, W)
    near = (yy - py) ** 2 + (xx - px) ** 2 <= tolerance**2
    return (near & m).reshape(B, -1).any(1)


def mass_inside(attributions: Tensor, masks: Tensor) -> Tensor:
    """Share of the positive attribution mass inside the mask, per example::

        fa.metrics.mass_inside(A, masks)     # [B, C, H, W], [B, H, W] -> [B] in [0, 1]

    Channels are summed first, then ``Σ_inside max(a, 0) / Σ max(a, 0)``; an example with no
    positive mass gets 0.
    """
    a = _heat_map(attributions).clamp_min(0)
    m = _mask_map(masks, a)
    total = a.reshape(a.shape[0], -1).sum(1)
    inside = (a * m).reshape(a.shape[0], -1).sum(1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(total))


# --------------------------------------------------------------------------- randomization


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = ((a * a).sum(1) * (b * b).sum(1)).sqrt()
    num = (a * b).sum(1)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


def _ranks(v: Tensor) -> Tensor:
    """Average ranks (ties share the mean of their positions), per row."""
    v = v.contiguous()
    s = v.sort(1).values
    lo = torch.searchsorted(s, v, right=False)
    hi = torch.searchsorted(s, v, right=True)
    return (lo + hi - 1).to(v.dtype) / 2


def _spearman(a: Tensor, b: Tensor) -> Tensor:
    return _pearson(_ranks(a), _ranks(b))


_SIMILARITIES = {"spearman": _spearman, "pearson": _pearson}


def _resettable(module: nn.Module) -> bool:
    return any(callable(getattr(m, "reset_parameters", None)) for m in module.modules())


def _layer_names(model: nn.Module, layers: Any) -> list[str]:
    named = dict(model.named_modules())
    if layers is None:
        names = [
            n
            for n, m in named.items()
            if callable(getattr(m, "reset_parameters", None)) and next(m.parameters(recurse=False), None) is not None
        ]
        if not names:
            raise ValueError("layers: the model has no module with reset_parameters() and parameters of its own; name the layers")
        return names[::-1]  # registration order reversed: output side first
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    by_id = {id(m): n for n, m in named.items()}
    out = []
    for layer in layers:
        if isinstance(layer, str):
            if layer not in named:
                raise ValueError(f"layers: the model has no module named {layer!r}")
            name = layer
        elif isinstance(layer, nn.Module):
            if id(layer) not in by_id:
                raise ValueError(f"layers: {type(layer).__name__} module is not part of the model")
            name = by_id[id(layer)]
        else:
            raise TypeError(f"layers must hold module names or modules of the model, got {type(layer).__name__}")
        if not _resettable(named[name]):
            raise ValueError(f"layers: {name!r} has no (sub)module with reset_parameters() to reinitialize")
        if name in out:
            raise ValueError(f"layers: {name!r} is listed twice")
        out.append(name)
    return out


def _randomize(model: nn.Module, name: str, seed: int) -> None:
    mod = model.get_submodule(name)
    cuda = sorted({p.device.index or 0 for p in mod.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for sub in mod.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()


def randomization_check(
    method: Callable[[nn.Module], Callable],
    model: nn.Module,
    x: Any,
    *,
    layers: Any = None,
    similarity: str | Callable = "spearman",
    cascading: bool = True,
    seed: int = 0,
    abs: bool = True,
    **call_kwargs,
) -> dict[str, Tensor]:
    """Model-parameter randomization test (Adebayo et al. 2018, "Sanity checks for saliency
    maps"): attributions of the trained model vs. those of copies whose layers are
    reinitialized, one similarity per example and layer::

        sims = fa.metrics.randomization_check(lambda m: fa.saliency(fa.target(m, 3)), model, x)
        sims   # {"original": [B] (≈ 1), "fc": [B], "conv3": [B], ...}  in randomization order

    ``method(model) -> attr_fn`` builds the attribution function for a model; each is called
    as ``attr_fn(x, **call_kwargs)``. ``layers``: module names or modules of ``model`` in the
    order to randomize (default: every module with ``reset_parameters()`` and parameters of its
    own, output side first, i.e. registration order reversed); a named block reinitializes
    every submodule inside it. ``cascading=True`` randomizes cumulatively from the top (copy
    ``i`` has layers ``0..i`` reinitialized), ``False`` one layer at a time. Layer ``i`` is
    reinitialized by ``reset_parameters()`` under seed ``seed + i`` (the same weights in both
    modes) without touching the global RNG; ``model`` itself is never modified (deep copies).

    ``"original"`` (first) compares with an unrandomized deep copy: 1 for a deterministic
    method, the noise floor for a stochastic one. ``similarity``: ``"spearman"`` (rank
    correlation, ties averaged) or ``"pearson"`` of each example's flattened attributions (all
    inputs), of absolute values when ``abs``; or a callable ``(a[B, D], b[B, D]) -> [B]``. A
    constant map has zero variance and gets similarity 0.

    Each copy's attributions come from ONE call of its ``attr_fn`` (all its steps/samples are one
    folded batch through the executor). Copies are evaluated one after another, so only one
    copy is alive at a time (memory of one extra model) and methods that reach into the
    model's layers (``wrt=m.layer4``) work on the copies unchanged.
    """
    if not callable(method):
        raise TypeError(f"method must be a function model -> attr_fn, got {type(method).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(similarity, str):
        if similarity not in _SIMILARITIES:
            raise ValueError(f"similarity must be one of {tuple(_SIMILARITIES)} or a callable, got {similarity!r}")
        sim = _SIMILARITIES[similarity]
    elif callable(similarity):
        sim = similarity
    else:
        raise TypeError(f"similarity must be a name or a callable, got {type(similarity).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    names = _layer_names(model, layers)
    xs, _ = as_tuple(x)
    B = check_inputs(xs, grad=False)

    def attributions(m: nn.Module) -> Tensor:
        fn = method(m)
        if not callable(fn):
            raise TypeError(f"method(model) must return an attribution function, got {type(fn).__name__}")
        res = fn(x, **call_kwargs)
        if getattr(fn, "returns_delta", False):
            res = res[0]
        parts, _ = as_tuple(res, "method(model)(x)")
        flat = torch.cat([t.detach().reshape(B, -1).to(torch.float64) for t in parts], 1)
        return flat.abs() if abs else flat

    def compare(a: Tensor) -> Tensor:
        r = sim(ref, a)
        if not isinstance(r, Tensor) or r.shape != (B,):
            raise ValueError(f"similarity must return a Tensor [B] = [{B}], got {_describe(r)}")
        return r.to(dtype)

    first = as_tuple(x)[0][0]
    dtype = first.dtype if first.is_floating_point() else torch.float32
    ref = attributions(model)
    out: dict[str, Tensor] = {}
    current = copy.deepcopy(model)
    out["original"] = compare(attributions(current))
    for i, name in enumerate(names):
        if cascading:
            _randomize(current, name, seed + i)
            out[name] = compare(attributions(current))
        else:
            cp = copy.deepcopy(model)
            _randomize(cp, name, seed + i)
            out[name] = compare(attributions(cp))
            del cp
    return out
