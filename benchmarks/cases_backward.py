"""Backward-rule cases: DeepLift on a batch (resnet18; ``--quick``: the small conv net, 32×32).

The limit is one plain forward+backward over the same ``2B`` stacked points ``[x; baseline]``
that DeepLift evaluates. Captum's ``DeepLift`` is timed on the same model (its best setting is
its default: one batch of ``2B`` rows). Two Captum 0.9.0 limits shape the check:

* a module whose output feeds another hooked nonlinearity directly (``ReLU`` → ``MaxPool2d``)
  gets a stale ``grad_output`` in Captum's tensor hooks, so its numbers drift from the Rescale
  rule and lose completeness; the agreement check therefore runs Captum on a copy with an
  identity clone between such modules (same function, hooks see fresh tensors);
* torchvision's ResNet reuses one ``nn.ReLU`` per block, which Captum's DeepLift rejects
  ("used more than once"), so the full case has no Captum column and is checked by
  completeness alone.
"""

from __future__ import annotations

import torch
from captum.attr import DeepLift
from torch import nn

import funcattr as fa

from .common import Built, Case, Setup, grad_limit

_HOOKED = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Softmax)


class _Clone(nn.Module):
    def forward(self, x):
        return x.clone()


def _hook_safe(model: nn.Module) -> nn.Module | None:
    """The same Sequential with a clone between directly chained nonlinear modules; None when
    the model is not a flat Sequential."""
    if not isinstance(model, nn.Sequential):
        return None
    mods = list(model)
    out = []
    for i, m in enumerate(mods):
        out.append(m)
        if type(m) in _HOOKED and i + 1 < len(mods) and type(mods[i + 1]) in _HOOKED:
            out.append(_Clone())
    return nn.Sequential(*out).eval()


def _check(a, b, what):
    if not torch.allclose(a, b, rtol=1e-3, atol=1e-5 * b.abs().max().item()):
        raise AssertionError(f"{what}: funcattr and Captum disagree (max diff {(a - b).abs().max().item():.3g})")


def deeplift_batch(setup: Setup) -> Built:
    model, n = setup.model(setup.model_name()), setup.image_size()
    B = 32 if setup.quick else 16
    x = torch.randn(B, 3, n, n, device=setup.device)
    ours = fa.deeplift(fa.target(model, 3), baseline=0.0)
    attr, delta = fa.deeplift(fa.target(model, 3), baseline=0.0, return_delta=True)(x)
    scale = fa.target(model, 3)(x).abs().max().item()
    if delta.abs().max().item() > 1e-4 * max(scale, 1.0):
        raise AssertionError(f"deeplift: completeness gap {delta.abs().max().item():.3g}")
    safe = _hook_safe(model)
    captum = None
    note = f"B={B}, [x; 0] = {2 * B} rows"
    if safe is not None:
        _check(attr, DeepLift(safe).attribute(x, baselines=0.0, target=3), "deeplift")
        cap = DeepLift(model)
        captum = lambda: cap.attribute(x, baselines=0.0, target=3)  # noqa: E731
    else:
        note += "; Captum DeepLift rejects the reused nn.ReLU of torchvision's ResNet"
    pts = torch.cat([x, torch.zeros_like(x)])
    return Built(
        funcattr=lambda: ours(x),
        limit=grad_limit(model, pts, 3),
        captum_best=captum,
        captum_default=captum,
        points=pts.shape[0],
        note=note,
    )


CASES = [
    Case("deeplift", deeplift_batch),
]
