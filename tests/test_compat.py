"""funcattr.compat, primary methods: each class against Captum 0.9.0 on the same model and
arguments (tuple inputs, additional_forward_args, per-example targets, baselines as scalars,
tensors and tuples, return_convergence_delta), Captum's golden numbers, the signatures, the
refused options and the deliberate differences."""

import inspect

import captum.attr as C
import pytest
import torch
import torch.nn.functional as F
from captum.testing.helpers.basic_models import (
    BasicModel_ConvNet_One_Conv,
    BasicModel_MultiLayer,
    BasicModel_MultiLayer_MultiInput,
    ReLUDeepLiftModel,
    TanhDeepLiftModel,
)
from helpers import close
from torch import nn

import funcattr as fa
import funcattr.compat as X
from funcattr.compat import metrics as XM
from funcattr.compat import visualization as XV


def cnn(seed=0):
    """nn.ReLU modules, each used once, no pooling: where Captum's hooks are right."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    ).eval()


@pytest.fixture
def x():
    torch.manual_seed(3)
    return torch.randn(3, 3, 7, 7)


def both(name, ctor, inputs, **kw):
    """The same lines through funcattr.compat and through Captum."""
    ours = getattr(X, name)(*ctor).attribute(inputs, **kw)
    theirs = getattr(C, name)(*ctor).attribute(inputs, **kw)
    return ours, theirs


def multi():
    """Captum's MultiLayer-MultiInput: three tensors and an extra argument."""
    x1 = torch.tensor([[23.0, 100.0, 0.0], [20.0, 50.0, 30.0]])
    x2 = torch.tensor([[20.0, 50.0, 30.0], [0.0, 100.0, 0.0]])
    x3 = torch.tensor([[0.0, 100.0, 10.0], [0.0, 10.0, 0.0]])
    return BasicModel_MultiLayer_MultiInput(), (x1, x2, x3)


# --------------------------------------------------------------------------- signatures

CLASSES = [n for n in C.__all__ if hasattr(X, n) and isinstance(getattr(C, n), type)]


def params(fn):
    fn = inspect.unwrap(fn)
    return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("name", CLASSES)
def test_signatures_are_captums(name):
    ours, theirs = getattr(X, name), getattr(C, name)
    if name in ("InternalInfluence", "LayerFeatureAblation", "LayerFeaturePermutation", "LRP", "LayerLRP", "LimeBase"):
        return  # not expressible: construction raises (test_unsupported_classes_raise)
    skip = {"perm_func"}  # Captum's default is its private _permute_feature; ours mirrors it
    if name not in ("Attribution", "GradientAttribution", "PerturbationAttribution", "NeuronAttribution", "LayerAttribution"):
        init = [p for p in params(ours.__init__) if p[0] not in skip]
        assert init == [p for p in params(theirs.__init__) if p[0] not in skip]
    if hasattr(theirs, "attribute") and name not in ("Attribution", "GradientAttribution",
                                                     "PerturbationAttribution", "NeuronAttribution", "LayerAttribution"):
        assert params(ours.attribute) == params(theirs.attribute)


def test_every_attribution_class_is_there():
    wanted = {
        "IntegratedGradients", "Saliency", "InputXGradient", "DeepLift", "DeepLiftShap", "GradientShap", "GuidedBackprop",
        "Deconvolution", "GuidedGradCam", "FeatureAblation", "FeaturePermutation", "Occlusion", "ShapleyValueSampling",
        "ShapleyValues", "Lime", "KernelShap", "NoiseTunnel", "LayerGradCam", "LayerActivation", "LayerConductance",
        "LayerDeepLift", "LayerDeepLiftShap", "LayerGradientShap", "LayerGradientXActivation",
        "LayerIntegratedGradients", "InternalInfluence", "LayerAttribution", "NeuronGradient",
        "NeuronIntegratedGradients", "NeuronConductance", "NeuronDeepLift", "NeuronDeepLiftShap", "NeuronGradientShap",
        "NeuronGuidedBackprop", "NeuronDeconvolution", "NeuronFeatureAblation", "LayerFeatureAblation",
        "LayerFeaturePermutation", "LRP", "LayerLRP", "LimeBase",
    }
    assert wanted <= set(X.__all__)
    from funcattr.compat.attr import IntegratedGradients, visualization  # captum.attr's paths

    assert IntegratedGradients is X.IntegratedGradients and visualization is XV
    import funcattr.compat as captum

    assert captum.attr.Occlusion is X.Occlusion and captum.metrics.infidelity is XM.infidelity


