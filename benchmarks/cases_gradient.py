"""Gradient-family cases: integrated gradients (200 steps), noise tunnel over IG, IG for 10
targets at once, saliency on a batch."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

import funcattr as fa

from .common import Built, Case, Limit, Setup, grad_limit


def _ig_points(x: torch.Tensor, steps: int) -> torch.Tensor:
    a = torch.tensor(0.5 * (1 + np.polynomial.legendre.leggauss(steps)[0]), dtype=x.dtype, device=x.device)
    return (a.view(-1, 1, 1, 1, 1) * x.unsqueeze(0)).reshape(-1, *x.shape[1:])


def _check(a, b, what):
    if not torch.allclose(a, b, rtol=1e-3, atol=1e-5 * b.abs().max().item()):
        raise AssertionError(f"{what}: funcattr and Captum disagree (max diff {(a - b).abs().max().item():.3g})")


def ig(setup: Setup) -> Built:
    model, n = setup.model(setup.model_name()), setup.image_size()
    steps, B = (50, 1) if setup.quick else (200, 1)
    x = torch.randn(B, 3, n, n, device=setup.device)
    ours = fa.integrated_gradients(fa.target(model, 3), steps=steps)
    cap = IntegratedGradients(model)
    _check(ours(x), cap.attribute(x, target=3, n_steps=steps), "ig")
    pts = _ig_points(x, steps)
    return Built(
        funcattr=lambda: ours(x),
        limit=grad_limit(model, pts, 3),
        captum_best=lambda: cap.attribute(x, target=3, n_steps=steps),
        captum_default=lambda: cap.attribute(x, target=3, n_steps=steps),
        points=pts.shape[0],
    )


def ig_10_targets(setup: Setup) -> Built:
    model, n = setup.model(setup.model_name()), setup.image_size()
    steps, K = (20, 10) if setup.quick else (50, 10)
    x = torch.randn(1, 3, n, n, device=setup.device)
    ours = fa.integrated_gradients(fa.outputs(model, list(range(K))), steps=steps)
    cap = IntegratedGradients(model)

    def captum_loop():
        return torch.stack([cap.attribute(x, target=k, n_steps=steps) for k in range(K)], 1)

    _check(ours(x), captum_loop(), "ig 10 targets")
    pts = _ig_points(x, steps)

    def rows(lo, hi):  # one forward, K cotangents through one batched backward
        p = pts[lo:hi].detach().requires_grad_(True)
        out = model(p)[:, :K]
        cot = torch.eye(K, device=p.device)[:, None, :].expand(K, p.shape[0], K)
        return torch.autograd.grad(out, p, cot, is_grads_batched=True)[0]

    return Built(
        funcattr=lambda: ours(x),
        limit=Limit(rows, pts.shape[0], pts.device),
        captum_best=captum_loop,
        captum_default=captum_loop,
        points=pts.shape[0],
        note=f"{K} targets",
    )


def noise_tunnel_ig(setup: Setup) -> Built:
    model, n = setup.model(setup.model_name()), setup.image_size()
    steps, S = (10, 5) if setup.quick else (20, 10)
    x = torch.randn(1, 3, n, n, device=setup.device)
    ours = fa.noise_tunnel(fa.integrated_gradients(fa.target(model, 3), steps=steps), samples=S, stdev=0.1)
    nt = NoiseTunnel(IntegratedGradients(model))
    pts = _ig_points(x.repeat(S, 1, 1, 1), steps)
    return Built(
        funcattr=lambda: ours(x),
        limit=grad_limit(model, pts, 3),
        captum_best=lambda: nt.attribute(x, nt_samples=S, stdevs=0.1, target=3, n_steps=steps),
        captum_default=lambda: nt.attribute(x, nt_samples=S, stdevs=0.1, target=3, n_steps=steps),
        points=pts.shape[0],
        note=f"{S} samples x {steps} steps",
    )


def saliency_batch(setup: Setup) -> Built:
    model, n = setup.model(setup.model_name()), setup.image_size()
    B = 64 if setup.quick else 32
    x = torch.randn(B, 3, n, n, device=setup.device)
    t = torch.randint(10, (B,), device=setup.device)
    ours = fa.saliency(fa.target(model, t), abs=False)
    cap = Saliency(model)
    _check(ours(x), cap.attribute(x, target=t, abs=False), "saliency")
    return Built(
        funcattr=lambda: ours(x),
        limit=grad_limit(model, x, t),
        captum_best=lambda: cap.attribute(x, target=t, abs=False),
        captum_default=lambda: cap.attribute(x, target=t, abs=False),
        points=B,
    )


CASES = [
    Case("integrated_gradients", ig),
    Case("noise_tunnel_ig", noise_tunnel_ig),
    Case("ig_10_targets", ig_10_targets),
    Case("saliency_batch", saliency_batch),
]
