"""funcattr.compat, layer and neuron methods against Captum 0.9.0: the same model and
arguments, Captum's golden numbers, attribute_to_layer_input / attribute_to_neuron_input,
neuron selectors (ints, slices, callables), and the capabilities still to come in the core."""

import pytest
import torch
from captum import attr as C
from captum.testing.helpers.basic_models import (
    BasicModel_ConvNet_One_Conv,
    BasicModel_MultiLayer,
    BasicModel_MultiLayer_MultiInput,
)
from helpers import close
from torch import nn

import funcattr.compat as X
from test_compat import both, cnn, multi


@pytest.fixture
def x():
    torch.manual_seed(3)
    return torch.randn(3, 3, 7, 7)


def lin2(seed=0):
    """Linear → Linear: the layer gradient is constant, so sampled methods are exact."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3)).eval()


# --------------------------------------------------------------------------- GradCAM


def test_layer_gradcam_golden():
    """Captum's tests/attr/layer/test_grad_cam.py numbers."""
    m = BasicModel_MultiLayer()
    close(X.LayerGradCam(m, m.linear0).attribute(torch.tensor([[0.0, 100.0, 0.0]]), target=0), torch.tensor([[400.0]]))
    conv, x = BasicModel_ConvNet_One_Conv(), torch.arange(16.0).view(1, 1, 4, 4)
    close(X.LayerGradCam(conv, conv.conv1).attribute(x, target=0), torch.tensor([[[[11.25, 13.5], [20.25, 22.5]]]]))
    close(X.LayerGradCam(conv, conv.relu1).attribute(x, target=0), torch.tensor([[[[0.0, 4.0], [28.0, 32.5]]]]))
    close(X.LayerGradCam(conv, conv.conv1).attribute(x, target=0, attr_dim_summation=False),
          torch.tensor([[[[-3.75, 3.0], [23.25, 30.0]], [[15.0, 10.5], [-3.0, -7.5]]]]))
    for relu in (False, True):
        close(*both("LayerGradCam", (conv, conv.relu1), x, target=0, attribute_to_layer_input=True,
                    relu_attributions=relu))


def test_layer_gradcam_cnn_per_example_target(x):
    m = cnn()
    for layer in (m[0], m[1], m[3]):
        close(*both("LayerGradCam", (m, layer), x, target=torch.tensor([2, 0, 4]), relu_attributions=True))


def test_layer_gradcam_tuple_inputs_and_args():
    m, xs = multi()
    close(*both("LayerGradCam", (m, m.model.linear1), xs, target=[0, 1], additional_forward_args=(2,)))


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_interpolate(x, mode):
    m = cnn()
    a = X.LayerGradCam(m, m[3]).attribute(x, target=1)
    close(X.LayerAttribution.interpolate(a, x.shape[2:], mode), C.LayerAttribution.interpolate(a, x.shape[2:], mode))
    close(X.LayerGradCam.interpolate(a, (5, 9)), C.LayerAttribution.interpolate(a, (5, 9)))


# --------------------------------------------------------------------------- activation, conductance


def test_layer_activation(x):
    m = cnn()
    close(*both("LayerActivation", (m, m[2]), x))
    close(*both("LayerActivation", (m, m[2]), x, attribute_to_layer_input=True))
    mm, xs = multi()
    close(*both("LayerActivation", (mm, mm.model.linear1), xs, additional_forward_args=(3,)))


def test_layer_conductance_golden():
    """Captum's test_layer_conductance numbers: x=[[0, 100, 0]], 500 steps."""
    m, x = BasicModel_MultiLayer(), torch.tensor([[0.0, 100.0, 0.0]])
    for layer, expected in ((m.linear0, [[0.0, 390.0, 0.0]]), (m.linear1, [[90.0, 100.0, 100.0, 100.0]]),
                            (m.relu, [[90.0, 100.0, 100.0, 100.0]]), (m.linear2, [[390.0, 0.0]])):
        a, d = X.LayerConductance(m, layer).attribute(x, target=0, n_steps=500, return_convergence_delta=True)
        close(a, torch.tensor(expected), rtol=0, atol=0.5)
        assert float(d.abs().max()) < 0.01