def test_metric_and_picture_signatures_are_captums():
    import captum.metrics as CM
    from captum.attr import visualization as CV

    for name in ("infidelity", "sensitivity_max", "infidelity_perturb_func_decorator"):
        assert [p[0] for p in params(getattr(XM, name))] == [p[0] for p in params(getattr(CM, name))]
    for name in ("visualize_image_attr", "visualize_image_attr_multiple", "visualize_timeseries_attr", "visualize_text"):
        assert params(getattr(XV, name)) == params(getattr(CV, name))


def test_names_and_flags():
    assert X.IntegratedGradients.get_name() == C.IntegratedGradients.get_name() == "Integrated Gradients"
    m = BasicModel_MultiLayer()
    for name in ("IntegratedGradients", "Saliency", "DeepLift", "GradientShap", "Occlusion"):
        assert X.__dict__[name](m).has_convergence_delta() == C.__dict__[name](m).has_convergence_delta()
    assert X.IntegratedGradients(m, multiply_by_inputs=False).multiplies_by_inputs is False
    assert X.NoiseTunnel(X.IntegratedGradients(m)).has_convergence_delta()
    assert isinstance(X.LayerGradCam(m, m.linear1), X.LayerAttribution)


# --------------------------------------------------------------------------- gradient family


@pytest.mark.parametrize("abs_", [True, False])
def test_saliency(x, abs_):
    close(*both("Saliency", (cnn(),), x, target=torch.tensor([0, 3, 1]), abs=abs_))


def test_input_x_gradient_tuple_inputs_and_args():
    m, xs = multi()
    close(*both("InputXGradient", (m,), xs, target=[0, 1], additional_forward_args=(2,)))


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left"])
def test_integrated_gradients(x, method):
    b = torch.randn(1, 3, 7, 7) * 0.1
    (a, d), (a2, d2) = both("IntegratedGradients", (cnn(),), x, baselines=b, target=[4, 0, 2], n_steps=17,
                            method=method, return_convergence_delta=True)
    close(a, a2)
    close(d, d2, atol=1e-4)


@pytest.mark.parametrize("baselines", [None, (0.5, 1.0, 0.0), (0.0, torch.ones(1, 3), torch.zeros(2, 3))])
def test_integrated_gradients_tuple_inputs_baseline_forms(baselines):
    m, xs = multi()
    close(*both("IntegratedGradients", (m,), xs, baselines=baselines, target=0, additional_forward_args=(1,),
                n_steps=30))


def test_integrated_gradients_local_and_internal_batch_size(x):
    m = cnn()
    ours = X.IntegratedGradients(m, multiply_by_inputs=False).attribute(x, target=1, n_steps=20, internal_batch_size=7)
    close(ours, C.IntegratedGradients(m, multiply_by_inputs=False).attribute(x, target=1, n_steps=20))


def test_integrated_gradients_golden():
    """Captum's test_integrated_gradients_basic numbers (BasicModel_MultiLayer)."""
    a = X.IntegratedGradients(BasicModel_MultiLayer()).attribute(torch.tensor([[0.0, 100.0, 0.0]]), target=0,
                                                                  n_steps=500)
    close(a.sum(), torch.tensor(390.0), atol=0.1)


def test_deeplift_golden():
    """Captum's test_relu_deeplift_exact_match: attributions 2, 1 and delta 0; local 2, 0.5."""
    m, x1, x2 = ReLUDeepLiftModel(), torch.tensor([[1.0]]), torch.tensor([[2.0]])
    (a1, a2), d = X.DeepLift(m).attribute((x1, x2), baselines=(0.0, 0.0), return_convergence_delta=True)
    close((a1, a2), (torch.tensor([[2.0]]), torch.tensor([[1.0]])))
    assert float(d.abs().max()) == 0.0
    close(X.DeepLift(m, multiply_by_inputs=False).attribute((x1, x2)), (torch.tensor([[2.0]]), torch.tensor([[0.5]])))


