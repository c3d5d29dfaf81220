"""One batched attribution call for a whole page: examples × models × classes.

A *job* is (example, model, class). The jobs of a request are sorted by model and stacked into
one batch of ``J`` rows; the score function ``stacked(...)`` sends each row to its model and
picks its class. funcattr folds its work (steps, samples, windows) into the batch work-major, so
row ``r`` of any folded batch belongs to job ``r mod J`` (DESIGN §3): viewed as ``[S, J, ...]``,
the columns of one model are a contiguous slice. One transform call then attributes the whole
page. Layer methods (GradCAM, CAM) need a layer inside one model, so they make one call per
model, each still batched over that model's examples and classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

import funcattr as fa

from ._data import UserCodeError
from ._methods import BadRequest, Ctx, Method, pixel_segments

__all__ = ["Job", "stacked", "attributions", "attribute"]


@dataclass(frozen=True)
class Job:
    example: int
    model: int
    target: int


def _rows(t: Tensor, S: int, J: int, lo: int, hi: int) -> Tensor:
    return t.reshape(S, J, *t.shape[1:])[:, lo:hi].reshape(S * (hi - lo), *t.shape[1:])


def stacked(models: Sequence[Callable], groups: Sequence[tuple[int, int, int]], targets: Tensor, J: int,
            score: Callable | None = None) -> Callable:
    """``f(*inputs) -> Tensor[N]``, ``N = S·J``: row ``r`` is job ``r mod J``; jobs ``lo..hi-1``
    of ``groups = [(model, lo, hi), ...]`` go to that model, and each row's score is its job's
    class (after ``score``, e.g. softmax, when given)."""

    def f(*inputs):
        N = inputs[0].shape[0]
        if N % J:
            raise RuntimeError(f"internal: a folded batch of {N} rows is not a multiple of the {J} jobs")
        S = N // J
        cols = []
        for m, lo, hi in groups:
            if len(groups) == 1:
                part = inputs
            else:
                part = tuple(_rows(t, S, J, lo, hi) if isinstance(t, Tensor) and t.dim() and t.shape[0] == N else t
                             for t in inputs)
            out = models[m](*part)
            if score is not None:
                out = score(out)
            if out.dim() == 2 and out.shape[1] > 1:
                t = targets[lo:hi].to(out.device).repeat(S)
                sel = out.gather(1, t.unsqueeze(1))[:, 0]
            else:
                sel = out.reshape(-1)
            cols.append(sel.reshape(S, hi - lo))
        return torch.cat(cols, 1).reshape(N)

    return f


def _groups(models: Sequence[int]) -> list[tuple[int, int, int]]:
    out = []
    for k, m in enumerate(models):
        if out and out[-1][0] == m:
            out[-1] = (m, out[-1][1], k + 1)
        else:
            out.append((m, k, k + 1))
    return out


def _compress(b: Tensor) -> Tensor:
    """Per-job baselines that are all equal (a constant baseline) → one row, which broadcasts."""
    return b[:1] if b.shape[0] > 1 and torch.equal(b, b[:1].expand_as(b)) else b


def _tuple(a) -> tuple[Tensor, ...]:
    return a if isinstance(a, tuple) else (a,)


def _one(xs: tuple):
    return xs[0] if len(xs) == 1 else xs


def _take(t, lo: int, hi: int, J: int):
    return t[lo:hi] if isinstance(t, Tensor) and t.dim() and t.shape[0] == J else t


def attributions(ex, jobs: Sequence[Job], method: Method, args: dict, with_scores: bool = False):
    """The attributions of ``jobs``, in their order: one tensor ``[J, ...]`` per feature (a layer
    method gives its upsampled map ``[J, 1, H, W]``), computed in one batched call (one per model
    for layer methods); with the per-job scores and ``{seconds, evaluations, calls}``."""
    store = ex.store
    order = sorted(range(len(jobs)), key=lambda k: jobs[k].model)
    js = [jobs[k] for k in order]
    J = len(js)
    raw, xs, extra = store.gather([j.example for j in js])
    try:
        bls = tuple(_compress(f.baselines(x)) for f, x in zip(store.features, xs))
    except (BadRequest, UserCodeError):
        raise
    except Exception as err:
        raise UserCodeError(f"a feature baseline raised {type(err).__name__}: {err}") from err
    targets = torch.tensor([j.target for j in js], device=store.device)
    groups = _groups([j.model for j in js])
    kinds = tuple(f.kind for f in store.features)
    shapes = tuple(tuple(x.shape[1:]) for x in xs)
    ctx = Ctx(kinds, shapes, bls, background=ex.background)

    evaluations = J * method.cost(ctx, args) + (J * 2 * (ex.curve_steps + 1) if with_scores else 0)
    if evaluations > ex.max_evaluations:
        raise BadRequest(
            f"{method.id} on {J} example×model×class job(s) needs about {evaluations:,} model evaluations; "
            f"the limit is {ex.max_evaluations:,}. Lower the steps, samples or windows, or show fewer examples."
        )
    # a forward and a backward cost about three forwards, timed when the predictions were made
    row = max(store.row_seconds[m] for m, _, _ in groups)
    if ex.max_seconds is not None and 3 * row * evaluations > ex.max_seconds:
        raise BadRequest(
            f"{method.id} on {J} example×model×class job(s) would take about {3 * row * evaluations:,.0f} s "
            f"({evaluations:,} model evaluations at ~{1000 * row:.1f} ms per example forward); the limit is "
            f"{ex.max_seconds:g} s. Lower the steps, samples or windows, or show fewer examples."
        )

    t0 = time.perf_counter()
    try:
        if method.layer:
            parts = []
            for m, lo, hi in groups:
                sub = Ctx(kinds, shapes, tuple(_take(b, lo, hi, J) for b in bls), background=ex.background, layer=ex.layers[m])
                f = stacked(store.models, [(m, 0, hi - lo)], targets[lo:hi], hi - lo)
                out = method.build(f, sub, args)(_one(tuple(x[lo:hi] for x in xs)), *(_take(a, lo, hi, J) for a in extra))
                parts.append(_tuple(out))
            attrs = tuple(torch.cat(p) for p in zip(*parts))
        else:
            f = stacked(store.models, groups, targets, J)
            attrs = _tuple(method.build(f, ctx, args)(_one(xs), *extra))
        attrs = tuple(a.detach() for a in attrs)
        scores = _scores(ex, js, xs, attrs, bls, extra, targets, groups, ctx) if with_scores else [{}] * J
    except (BadRequest, UserCodeError):
        raise
    except Exception as err:
        raise UserCodeError(f"{method.label} failed: {type(err).__name__}: {err}") from err
    info = {"seconds": round(time.perf_counter() - t0, 4), "evaluations": evaluations,
            "calls": len(groups) if method.layer else 1}
    back = [0] * J
    for k, o in enumerate(order):
        back[o] = k
    index = torch.tensor(back, device=attrs[0].device)
    return (tuple(a.index_select(0, index) for a in attrs), [scores[k] for k in back], raw, back, info)


def attribute(ex, jobs: Sequence[Job], method: Method, args: dict, with_scores: bool) -> tuple[list[dict], dict]:
    """What the page draws for each job, in order (per-feature views, contributions,
    faithfulness and localization scores), and ``{seconds, evaluations, calls}``."""
    attrs, scores, raw, back, info = attributions(ex, jobs, method, args, with_scores)
    views = []
    for k, j in enumerate(jobs):
        per = [a[k].cpu() for a in attrs]
        net = torch.stack([a.double().sum() for a in per])
        l1 = net.abs().sum()
        views.append({
            "model": j.model,
            "target": j.target,
            "features": [feat.show_attribution(a, r[back[k]]) for feat, a, r in zip(ex.store.features, per, raw)],
            "contributions": (net / l1 if l1 > 0 else net).tolist(),
            **scores[k],
        })
    return views, info


def _scores(ex, js, xs, attrs, bls, extra, targets, groups, ctx) -> list[dict]:
    """Deletion and insertion AUC of every job (one batched call each), and the pointing game
    and mass inside the object where the example has a mask."""
    store = ex.store
    J = len(js)
    full = tuple(a.expand_as(x) if a.shape != x.shape else a for a, x in zip(attrs, xs))
    if any(a.shape != x.shape for a, x in zip(full, xs)):
        return [{} for _ in js]
    f = stacked(store.models, groups, targets, J, score=store.score)
    mask = _one(pixel_segments(ctx))
    kw = dict(steps=ex.curve_steps, baseline=_one(bls), mask=mask, args=extra)
    dele = fa.metrics.deletion(f, _one(xs), _one(full), **kw).tolist()
    ins = fa.metrics.insertion(f, _one(xs), _one(full), **kw).tolist()
    out = [{"faithfulness": {"deletion": d, "insertion": i}} for d, i in zip(dele, ins)]
    if ctx.kinds == ("image",):
        masks = [store.mask(j.example) for j in js]
        have = [k for k, m in enumerate(masks) if m is not None and tuple(m.shape) == tuple(xs[0].shape[-2:])]
        if have:
            heat = attrs[0][have].cpu()
            mk = torch.stack([masks[k] for k in have])
            hit = fa.metrics.pointing_game(heat, mk).tolist()
            inside = fa.metrics.mass_inside(heat, mk).tolist()
            for k, h, m in zip(have, hit, inside):
                out[k]["localization"] = {"pointing_game": bool(h), "mass_inside": m}
    return out
