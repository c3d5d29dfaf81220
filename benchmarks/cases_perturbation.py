"""Perturbation-family cases: occlusion in the seed configurations (3×224×224 on resnet18,
window (3, 45, 45) stride (3, 9, 9), and window (3, 15, 15) stride (3, 8, 8); shrunk in
--quick) as the default call (which takes the incremental path when it pays) and on the plain
path, feature ablation over superpixel squares, and KernelSHAP.

The limit is a plain batched forward over exactly the inputs the plain method evaluates —
the unperturbed image plus every occluded/ablated copy — pre-built outside the timed
function and run in the fastest chunks (``common.Limit``). Incremental occlusion evaluates
less than that, so it can beat the limit.
"""

from __future__ import annotations

import itertools
import math

import torch
from captum.attr import FeatureAblation, Occlusion

import funcattr as fa
from funcattr import _incremental

from . import common
from .common import Built, Case, Setup, forward_limit, sync


def _check(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    scale = theirs.abs().max().item()
    if not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale):
        raise AssertionError(f"{what}: funcattr and Captum disagree (max diff {(ours - theirs).abs().max().item():.3g})")


def _verify(fn, *args):
    """Run a check in full fp32 (no TF32 convolutions), outside the timing."""
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        fn(*args)


def _occluded(x: torch.Tensor, window, stride, baseline: float) -> torch.Tensor:
    """[1 + windows, *x.shape[1:]]: x, then x with each window at the baseline (B = 1), built
    by hand (one slice assignment per window), independently of funcattr's plan."""

    def starts(D, w, s):  # slide while the previous window has not reached the end
        out = [0]
        while out[-1] + w < D:
            out.append(out[-1] + s)
        return out

    copies = [x[0]]
    for o in itertools.product(*[starts(D, w, s) for D, w, s in zip(x.shape[1:], window, stride)]):
        c = x[0].clone()
        c[tuple(slice(a, a + w) for a, w in zip(o, window))] = baseline
        copies.append(c)
    return torch.stack(copies)


def _ablated(x: torch.Tensor, mask: torch.Tensor, baseline: float) -> torch.Tensor:
    """[1 + features, *x.shape[1:]] for B = 1 and a mask of ids 0..F-1."""
    F = int(mask.max()) + 1
    ids = torch.arange(-1, F, device=x.device).view(-1, *[1] * (x.dim() - 1))
    return torch.where(mask.unsqueeze(0) == ids, torch.tensor(baseline, device=x.device, dtype=x.dtype), x[0])


def _best_ppe(fn, candidates, device) -> int:
    """Captum's fastest perturbations_per_eval among a few (one timed call each, after warm-up)."""
    best, best_t = candidates[0], math.inf
    for ppe in candidates:
        fn(ppe)
        sync(device)
        t = common.clock()
        fn(ppe)
        sync(device)
        t = common.clock() - t
        if t < best_t:
            best, best_t = ppe, t
    return best


def _path_taken(call) -> str:
    """Which path ``fa.occlusion`` took for ``call()``: "incremental" or "plain"."""
    runs = []
    orig = _incremental._Chunk.run
    _incremental._Chunk.run = lambda self: runs.append(1) or orig(self)
    try:
        call()
    finally:
        _incremental._Chunk.run = orig
    return "incremental" if runs else "plain"


def _occlusion(window, stride, quick_window, quick_stride, incremental=None, captum_default=True):
    """An occlusion case at ``window``/``stride`` on 224 px (the quick ones on 32 px)."""

    def build(setup: Setup) -> Built:
        model, n = setup.model(setup.model_name()), setup.image_size()
        w, s = (quick_window, quick_stride) if setup.quick else (window, stride)
        torch.manual_seed(0)
        x = torch.randn(1, 3, n, n, device=setup.device)
        ours = fa.occlusion(fa.target(model, 3), window=w, stride=s, incremental=incremental)
        cap = Occlusion(model)
        pts = _occluded(x, w, s, 0.0)
        windows = pts.shape[0] - 1

        def captum(ppe):
            return cap.attribute(x, sliding_window_shapes=w, strides=s, target=3, perturbations_per_eval=ppe)

        _verify(lambda: _check(ours(x), captum(min(windows, 64)), "occlusion"))
        path = _path_taken(lambda: ours(x))
        best = _best_ppe(captum, [windows, 64, 16] if not setup.quick else [windows, 32], setup.device)
        return Built(
            funcattr=lambda: ours(x),
            limit=forward_limit(model, pts),
            captum_best=lambda: captum(best),
            captum_default=(lambda: captum(1)) if captum_default else None,
            points=pts.shape[0],
            note=f"{path}, window {w[1]}/stride {s[1]}: {windows} windows, Captum best ppe={best}",
        )

    return build


