"""Captum parity capabilities (issue 11), each with three witnesses where they exist: a plain
loop twin, Captum 0.9.0 on the same model and input, and an axiom with an exact answer."""

import pytest
import torch
import torch.nn as nn
from captum.attr import FeatureAblation, GradientShap, KernelShap, Lime, Occlusion

import funcattr as fa

torch.manual_seed(0)


class Quad(nn.Module):
    """f(x) = Σ w x² (+ v·x): gradient SHAP's per-draw gap is −Σ w (x̃ − b)² (1 − 2α)."""

    def __init__(self, d=5):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.v = nn.Parameter(torch.randn(d))

    def forward(self, x):
        return ((self.w * x * x).sum(1) + (self.v * x).sum(1)).unsqueeze(1)


class Step(nn.Module):
    """Linear plus a jump with zero gradient: each draw's gap is −c (1[x] − 1[b]), whatever α."""

    def forward(self, x):
        return (x.sum(1) + 10.0 * (x[:, 0] > 0).float()).unsqueeze(1)


# ---------------------------------------------------------------- 3. per-sample deltas


def test_gradient_shap_per_sample_deltas_loop_twin_and_mean_identity():
    m, x = Quad().double(), torch.randn(3, 5, dtype=torch.float64)
    base = torch.randn(4, 5, dtype=torch.float64)
    S = 6
    attr, d = fa.gradient_shap(
        fa.target(m, 0), base, samples=S, stdev=0.3, return_delta="per_sample", generator=torch.Generator().manual_seed(1)
    )(x)
    assert d.shape == (3, S)
    # twin: the same draws, one (example, sample) at a time
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(4, (S, 3), generator=g)
    alpha = torch.rand((S, 3), generator=g)
    noise = torch.randn((S, 3, 5), generator=g, dtype=torch.float64)
    twin = torch.empty(3, S, dtype=torch.float64)
    twin_attr = torch.zeros(3, 5, dtype=torch.float64)
    for b in range(3):
        for s in range(S):
            xt, bs = x[b] + 0.3 * noise[s, b], base[idx[s, b]]
            pt = (bs + alpha[s, b] * (xt - bs)).requires_grad_()
            (grad,) = torch.autograd.grad(m(pt[None])[0, 0], pt)
            own = (xt - bs) * grad
            twin_attr[b] += own / S
            twin[b, s] = own.sum() - (m(xt[None]) - m(bs[None]))[0, 0]
            # the axiom: for Σ w x² + v·x the gap is exactly −Σ w (x̃ − b)² (1 − 2α)
            exact = -(m.w * (xt - bs) ** 2).sum() * (1 - 2 * alpha[s, b])
            torch.testing.assert_close(twin[b, s], exact.detach())
    torch.testing.assert_close(d, twin)
    torch.testing.assert_close(attr, twin_attr)
    # the per-example delta is the mean of the per-sample ones
    _, d_ex = fa.gradient_shap(
        fa.target(m, 0), base, samples=S, stdev=0.3, return_delta=True, generator=torch.Generator().manual_seed(1)
    )(x)
    torch.testing.assert_close(d_ex, d.mean(1))


def test_gradient_shap_per_sample_deltas_are_laid_out_as_captums():
    """Captum gives [B·S] example-major; row b of its reshape holds only gaps example b can have."""
    m = Step()
    x = torch.tensor([[1.0, 0.5, -0.2], [-1.0, 0.3, 0.1]])  # 1[x] = 1, 0
    base = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # 1[b] = 0, 1
    allowed = [{-10.0, 0.0}, {0.0, 10.0}]
    torch.manual_seed(0)
    _, cd = GradientShap(m).attribute(x, base, target=0, n_samples=40, return_convergence_delta=True)
    _, d = fa.gradient_shap(fa.target(m, 0), base, samples=40, return_delta="per_sample")(x)
    assert cd.shape == (2 * 40,) and d.shape == (2, 40)
    for deltas in (cd.reshape(2, 40), d):
        for b in range(2):
            assert set(deltas[b].round().tolist()) <= allowed[b]
    assert d.abs().max() > 0  # both baselines were drawn


