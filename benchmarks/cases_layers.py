"""Layer cases: GradCAM on the last block (resnet18 ``layer4``; the small model's last conv
block with ``--quick``)."""

from __future__ import annotations

import torch
from captum.attr import LayerGradCam
from torch import nn

import funcattr as fa

from .common import Built, Case, Limit, Setup


def _split(model: nn.Module, quick: bool) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(body up to the layer, the layer, head after it) of the benchmark model."""
    if quick:  # small: ... conv, relu | AdaptiveAvgPool2d, Flatten, Linear
        return model[:10], model[9], model[10:]
    body = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4)
    return body, model.layer4, nn.Sequential(model.avgpool, nn.Flatten(), model.fc)


def _check(a, b, what):
    if not torch.allclose(a, b, rtol=1e-3, atol=1e-5 * b.abs().max().item()):
        raise AssertionError(f"{what}: funcattr and Captum disagree (max diff {(a - b).abs().max().item():.3g})")


def gradcam(setup: Setup) -> Built:
    model, n = setup.model(setup.model_name()), setup.image_size()
    B = 32
    body, layer, head = _split(model, setup.quick)
    x = torch.randn(B, 3, n, n, device=setup.device)
    t = torch.randint(10, (B,), device=setup.device)
    ours = fa.gradcam(fa.target(model, t), layer)
    cap = LayerGradCam(model, layer)
    _check(ours(x), cap.attribute(x, target=t).detach(), "gradcam")

    def rows(lo, hi):  # the model split at the layer: one forward, one backward from the score to the layer
        a = body(x[lo:hi]).detach().requires_grad_(True)
        s = head(a).gather(1, t[lo:hi].view(-1, 1)).sum()
        (g,) = torch.autograd.grad(s, a)
        return (g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)

    limit = Limit(rows, B, x.device)
    _check(ours(x), torch.cat(limit()), "gradcam limit")
    return Built(
        funcattr=lambda: ours(x),
        limit=limit,
        captum_best=lambda: cap.attribute(x, target=t),
        captum_default=lambda: cap.attribute(x, target=t),
        points=B,
    )


CASES = [Case("gradcam", gradcam)]