@pytest.mark.parametrize("model", [ReLUDeepLiftModel, TanhDeepLiftModel])
def test_deeplift_toy_models(model):
    torch.manual_seed(0)
    x1, x2 = torch.randn(4, 1), torch.randn(4, 1)
    b = (torch.randn(1, 1), 0.3)
    (a, d), (a2, d2) = both("DeepLift", (model(),), (x1, x2), baselines=b, return_convergence_delta=True)
    close(a, a2)
    close(d, d2, atol=1e-5)


def test_deeplift_cnn_per_example_target(x):
    close(*both("DeepLift", (cnn(),), x, baselines=x.mean(0, keepdim=True), target=[1, 2, 3]))


def test_deeplift_custom_attribution_func(x):
    """Captum's custom_attribution_func gets DeepLift's multipliers, the inputs and the
    baselines: here a composition over fa.deeplift(f, multiply_by_inputs=False)."""
    func = lambda m, i, b: tuple(mm * (ii - bb) ** 2 for mm, ii, bb in zip(m, i, b))  # noqa: E731
    close(*both("DeepLift", (cnn(),), x, baselines=0.1, target=2, custom_attribution_func=func))
    one = lambda m: tuple(2 * mm for mm in m)  # noqa: E731
    close(*both("DeepLift", (cnn(),), x, target=2, custom_attribution_func=one))


def test_deeplift_shap(x):
    torch.manual_seed(1)
    dist = torch.randn(4, 3, 7, 7) * 0.2
    close(*both("DeepLiftShap", (cnn(),), x, baselines=dist, target=[0, 1, 2]))
    m, xs = multi()
    dists = tuple(torch.randn(3, 3) for _ in xs)
    close(*both("DeepLiftShap", (m,), xs, baselines=dists, target=0, additional_forward_args=(1,)))


def test_deeplift_shap_per_sample_delta(x):
    torch.manual_seed(1)
    dist = torch.randn(4, 3, 7, 7) * 0.2
    (a, d), (a2, d2) = both("DeepLiftShap", (cnn(),), x, baselines=dist, target=[0, 1, 2], return_convergence_delta=True)
    close(a, a2)
    assert d.shape == d2.shape == (3 * 4,)
    close(d, d2, atol=1e-5)


def _linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 7 * 7, 4)).eval()


def test_gradient_shap_exact_on_a_linear_model(x):
    """On a linear model with one baseline every draw gives (x − b)·w: Captum's numbers exactly."""
    b = torch.randn(1, 3, 7, 7)
    close(*both("GradientShap", (_linear(),), x, baselines=b, target=[0, 1, 3], n_samples=7))


def test_gradient_shap_converges_to_integrated_gradients():
    """E_α[(x − b)·∇f(b + α(x − b))] is IG's integral: many draws land on Captum's IG."""
    m, x = BasicModel_MultiLayer(), torch.tensor([[2.0, 3.0, 1.0]])
    torch.manual_seed(0)
    ours = X.GradientShap(m).attribute(x, baselines=torch.zeros(1, 3), n_samples=4000, target=0)
    close(ours, C.IntegratedGradients(m).attribute(x, target=0, n_steps=400), rtol=0.05, atol=0.05)


def test_gradient_shap_per_sample_delta(x):
    a, d = X.GradientShap(_linear()).attribute(x, baselines=torch.randn(2, 3, 7, 7), n_samples=5, target=0,
                                               return_convergence_delta=True)
    _, d2 = C.GradientShap(_linear()).attribute(x, baselines=torch.randn(2, 3, 7, 7), n_samples=5, target=0,
                                                return_convergence_delta=True)
    assert d.shape == d2.shape == (3 * 5,)
    close(d, torch.zeros(15), atol=1e-4)