def test_layer_conductance_cnn(x):
    m = cnn()
    b = torch.randn(1, 3, 7, 7) * 0.1
    (a, d), (a2, d2) = both("LayerConductance", (m, m[2]), x, baselines=b, target=[1, 2, 0], n_steps=20,
                            return_convergence_delta=True)
    close(a, a2)
    close(d, d2, atol=1e-4)
    close(*both("LayerConductance", (m, m[2]), x, target=3, n_steps=12, method="riemann_right",
                attribute_to_layer_input=True, internal_batch_size=9))


# --------------------------------------------------------------------------- DeepLift family


def test_layer_deeplift(x):
    m = cnn()
    b = x.mean(0, keepdim=True)
    for to_input in (False, True):
        (a, d), (a2, d2) = both("LayerDeepLift", (m, m[2]), x, baselines=b, target=[4, 1, 0],
                                attribute_to_layer_input=to_input, return_convergence_delta=True)
        close(a, a2)
        close(d, d2, atol=1e-5)
    close(*both("LayerDeepLift", (m, m[2], False), x, target=2))


def test_layer_deeplift_custom_attribution_func(x):
    """The multipliers at the layer and the layer's values at the inputs and the baselines."""
    m = cnn()
    func = lambda mult, a, b: tuple(mm * (aa - bb).abs() for mm, aa, bb in zip(mult, a, b))  # noqa: E731
    close(*both("LayerDeepLift", (m, m[2]), x, baselines=0.2, target=1, custom_attribution_func=func))


def test_layer_deeplift_shap(x):
    m = cnn()
    torch.manual_seed(1)
    dist = torch.randn(3, 3, 7, 7) * 0.2
    close(*both("LayerDeepLiftShap", (m, m[2]), x, baselines=dist, target=[0, 3, 2]))
    close(*both("LayerDeepLiftShap", (m, m[2], False), x, baselines=dist, target=1, attribute_to_layer_input=True))


def test_layer_deeplift_shap_per_sample_delta(x):
    m = cnn()
    dist = torch.randn(3, 3, 7, 7) * 0.2
    (a, d), (a2, d2) = both("LayerDeepLiftShap", (m, m[2]), x, baselines=dist, target=0, return_convergence_delta=True)
    assert d.shape == d2.shape == (9,)
    close(d, d2, atol=1e-5)


# --------------------------------------------------------------------------- gradient layers


def test_layer_gradient_shap_exact_where_the_gradient_is_constant():
    m, x = lin2(), torch.randn(4, 5)
    close(*both("LayerGradientShap", (m, m[0]), x, baselines=torch.randn(1, 5), target=[0, 2, 1, 1], n_samples=6))
    close(*both("LayerGradientShap", (m, m[0], None, False), x, baselines=torch.zeros(3, 5), target=2))


def test_layer_gradient_shap_per_sample_delta():
    m, x = lin2(), torch.randn(4, 5)
    a, d = X.LayerGradientShap(m, m[0]).attribute(x, baselines=torch.randn(2, 5), n_samples=3, target=0,
                                                 return_convergence_delta=True)
    assert d.shape == (12,)
    close(d, torch.zeros(12), atol=1e-4)


@pytest.mark.parametrize("mbi", [True, False])
def test_layer_gradient_x_activation(x, mbi):
    m = cnn()
    close(*both("LayerGradientXActivation", (m, m[2], None, mbi), x, target=[0, 1, 2]))
    close(*both("LayerGradientXActivation", (m, m[2], None, mbi), x, target=4, attribute_to_layer_input=True))


