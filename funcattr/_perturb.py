"""Perturbation family: occlusion, feature ablation, feature permutation, Shapley values
(exact and sampled), KernelSHAP and LIME.

Each method is a plan plus one primitive, *perturb and evaluate*: item ``j`` of the plan says
which elements take their baseline (or shuffled) value, ``step(lo, hi)`` builds the inputs of
items ``lo:hi`` as one ``[m, B, ...]`` batch — a copy of ``x`` per item with only the window's
or feature's elements scattered in (occlusion, ablation, permutation), or a coalition mask
broadcast through the feature ids (Shapley, KernelSHAP, LIME) — and the executor evaluates
the chunks under ``torch.no_grad()``. Peak memory grows with the chunk, never with the number
of windows, features or samples. The unperturbed input, when a method needs it, is item 0 of
the same stream, so it is evaluated once and in the same batches as the rest::

    occ = fa.occlusion(f, window=(3, 45, 45), stride=(3, 9, 9))
    occ(x)                                      # [B, 3, 224, 224] -> [B, 3, 224, 224]
    fa.feature_ablation(f, mask=superpixels)(x) # superpixels: [1 or B, 1, 224, 224] ids

``f`` returning K scores per example gives ``[B, K, ...]`` from the same evaluations.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from . import _executor, _features, _incremental, _random, _surrogate, _windows
from ._call import Call, begin, check_fn, mark
from ._scores import gives_rows
from ._fold import fold
from ._inputs import broadcast_baseline, promote

__all__ = [
    "occlusion",
    "feature_ablation",
    "feature_permutation",
    "shapley_values",
    "shapley_sampling",
    "kernel_shap",
    "lime",
    "MAX_EXACT_SHAPLEY_FEATURES",
]

MAX_EXACT_SHAPLEY_FEATURES = 16  # 2**16 = 65,536 coalitions per example
KERNEL_SHAP_ENDPOINT_WEIGHT = 1e6  # Captum's stand-in for the infinite kernel weight


# --------------------------------------------------------------------------- the primitive


def _evaluate(c: Call, n: int, build: Callable[[int, int], tuple[Tensor, ...]], key: tuple, desc: str) -> Tensor:
    """Scores ``[n, B, K]`` of the ``n`` items whose inputs ``build(lo, hi)`` makes as ``[m, B, ...]``.

    A function that gives one value for the whole batch (a dataset-level loss; Captum's
    aggregate mode) is recognized on item 0 when its output could be that: each item is then
    one perturbation of the whole batch, and the scores are ``[n, 1, 1]`` — the attributions
    have batch dim 1, Captum's shape."""

    def f32(s):  # bf16 scores: differences in fp32; integer scores stay integers (exact, Captum's dtype)
        return s.to(torch.promote_types(s.dtype, torch.float32)) if s.is_floating_point() else s

    lo, first = 0, None
    if not gives_rows(c.f, c.kwargs):
        s0, whole = c.scores_or_value(tuple(t[0] for t in build(0, 1)))
        if whole:
            rest = c.run(lambda lo, hi: f32(c.batch_values(build(lo + 1, hi + 1))), n - 1, *key, "batch", combine="cat", desc=desc) if n > 1 else None
            return f32(s0) if rest is None else torch.cat([f32(s0), rest])
        lo, first = 1, f32(s0)
        if n == 1:
            return first

    def step(lo_, hi_):
        return f32(c.scores(tuple(fold(t) for t in build(lo + lo_, lo + hi_)), hi_ - lo_))

    rest = c.run(step, n - lo, *key, combine="cat", desc=desc)
    return rest if first is None else torch.cat([first, rest])