def test_noise_tunnel_over_gradient_shap_delta_layout(x):
    """One delta per example, noise sample and draw, flat (Captum's NoiseTunnel cannot run
    GradientShap on a baseline distribution: it asserts on the baselines' shape)."""
    kw = dict(nt_samples=3, stdevs=0.1, baselines=torch.randn(2, 3, 7, 7), n_samples=4, target=1,
              return_convergence_delta=True)
    with pytest.raises(AssertionError, match="Baseline can be provided"):
        C.NoiseTunnel(C.GradientShap(_linear())).attribute(x, **kw)
    a, d = X.NoiseTunnel(X.GradientShap(_linear())).attribute(x, **kw)
    assert a.shape == x.shape and d.shape == (3 * 3 * 4,)
    close(d, torch.zeros(36), atol=1e-4)  # linear model: every draw is complete


def test_guided_backprop_and_deconvolution_golden():
    """Captum's test_guided_backprop numbers on BasicModel_ConvNet_One_Conv."""
    m, x = BasicModel_ConvNet_One_Conv(), torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[[[0.0, 1, 1, 1], [1, 3, 3, 2], [1, 3, 3, 2], [1, 2, 2, 1]]]])
    close(X.GuidedBackprop(m).attribute(x, target=0), expected)
    close(*both("Deconvolution", (m,), x, target=1))
    close(*both("GuidedBackprop", (m,), (x, torch.ones(1, 1, 4, 4)), target=0))


@pytest.mark.parametrize("name", ["GuidedBackprop", "Deconvolution"])
def test_guided_cnn(x, name):
    close(*both(name, (cnn(),), x, target=[3, 1, 0]))


def test_guided_gradcam(x):
    m = cnn()
    close(*both("GuidedGradCam", (m, m[2]), x, target=[1, 0, 4]))
    close(*both("GuidedGradCam", (m, m[0]), x, target=2, attribute_to_layer_input=False, interpolate_mode="bilinear"))


# --------------------------------------------------------------------------- perturbation family


def test_occlusion_golden():
    """Captum's test_occlusion numbers."""
    m, x = BasicModel_MultiLayer(), torch.tensor([[20.0, 50.0, 30.0]])
    for ppe in (1, 2, 3):
        close(X.Occlusion(m).attribute(x, sliding_window_shapes=(1,), target=0, perturbations_per_eval=ppe),
              torch.tensor([[80.0, 200.0, 120.0]]))
    close(X.Occlusion(m).attribute(x, sliding_window_shapes=(2,), strides=2, target=0), torch.tensor([[280.0, 280, 120]]))
    close(X.Occlusion(m).attribute(x, sliding_window_shapes=(2,), baselines=torch.tensor([10.0, 10, 10]), target=0),
          torch.tensor([[200.0, 220, 240]]))