def test_layer_integrated_gradients(x):
    m = cnn()
    (a, d), (a2, d2) = both("LayerIntegratedGradients", (m, m[2]), x, baselines=0.1, target=[1, 1, 3], n_steps=25,
                            return_convergence_delta=True)
    close(a, a2)
    close(d, d2, atol=1e-4)
    close(*both("LayerIntegratedGradients", (m, m[2], None, False), x, target=0, attribute_to_layer_input=True,
                method="riemann_middle", n_steps=9, internal_batch_size=5))


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.fc = nn.Embedding(11, 4), nn.Linear(4, 2)

    def forward(self, ids, scale):
        return self.fc(torch.tanh(self.emb(ids)).mean(1) * scale)


def test_layer_integrated_gradients_on_token_ids():
    """Captum's text recipe: integer ids, reference ids as baselines, the embedding as layer."""
    m = Tokens()
    ids, ref = torch.tensor([[1, 5, 7, 2], [3, 3, 9, 0]]), torch.zeros(2, 4, dtype=torch.long)
    scale = torch.tensor([[1.0], [2.0]])
    (a, d), (a2, d2) = both("LayerIntegratedGradients", (m, m.emb), ids, baselines=ref, target=1,
                            additional_forward_args=(scale,), n_steps=30, return_convergence_delta=True)
    close(a, a2)
    close(d, d2, atol=1e-4)


def test_layer_integrated_gradients_multi_input_module_golden():
    """Captum's test_multiple_tensors_compare_with_expected: a layer with two inputs and two outputs."""
    m = BasicModel_MultiLayer(multi_input_module=True)
    a = X.LayerIntegratedGradients(m, m.multi_relu).attribute(torch.tensor([[0.0, 100.0, 0.0]]), target=0)
    close(a, (torch.tensor([[90.0, 100, 100, 100]]), torch.tensor([[90.0, 100, 100, 100]])), rtol=0, atol=0.5)


class TwoBranch(nn.Module):
    """Two layers side by side (neither feeds the other), then a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(3, 5), nn.Linear(9, 2)

    def forward(self, x):
        return self.head(torch.cat([torch.relu(self.a(x)), torch.tanh(self.b(x))], 1))


@pytest.mark.parametrize("name", ["LayerActivation", "LayerGradientXActivation", "LayerIntegratedGradients"])
def test_list_of_layers(name):
    m, x = TwoBranch(), torch.randn(4, 3)
    kw = {} if name == "LayerActivation" else {"target": [0, 1, 1, 0]}
    ours, theirs = both(name, (m, [m.a, m.b]), x, **kw)
    assert isinstance(ours, list) and isinstance(theirs, list) and len(ours) == 2
    close(tuple(ours), tuple(theirs))
    if name == "LayerIntegratedGradients":
        (a, d), (a2, d2) = both(name, (m, [m.a, m.b]), x, baselines=0.5, n_steps=20, return_convergence_delta=True,
                                **kw)
        assert isinstance(a, list)
        close(tuple(a), tuple(a2))
        close(d, d2, atol=1e-4)
    if name != "LayerActivation":  # Captum's NoiseTunnel asserts on a list; funcattr's wraps it
        with pytest.raises(AssertionError):
            C.NoiseTunnel(getattr(C, name)(m, [m.a, m.b])).attribute(x, nt_samples=2, stdevs=1e-9, **kw)
        nt = X.NoiseTunnel(getattr(X, name)(m, [m.a, m.b])).attribute(x, nt_samples=2, stdevs=1e-9, **kw)
        assert isinstance(nt, list)
        close(tuple(nt), tuple(ours), atol=1e-6)


@pytest.mark.parametrize("name", ["LayerActivation", "LayerGradientXActivation"])
def test_list_of_layers_feeding_one_another(x, name):
    """Captum gives each listed layer its total derivative, through the later listed ones too."""
    m = cnn()
    kw = {} if name == "LayerActivation" else {"target": 1}
    ours, theirs = both(name, (m, [m[0], m[2]]), x, **kw)
    assert float(theirs[0].abs().max()) > 0
    close(tuple(ours), tuple(theirs))


TUPLE_LAYER = [
    ("LayerActivation", {}), ("LayerGradientXActivation", {"target": 0}),
    ("LayerIntegratedGradients", {"target": 1, "n_steps": 10}), ("LayerConductance", {"target": 0, "n_steps": 10}),
    ("LayerDeepLift", {"target": 0}), ("LayerGradientShap", {"target": 0, "baselines": torch.zeros(1, 3)}),
    ("LayerGradCam", {"target": 1}), ("LayerActivation", {"attribute_to_layer_input": True}),
    ("LayerIntegratedGradients", {"target": 0, "attribute_to_layer_input": True}),
    ("LayerGradientXActivation", {"target": 0, "attribute_to_layer_input": True}),
]


@pytest.mark.parametrize("name,kw", TUPLE_LAYER, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TUPLE_LAYER)])
def test_layer_with_tuple_output_or_several_inputs_gives_a_tuple(name, kw):
    """Captum's multi_relu takes two inputs and returns a tuple: each layer class gives a tuple."""
    m = BasicModel_MultiLayer(multi_input_module=True)
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]])
    ours, theirs = both(name, (m, m.multi_relu), x, **kw)
    assert isinstance(ours, tuple) and isinstance(theirs, tuple) and len(ours) == 2
    close(ours, theirs)