def _single_features(c: Call, xs: tuple[Tensor, ...], feats: _features.Features, lo: int, hi: int, swap) -> tuple[Tensor, ...]:
    """Inputs of items ``lo:hi``, item ``j`` replacing the elements of feature ``j - 1`` (item
    0: none). ``swap(i, idx)`` gives input ``i``'s replacement values at the flat offsets
    ``idx[m, 1|B, E]`` as ``[m, B, E]`` (or, with ``idx=None``, for the whole input)."""
    m = hi - lo
    ids = _items(lo, hi, c) - 1
    out = []
    for i, x in enumerate(xs):
        if not feats.touches(lo - 1, hi - 1, i):
            out.append(x.unsqueeze(0).expand(m, *x.shape))
            continue
        tab = feats.table(i, x.shape)
        if tab is None:  # very unequal feature sizes: a per-element mask instead
            out.append(torch.where(feats.masks(ids, i), swap(i, None), x))
            continue
        offs, has = tab
        j = ids.clamp(0, feats.F - 1)
        idx = offs[:, j].transpose(0, 1)  # [m, 1|B, E] flat offsets of each item's feature
        new = swap(i, idx)
        if not feats.complete(i, x.shape):  # a feature absent from some example keeps x there
            new = torch.where(has[:, j].t().unsqueeze(2), new, _windows.values_at(x, x, idx))
        if lo < 1:  # item 0 is the unperturbed input
            idx, new = idx[1:], new[1:]
        out.append(_windows.overwrite(x, idx, new, m=m, start=m - idx.shape[0]))
    return tuple(out)


def _items(lo: int, hi: int, c: Call) -> Tensor:
    return torch.arange(lo, hi, device=c.device)


def _check_samples(samples, least=1):
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < least:
        raise ValueError(f"samples must be an int >= {least}, got {samples!r}")


def _coalitions(c: Call, xs, feats: _features.Features, bases, n: int, keep: Callable[[Tensor], Tensor], key, desc):
    """Scores ``[n, B, K]`` of coalitions ``keep(items) -> bool [m, F]`` (True: the feature
    keeps its input value; False: it takes the baseline)."""

    def build(lo, hi):
        k = keep(_items(lo, hi, c))
        return tuple(torch.where(feats.present(k, i), x, b) for i, (x, b) in enumerate(zip(xs, bases)))

    return _evaluate(c, n, build, key, desc)


def _per_feature(c: Call, feats: _features.Features, values: Tensor):
    """``values[F, B, K]`` → attributions shaped like the inputs (each element gets its
    feature's); ``[F, 1, 1]`` (one value for the whole batch) → ``[1, ...]``."""
    if values.shape[1] == 1 and c.B > 1 and any(ids.shape[0] > 1 for ids in feats.ids):
        raise ValueError(
            "mask: f gives one value for the whole batch, so a feature is ablated in every example at once; "
            "give one mask for all examples (batch dim 1), not one per example"
        )
    vals = values.permute(1, 2, 0)
    return c.out(tuple(_features.spread(vals, feats, i, x.shape) for i, x in enumerate(c.xs)))


# --------------------------------------------------------------------------- occlusion


def occlusion(
    f: Callable, window, stride=None, baseline: Any = 0.0, *, incremental=None, batch_size=None, precision=None, progress=None
):
    """Occlusion (Zeiler & Fergus 2014) with Captum's semantics: a ``window`` box slides by
    ``stride`` over every non-batch dim (channels included; ``stride=None`` is 1), the last
    window in each dim is truncated at the border, and each element gets the output drop
    ``f(x) − f(x with the window at baseline)`` averaged over the windows covering it::

        occ = fa.occlusion(fa.target(model, 3), window=(3, 45, 45), stride=(3, 9, 9))
        occ(x)                                   # [B, 3, 224, 224] -> [B, 3, 224, 224]

    Tuple inputs take a tuple of windows (and of strides); all windows of all inputs are one
    stream of folded batches.

    ``incremental``: for a CNN wrapped by ``fa.target``/``fa.outputs``, evaluate each window
    only where its activations differ from the unoccluded ones (Krypton; same numbers up to
    float rounding, a fraction of the work). ``None`` decides (when the model's ``torch.fx``
    graph is known and it saves enough), ``True`` demands it (ValueError saying why not),
    ``False`` turns it off. Per-example targets, ``fa.outputs`` (K scores) and per-example
    baselines run incrementally; tuple inputs, extra model arguments, forward hooks, ops of
    unknown in-place behaviour and batch norm in train mode take the plain path.
    """
    check_fn(f)
    _incremental.check_flag(incremental)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        with torch.no_grad(), begin(f, x, args, kwargs, opts, grad=False) as c:
            specs = _windows.check_windows(window, stride, c.xs)
            bases = broadcast_baseline(baseline, c.xs)
            xs = promote(c.xs, bases)
            plans = [_windows.windows(tuple(x.shape[1:]), w, s, c.device) for x, (w, s) in zip(c.xs, specs)]
            offs = [1 + sum(p.n for p in plans[:i]) for i in range(len(plans))]  # item 0: no window

            def build(lo, hi):  # the windows of input i are items o_i .. o_i + n_i - 1
                return tuple(
                    p.perturb(x, b, lo - o, hi - o) if lo < o + p.n and hi > o
                    else x.unsqueeze(0).expand(hi - lo, *x.shape)
                    for p, o, x, b in zip(plans, offs, xs, bases)
                )

            n = 1 + sum(p.n for p in plans)
            s = _incremental.scores(c, xs, plans, bases, incremental)
            if s is None:
                s = _evaluate(c, n, build, ("occlusion", tuple(specs)), "occlusion")
            drops = s[:1] - s[1:]
            return c.out(tuple(p.spread(drops[o - 1 : o - 1 + p.n]) for p, o in zip(plans, offs)))

    return mark(attr_fn, "occlusion")