def test_occlusion_tuple_inputs_and_args():
    m, xs = multi()
    close(*both("Occlusion", (m,), xs, sliding_window_shapes=((3,), (1,), (2,)), target=0,
                additional_forward_args=(1,)))
    conv = BasicModel_ConvNet_One_Conv()
    inp = (torch.arange(16.0).view(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
    close(*both("Occlusion", (conv,), inp, sliding_window_shapes=((1, 2, 3), (1, 1, 2)),
                strides=((1, 2, 1), (1, 1, 2)), target=0))


def test_occlusion_cnn(x):
    close(*both("Occlusion", (cnn(),), x, sliding_window_shapes=(3, 3, 3), strides=(1, 2, 2), target=[0, 1, 2],
                baselines=0.5, show_progress=False))


def test_feature_ablation_golden_and_masks():
    m, x = BasicModel_MultiLayer(), torch.tensor([[20.0, 50.0, 30.0]])
    close(X.FeatureAblation(m).attribute(x, target=0, feature_mask=torch.tensor([[0, 0, 1]]), baselines=4),
          torch.tensor([[248.0, 248, 104]]))
    x2 = torch.tensor([[2.0, 10.0, 3.0], [20.0, 50.0, 30.0]])
    close(*both("FeatureAblation", (m,), x2, target=[1, 0], feature_mask=torch.tensor([[0, 0, 1], [1, 1, 0]]),
                perturbations_per_eval=2))


def test_feature_ablation_tuple_inputs_cross_tensor_ids():
    m, xs = multi()
    masks = (torch.tensor([[0, 1, 2]]), torch.tensor([[0, 0, 3]]), torch.tensor([[4, 4, 2]]))
    close(*both("FeatureAblation", (m,), xs, target=0, feature_mask=masks, additional_forward_args=(1,),
                baselines=(0.0, torch.ones(3), 2.0)))


def test_feature_permutation_batch_of_two_is_deterministic():
    """With two examples the only non-identity shuffle is the swap: Captum's numbers exactly."""
    m, x = BasicModel_MultiLayer(), torch.tensor([[2.0, 10.0, 3.0], [20.0, 50.0, 30.0]])
    close(*both("FeaturePermutation", (m,), x, target=0))
    close(*both("FeaturePermutation", (m,), x, target=[1, 0], feature_mask=torch.tensor([[0, 0, 1]])))


def test_shapley_values():
    m, x = BasicModel_MultiLayer(), torch.tensor([[20.0, 50.0, 30.0], [2.0, 10.0, 3.0]])
    close(*both("ShapleyValues", (m,), x, target=[0, 1]))
    close(X.ShapleyValues(m).attribute(x[:1], target=0, feature_mask=torch.tensor([[0, 0, 1]])),
          torch.tensor([[275.0, 275, 115]]))
    mm, xs = multi()
    close(*both("ShapleyValues", (mm,), xs, target=0, additional_forward_args=(1,), baselines=(0.0, 1.0, 0.0),
                feature_mask=(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 0, 3]]), torch.tensor([[1, 1, 2]]))))


def test_shapley_sampling_exact_on_an_additive_model(x):
    """Marginal contributions of an additive model do not depend on the order: exact."""
    mask = torch.arange(3).view(1, 3, 1, 1).repeat(1, 1, 7, 7)
    torch.manual_seed(0)
    close(*both("ShapleyValueSampling", (_linear(),), x, target=2, feature_mask=mask, n_samples=3), atol=1e-4)


def test_shapley_sampling_converges_to_captums_exact_values():
    m, x = BasicModel_MultiLayer(), torch.tensor([[20.0, 50.0, 30.0]])
    torch.manual_seed(0)
    ours = X.ShapleyValueSampling(m).attribute(x, target=0, n_samples=400)
    close(ours, C.ShapleyValues(m).attribute(x, target=0), rtol=0, atol=3.0)


def test_kernel_shap_golden():
    """Captum's test_kernel_shap: the exact Shapley values [[76.67, 196.67, 116.67]], ± 1."""
    m, x = BasicModel_MultiLayer(), torch.tensor([[20.0, 50.0, 30.0]])
    torch.manual_seed(0)
    close(X.KernelShap(m).attribute(x, target=0, n_samples=500), torch.tensor([[76.66666, 196.66666, 116.66666]]),
          rtol=0, atol=1.0)
    close(X.KernelShap(m).attribute(x, target=0, feature_mask=torch.tensor([[0, 0, 1]]), n_samples=100),
          torch.tensor([[275.0, 275, 115]]), rtol=0, atol=1.0)


def test_lime_is_fa_lime_with_captums_defaults():
    """Captum's Lime defaults (lasso α 0.01, cosine kernel width 1, 25 samples) are fa.lime's:
    the compat call gives fa.lime's numbers on the same draws."""
    m, x = BasicModel_MultiLayer(), torch.tensor([[20.0, 50.0, 30.0], [2.0, 10.0, 3.0]])
    mask = torch.tensor([[0, 0, 1]])
    torch.manual_seed(5)
    ours = X.Lime(m).attribute(x, target=[0, 1], feature_mask=mask, baselines=1.0)
    torch.manual_seed(5)
    close(ours, fa.lime(fa.target(m, [0, 1]), mask, 1.0, coalitions="per_example")(x))