def test_per_sample_delta_refusals():
    m = Quad()
    with pytest.raises(ValueError, match="return_delta must be True, False or 'per_sample'"):
        fa.gradient_shap(fa.target(m, 0), torch.zeros(2, 5), return_delta="per_example")
    with pytest.raises(ValueError, match="needs multiply_by_inputs=True"):
        fa.gradient_shap(fa.target(m, 0), torch.zeros(2, 5), multiply_by_inputs=False, return_delta="per_sample")


# ---------------------------------------------------------------- 7. coalitions per example

from captum.testing.helpers.basic_models import BasicModel_MultiLayer, BasicModel_MultiLayer_MultiInput  # noqa: E402


def _net_and_mask():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
    mask = torch.arange(9).view(3, 3).repeat_interleave(4, 0).repeat_interleave(4, 1).view(1, 1, 12, 12)
    return m, torch.randn(4, 3, 12, 12), mask


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_per_example_coalitions_equal_the_examples_one_by_one(method):
    m, x, mask = _net_and_mask()
    kw = dict(mask=mask, samples=30, coalitions="per_example")
    if method == "lime":
        kw["penalty"] = None
    make = getattr(fa, method)
    f = fa.target(m, torch.tensor([0, 1, 2, 3]))
    batch = make(f, generator=torch.Generator().manual_seed(3), **kw)(x)
    g = torch.Generator().manual_seed(3)  # one generator, drawn in example order
    loop = torch.cat([make(fa.target(m, i), generator=g, **kw)(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, loop, rtol=1e-5, atol=1e-6)
    assert batch.abs().max() > 0
    # the shared draw is a different estimate for all examples but the first
    shared = make(f, generator=torch.Generator().manual_seed(3), **{**kw, "coalitions": "shared"})(x)
    torch.testing.assert_close(shared[0], batch[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(shared[1:], batch[1:])


def test_per_example_coalitions_on_captums_golden_batches():
    """Captum draws coalitions per example; its golden numbers (atol 1.0) hold for the per-example draw."""
    f = fa.target(BasicModel_MultiLayer(), 0)
    torch.manual_seed(1234)
    lime = fa.lime(f, samples=800, kernel_width=10.0, alpha=1.0, coalitions="per_example")
    torch.testing.assert_close(
        lime(torch.tensor([[20.0, 50.0, 30.0], [10.0, 14.0, 4.0]])),
        torch.tensor([[73.4450, 193.5979, 113.4363], [32.11, 48.00, 11.00]]),
        rtol=0,
        atol=1.0,
    )
    g = fa.target(BasicModel_MultiLayer_MultiInput(), 0)
    masks = (torch.tensor([[1, 1, 1], [0, 1, 0]]), torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2], [0, 0, 0]]))
    expected = (
        [[1088.6666, 1088.6666, 1088.6666], [255.0, 595.0, 255.0]],
        [[76.6666, 1088.6666, 156.6666], [255.0, 595.0, 0.0]],
        [[76.6666, 1088.6666, 156.6666], [255.0, 255.0, 255.0]],
    )
    inputs = (torch.tensor([[23.0, 100.0, 0.0], [20.0, 50.0, 30.0]]), torch.tensor([[20.0, 50.0, 30.0], [0.0, 100.0, 0.0]]), torch.tensor([[0.0, 100.0, 10.0], [2.0, 10.0, 3.0]]))
    torch.manual_seed(0)
    ours = fa.kernel_shap(g, mask=masks, samples=300, coalitions="per_example")(inputs, 1)
    torch.testing.assert_close(ours, tuple(torch.tensor(e) for e in expected), rtol=0, atol=1.0)


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_per_example_coalitions_on_a_linear_model_are_exact(method):
    torch.manual_seed(5)
    w, x, b = torch.randn(5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    kw = {"penalty": None} if method == "lime" else {}
    a = getattr(fa, method)(lambda x: x @ w, baseline=b, samples=60, coalitions="per_example", **kw)(x)
    torch.testing.assert_close(a, w * (x - b))


def test_per_example_coalitions_refusals():
    with pytest.raises(ValueError, match="coalitions must be one of"):
        fa.lime(lambda x: x.sum(1), coalitions="each")
    f = lambda x: x.sum()  # noqa: E731  one value for the whole batch
    with pytest.raises(ValueError, match="f gives one value for the whole batch; use coalitions='shared'"):
        fa.kernel_shap(f, samples=10, coalitions="per_example")(torch.randn(3, 4))
    assert fa.kernel_shap(f, samples=10)(torch.randn(3, 4)).shape == (1, 4)


# ---------------------------------------------------------------- 5. several outputs per example, no target


def test_raw_outputs_of_k_scores_give_k_maps_per_example():
    """A forward giving [B, K] and no target: K maps per example, [B, K, ...]. Captum's perturbation
    methods give the same numbers with the output flattened, [B·K, ...] (ShapleyValues: [B, K, ...])."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.randn(2, 4)
    abl, occ, shap = fa.feature_ablation(m)(x), fa.occlusion(m, window=(2,))(x), fa.shapley_values(m)(x)
    assert abl.shape == occ.shape == shap.shape == (2, 3, 4)
    torch.testing.assert_close(abl.reshape(6, 4), FeatureAblation(m).attribute(x))
    torch.testing.assert_close(occ.reshape(6, 4), Occlusion(m).attribute(x, sliding_window_shapes=(2,)))
    from captum.attr import ShapleyValues

    torch.testing.assert_close(shap, ShapleyValues(m).attribute(x))
    for k in range(3):  # twin: one target at a time
        torch.testing.assert_close(abl[:, k], fa.feature_ablation(fa.target(m, k))(x))
        torch.testing.assert_close(fa.saliency(m)(x)[:, k], fa.saliency(fa.target(m, k))(x))
    lin = nn.Linear(4, 3)  # axiom: ablating x_j to 0 drops output k by W[k, j] x_j
    torch.testing.assert_close(fa.feature_ablation(lin)(x), lin.weight.unsqueeze(0) * x.unsqueeze(1))


def test_outputs_of_more_than_two_dims_are_refused_pointing_at_target_and_outputs():
    """Captum flattens a [B, 2, 4] output into 16 'outputs' mixing examples; we refuse and say how to pick."""
    x = torch.randn(2, 4)
    for method in (fa.feature_ablation(lambda x: torch.stack([x, 2 * x], 1)), fa.saliency(lambda x: torch.stack([x, 2 * x], 1))):
        with pytest.raises(ValueError, match=r"returned shape \(2, 2, 4\).*fa.target\(model, target\) or fa.outputs"):
            method(x)


# ---------------------------------------------------------------- 8. integer models


def test_integer_models_keep_captums_output_dtype():
    """Ablation and permutation of an int → int model are exact integer differences (int64, as
    Captum); averaging methods give float32 (as Captum). A fractional baseline on integer inputs
    promotes (Captum refuses in ablation/occlusion and silently truncates 0.5 → 0 in the Shapley
    methods: we deliberately differ, see test_trust)."""
    from captum.attr import FeaturePermutation, ShapleyValues, ShapleyValueSampling

    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    w = torch.tensor([1, 2, 3])
    f = lambda x: (x * w).sum(1)  # noqa: E731
    cases = [
        (fa.feature_ablation(f), FeatureAblation(f).attribute(x)),
        (fa.feature_permutation(f, generator=torch.Generator().manual_seed(0)), None),
        (fa.occlusion(f, window=(2,)), Occlusion(f).attribute(x, sliding_window_shapes=(2,))),
        (fa.shapley_values(f), ShapleyValues(f).attribute(x)),
        (fa.shapley_sampling(f, samples=4), ShapleyValueSampling(f).attribute(x, n_samples=4)),
    ]
    for ours, theirs in cases:
        a = ours(x)
        if theirs is not None:
            assert a.dtype == theirs.dtype, ours.__name__
            torch.testing.assert_close(a, theirs)
    assert fa.feature_permutation(f)(x).dtype == FeaturePermutation(f).attribute(x).dtype == torch.int64
    # twin and axiom: the int result is exactly w·x (ablation to 0 of a linear model)
    assert torch.equal(fa.feature_ablation(f)(x), w * x)
    assert torch.equal(fa.feature_ablation(lambda x: f(x).sum())(x), (w * x).sum(0, keepdim=True))
    half = fa.feature_ablation(f, baseline=0.5)(x)
    assert half.dtype == torch.float32 and torch.equal(half, (w * (x - 0.5)).float())


# ---------------------------------------------------------------- 1. one value for the whole batch


def _loss_setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    return net, torch.randn(5, 4), torch.randn(5, 2)


@pytest.mark.parametrize("form", ["tensor0d", "tensor1", "float"])
def test_a_dataset_level_loss_is_attributed_as_captum_does(form):
    """Each perturbation ablates a feature in every example at once and gives one number: the
    attributions have batch dim 1 (Captum's aggregate mode)."""
    net, X, Y = _loss_setup()
    mse = torch.nn.functional.mse_loss
    loss = {
        "tensor0d": lambda x, y: mse(net(x), y),
        "tensor1": lambda x, y: mse(net(x), y).reshape(1),
        "float": lambda x, y: float(mse(net(x), y)),
    }[form]
    ours = fa.feature_ablation(loss)(X, Y)
    assert ours.shape == (1, 4)
    if form != "float":  # Captum needs a tensor
        torch.testing.assert_close(ours, FeatureAblation(loss).attribute(X, additional_forward_args=(Y,)))
        torch.testing.assert_close(
            fa.occlusion(loss, window=(2,))(X, Y),
            Occlusion(loss).attribute(X, sliding_window_shapes=(2,), additional_forward_args=(Y,)),
        )
    # twin: ablate feature j in all examples, one loss each
    with torch.no_grad():
        base = float(mse(net(X), Y))
        twin = torch.tensor([[base - float(mse(net(X.index_fill(1, torch.tensor([j]), 0.0)), Y)) for j in range(4)]])
    torch.testing.assert_close(ours, twin)


def test_permutation_importance_of_a_loss():
    net, X, Y = _loss_setup()
    loss = lambda x, y: torch.nn.functional.mse_loss(net(x), y)  # noqa: E731
    imp = fa.feature_permutation(loss, generator=torch.Generator().manual_seed(0))(X, Y)
    assert imp.shape == (1, 4)
    # twin: the same shuffles (one per feature, drawn as _permutations draws them)
    from funcattr._perturb import _permutations

    perms = _permutations(4, 5, torch.device("cpu"), torch.Generator().manual_seed(0))
    twin = []
    for j in range(4):
        Xp = X.clone()
        Xp[:, j] = X[perms[j], j]
        with torch.no_grad():
            twin.append(float(loss(X, Y) - loss(Xp, Y)))
    torch.testing.assert_close(imp, torch.tensor([twin]))
    # axiom: a feature the loss ignores gets exactly zero
    ign = lambda x, y: ((x[:, :3].sum(1) - y[:, 0]) ** 2).mean()  # noqa: E731
    assert fa.feature_permutation(ign)(X, Y)[0, 3] == 0


def test_whole_batch_shapley_of_a_batch_sum_is_exact():
    """Axiom: for Σ_b w·x_b the features of the whole batch are additive players worth w_j Σ_b x_bj."""
    from captum.attr import ShapleyValues

    w, X = torch.randn(4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    f = lambda x: (x @ w).sum()  # noqa: E731
    exact = w * X.sum(0, keepdim=True)
    for method in (fa.shapley_values(f), fa.kernel_shap(f, samples=40), fa.shapley_sampling(f, samples=3), fa.lime(f, samples=60, penalty=None)):
        torch.testing.assert_close(method(X), exact, msg=method.__name__)
    # Captum returns float32 for float64 inputs here; we keep the inputs' precision (deliberately)
    torch.testing.assert_close(fa.shapley_values(f)(X), ShapleyValues(f).attribute(X).double(), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- 2. tuple-output layers, several inputs, several layers


def test_several_layers_in_one_call_equal_captum_and_one_layer_at_a_time():
    from captum.attr import LayerActivation, LayerGradientXActivation, LayerIntegratedGradients

    m = BasicModel_MultiLayer(multi_input_module=True)
    x = torch.tensor([[3.0, 5.0, 1.0], [1.0, 2.0, -4.0]], requires_grad=False)
    f = fa.target(m, 1)
    ig = fa.integrated_gradients(f, wrt=[m.linear1, m.linear1_alt], steps=50)(x)
    theirs = LayerIntegratedGradients(m, [m.linear1, m.linear1_alt]).attribute(x, target=1, n_steps=50)
    for a, b in zip(ig, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for a, layer in zip(ig, (m.linear1, m.linear1_alt)):  # twin: one layer at a time
        torch.testing.assert_close(a, fa.integrated_gradients(f, wrt=layer, steps=50)(x))
    # the module's two inputs at once, as Captum's attribute_to_layer_input=True
    acts = fa.activation(m, fa.input_of(m.multi_relu))(x)
    c_acts = LayerActivation(m, m.multi_relu).attribute(x, attribute_to_layer_input=True)
    for a, b in zip(acts, c_acts):
        torch.testing.assert_close(a, b)
    c_gxa = LayerGradientXActivation(m, m.multi_relu).attribute(x, target=1, attribute_to_layer_input=True)
    ours_gxa = fa.input_x_gradient(f, wrt=fa.input_of(m.multi_relu))(x)
    for a, b in zip(ours_gxa, c_gxa):
        torch.testing.assert_close(a, b)


def test_tuple_output_layer_ig_is_complete_per_part():
    """Axiom: each part of a tuple layer's IG sums to f(x) − f(x') when the parts reach f additively."""
    m = BasicModel_MultiLayer(multi_input_module=True).double()
    x = torch.tensor([[3.0, 5.0, 1.0], [1.0, 2.0, -4.0]], dtype=torch.float64)
    f = fa.target(m, 0)
    parts, delta = fa.integrated_gradients(f, wrt=m.multi_relu, steps=300, method="gausslegendre", return_delta=True)(x)
    total = sum(p.sum(1) for p in parts)
    torch.testing.assert_close(total, f(x) - f(torch.zeros_like(x)), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- 6. neuron selectors


def test_callable_neuron_returning_an_aggregate_and_partial_indices():
    from captum.attr import NeuronGradient

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.randn(2, 3, 6, 6)
    agg = lambda a: a.sum((1, 2, 3))  # noqa: E731  [B]
    ours = fa.saliency(fa.neuron(m, m[1], agg), abs=False)(x)
    torch.testing.assert_close(ours, NeuronGradient(m, m[1]).attribute(x, neuron_selector=agg))
    twin = torch.func.vmap(torch.func.grad(lambda xi: m[1](m[0](xi[None])).sum()))(x)
    torch.testing.assert_close(ours, twin)
    # a partial index over singleton dims: the pooled layer [B, 4, 1, 1], channel 2
    part = fa.saliency(fa.neuron(m, m[2], (2,)), abs=False)(x)
    full = fa.saliency(fa.neuron(m, m[2], (2, 0, 0)), abs=False)(x)
    torch.testing.assert_close(part, full)
    torch.testing.assert_close(part, NeuronGradient(m, m[2]).attribute(x, neuron_selector=(2, 0, 0)))


# ---------------------------------------------------------------- 9. infidelity's perturb


def test_infidelity_perturb_receives_what_its_docstring_says_on_every_call():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3))
    x, attrs, S = torch.randn(3, 4), torch.randn(3, 4), 5
    seen = []

    def perturb(inp, base=None):
        seen.append((tuple(inp.shape), base))
        noise = torch.randn_like(inp) * 0.1
        return noise, inp - noise

    for _ in range(2):  # the first call (no cached plan) and a later one
        fa.metrics.infidelity(fa.target(m, 0), perturb, x, attrs, samples=S)
    assert seen == [((S * 3, 4), None)] * 2


def test_layers_feeding_one_another_in_one_call_are_refused_not_zeroed():
    """A gradient at [a, b] with b computed from a holds b fixed: a would get zeros. Refused for
    every method that differentiates at the sites; activations (no gradient) are fine."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.randn(2, 3, 8, 8)
    f = fa.target(m, 1)
    for method in (fa.integrated_gradients(f, wrt=[m[0], m[2]]), fa.saliency(f, wrt=[m[0], m[2]]), fa.gradcam(f, [m[0], m[2]])):
        with pytest.raises(ValueError, match=r"wrt\[1\] \(the output of Conv2d\) is computed from wrt\[0\]"):
            method(x)
    acts = fa.activation(m, [m[0], m[2]])(x)
    torch.testing.assert_close(acts[1], m[2](m[1](m[0](x))))


def test_a_batch_value_through_fa_target_with_no_target():
    net, X, Y = _loss_setup()
    loss = lambda x, y: torch.nn.functional.mse_loss(net(x), y)  # noqa: E731
    direct = fa.feature_ablation(loss)(X, Y)
    torch.testing.assert_close(fa.feature_ablation(fa.target(loss))(X, Y, target=None), direct)
    torch.testing.assert_close(fa.feature_ablation(fa.target(loss, None))(X, Y), direct)
    with pytest.raises(ValueError, match=r"returned shape \(\) for a batch of 5 rows"):
        fa.saliency(fa.target(loss, None))(X, Y)  # gradient methods need one score per example
