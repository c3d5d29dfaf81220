"""DeepLift and DeepLift SHAP: two runs of ``f``, then one backward with DeepLift's rules.

For a chunk of (example, baseline) pairs, ``f`` first runs on the baselines with no autograd
while ``_intercept.Recorder`` records the inputs and outputs of every operation that has a
rule (in call order); then ``f`` runs on the examples with autograd while
``_intercept.Applier`` gives each operation its rule with both runs' values (``_decompose``).
The gradient of that run is DeepLift's multiplier; times ``x − baseline`` it is the
attribution. Compared with one batch ``[x; baseline]`` paired along dim 0:

* no layout is assumed — the batch may sit in any dim at any operation (a sequence-first
  transformer);
* the baselines are evaluated once, forward only (no backward through the baseline rows);
* ``f(baseline)`` and ``f(x)`` come from the two runs, so ``return_delta`` costs nothing more.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

from . import _executor, _fold
from ._autodiff import evaluate, value_and_grad
from ._call import Call, begin, check_fn, mark
from ._gradient import _distribution
from ._inputs import broadcast_baseline
from ._intercept import Recorder, applying
from ._rules import EPS
from ._sites import capture

__all__ = ["deeplift", "deeplift_shap"]


@contextlib.contextmanager
def _reference(rec: Recorder, sites, values: list):
    """The reference run's context: record, and capture the sites' values (layer DeepLift)."""
    with rec:
        if sites is None:
            yield
        else:
            with capture(sites) as box:
                yield
            values.extend(box.values)


def _step(c: Call, xs, bs, m: int, multiply_by_inputs: bool, eps: float, per_item: bool = False):
    """``m`` folded items of (x, baseline) pairs, ``xs``/``bs`` ``[m, B, ...]``. Returns the
    attributions summed over the items (``[B, K, ...]`` per input, or for the site),
    ``f(x)``, ``f(baseline)`` summed over the items (``[B, K]``), and with ``per_item`` each
    item's completeness gap ``[m, B, K]`` (else None)."""
    xp = tuple(_fold.fold(x) for x in xs)
    bp = tuple(_fold.fold(b) for b in bs)
    a, kw = c.tiled(m * c.B)
    rec, h_b = Recorder(), []
    s_b = evaluate(c.f, bp, a, kw, rules=lambda _: _reference(rec, c.site, h_b))
    rules = lambda _: applying(rec.records, eps, strict=c.site is None)  # noqa: E731
    if c.site is None:
        s_x, gs, _, _ = value_and_grad(c.f, xp, a, kw, rules=rules)
        diffs = tuple(x - b for x, b in zip(xs, bs))
    else:
        s_x, gs, h_x, layout = value_and_grad(c.f, xp, a, kw, sites=c.site, rules=rules)
        c._seen(layout)  # how the sites' tensors map back (read by c.out)
        diffs = tuple(_fold.unfold(h - r.to(h.dtype), m) for h, r in zip(h_x, h_b))
    gs = tuple(_fold.unfold(g, m) for g in gs)  # [m, B, K, ...]
    if multiply_by_inputs:
        items = tuple(g * d.unsqueeze(2).to(g.dtype) for g, d in zip(gs, diffs))
    else:
        items = gs
    s_x, s_b = _fold.unfold(s_x, m), _fold.unfold(s_b, m)  # [m, B, K]
    gaps = None
    if per_item:  # Σ attr − (f(x) − f(b)) of each item: [m, B, K]
        gaps = sum(t.reshape(*t.shape[:3], -1).sum(3) for t in items) - (s_x - s_b).to(items[0].dtype)
    return tuple(t.sum(0) for t in items), s_x.sum(0), s_b.sum(0), gaps