def test_lime_golden():
    """Captum's test_simple_lime (a cosine kernel of width 10, SkLearnLasso(alpha=1.0)):
    [[73.37, 193.33, 113.33]] from 500 samples, ± 1, with Captum's constructor line."""
    from funcattr.compat import SkLearnLasso, get_exp_kernel_similarity_function

    m, x = BasicModel_MultiLayer(), torch.tensor([[20.0, 50.0, 30.0]])
    lime = X.Lime(m, similarity_func=get_exp_kernel_similarity_function("cosine", 10.0),
                  interpretable_model=SkLearnLasso(alpha=1.0))
    torch.manual_seed(0)
    close(lime.attribute(x, target=0, n_samples=500), torch.tensor([[73.3716, 193.3349, 113.3349]]), rtol=0, atol=1.0)


@pytest.mark.parametrize("name", ["Lime", "KernelShap"])
def test_lime_and_kernel_shap_draw_per_example(name):
    """Captum draws coalitions per example: two copies of one example get different draws."""
    m, x = BasicModel_MultiLayer(), torch.tensor([[20.0, 50.0, 30.0]] * 2)
    torch.manual_seed(0)
    a = getattr(X, name)(m).attribute(x, target=0, n_samples=6)
    assert not torch.equal(a[0], a[1])


def test_noise_tunnel_tiny_noise_is_deterministic(x):
    """Captum's NoiseTunnel tests use stdevs=2e-8: the wrapped method's numbers."""
    m = cnn()
    for inner, kw in (("Saliency", {}), ("IntegratedGradients", {"n_steps": 10}), ("InputXGradient", {})):
        for nt_type in ("smoothgrad", "smoothgrad_sq", "vargrad"):
            ours = X.NoiseTunnel(getattr(X, inner)(m)).attribute(x, nt_type=nt_type, nt_samples=3, stdevs=2e-8,
                                                                 target=[0, 2, 1], **kw)
            theirs = C.NoiseTunnel(getattr(C, inner)(m)).attribute(x, nt_type=nt_type, nt_samples=3, stdevs=2e-8,
                                                                   target=[0, 2, 1], **kw)
            close(ours, theirs, atol=1e-5)


def test_noise_tunnel_delta_layout_and_tuple_inputs():
    m, xs = multi()
    nt = X.NoiseTunnel(X.IntegratedGradients(m))
    (a, d) = nt.attribute(xs, nt_samples=4, stdevs=(1e-8, 1e-8, 1e-8), target=0, additional_forward_args=(1,),
                          return_convergence_delta=True, n_steps=20, nt_samples_batch_size=2)
    (a2, d2) = C.NoiseTunnel(C.IntegratedGradients(m)).attribute(
        xs, nt_samples=4, stdevs=(1e-8, 1e-8, 1e-8), target=0, additional_forward_args=(1,),
        return_convergence_delta=True, n_steps=20)
    close(a, a2, atol=1e-3)
    assert d.shape == d2.shape == (2 * 4,)
    close(d, d2, atol=1e-3)


def test_noise_tunnel_is_statistically_smoothgrad():
    """With real noise the mean gradient of a quadratic f = Σx² is 2x whatever the draws."""
    f = lambda x: (x**2).sum(1)  # noqa: E731
    x = torch.randn(4, 6)
    torch.manual_seed(0)
    a = X.NoiseTunnel(X.Saliency(f)).attribute(x, nt_samples=400, stdevs=0.1, abs=False)
    close(a, 2 * x, rtol=0, atol=0.05)


# --------------------------------------------------------------------------- refusals and differences


def test_unsupported_classes_raise():
    m = BasicModel_MultiLayer()
    for name, args in (("InternalInfluence", (m, m.linear1)), ("LayerFeatureAblation", (m, m.linear1)),
                       ("LayerFeaturePermutation", (m, m.linear1)), ("LRP", (m,)), ("LayerLRP", (m, m.linear1)),
                       ("LimeBase", (m, None, None, None, None, None, None))):
        with pytest.raises(NotImplementedError, match=f"{name} is not supported by funcattr.compat because"):
            getattr(X, name)(*args)