# --------------------------------------------------------------------------- ablation


def feature_ablation(f: Callable, mask=None, baseline: Any = 0.0, *, batch_size=None, precision=None, progress=None):
    """Feature ablation (Captum's ``FeatureAblation``): each feature — the elements sharing an
    id in ``mask`` — is set to ``baseline`` alone, and all its elements get the output drop
    ``f(x) − f(x with the feature ablated)``::

        ids = torch.arange(4).repeat_interleave(8).view(1, 1, 1, 32).expand(1, 1, 32, 32)
        fa.feature_ablation(f, mask=ids)(x)     # [B, 3, 32, 32] -> [B, 3, 32, 32]

    ``mask`` holds integer ids broadcastable to the input (batch dim 1 or B, or one example's
    shape), a tuple of them for tuple inputs (an id appearing in several tensors is one
    feature, ablated in all of them at once), or a callable ``mask(*x)`` returning one.
    ``None`` makes every element its own feature.
    """
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)
    plans: dict = {}  # mask plans, built once per input shape

    def attr_fn(x, *args, **kwargs):
        with torch.no_grad(), begin(f, x, args, kwargs, opts, grad=False) as c:
            bases = broadcast_baseline(baseline, c.xs)
            xs = promote(c.xs, bases)
            feats = _features.features(mask, c.xs, c.B, cache=plans)

            def swap(i, idx):
                return bases[i] if idx is None else _windows.values_at(bases[i], xs[i], idx)

            def build(lo, hi):  # item 0 ablates nothing
                return _single_features(c, xs, feats, lo, hi, swap)

            s = _evaluate(c, feats.F + 1, build, ("ablation",), "feature ablation")
            return _per_feature(c, feats, s[:1] - s[1:])

    return mark(attr_fn, "feature_ablation")


def _permutations(F: int, B: int, device: torch.device, generator) -> Tensor:
    """One random shuffle of the batch per feature, ``[F, B]``, none of them the identity."""
    perms = _random.rand((F, B), generator, device).argsort(1)
    ident = torch.arange(B, device=device)
    while True:
        same = (perms == ident).all(1)
        if not bool(same.any()):
            return perms
        perms[same] = _random.rand((int(same.sum()), B), generator, device).argsort(1)


