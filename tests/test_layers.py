"""Layers and neurons: GradCAM, CAM, upsample, activations, conductance, layer gradient methods
(``wrt=``) and ``fa.neuron`` — each by three witnesses: Captum's golden numbers, Captum 0.9.0 on
the same models, and a loop twin or an axiom."""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    LayerActivation,
    LayerAttribution,
    LayerConductance,
    LayerGradCam,
    LayerGradientShap,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    NeuronConductance,
    NeuronGradient,
    NeuronGradientShap,
    NeuronIntegratedGradients,
)
from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv, BasicModel_MultiLayer
from helpers import close, no_hooks
from models import res_conv_net
from torch import nn

import funcattr as fa


class GapNet(nn.Module):
    """features -> global average pool -> fc: the network CAM is defined for."""

    def __init__(self, head: str = "gap", classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.head = head
        self.fc = nn.Linear(8 * 64 if head == "flatten" else 8, classes)
        self.hidden = nn.Linear(8, 8)

    def forward(self, x):
        a = self.features(x)
        if self.head == "flatten":
            return self.fc(a.flatten(1))
        h = a.mean((2, 3))
        if self.head == "mlp":
            h = torch.tanh(self.hidden(h))
        return self.fc(h)


def gap_net(head="gap"):
    torch.manual_seed(0)
    return GapNet(head).eval()


class TextNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.lin = nn.Linear(6, 3)

    def forward(self, ids):
        return self.lin(torch.tanh(self.emb(ids)).sum(1))


# --------------------------------------------------------------------------- Captum's golden numbers


def test_gradcam_golden_numbers():
    m = BasicModel_MultiLayer()
    close(fa.gradcam(fa.target(m, 0), m.linear0)(torch.tensor([[0.0, 100.0, 0.0]])), torch.tensor([[400.0]]))
    c = BasicModel_ConvNet_One_Conv()
    x = torch.arange(16.0).view(1, 1, 4, 4)
    f = fa.target(c, 0)
    close(fa.gradcam(f, c.conv1)(x), torch.tensor([[[[11.25, 13.5], [20.25, 22.5]]]]))
    close(fa.gradcam(f, c.relu1)(x), torch.tensor([[[[0.0, 4.0], [28.0, 32.5]]]]))
    per_channel = torch.tensor([[[[-3.75, 3.0], [23.25, 30.0]], [[15.0, 10.5], [-3.0, -7.5]]]])
    close(fa.gradcam(f, c.conv1, sum_channels=False)(x), per_channel)
    close(fa.gradcam(f, c.conv1, relu=True, sum_channels=False)(x), per_channel.clamp_min(0))
    close(fa.gradcam(f, fa.input_of(c.conv1))(x), 0.5625 * x)
    close(fa.gradcam(f, fa.input_of(c.conv1), relu=True)(x), 0.5625 * x)


@pytest.mark.parametrize(
    "layer,expected",
    [("linear0", [[0.0, 390.0, 0.0]]), ("linear1", [[90.0, 100.0, 100.0, 100.0]]), ("relu", [[90.0, 100.0, 100.0, 100.0]]), ("linear2", [[390.0, 0.0]])],
)
def test_layer_conductance_golden_numbers(layer, expected):
    m = BasicModel_MultiLayer()
    a, delta = fa.conductance(fa.target(m, 0), getattr(m, layer), steps=500, return_delta=True)(torch.tensor([[0.0, 100.0, 0.0]]))
    close(a, torch.tensor(expected), atol=0.05, rtol=0)
    assert delta.abs().max() < 0.01


def test_layer_ig_golden_numbers_on_the_multi_input_module_model():
    # Captum attributes to the two outputs of `multi_relu` at once (a tuple: funcattr gives a
    # tuple too); each is also read before its ReLU, at its own linear layer. The score is
    # additive in them, so the numbers are the same up to the quadrature error at the ReLU's
    # kink (90.05 for 500 Gauss-Legendre steps, Captum's own number at linear1 too).
    m = BasicModel_MultiLayer(multi_input_module=True)
    x = torch.tensor([[0.0, 100.0, 0.0]])
    for layer in (m.linear1, m.linear1_alt):
        ours = fa.integrated_gradients(fa.target(m, 0), wrt=layer, steps=500)(x)
        close(ours, torch.tensor([[90.0, 100.0, 100.0, 100.0]]), atol=0.1, rtol=0)
        close(ours, LayerIntegratedGradients(m, layer).attribute(x, target=0, n_steps=500))
    both = fa.integrated_gradients(fa.target(m, 0), wrt=m.multi_relu, steps=500)(x)
    assert isinstance(both, tuple) and len(both) == 2
    close(both, LayerIntegratedGradients(m, m.multi_relu).attribute(x, target=0, n_steps=500))
    assert no_hooks(m)


# --------------------------------------------------------------------------- Captum 0.9.0, layer methods


LAYERS = ["conv2", "bn2", "pool", "conv3", "input_of pool"]


def layer_of(net, name):
    return fa.input_of(getattr(net, name.split()[1])) if name.startswith("input_of") else getattr(net, name)


def captum_layer(net, name):
    return (getattr(net, name.split()[1]), True) if name.startswith("input_of") else (getattr(net, name), False)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("relu", [False, True])
def test_gradcam_matches_captum(net, img, name, relu):
    t = torch.tensor([0, 3, 1])
    ours = fa.gradcam(fa.target(net, t), layer_of(net, name), relu=relu)(img)
    layer, to_input = captum_layer(net, name)
    theirs = LayerGradCam(net, layer).attribute(img, target=t, relu_attributions=relu, attribute_to_layer_input=to_input)
    close(ours, theirs)
    assert no_hooks(net)


@pytest.mark.parametrize("name", ["bn2", "pool", "input_of conv3"])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left"])
def test_layer_conductance_matches_captum(net, img, name, method):
    base = torch.randn(1, 3, 8, 8) * 0.1
    ours, d1 = fa.conductance(fa.target(net, 2), layer_of(net, name), steps=9, method=method, baseline=base, return_delta=True)(img)
    layer, to_input = captum_layer(net, name)
    theirs, d2 = LayerConductance(net, layer).attribute(
        img, baselines=base, target=2, n_steps=9, method=method, attribute_to_layer_input=to_input, return_convergence_delta=True
    )
    close(ours, theirs)
    close(d1, d2, atol=1e-4)
    assert no_hooks(net)


@pytest.mark.parametrize("name", ["conv2", "input_of pool"])
def test_layer_integrated_gradients_matches_captum(net, img, name):
    base = torch.randn(1, 3, 8, 8) * 0.2
    t = [4, 0, 2]
    ours, d1 = fa.integrated_gradients(fa.target(net, t), baseline=base, steps=12, wrt=layer_of(net, name), return_delta=True)(img)
    layer, to_input = captum_layer(net, name)
    theirs, d2 = LayerIntegratedGradients(net, layer).attribute(
        img, baselines=base, target=t, n_steps=12, attribute_to_layer_input=to_input, return_convergence_delta=True
    )
    close(ours, theirs)
    close(d1, d2, atol=1e-4)


def test_layer_ig_on_an_embedding_with_token_ids():
    torch.manual_seed(0)
    m = TextNet().eval()
    ids = torch.randint(1, 20, (4, 7))
    t = torch.tensor([0, 2, 1, 2])
    ours, d1 = fa.integrated_gradients(fa.target(m, t), wrt=m.emb, steps=20, return_delta=True)(ids)
    theirs, d2 = LayerIntegratedGradients(m, m.emb).attribute(
        ids, baselines=torch.zeros_like(ids), target=t, n_steps=20, return_convergence_delta=True
    )
    assert ours.shape == (4, 7, 6)
    close(ours, theirs)
    close(d1, d2, atol=1e-4)
    assert no_hooks(m)


@pytest.mark.parametrize("name", ["bn1", "input_of conv3"])
def test_layer_gradient_x_activation_and_gradient_match_captum(net, img, name):
    layer, to_input = captum_layer(net, name)
    ours = fa.input_x_gradient(fa.target(net, 1), wrt=layer_of(net, name))(img)
    close(ours, LayerGradientXActivation(net, layer).attribute(img, target=1, attribute_to_layer_input=to_input))
    ours = fa.saliency(fa.target(net, 1), abs=False, wrt=layer_of(net, name))(img)
    theirs = LayerGradientXActivation(net, layer, multiply_by_inputs=False).attribute(img, target=1, attribute_to_layer_input=to_input)
    close(ours, theirs)


def test_layer_gradient_shap_matches_captum_where_the_draw_cannot_matter(net, img):
    # after the input of fc the score is linear, so the gradient is the same at every α: with one
    # baseline and no noise both libraries give (h(x) − h(b)) · w exactly
    base = torch.randn(1, 3, 8, 8)
    ours = fa.gradient_shap(fa.target(net, 3), base, samples=4, wrt=fa.input_of(net.fc))(img)
    theirs = LayerGradientShap(net, net.fc).attribute(img, base, target=3, n_samples=4, attribute_to_layer_input=True)
    close(ours, theirs)
    h = fa.activation(net, fa.input_of(net.fc))
    close(ours, (h(img) - h(base)) * net.fc.weight[3])


def test_layer_gradient_shap_statistically_matches_captum(net, img):
    dist = torch.randn(4, 3, 8, 8) * 0.3
    torch.manual_seed(0)
    ours = fa.gradient_shap(fa.target(net, 0), dist, samples=300, wrt=net.conv2)(img)
    theirs = LayerGradientShap(net, net.conv2).attribute(img, dist, target=0, n_samples=300)
    rel = (ours - theirs).norm() / theirs.norm()
    assert rel < 0.15, rel


@pytest.mark.parametrize("name", ["conv2", "pool", "input_of conv3"])
def test_activation_matches_captum(net, img, name):
    layer, to_input = captum_layer(net, name)
    ours = fa.activation(net, layer_of(net, name))(img)
    close(ours, LayerActivation(net, layer).attribute(img, attribute_to_layer_input=to_input))
    assert not ours.requires_grad and no_hooks(net)


# --------------------------------------------------------------------------- Captum 0.9.0, neurons


SELECTORS = [
    ("conv2", (3, 2, 5)),
    ("pool", (1, slice(0, 2), slice(1, 4))),
    ("input_of conv3", (-1, 0, 3)),
    ("conv3", lambda v: v[:, 2].amax((1, 2))),
]


@pytest.mark.parametrize("name,index", SELECTORS)
def test_neuron_gradient_and_ig_match_captum(net, img, name, index):
    n = fa.neuron(net, layer_of(net, name), index)
    layer, to_input = captum_layer(net, name)
    close(fa.saliency(n, abs=False)(img), NeuronGradient(net, layer).attribute(img, index, attribute_to_neuron_input=to_input))
    base = torch.full((1, 3, 8, 8), 0.1)
    ours = fa.integrated_gradients(n, baseline=base, steps=10)(img)
    theirs = NeuronIntegratedGradients(net, layer).attribute(img, index, baselines=base, n_steps=10, attribute_to_neuron_input=to_input)
    close(ours, theirs)
    assert no_hooks(net)


def test_neuron_gradient_shap_matches_captum_on_a_linear_neuron(net, img):
    # a conv1 neuron is linear in x: the draw of α cannot matter with one baseline, no noise
    base = torch.randn(1, 3, 8, 8)
    ours = fa.gradient_shap(fa.neuron(net, net.conv1, (2, 3, 3)), base, samples=3)(img)
    close(ours, NeuronGradientShap(net, net.conv1).attribute(img, (2, 3, 3), base, n_samples=3))


@pytest.mark.parametrize("name,index", SELECTORS[:3])
@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_neuron_conductance_matches_captum(net, img, name, index, method):
    n = fa.neuron(net, layer_of(net, name), index)
    layer, to_input = captum_layer(net, name)
    t = torch.tensor([1, 4, 0])
    ours = fa.conductance(fa.target(net, t), n, steps=8, method=method, baseline=0.2)(img)
    theirs = NeuronConductance(net, layer).attribute(
        img, index, baselines=0.2, target=t, n_steps=8, method=method, attribute_to_neuron_input=to_input
    )
    close(ours, theirs)
    assert no_hooks(net)


# --------------------------------------------------------------------------- loop twins


def test_k_target_calls_equal_loops_over_targets(net, img):
    ks = [0, 2, 4]
    g = fa.outputs(net, ks)
    fns = {
        "gradcam": lambda f: fa.gradcam(f, net.conv2),
        "conductance": lambda f: fa.conductance(f, net.pool, steps=6),
        "layer_ig": lambda f: fa.integrated_gradients(f, wrt=net.bn2, steps=6),
        "neuron_conductance": lambda f: fa.conductance(f, fa.neuron(net, net.conv2, (1, 4, 4)), steps=6),
    }
    for name, make in fns.items():
        batched = make(g)(img)
        assert batched.shape[:2] == (3, 3), name
        for j, k in enumerate(ks):
            close(batched[:, j], make(fa.target(net, k))(img))
    cams = fa.gradcam(g, net.conv2)(img)
    assert cams.shape == (3, 3, 1, 8, 8)


def test_batched_calls_equal_loops_over_examples(net, img):
    t = torch.tensor([2, 0, 4])
    n = fa.neuron(net, net.pool, (2, 1, 3))
    for make in (
        lambda tt: fa.gradcam(fa.target(net, tt), net.conv3, relu=True),
        lambda tt: fa.conductance(fa.target(net, tt), net.bn2, steps=5),
        lambda tt: fa.conductance(fa.target(net, tt), n, steps=5),
    ):
        batched = make(t)(img)
        for i in range(3):
            close(batched[i : i + 1], make(t[i : i + 1])(img[i : i + 1]))
    sal = fa.saliency(n, abs=False)(img)
    for i in range(3):
        close(sal[i : i + 1], fa.saliency(n, abs=False)(img[i : i + 1]))


def test_conductance_chunks_equal_one_batch(net, img):
    f = fa.target(net, 3)
    full = fa.conductance(f, net.conv2, steps=11)(img)
    for bs in (3, 6, 9):  # 1, 2, 3 path points per call: the carried point crosses chunks
        close(fa.conductance(f, net.conv2, steps=11, batch_size=bs)(img), full)
    n = fa.neuron(net, net.conv2, (0, 1, 1))
    close(fa.conductance(f, n, steps=7, batch_size=3)(img), fa.conductance(f, n, steps=7)(img))


def test_layer_conductance_equals_loop_over_path_points(net, img):
    import numpy as np

    base = torch.full((1, 3, 8, 8), -0.1)
    a = 0.5 * (1 + np.polynomial.legendre.leggauss(7)[0])  # Captum: steps + 1 = 7 points
    grads, vals = [], []
    for al in a.tolist():  # the bn2 output at each point, and the score's gradient w.r.t. it
        h1 = net.relu(net.bn1(net.conv1(base + al * (img - base))))
        v = net.bn2(net.conv2(h1)).detach().requires_grad_()
        s = net.fc(torch.tanh(net.conv3(net.pool(F.relu(h1 + v)))).mean((2, 3)))[:, 1].sum()
        grads.append(torch.autograd.grad(s, v)[0])
        vals.append(v.detach())
    ref = sum(g * (v1 - v0) for g, v0, v1 in zip(grads[:-1], vals[:-1], vals[1:]))
    close(fa.conductance(fa.target(net, 1), net.bn2, steps=6, baseline=base)(img), ref)


# --------------------------------------------------------------------------- axioms


def test_layer_ig_and_conductance_are_complete(net, img):
    # completeness holds for a layer every path from x to the score crosses (pool, bn1); conv2
    # is bypassed by the residual add, so its attributions miss the skip path's share
    f = fa.target(net, 0)
    for layer in (net.pool, net.bn1):
        _, d = fa.integrated_gradients(f, wrt=layer, steps=64, return_delta=True)(img)
        assert d.abs().max() < 1e-3, d
        _, d = fa.conductance(f, layer, steps=200, return_delta=True)(img)
        assert d.abs().max() < 2e-3, d
    _, d = fa.integrated_gradients(f, wrt=net.conv2, steps=64, return_delta=True)(img)
    assert d.abs().max() > 1e-2


def test_neuron_conductance_sums_to_the_neurons_layer_conductance(net, img):
    f, idx = fa.target(net, 2), (4, 3, 3)
    through = fa.conductance(f, fa.neuron(net, net.conv2, idx), steps=200)(img).flatten(1).sum(1)
    layer = fa.conductance(f, net.conv2, steps=200)(img)[(slice(None), *idx)]
    close(through, layer, atol=2e-3, rtol=1e-2)


def test_layer_ig_of_a_neuron_at_its_own_layer_is_one_hot(net, img):
    idx = (2, 5, 1)
    n = fa.neuron(net, net.conv2, idx)
    a = fa.integrated_gradients(n, wrt=net.conv2, steps=4)(img)
    exp = torch.zeros_like(a)
    exp[(slice(None), *idx)] = n(img) - n(torch.zeros_like(img))
    close(a, exp)


def test_cam_is_the_classifier_weights_on_the_features():
    m = gap_net()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 8)
    feats = m.features(x)
    for k in range(4):
        hand = torch.einsum("c,bchw->bhw", m.fc.weight[k], feats).unsqueeze(1)
        ours = fa.cam(fa.target(m, k), m.features)(x)
        close(ours, hand)
        close(fa.gradcam(fa.target(m, k), m.features)(x) * 64, hand)  # on such a head, CAM = H·W · GradCAM
    both = fa.cam(fa.outputs(m, [1, 3]), m.features)(x)
    assert both.shape == (2, 2, 1, 8, 8)
    close(both[:, 1], fa.cam(fa.target(m, 3), m.features)(x))
    assert no_hooks(m)


