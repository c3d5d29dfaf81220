"""A smoke test on real architectures: torchvision models with random weights at a small input
size, every applicable method, completeness where the method has an exact answer, and
Captum's numbers for the layer methods that broke on them (in-place ReLU after the GradCAM
layer: VGG, DenseNet, SqueezeNet; reused ReLU modules: ResNet; functional ReLU only:
GoogLeNet)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import LayerGradCam
from helpers import close, no_hooks
from torch import nn

import funcattr as fa


def model(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    m = torchvision.models.get_model(name, weights=None, **kw).eval()
    if name in ("googlenet", "mobilenet_v3_small"):  # their default init is so small that the output barely depends on x
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight)
            elif isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=0.1)
    return m


def x(B=2, size=32):
    return torch.randn(B, 3, size, size, generator=torch.Generator().manual_seed(1))


def gap(f, a, start, end):
    """Completeness gap relative to the output difference."""
    total = a.reshape(a.shape[0], -1).sum(1)
    diff = f(end) - f(start)
    return ((total - diff).abs() / diff.abs().clamp_min(1e-6)).max().item()


@pytest.mark.parametrize(
    "name, layer, kw, size",
    [
        ("vgg11", lambda m: m.features[18], {}, 32),  # Conv2d followed by ReLU(inplace=True)
        ("densenet121", lambda m: m.features, {}, 32),  # followed by F.relu(inplace=True) in forward
        ("squeezenet1_1", lambda m: m.features[0], {}, 64),
        ("resnet18", lambda m: m.bn1, {}, 32),  # followed by the model's reused in-place ReLU
    ],
)
def test_gradcam_on_a_layer_before_an_in_place_relu_matches_captum(name, layer, kw, size):
    m = model(name, **kw)
    inp = x(size=size)
    L = layer(m)
    ours = fa.gradcam(fa.target(m, 3), L)(inp)
    theirs = LayerGradCam(m, L).attribute(inp, target=3)
    close(ours, theirs, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # also where users evaluate
        close(fa.gradcam(fa.target(m, 3), L)(inp), ours, rtol=0, atol=0)
    assert no_hooks(m)


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1", "googlenet", "mobilenet_v3_small"])
def test_every_method_on_a_real_model(name):
    m = model(name, **({"aux_logits": False, "init_weights": True} if name == "googlenet" else {}))
    size = 64 if name == "squeezenet1_1" else 32
    inp = x(size=size)
    f = fa.target(m, 3)
    score = lambda v: m(v)[:, 3].detach()  # noqa: E731
    zero = torch.zeros_like(inp)
    conv = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)][2]

    assert (score(inp) - score(zero)).abs().min() > 1e-3  # the output depends on the input
    a, delta = fa.integrated_gradients(f, steps=16, return_delta=True)(inp)
    assert gap(score, a, zero, inp) < 0.02, delta
    try:
        dl = fa.deeplift(f)(inp)
    except NotImplementedError as err:  # never a silent plain gradient: the op is named
        assert "no rule for" in str(err)
    else:
        assert gap(score, dl, zero, inp) < 1e-4

    for method in (
        fa.saliency(f),
        fa.input_x_gradient(f),
        fa.guided_backprop(f),
        fa.noise_tunnel(fa.saliency(f), samples=2, stdev=0.1, generator=torch.Generator().manual_seed(0)),
        fa.gradient_shap(f, torch.zeros(2, 3, size, size), samples=2, generator=torch.Generator().manual_seed(0)),
        fa.occlusion(f, window=(3, size // 4, size // 4), stride=(3, size // 4, size // 4)),
        fa.kernel_shap(f, mask=superpixels(size), samples=8, generator=torch.Generator().manual_seed(0)),
    ):
        out = method(inp)
        assert out.shape == inp.shape and torch.isfinite(out).all(), method.__name__
    for method in (fa.gradcam(f, conv), fa.conductance(f, conv, steps=4), fa.integrated_gradients(f, steps=4, wrt=conv)):
        out = method(inp)
        assert out.shape[0] == 2 and torch.isfinite(out).all(), method.__name__
    assert no_hooks(m)


def superpixels(size):
    side = size // 4
    ids = (torch.arange(size) // side).view(1, size) + 4 * (torch.arange(size) // side).view(size, 1)
    return ids.view(1, 1, size, size)
