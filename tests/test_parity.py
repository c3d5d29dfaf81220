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