def test_refused_options_name_themselves(x):
    m, c = BasicModel_MultiLayer(), cnn()
    xx = torch.tensor([[20.0, 50.0, 30.0], [2.0, 10.0, 3.0]])
    cases = [
        (lambda: X.Lime(m, interpretable_model=object()), "interpretable_model"),
        (lambda: X.Lime(m, similarity_func=lambda *a: 1.0), "similarity_func"),
        (lambda: X.Lime(m).attribute(xx, target=0, return_input_shape=False), "return_input_shape=False"),
        (lambda: X.FeaturePermutation(m, perm_func=lambda x, mask: x).attribute(xx, target=0), "perm_func"),
        (lambda: X.FeatureAblation(m).attribute(xx, target=0, foo=1), "foo"),
        (lambda: X.NoiseTunnel(X.IntegratedGradients(m)).attribute(xx, target=0, draw_baseline_from_distrib=True),
         "draw_baseline_from_distrib"),
        (lambda: X.DeepLift(c).attribute(x, target=0, custom_attribution_func=lambda m: m,
                                         return_convergence_delta=True), "return_convergence_delta with custom"),
        (lambda: X.DeepLiftShap(c).attribute(x, baselines=torch.zeros(2, 3, 7, 7), target=0,
                                             custom_attribution_func=lambda m: m), "custom_attribution_func on"),
        (lambda: X.NoiseTunnel(X.DeepLift(c)).attribute(x, target=0, custom_attribution_func=lambda m: m),
         "custom_attribution_func inside NoiseTunnel"),
        (lambda: X.LayerGradCam(c, c[2]).attribute(x, target=0, grad_kwargs={"retain_graph": True}), "grad_kwargs"),
        (lambda: X.NeuronConductance(c, c[2], multiply_by_inputs=False).attribute(x, (0, 1, 1), target=0),
         "multiply_by_inputs=False"),
        (lambda: X.Occlusion(m).attribute_future(), "attribute_future"),
    ]
    for call, option in cases:
        with pytest.raises(NotImplementedError, match=f"{option}.*not supported by funcattr.compat because"):
            call()


def test_bad_arguments_are_value_errors_not_asserts():
    m, x = BasicModel_MultiLayer(), torch.tensor([[20.0, 50.0, 30.0]])
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        X.FeatureAblation(m).attribute(x, target=0, perturbations_per_eval=0)
    with pytest.raises(AssertionError):
        C.FeatureAblation(m).attribute(x, target=0, perturbations_per_eval=0)
    with pytest.raises(ValueError, match="target"):
        X.Saliency(m).attribute(x, target=7)
    with pytest.raises(ValueError, match="internal_batch_size"):
        X.IntegratedGradients(m).attribute(x, target=0, internal_batch_size=0)
    with pytest.raises(TypeError, match="NoiseTunnel wraps a funcattr.compat"):
        X.NoiseTunnel(C.Saliency(m))


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2 = nn.Linear(4, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.l2(F.relu(self.l1(x)))


def test_difference_functional_relu_gets_the_rule():
    """Captum's hooks miss F.relu: its GuidedBackprop is the plain gradient there; funcattr's
    rule applies to every ReLU that runs."""
    m, x = _Functional(), torch.randn(6, 4)
    theirs = C.GuidedBackprop(m).attribute(x, target=0)
    close(theirs, C.Saliency(m).attribute(x, target=0, abs=False))  # Captum: no rule applied
    w = (m.l2.weight[0].clamp_min(0) * (m.l1(x) > 0)) @ m.l1.weight  # guided: relu(grad) · [h > 0]
    close(X.GuidedBackprop(m).attribute(x, target=0), w.detach())


def test_difference_reused_relu_keeps_deeplift_complete():
    """A reused nn.ReLU breaks Captum's DeepLift (#1082); funcattr's stays complete."""

    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.l1, self.l2, self.l3, self.relu = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 1), nn.ReLU()

        def forward(self, x):
            return self.l3(self.relu(self.l2(self.relu(self.l1(x)))))

    x = torch.randn(5, 3)
    _, d = X.DeepLift(Reused()).attribute(x, baselines=0.0, return_convergence_delta=True)
    assert float(d.abs().max()) < 1e-5