def feature_permutation(f: Callable, mask=None, *, generator=None, batch_size=None, precision=None, progress=None):
    """Permutation feature importance (Captum's ``FeaturePermutation``): each feature is
    shuffled across the batch (a random non-identity permutation per feature) and its elements
    get ``f(x) − f(x with the feature shuffled)`` per example::

        fa.feature_permutation(fa.target(model, y), mask=None)(x_batch)    # B >= 2

    ``mask`` as in :func:`feature_ablation`. A feature spanning several input tensors is
    shuffled with one permutation in all of them (Captum draws one per tensor).
    """
    check_fn(f)
    _random.check_generator(generator)
    opts = _executor.resolve(batch_size, precision, progress)
    plans: dict = {}  # mask plans, built once per input shape

    def attr_fn(x, *args, **kwargs):
        with torch.no_grad(), begin(f, x, args, kwargs, opts, grad=False) as c:
            xs = c.xs
            if c.B < 2:
                raise ValueError(
                    "feature_permutation shuffles each feature across the batch, so x needs at least 2 "
                    f"examples; got a batch of {c.B}"
                )
            feats = _features.features(mask, c.xs, c.B, cache=plans)
            perms = _permutations(feats.F, c.B, c.device, generator)

            def build(lo, hi):
                rows = perms[(_items(lo, hi, c) - 1).clamp_min(0)]  # [m, B]: each item's shuffle

                def swap(i, idx):
                    x = c.xs[i]
                    if idx is None:
                        return x[rows]
                    idx = idx.expand(-1, c.B, -1)
                    return x.reshape(c.B, -1)[rows.unsqueeze(2), idx]

                return _single_features(c, xs, feats, lo, hi, swap)

            s = _evaluate(c, feats.F + 1, build, ("permutation",), "feature permutation")
            return _per_feature(c, feats, s[:1] - s[1:])

    return mark(attr_fn, "feature_permutation")


# --------------------------------------------------------------------------- Shapley values


def shapley_values(f: Callable, mask=None, baseline: Any = 0.0, *, batch_size=None, precision=None, progress=None):
    """Exact Shapley values of the features in ``mask`` (players take their input value when
    present and ``baseline`` when absent), from all ``2**F`` coalitions at once::

        φ_i = Σ_{S ∌ i} |S|! (F − |S| − 1)! / F! · (v(S ∪ {i}) − v(S))

    This equals Captum's ``ShapleyValues`` (the average over all ``F!`` orderings) at
    ``2**F`` instead of ``F · F!`` evaluations. Refuses more than
    ``MAX_EXACT_SHAPLEY_FEATURES`` (16) features::

        fa.shapley_values(f, mask=torch.tensor([[0, 0, 1, 2]]))(x)   # [B, 4] -> [B, 4]
    """
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)
    plans: dict = {}  # mask plans, built once per input shape

    def attr_fn(x, *args, **kwargs):
        with torch.no_grad(), begin(f, x, args, kwargs, opts, grad=False) as c:
            bases = broadcast_baseline(baseline, c.xs)
            xs = promote(c.xs, bases)
            feats = _features.features(mask, c.xs, c.B, cache=plans)
            F = feats.F
            if F > MAX_EXACT_SHAPLEY_FEATURES:
                raise ValueError(
                    f"shapley_values on {F} features needs every coalition: 2**{F} = {_count(2**F)} evaluations of "
                    f"f per example (Captum's ShapleyValues: {F} x {F}! = {_count(F * math.factorial(F))}). The limit "
                    f"is {MAX_EXACT_SHAPLEY_FEATURES} features; group features with mask= or use fa.shapley_sampling "
                    "or fa.kernel_shap"
                )
            bits = 2 ** torch.arange(F, device=c.device)
            # w[k] = k! (F-k-1)! / F! for a coalition of size k without the player
            w = torch.tensor([1.0 / (F * math.comb(F - 1, k)) for k in range(F)], dtype=torch.float64, device=c.device)

            def keep(items):
                return (items.unsqueeze(1) & bits) != 0

            v = _coalitions(c, xs, feats, bases, 2**F, keep, ("shapley_values",), "shapley values")  # [2**F, B, K]
            k = keep(_items(0, 2**F, c))
            size = k.sum(1, keepdim=True)
            coef = torch.where(k, w[(size - 1).clamp_min(0)], -w[size.clamp_max(F - 1)])  # [2**F, F]
            phi = torch.einsum("mf,mbk->fbk", coef, v.double())  # in float64, returned in the scores' float dtype
            return _per_feature(c, feats, phi.to(v.dtype if v.is_floating_point() else torch.float32))

    return mark(attr_fn, "shapley_values")


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**12 else f"about 1e{len(str(n)) - 1}"