def deeplift(
    f: Callable,
    baseline: Any = 0.0,
    multiply_by_inputs: bool = True,
    return_delta: bool = False,
    *,
    eps: float = EPS,
    wrt=None,
    batch_size=None,
    precision=None,
    progress=None,
):
    """DeepLift (Shrikumar et al. 2017), Captum's ``DeepLift``; with ``wrt=layer`` its
    ``LayerDeepLift``::

        dl = fa.deeplift(fa.target(model, 3), baseline=0.0)
        dl(x)                                         # [B, 3, H, W] -> [B, 3, H, W]
        fa.deeplift(fa.outputs(model, [3, 5]))(x)    # [B, 2, 3, H, W]

    ``f`` runs on the baseline, then on ``x``; every operation inside ``f`` where the two
    runs differ back-propagates DeepLift's multiplier instead of its gradient, whatever
    module, function or method calls it:

    * elementwise nonlinearities (ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus, GELU, SiLU,
      Mish, Hardswish, Hardsigmoid, ReLU6/Hardtanh/clamp, exp, log, sqrt, rsqrt, reciprocal,
      ``pow`` with one varying operand, abs, erf, ...): Rescale, ``Δout/Δin`` (the local
      derivative where ``|Δin|`` is too small to divide by, see ``eps``);
    * products of two varying tensors (``x * gate``, ``q @ k.T``, ``attn @ v``, ``einsum``,
      ``bmm``), and division: the uniform rule ``Δ(ab) = ā·Δb + Δa·b̄`` (means of the two runs);
    * LayerNorm, GroupNorm, RMSNorm, InstanceNorm, softmax, log-softmax, logsumexp, vector
      norms, ``var``/``std`` and ``scaled_dot_product_attention``: their decompositions into
      the above;
    * max-pool: Captum's rule.

    All of them keep summation to delta exactly: ``Σ attributions = f(x) − f(baseline)`` to
    float rounding. An operation with no such rule (a fused LSTM/GRU kernel, ``max``/``amax``/
    ``topk``/``sort``, a selection by a mask or index that differs between the runs, ...)
    raises ``NotImplementedError`` naming it when the runs differ there — never a silent plain
    gradient — and so does ``f`` taking a different path on ``x`` than on the baseline.

    The attribution is ``(x − baseline) ×`` the multipliers (``multiply_by_inputs=False``: the
    multipliers alone); with ``wrt=layer``, ``(a(x) − a(baseline)) ×`` the multipliers at the
    layer's value, where ``baseline`` is still an *input* baseline.

    The multipliers are a value of their own, so Captum's ``custom_attribution_func`` is a
    composition::

        mult = fa.deeplift(f, b, multiply_by_inputs=False)(x)    # [B, 3, H, W]: Δf/Δx per element
        attr = custom(mult, x, b)                                # Captum's custom_attribution_func
        attr = (mult * (x - b)) ** 2                             # e.g. squared contributions

    For ``fa.deeplift_shap``, Captum applies the function per baseline and averages:
    ``torch.stack([custom(fa.deeplift(f, bj, multiply_by_inputs=False)(x), x, bj) for bj in
    dist]).mean(0)``.

    ``eps``: below this ``|Δin|`` the local derivative replaces the secant (Captum's ``eps``); smooth functions
    also use it where ``|Δin| ≤ ε^(1/3)·|x + baseline|`` (``ε`` the float type's resolution),
    where their secant would be rounding noise.

    Where funcattr differs from Captum 0.9.0 it keeps DeepLift's definition and its summation
    to delta: softmax is decomposed (Captum rescales the softmax as a whole and subtracts the
    mean multiplier over the *whole batch*, which mixes examples and, inside attention,
    divides by near-zero logit differences); products, normalizations and functional or
    reused activations get rules (Captum: plain gradients); overlapping max-pool windows
    accumulate; chained nonlinear modules and the input of a nonlinear layer get their rules
    (Captum's hooks read a stale gradient there).
    """
    check_fn(f)
    if return_delta not in (False, True):
        raise ValueError(
            f"return_delta must be True or False, got {return_delta!r} (one baseline: the per-example delta is the "
            "per-sample one; fa.deeplift_shap takes return_delta='per_sample')"
        )
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt, rules_key=("deeplift", eps)) as c:
            bs = broadcast_baseline(baseline, c.xs)
            xs1 = tuple(x.unsqueeze(0) for x in c.xs)
            bs1 = tuple(b.expand_as(x).unsqueeze(0) for b, x in zip(bs, c.xs))
            attrs, s_x, s_b, _ = c.run(
                lambda lo, hi: _step(c, xs1, bs1, 1, multiply_by_inputs, eps), 1, "deeplift", multiply_by_inputs, desc="deeplift"
            )
            return c.finish(attrs, c.gap(attrs, s_x, s_b) if return_delta else None)

    return mark(attr_fn, "deeplift", return_delta)


def deeplift_shap(
    f: Callable,
    baselines: Any,
    multiply_by_inputs: bool = True,
    return_delta: bool | str = False,
    *,
    eps: float = EPS,
    wrt=None,
    batch_size=None,
    precision=None,
    progress=None,
):
    """DeepLift SHAP, Captum's ``DeepLiftShap`` (with ``wrt=layer`` its ``LayerDeepLiftShap``):
    the mean over a baseline distribution ``baselines[N_b, ...]`` (or a callable returning one)
    of DeepLift against each baseline, with DeepLift's rules (see :func:`deeplift`). All
    (example, baseline) pairs are folded and evaluated in memory-sized chunks::

        fa.deeplift_shap(f, baselines=background[:16])(x)   # [B, 3, H, W] -> [B, 3, H, W]

    ``return_delta=True`` gives per example ``Σ attr − (f(x) − mean_j f(b_j))``, the mean of
    Captum's per-pair deltas; ``return_delta="per_sample"`` gives Captum's per-pair deltas,
    one per (example, baseline), as ``[B, N_b]`` (``[B, K, N_b]`` for K scores)::

        attr, delta = fa.deeplift_shap(f, background[:16], return_delta="per_sample")(x)
        delta.shape                                  # [B, 16]; Captum's delta.view(B, 16)
    """
    if return_delta not in (False, True, "per_sample"):
        raise ValueError(f"return_delta must be False, True or 'per_sample', got {return_delta!r}")
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt, rules_key=("deeplift", eps)) as c:
            dist = _distribution(baselines, c.xs)
            Nb, B = dist[0].shape[0], c.B

            per_sample = return_delta == "per_sample"

            def step(lo, hi):
                m = hi - lo
                xs = tuple(x.unsqueeze(0).expand(m, *x.shape) for x in c.xs)
                bs = tuple(d[lo:hi].unsqueeze(1).expand(m, B, *d.shape[1:]) for d in dist)
                attrs, s_x, s_b, gaps = _step(c, xs, bs, m, multiply_by_inputs, eps, per_sample)
                if not per_sample:
                    return attrs, s_x, s_b
                every = gaps.new_zeros(Nb, *gaps.shape[1:])  # this chunk's rows of [N_b, B, K]
                every[lo:hi] = gaps
                return attrs, s_x, s_b, every

            res = c.run(step, Nb, "deeplift_shap", multiply_by_inputs, per_sample, desc="deeplift shap")
            total, s_x, s_b = res[:3]
            attrs = tuple(t / Nb for t in total)
            if per_sample:
                d = res[3].permute(1, 2, 0)  # [B, K, N_b]
                delta = d if c.is_k(d.shape[1]) else d[:, 0]
            else:
                delta = c.gap(attrs, s_x / Nb, s_b / Nb) if return_delta else None
            return c.finish(attrs, delta)

    return mark(attr_fn, "deeplift_shap", bool(return_delta))