@pytest.mark.parametrize("head,why", [("flatten", "varies over the spatial"), ("mlp", "not linear")])
def test_cam_refuses_a_head_it_cannot_read(head, why):
    m = gap_net(head)
    with pytest.raises(ValueError, match=f"fa.cam needs.*{why}.*fa.gradcam"):
        fa.cam(fa.target(m, 0), m.features)(torch.randn(2, 3, 8, 8))
    assert no_hooks(m)
    net = res_conv_net()  # tanh between conv3 and the average pool
    with pytest.raises(ValueError, match="fa.gradcam"):
        fa.cam(fa.target(net, 0), net.conv3)(torch.randn(2, 3, 8, 8))


def test_upsample_is_captums_interpolate(net, img):
    cam = fa.gradcam(fa.target(net, 1), net.conv3)(img)  # [3, 1, 4, 4]
    for mode in ("nearest", "bilinear"):
        close(fa.upsample(cam, img.shape[-2:], mode), LayerAttribution.interpolate(cam, (8, 8), mode))
    camk = fa.gradcam(fa.outputs(net, [0, 1]), net.conv3)(img)  # [3, 2, 1, 4, 4]
    up = fa.upsample(camk, (8, 8), "bilinear")
    assert up.shape == (3, 2, 1, 8, 8)
    close(up[:, 1], fa.upsample(camk[:, 1], (8, 8), "bilinear"))
    close(fa.upsample(cam, 8), LayerAttribution.interpolate(cam, 8))
    with pytest.raises(ValueError, match="does not fit size"):
        fa.upsample(cam, (8, 8, 8))
    with pytest.raises(ValueError, match="positive"):
        fa.upsample(cam, (0, 8))