def _random_orders(samples: int, F: int, device: torch.device, generator) -> Tensor:
    """``samples`` random orderings of the features, ``[samples, F]`` (row s: feature at each position)."""
    return _random.rand((samples, F), generator, device).argsort(1)


def shapley_sampling(
    f: Callable, mask=None, baseline: Any = 0.0, samples: int = 25, *, generator=None, batch_size=None, precision=None, progress=None
):
    """Shapley value sampling (Captum's ``ShapleyValueSampling``; Castro et al. 2009): the
    marginal contributions along ``samples`` random orderings of the features, averaged. Each
    ordering adds the features one at a time to the all-baseline input; the ``samples·(F−1)``
    intermediate coalitions (plus the empty and full ones, evaluated once) are folded batches::

        fa.shapley_sampling(f, mask=superpixels, samples=25)(x)     # [B, ...] -> [B, ...]
    """
    check_fn(f)
    _random.check_generator(generator)
    _check_samples(samples)
    opts = _executor.resolve(batch_size, precision, progress)
    plans: dict = {}  # mask plans, built once per input shape

    def attr_fn(x, *args, **kwargs):
        with torch.no_grad(), begin(f, x, args, kwargs, opts, grad=False) as c:
            bases = broadcast_baseline(baseline, c.xs)
            xs = promote(c.xs, bases)
            feats = _features.features(mask, c.xs, c.B, cache=plans)
            F, S = feats.F, samples
            order = _random_orders(S, F, c.device, generator)  # [S, F]
            rank = order.argsort(1)  # position of each feature in each ordering

            def keep(items):  # item 0: empty, 1: full, 2 + s*(F-1) + (t-1): first t of ordering s
                j = (items - 2).clamp_min(0)
                s, t = j // max(F - 1, 1), j % max(F - 1, 1) + 1
                k = rank[s] < t.unsqueeze(1)
                k = torch.where((items == 0).unsqueeze(1), torch.zeros_like(k), k)
                return torch.where((items == 1).unsqueeze(1), torch.ones_like(k), k)

            v = _coalitions(c, xs, feats, bases, 2 + S * (F - 1), keep, ("shapley",), "shapley sampling")
            B, K = v.shape[1:]
            chain = torch.cat([v[:1].expand(S, 1, B, K), v[2:].view(S, F - 1, B, K), v[1:2].expand(S, 1, B, K)], 1)
            marg = chain[:, 1:] - chain[:, :-1]  # [S, F, B, K]: contribution of the feature at each position
            marg = marg if marg.is_floating_point() else marg.float()  # integer scores: a float mean, as Captum
            phi = marg.gather(1, rank.view(S, F, 1, 1).expand(S, F, B, K)).mean(0)
            return _per_feature(c, feats, phi)

    return mark(attr_fn, "shapley_sampling")


# --------------------------------------------------------------------------- surrogates


def _kernel_coalitions(n: int, F: int, device: torch.device, generator) -> Tensor:
    """Captum's KernelSHAP sampling: the full and the empty coalition, then sizes ``k`` drawn
    with ``p(k) ∝ (F−1) / (k (F−k))`` and a uniform subset of that size. ``[n, F]`` bool."""
    z = torch.zeros(n, F, dtype=torch.bool, device=device)
    z[0] = True
    if n > 2:
        if F > 1:
            k = torch.arange(1, F, dtype=torch.float64)
            size = _random.multinomial((F - 1) / (k * (F - k)), n - 2, generator, device) + 1
            rank = _random.rand((n - 2, F), generator, device).argsort(1).argsort(1)
            z[2:] = rank < size.unsqueeze(1)
        else:
            z[2:] = _random.rand((n - 2, 1), generator, device) < 0.5
    return z