# seed 000/001 (224 px: window 45, stride 9 → 21 x 21 windows; quick: 6/2 on 32 px → 14 x 14),
# and seed 004 (window 15, stride 8 → 28 x 28; quick: 3/2 → 15 x 15)
occlusion = _occlusion((3, 45, 45), (3, 9, 9), (3, 6, 6), (3, 2, 2))
occlusion_plain = _occlusion((3, 45, 45), (3, 9, 9), (3, 6, 6), (3, 2, 2), incremental=False, captum_default=False)
occlusion_15_8 = _occlusion((3, 15, 15), (3, 8, 8), (3, 3, 3), (3, 2, 2), captum_default=False)


def ablation_superpixels(setup: Setup) -> Built:
    model, n = setup.model(setup.model_name()), setup.image_size()
    side = 4 if setup.quick else 16  # squares of side x side pixels, all channels together
    torch.manual_seed(0)
    x = torch.randn(1, 3, n, n, device=setup.device)
    cells = n // side
    r = torch.arange(n, device=setup.device) // side
    mask = (r.view(-1, 1) * cells + r.view(1, -1)).view(1, 1, n, n)  # [1, 1, H, W] superpixel ids
    ours = fa.feature_ablation(fa.target(model, 3), mask=mask)
    cap = FeatureAblation(model)
    pts = _ablated(x, mask[0], 0.0)
    feats = pts.shape[0] - 1

    def captum(ppe):
        return cap.attribute(x, target=3, feature_mask=mask, perturbations_per_eval=ppe)

    _verify(lambda: _check(ours(x), captum(feats), "feature ablation"))
    best = _best_ppe(captum, [feats, 64, 16] if not setup.quick else [feats, 16], setup.device)
    return Built(
        funcattr=lambda: ours(x),
        limit=forward_limit(model, pts),
        captum_best=lambda: captum(best),
        captum_default=lambda: captum(1),
        points=pts.shape[0],
        note=f"{feats} superpixels of {side}x{side}, Captum best ppe={best}",
    )


def kernel_shap(setup: Setup) -> Built:
    model, n = setup.model(setup.model_name()), setup.image_size()
    side, samples = (4, 100) if setup.quick else (16, 400)
    torch.manual_seed(0)
    x = torch.randn(1, 3, n, n, device=setup.device)
    cells = n // side
    r = torch.arange(n, device=setup.device) // side
    mask = (r.view(-1, 1) * cells + r.view(1, -1)).view(1, 1, n, n)
    ours = fa.kernel_shap(fa.target(model, 3), mask=mask, samples=samples)
    keep = torch.rand(samples, cells * cells, device=setup.device) < 0.5  # same count and shape of points
    pts = torch.where(keep[:, mask[0]], x, torch.zeros((), device=setup.device))
    try:  # Captum's KernelShap needs scikit-learn, which funcattr does not depend on
        import sklearn  # noqa: F401
        from captum.attr import KernelShap

        cap = KernelShap(model)
        captum_best = lambda: cap.attribute(x, target=3, feature_mask=mask, n_samples=samples, perturbations_per_eval=samples)  # noqa: E731
        captum_default = lambda: cap.attribute(x, target=3, feature_mask=mask, n_samples=samples)  # noqa: E731
        note = ""
    except ImportError:
        captum_best = captum_default = None
        note = ", Captum needs scikit-learn: not timed"
    return Built(
        funcattr=lambda: ours(x),
        limit=forward_limit(model, pts),
        captum_best=captum_best,
        captum_default=captum_default,
        points=pts.shape[0],
        note=f"{cells * cells} superpixels, {samples} coalitions{note}",
    )


CASES = [
    Case("occlusion", occlusion),
    Case("occlusion_plain", occlusion_plain),
    Case("occlusion_15_8", occlusion_15_8),
    Case("ablation_superpixels", ablation_superpixels),
    Case("kernel_shap", kernel_shap),
]