def test_integrated_gradients_at_layers_feeding_one_another_refuses(x):
    """Captum's LayerIntegratedGradients fails when a listed layer feeds another (its
    interpolated value is never used); funcattr's must not return zeros for it."""
    m = cnn()
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        C.LayerIntegratedGradients(m, [m[0], m[2]]).attribute(x, target=1)
    with pytest.raises(ValueError, match=r"wrt\[1\] .* is computed from wrt\[0\]"):
        X.LayerIntegratedGradients(m, [m[0], m[2]]).attribute(x, target=1)


def test_layer_with_several_inputs_attributes_to_all():
    m = BasicModel_MultiLayer(multi_input_module=True)
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]])
    close(*both("LayerActivation", (m, m.multi_relu), x, attribute_to_layer_input=True))


# --------------------------------------------------------------------------- neurons


SELECTORS = [(1, 2, 0), (2, slice(0, 2), slice(1, 3)), lambda h: h[:, 1].sum((1, 2))]


@pytest.mark.parametrize("sel", SELECTORS, ids=["index", "slices", "callable"])
def test_neuron_gradient(x, sel):
    m = cnn()
    close(*both("NeuronGradient", (m, m[2]), x, neuron_selector=sel))
    close(*both("NeuronGradient", (m, m[3]), x, neuron_selector=sel, attribute_to_neuron_input=True))


def test_neuron_gradient_tuple_inputs_and_args():
    m, xs = multi()
    close(*both("NeuronGradient", (m, m.model.linear1), xs, neuron_selector=2, additional_forward_args=(2,)))


@pytest.mark.parametrize("sel", SELECTORS, ids=["index", "slices", "callable"])
def test_neuron_integrated_gradients(x, sel):
    m = cnn()
    close(*both("NeuronIntegratedGradients", (m, m[2]), x, neuron_selector=sel, baselines=0.2, n_steps=15))
    close(*both("NeuronIntegratedGradients", (m, m[2], None, False), x, neuron_selector=sel, method="riemann_left",
                internal_batch_size=4))


@pytest.mark.parametrize("sel", SELECTORS[:2], ids=["index", "slices"])
def test_neuron_conductance_captums_default_rule(x, sel):
    m = cnn()
    close(*both("NeuronConductance", (m, m[2]), x, neuron_selector=sel, target=[0, 3, 1], n_steps=20))
    close(*both("NeuronConductance", (m, m[2]), x, neuron_selector=sel, target=2, baselines=0.1, n_steps=10,
                method="gausslegendre", attribute_to_neuron_input=True))