def test_gradcam_in_bf16_is_close(net, img):
    a = fa.gradcam(fa.target(net, 1), net.conv3)(img)
    b = fa.gradcam(fa.target(net, 1), net.conv3, precision="bf16")(img)
    assert b.dtype == img.dtype and (a - b).norm() / a.norm() < 0.05


def test_neuron_stops_the_forward_and_keeps_gradients(net, img):
    calls = []
    h = net.fc.register_forward_hook(lambda *a: calls.append(1))
    try:
        n = fa.neuron(net, net.conv2, (0, 0, 0))
        v = n(img)
        assert v.shape == (3,) and calls == []
        g = fa.saliency(n, abs=False)(img)
    finally:
        h.remove()
    x = img.clone().requires_grad_()
    (ref,) = torch.autograd.grad(net.conv2(net.relu(net.bn1(net.conv1(x))))[:, 0, 0, 0].sum(), x)
    close(g, ref)
    assert no_hooks(net)


# --------------------------------------------------------------------------- errors


def test_errors(net, img):
    f = fa.target(net, 0)
    stray = nn.Linear(2, 2)
    for make in (
        lambda: fa.gradcam(f, stray)(img),
        lambda: fa.conductance(f, stray)(img),
        lambda: fa.cam(f, stray)(img),
        lambda: fa.activation(net, stray)(img),
        lambda: fa.neuron(net, stray, 0)(img),
        lambda: fa.conductance(f, fa.neuron(net, stray, 0))(img),
    ):
        with pytest.raises(ValueError, match="layer Linear never ran"):
            make()
    with pytest.raises(ValueError, match=r"neuron index \(9, 0, 0\).*out of range for dim 0 of size 8"):
        fa.saliency(fa.neuron(net, net.conv2, (9, 0, 0)))(img)
    with pytest.raises(ValueError, match="too many indices"):
        fa.neuron(net, net.conv2, (0, 0, 0, 0))(img)
    with pytest.raises(ValueError, match="give 3 indices"):
        fa.neuron(net, net.conv2, 1)(img)
    with pytest.raises(ValueError, match="select no neurons"):
        fa.neuron(net, net.conv2, (slice(3, 3),))(img)
    with pytest.raises(TypeError, match="index must be"):
        fa.neuron(net, net.conv2, 1.5)
    with pytest.raises(ValueError, match="one value per example"):
        fa.neuron(net, net.conv2, lambda v: v[:, 0])(img)
    with pytest.raises(TypeError, match="layer must be an nn.Module"):
        fa.gradcam(f, "conv2")
    with pytest.raises(TypeError, match=r"layer must be .*fa.neuron"):
        fa.conductance(f, "conv2")
    with pytest.raises(TypeError, match="floating point"):
        fa.conductance(fa.target(TextNet(), 0), fa.input_of(nn.Linear(1, 1)))(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="return_delta"):
        fa.conductance(f, fa.neuron(net, net.conv2, (0, 0, 0)), return_delta=True)
    with pytest.raises(ValueError, match="steps"):
        fa.conductance(f, net.conv2, steps=0)
    with pytest.raises(ValueError, match="no spatial dims"):
        fa.cam(f, fa.input_of(net.fc))(img)
    assert no_hooks(net)