def test_difference_single_baseline_distribution(x):
    """Captum asserts more than one baseline for DeepLiftShap; one is a valid distribution."""
    m, b = cnn(), torch.zeros(1, 3, 7, 7)
    with pytest.raises(AssertionError):
        C.DeepLiftShap(m).attribute(x, baselines=b, target=0)
    close(X.DeepLiftShap(m).attribute(x, baselines=b, target=0), X.DeepLift(m).attribute(x, baselines=b, target=0))


def test_difference_guided_gradcam_mismatched_input_raises():
    class TwoIn(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.relu, self.fc = nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(2 * 4 + 3, 2)

        def forward(self, img, vec):
            return self.fc(torch.cat([self.relu(self.conv(img)).mean(-1).flatten(1), vec], 1))

    m = TwoIn()
    xs = (torch.randn(2, 1, 6, 6), torch.randn(2, 3))
    with pytest.warns(UserWarning, match="Couldn't appropriately interpolate"):
        theirs = C.GuidedGradCam(m, m.conv).attribute(xs, target=0)
    assert theirs[1].numel() == 0
    with pytest.raises(ValueError, match="spatial dims"):
        X.GuidedGradCam(m, m.conv).attribute(xs, target=0)



def _loss():
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    return lambda x, y: F.mse_loss(net(x), y)  # noqa: E731


def test_forward_returning_one_value_for_the_batch():
    """Permutation importance of a dataset-level loss: one number per perturbed batch, and
    attributions with batch dim 1, as in Captum."""
    loss = _loss()
    torch.manual_seed(1)
    X_, Y = torch.randn(8, 3), torch.randn(8, 1)
    for name, kw in (("FeatureAblation", {}), ("FeatureAblation", {"feature_mask": torch.tensor([[0, 0, 1]])}),
                     ("Occlusion", {"sliding_window_shapes": (2,)}), ("ShapleyValues", {"baselines": 0.5})):
        ours, theirs = both(name, (loss,), X_, additional_forward_args=(Y,), **kw)
        assert ours.shape == theirs.shape == (1, 3)
        close(ours, theirs)
    two = (X_[:2], Y[:2])  # two examples: the only non-identity shuffle is the swap
    ours, theirs = both("FeaturePermutation", (loss,), two[0], additional_forward_args=(two[1],))
    assert ours.shape == theirs.shape == (1, 3)
    close(ours, theirs)


def test_several_outputs_without_target():
    """target=None on a [B, K] output: Captum's layouts — [B·K, ...] for ablation, occlusion
    and permutation, [B, K, ...] for Shapley values (funcattr's K maps)."""
    torch.manual_seed(0)
    m, x = nn.Linear(3, 4), torch.randn(5, 3)
    for name, kw in (("FeatureAblation", {}), ("Occlusion", {"sliding_window_shapes": (2,)}),
                     ("ShapleyValues", {}), ("ShapleyValueSampling", {"n_samples": 2})):
        ours, theirs = both(name, (m,), x, **kw)
        assert ours.shape == theirs.shape
        close(ours, theirs, atol=1e-6)
    ours, theirs = both("FeaturePermutation", (m,), x[:2])
    assert ours.shape == theirs.shape == (8, 3)
    close(ours, theirs)
    nt = X.NoiseTunnel(X.FeatureAblation(m)).attribute(x, nt_samples=2, stdevs=1e-9)
    close(nt, C.FeatureAblation(m).attribute(x), atol=1e-6)


@pytest.mark.parametrize("name", ["Lime", "KernelShap"])
def test_difference_lime_with_several_outputs_gives_a_map_each(name):
    """Captum's Lime/KernelShap assert one output per example; funcattr fits one surrogate per
    output: the map of output k is the map with target=k on the same draws."""
    torch.manual_seed(0)
    m, x = nn.Linear(3, 4), torch.randn(2, 3)
    with pytest.raises(AssertionError, match="Invalid number of outputs"):
        getattr(C, name)(m).attribute(x)
    torch.manual_seed(1)
    a = getattr(X, name)(m).attribute(x, n_samples=40)
    assert a.shape == (2, 4, 3)
    for k in (0, 3):
        torch.manual_seed(1)
        close(a[:, k], getattr(X, name)(m).attribute(x, target=k, n_samples=40), atol=1e-5)