def kernel_shap(
    f: Callable,
    mask=None,
    baseline: Any = 0.0,
    samples: int = 25,
    *,
    coalitions: str = "shared",
    generator=None,
    batch_size=None,
    precision=None,
    progress=None,
):
    """KernelSHAP (Lundberg & Lee 2017) as Captum's ``KernelShap``: ``samples`` coalitions —
    the full and the empty one (weight 1e6, standing in for ∞), then coalition sizes drawn from
    the Shapley kernel and uniform subsets of that size (weight 1) — evaluated as folded
    batches, then one weighted least-squares fit with intercept per example and score, solved in
    torch. Converges to the exact Shapley values as ``samples`` grows::

        fa.kernel_shap(f, mask=superpixels, samples=200)(x)     # [B, ...] -> [B, ...]

    ``coalitions="shared"`` (the default) draws one set of coalitions for the whole batch;
    ``"per_example"`` draws a set for each example, as Captum does, so a batch gives what its
    examples give one by one (with one generator, drawn in example order). Both cost the same
    forwards (measured within noise of each other on CPU); the shared draw stays the default
    because with it an example's result does not depend on its position in the batch.
    """
    check_fn(f)
    _random.check_generator(generator)
    _check_samples(samples, least=2)
    _check_coalitions(coalitions)
    opts = _executor.resolve(batch_size, precision, progress)
    plans: dict = {}  # mask plans, built once per input shape

    def attr_fn(x, *args, **kwargs):
        with torch.no_grad(), begin(f, x, args, kwargs, opts, grad=False) as c:
            bases = broadcast_baseline(baseline, c.xs)
            xs = promote(c.xs, bases)
            feats = _features.features(mask, c.xs, c.B, cache=plans)
            Z, v = _sampled(c, xs, feats, bases, _kernel_coalitions, coalitions, samples, generator, "kernel shap")
            w = torch.ones(samples, dtype=torch.float64, device=c.device)
            w[:2] = KERNEL_SHAP_ENDPOINT_WEIGHT
            coef = _surrogate.fit(Z, v, w, penalty=None)  # [B, K, F]
            return _per_feature(c, feats, coef.permute(2, 0, 1))

    return mark(attr_fn, "kernel_shap")


COALITIONS = ("shared", "per_example")


def _check_coalitions(coalitions) -> None:
    if coalitions not in COALITIONS:
        raise ValueError(f"coalitions must be one of {COALITIONS}, got {coalitions!r}")


def _sampled(c: Call, xs, feats: _features.Features, bases, draw: Callable, coalitions: str, n: int, generator, desc: str):
    """Draw ``n`` coalitions — ``[n, F]`` shared by the batch, or ``[n, B, F]`` drawn example
    after example (so a batch equals its examples called one by one with the same
    generator) — and evaluate them: ``(Z, scores [n, B, K])``."""
    if coalitions == "shared":
        Z = draw(n, feats.F, c.device, generator)
    else:
        Z = torch.stack([draw(n, feats.F, c.device, generator) for _ in range(c.B)], 1)
    v = _coalitions(c, xs, feats, bases, n, lambda items: Z[items], ("coalitions", coalitions), desc)
    if coalitions == "per_example" and v.shape[1] != c.B:
        raise ValueError(
            "coalitions='per_example' draws coalitions for each example, but f gives one value for the whole "
            "batch; use coalitions='shared'"
        )
    return Z, v


def _bernoulli_coalitions(n: int, F: int, device: torch.device, generator) -> Tensor:
    """LIME's sampling: each feature kept with probability ½, ``[n, F]`` bool."""
    return _random.rand((n, F), generator, device) < 0.5


DISTANCES = ("cosine", "euclidean")