@pytest.mark.parametrize("sel", SELECTORS, ids=["index", "slices", "callable"])
def test_neuron_deeplift(x, sel):
    m = cnn()
    close(*both("NeuronDeepLift", (m, m[2]), x, neuron_selector=sel, baselines=x.mean(0, keepdim=True)))
    close(*both("NeuronDeepLift", (m, m[2], False), x, neuron_selector=sel))
    torch.manual_seed(2)
    dist = torch.randn(3, 3, 7, 7) * 0.3
    close(*both("NeuronDeepLiftShap", (m, m[2]), x, neuron_selector=sel, baselines=dist))


def test_neuron_deeplift_custom_attribution_func(x):
    m = cnn()
    func = lambda mult, i, b: tuple(mm * (ii - bb) for mm, ii, bb in zip(mult, i, b))  # noqa: E731
    close(*both("NeuronDeepLift", (m, m[2]), x, neuron_selector=(0, 1, 1), baselines=0.3,
                custom_attribution_func=func))


def test_neuron_gradient_shap_exact_where_the_gradient_is_constant():
    m, x = lin2(), torch.randn(4, 5)
    close(*both("NeuronGradientShap", (m, m[0]), x, neuron_selector=2, baselines=torch.randn(1, 5), n_samples=4))
    close(*both("NeuronGradientShap", (m, m[0], None, False), x, neuron_selector=1, baselines=torch.randn(3, 5)))


@pytest.mark.parametrize("name", ["NeuronGuidedBackprop", "NeuronDeconvolution"])
@pytest.mark.parametrize("sel", SELECTORS, ids=["index", "slices", "callable"])
def test_neuron_guided(x, name, sel):
    m = cnn()
    close(*both(name, (m, m[2]), x, neuron_selector=sel))


def test_neuron_feature_ablation(x):
    m = cnn()
    mask = torch.arange(3).view(1, 3, 1, 1).repeat(1, 1, 7, 7)
    close(*both("NeuronFeatureAblation", (m, m[2]), x, neuron_selector=(1, 0, 2), feature_mask=mask, baselines=0.5,
                perturbations_per_eval=2))
    mm, xs = multi()
    close(*both("NeuronFeatureAblation", (mm, mm.model.linear1), xs, neuron_selector=1, additional_forward_args=(1,)))


def test_partial_neuron_index_on_singleton_dims(x):
    """A channel index on a [B, C, 1, 1] layer names one neuron, as in Captum."""
    m = cnn()
    close(*both("NeuronGradient", (m, m[4]), x, neuron_selector=3))


def test_neuron_selector_aggregate_callable(x):
    """A callable returning one aggregate per example ([B])."""
    m = cnn()
    close(*both("NeuronIntegratedGradients", (m, m[2]), x, neuron_selector=lambda h: h.sum((1, 2, 3)), n_steps=8))


def test_noise_tunnel_over_layer_and_neuron_methods(x):
    m = cnn()
    for inner, kw in (("LayerGradCam", {"target": 1}), ("LayerConductance", {"target": 2, "n_steps": 5})):
        ours = X.NoiseTunnel(getattr(X, inner)(m, m[2])).attribute(x, nt_samples=3, stdevs=1e-8, **kw)
        theirs = C.NoiseTunnel(getattr(C, inner)(m, m[2])).attribute(x, nt_samples=3, stdevs=1e-8, **kw)
        close(ours, theirs, atol=1e-4)
    ours = X.NoiseTunnel(X.NeuronGradient(m, m[2])).attribute(x, nt_samples=2, stdevs=1e-8, neuron_selector=(0, 1, 1))
    theirs = C.NoiseTunnel(C.NeuronGradient(m, m[2])).attribute(x, nt_samples=2, stdevs=1e-8, neuron_selector=(0, 1, 1))
    close(ours, theirs, atol=1e-5)


def test_multi_input_model_layer_input():
    m = BasicModel_MultiLayer_MultiInput()
    _, xs = multi()
    close(*both("LayerGradientXActivation", (m, m.model.linear2), xs, target=1, additional_forward_args=(1,),
                attribute_to_layer_input=True))