def test_a_layer_with_tuple_output_gives_a_tuple_or_asks_for_a_callable_neuron():
    class Split(nn.Module):
        def forward(self, x):
            return x[:, :2], x[:, 2:]

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.split = Split()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            a, b = self.split(x)
            return self.lin(a) + b.sum(1, keepdim=True)

    m, x = M().eval(), torch.randn(2, 4)
    acts = fa.activation(m, m.split)(x)
    assert isinstance(acts, tuple) and len(acts) == 2
    torch.testing.assert_close(acts[0], x[:, :2])
    torch.testing.assert_close(acts[1], x[:, 2:])
    # conductance telescopes along trapezoid nodes (0 … 1): exact completeness over both parts of a linear model
    cond = fa.conductance(fa.target(m, 0), m.split, steps=50, method="riemann_trapezoid")(x)
    assert isinstance(cond, tuple) and [c.shape for c in cond] == [(2, 2), (2, 2)]
    base = m(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(sum(c.sum(1) for c in cond), m(x)[:, 0] - base, rtol=1e-4, atol=1e-4)
    # the second part reaches the score as b.sum(): its layer gradient is exactly one
    cams = fa.gradcam(fa.target(m, 0), m.split)(x)
    assert isinstance(cams, tuple) and len(cams) == 2
    torch.testing.assert_close(cams[1], x[:, 2:].sum(1, keepdim=True))
    with pytest.raises(ValueError, match="gives 2 tensors; name the neuron with a callable"):
        fa.neuron(m, m.split, 0)(x)
    with pytest.raises(ValueError, match="single output"):
        fa.cam(fa.target(m, 0), m.split)(x)
    assert no_hooks(m)