def _similarities(
    c: Call, feats: _features.Features, bases, Z: Tensor, kernel_width: float, distance: str, whole: bool = False
) -> Tensor:
    """LIME's weights ``exp(−d(x, x_z)² / (2 width²))`` per coalition and example, ``[n, B]``
    (``whole``: of the whole batch as one input, ``[n, 1]``).

    Every perturbed input is ``x`` on kept features and the baseline elsewhere, so the dot
    products it needs are sums over features of per-feature partial sums of ``x·x``, ``x·b``
    and ``b·b``: nothing per-sample is built."""
    B, F = c.B, feats.F
    xx = torch.zeros(B, F, dtype=torch.float64, device=c.device)
    xb, bb = torch.zeros_like(xx), torch.zeros_like(xx)
    for ids, x, b in zip(feats.ids, c.xs, bases):
        idx = ids.expand(x.shape).reshape(B, -1)
        xf, bf = x.double().reshape(B, -1), b.double().expand(x.shape).reshape(B, -1)
        xx.scatter_add_(1, idx, xf * xf)
        xb.scatter_add_(1, idx, xf * bf)
        bb.scatter_add_(1, idx, bf * bf)
    if whole:  # one perturbation of the whole batch: Captum flattens the batch
        xx, xb, bb = (t.sum(0, keepdim=True) for t in (xx, xb, bb))
    z = Z.double()

    def over_features(a: Tensor, per_feature: Tensor) -> Tensor:  # Σ_F a[n, (B,) F] · t[B, F] → [n, B]
        return a @ per_feature.t() if a.dim() == 2 else (a * per_feature).sum(2)

    if distance == "cosine":
        dot = over_features(z, xx - xb) + xb.sum(1)  # [n, B]
        pp = over_features(z, xx - bb) + bb.sum(1)
        cos = dot / (xx.sum(1) * pp).clamp_min(1e-16).sqrt()
        d2 = (1.0 - cos) ** 2
    else:
        d2 = over_features(1.0 - z, xx - 2 * xb + bb)
    return torch.exp(-d2 / (2.0 * kernel_width**2))


def lime(
    f: Callable,
    mask=None,
    baseline: Any = 0.0,
    samples: int = 25,
    kernel_width: float = 1.0,
    alpha: float = 0.01,
    *,
    penalty: str | None = "l1",
    distance: str = "cosine",
    coalitions: str = "shared",
    generator=None,
    batch_size=None,
    precision=None,
    progress=None,
):
    """LIME (Ribeiro et al. 2016) with Captum's ``Lime`` defaults: ``samples`` coalitions with
    every feature kept with probability ½, weighted by an exponential kernel
    ``exp(−d² / (2·kernel_width²))`` of the ``distance`` ("cosine" or "euclidean") between
    ``x`` and the perturbed input, and a weighted linear surrogate with intercept per example
    and score: ``penalty="l1"`` is the lasso ``Σ w r² / (2 Σ w) + alpha·‖β‖₁``
    (``sklearn.linear_model.Lasso(alpha)``, Captum's ``SkLearnLasso(alpha=0.01)``), ``"l2"``
    ridge ``Σ w r² + alpha·‖β‖²``, ``None`` plain weighted least squares::

        fa.lime(f, mask=superpixels, samples=200)(x)    # [B, ...] -> [B, ...] (coefficients)

    ``coalitions="shared"`` (the default) draws one set of coalitions for the whole batch;
    ``"per_example"`` draws a set for each example, as Captum does (see ``fa.kernel_shap``).
    """
    check_fn(f)
    _random.check_generator(generator)
    _check_samples(samples)
    _check_coalitions(coalitions)
    if not isinstance(kernel_width, (int, float)) or isinstance(kernel_width, bool) or kernel_width <= 0:
        raise ValueError(f"kernel_width must be a positive number, got {kernel_width!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha < 0:
        raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
    if penalty not in _surrogate.PENALTIES:
        raise ValueError(f"penalty must be one of {_surrogate.PENALTIES}, got {penalty!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    opts = _executor.resolve(batch_size, precision, progress)
    plans: dict = {}  # mask plans, built once per input shape

    def attr_fn(x, *args, **kwargs):
        with torch.no_grad(), begin(f, x, args, kwargs, opts, grad=False) as c:
            bases = broadcast_baseline(baseline, c.xs)
            xs = promote(c.xs, bases)
            feats = _features.features(mask, c.xs, c.B, cache=plans)
            Z, v = _sampled(c, xs, feats, bases, _bernoulli_coalitions, coalitions, samples, generator, "lime")
            w = _similarities(c, feats, bases, Z, float(kernel_width), distance, whole=v.shape[1] != c.B)
            coef = _surrogate.fit(Z, v, w, penalty=penalty, alpha=float(alpha))
            return _per_feature(c, feats, coef.permute(2, 0, 1))

    return mark(attr_fn, "lime")
