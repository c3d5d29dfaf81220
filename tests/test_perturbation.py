"""Perturbation family: occlusion, feature ablation, feature permutation, Shapley values
(exact and sampled), KernelSHAP and LIME — each by three witnesses: Captum 0.9.0 (golden
numbers from its test suite and differential runs on the same models), a plain loop twin
(one perturbation at a time), and an axiom with an exact answer."""

import itertools

import pytest
import torch
from captum.attr import FeatureAblation, FeaturePermutation, Occlusion, ShapleyValues
from captum.testing.helpers.basic_models import (
    BasicModel_ConvNet_One_Conv,
    BasicModel_MultiLayer,
    BasicModel_MultiLayer_MultiInput,
)
from helpers import close
from models import Linear, res_conv_net, two_input_net

import funcattr as fa
from funcattr import _perturb


def blocks(side=2, n=8, batch=1, shift=0):
    """Superpixel ids ``[batch, 1, n, n]``: squares of ``side`` pixels (rolled by ``shift`` per example)."""
    r = torch.arange(n) // side
    ids = (r.view(-1, 1) * (n // side) + r.view(1, -1)).view(1, 1, n, n)
    return torch.cat([ids.roll(shift * i, dims=3) for i in range(batch)])


X3 = torch.tensor([[20.0, 50.0, 30.0]])
SHAPLEY_X3 = [[76.66666, 196.66666, 116.66666]]  # exact Shapley values of MultiLayer at X3


# --------------------------------------------------------------------------- Captum's golden numbers


def _multi_inputs():
    return (
        torch.tensor([[23.0, 100.0, 0.0], [20.0, 50.0, 30.0]]),
        torch.tensor([[20.0, 50.0, 30.0], [0.0, 100.0, 0.0]]),
        torch.tensor([[0.0, 100.0, 10.0], [2.0, 10.0, 3.0]]),
    )


GOLDEN = [
    # Captum tests/attr/test_occlusion.py
    ("occlusion", dict(window=(1,)), X3, (), [[80.0, 200.0, 120.0]]),
    ("occlusion", dict(window=(2,), stride=2), X3, (), [[280.0, 280.0, 120.0]]),
    ("occlusion", dict(window=(2,), baseline=torch.tensor([10.0, 10.0, 10.0])), X3, (), [[200.0, 220.0, 240.0]]),
    ("occlusion", dict(window=(1,)), torch.tensor([[2.0, 10.0, 3.0], [20.0, 50.0, 30.0]]), (), [[8.0, 35.0, 12.0], [80.0, 200.0, 120.0]]),
    # Captum tests/attr/test_feature_ablation.py
    ("feature_ablation", {}, X3, (), [[80.0, 200.0, 120.0]]),
    ("feature_ablation", dict(mask=torch.tensor([[0, 0, 1]])), X3, (), [[280.0, 280.0, 120.0]]),
    ("feature_ablation", dict(mask=torch.tensor([[0, 0, 1]]), baseline=4), X3, (), [[248.0, 248.0, 104.0]]),
    (
        "feature_ablation",
        dict(mask=torch.tensor([[0, 0, 1], [1, 1, 0]])),
        torch.tensor([[2.0, 10.0, 3.0], [20.0, 50.0, 30.0]]),
        (),
        [[41.0, 41.0, 12.0], [280.0, 280.0, 120.0]],
    ),
    # Captum tests/attr/test_shapley.py (exact)
    ("shapley_values", {}, X3, (), SHAPLEY_X3),
    ("shapley_values", dict(mask=torch.tensor([[0, 0, 1]])), X3, (), [[275.0, 275.0, 115.0]]),
]


@pytest.mark.parametrize("method, kw, x, args, expected", GOLDEN)
def test_captum_golden_numbers(method, kw, x, args, expected):
    f = fa.target(BasicModel_MultiLayer(), 0)
    close(getattr(fa, method)(f, **kw)(x, *args), torch.tensor(expected), atol=1e-3)


def test_golden_occlusion_multi_input_and_conv():
    f = fa.target(BasicModel_MultiLayer_MultiInput(), 0)
    ours = fa.occlusion(f, ((3,), (1,), (2,)))(_multi_inputs(), 1)
    expected = (
        [[492.0] * 3, [400.0] * 3],
        [[80.0, 200.0, 120.0], [0.0, 400.0, 0.0]],
        [[400.0, 420.0, 440.0], [48.0, 50.0, 52.0]],
    )
    close(ours, tuple(torch.tensor(e) for e in expected))
    g = fa.target(BasicModel_ConvNet_One_Conv(), 0)
    x = (torch.arange(16.0).view(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
    a, b = fa.occlusion(g, ((1, 4, 4), (1, 4, 4)))(x)
    close(a, 67 * torch.ones(1, 1, 4, 4))
    close(b, 13 * torch.ones(1, 1, 4, 4))
    a, b = fa.occlusion(g, ((1, 2, 3), (1, 1, 2)), stride=((1, 2, 1), (1, 1, 2)))(x)
    close(a, torch.tensor([[17.0] * 4, [17.0] * 4, [64.0, 65.5, 65.5, 67.0], [64.0, 65.5, 65.5, 67.0]]).view(1, 1, 4, 4))
    close(b, torch.tensor([[3.0] * 4] * 3 + [[0.0] * 4]).view(1, 1, 4, 4))


def test_golden_bool_input():
    class Times10(torch.nn.Module):  # Captum's BasicModelBoolInput: MultiLayer on 10 * x
        def forward(self, x):
            return BasicModel_MultiLayer()(x.float() * 10)

    x = torch.tensor([[True, False, True]])
    ours = fa.feature_ablation(fa.target(Times10(), 0), mask=torch.tensor([[0, 0, 1]]))(x)
    close(ours, torch.tensor([[40.0, 40.0, 40.0]]))


def test_golden_sampled_methods_within_captums_tolerance():
    """Captum's sampled tests with their sample counts and tolerance (1.0, max); seeded, as
    Captum's are (across 30 seeds the largest errors were 0.85, 0.94 and 0.84 for the
    sampling, KernelSHAP and LIME calls below; KernelSHAP with Captum's default 25 samples on
    2 features can miss by ~2, so those calls use 100)."""
    f = fa.target(BasicModel_MultiLayer(), 0)
    torch.manual_seed(1234)
    close(fa.shapley_sampling(f, samples=250)(X3), torch.tensor(SHAPLEY_X3), rtol=0, atol=1.0)
    torch.manual_seed(1234)
    close(fa.kernel_shap(f, samples=500)(X3), torch.tensor(SHAPLEY_X3), rtol=0, atol=1.0)
    torch.manual_seed(1234)
    close(fa.kernel_shap(f, mask=torch.tensor([[0, 0, 1]]), samples=100)(X3), torch.tensor([[275.0, 275.0, 115.0]]), rtol=0, atol=1.0)
    torch.manual_seed(1234)
    close(fa.kernel_shap(f, mask=torch.tensor([[0, 0, 1]]), baseline=4, samples=100)(X3), torch.tensor([[248.0, 248.0, 104.0]]), rtol=0, atol=1.0)
    single = fa.kernel_shap(lambda x: x.sum(1), baseline=torch.tensor([[1.0]]), samples=2)(torch.tensor([[3.0]]))
    close(single, torch.tensor([[2.0]]))
    # Captum tests/attr/test_lime.py: cosine kernel of width 10, SkLearnLasso(alpha=1.0)
    torch.manual_seed(1234)
    lime = fa.lime(f, samples=500, kernel_width=10.0, alpha=1.0)
    close(lime(X3), torch.tensor([[73.3716, 193.3349, 113.3349]]), rtol=0, atol=1.0)
    torch.manual_seed(1234)
    lime = fa.lime(f, mask=torch.tensor([[0, 0, 1]]), samples=500, kernel_width=10.0, alpha=1.0)
    close(lime(X3), torch.tensor([[271.0, 271.0, 111.0]]), rtol=0, atol=1.0)
    torch.manual_seed(1234)
    lime = fa.lime(f, samples=800, kernel_width=10.0, alpha=1.0)
    close(lime(torch.tensor([[20.0, 50.0, 30.0], [10.0, 14.0, 4.0]])),
          torch.tensor([[73.4450, 193.5979, 113.4363], [32.11, 48.00, 11.00]]), rtol=0, atol=1.0)


def test_golden_kernel_shap_per_example_tuple_masks():
    f = fa.target(BasicModel_MultiLayer_MultiInput(), 0)
    masks = (torch.tensor([[1, 1, 1], [0, 1, 0]]), torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2], [0, 0, 0]]))
    expected = (
        [[1088.6666, 1088.6666, 1088.6666], [255.0, 595.0, 255.0]],
        [[76.6666, 1088.6666, 156.6666], [255.0, 595.0, 0.0]],
        [[76.6666, 1088.6666, 156.6666], [255.0, 255.0, 255.0]],
    )
    torch.manual_seed(0)
    ours = fa.kernel_shap(f, mask=masks, samples=300)(_multi_inputs(), 1)
    close(ours, tuple(torch.tensor(e) for e in expected), rtol=0, atol=1.0)
    exact = fa.shapley_values(f, mask=masks)(_multi_inputs(), 1)
    close(exact, tuple(torch.tensor(e) for e in expected), rtol=0, atol=1e-2)


# --------------------------------------------------------------------------- Captum 0.9.0, same models


@pytest.mark.parametrize(
    "window, stride",
    [((3, 3, 3), (3, 2, 2)), ((1, 3, 3), (1, 2, 2)), ((2, 4, 3), (1, 3, 2)), ((3, 8, 8), None), ((1, 1, 1), None)],
)
def test_occlusion_matches_captum(net, img, window, stride):
    t = torch.tensor([0, 3, 1])
    base = torch.randn(1, 3, 8, 8) * 0.1
    ours = fa.occlusion(fa.target(net, t), window=window, stride=stride, baseline=base)(img)
    theirs = Occlusion(net).attribute(
        img, sliding_window_shapes=window, strides=stride, baselines=base, target=t, perturbations_per_eval=256
    )
    close(ours, theirs)


def test_feature_ablation_superpixels_match_captum(net, img):
    t = [2, 0, 4]
    for mask in [blocks(2), blocks(2, batch=3, shift=1), blocks(4).expand(1, 3, 8, 8) + 4 * torch.arange(3).view(1, 3, 1, 1)]:
        ours = fa.feature_ablation(fa.target(net, t), mask=mask, baseline=0.5)(img)
        theirs = FeatureAblation(net).attribute(img, target=t, feature_mask=mask, baselines=0.5, perturbations_per_eval=64)
        close(ours, theirs)
    ours = fa.feature_ablation(fa.target(net, 1))(img)  # every element its own feature
    close(ours, FeatureAblation(net).attribute(img, target=1, perturbations_per_eval=200))


def test_tuple_inputs_with_extra_args_and_cross_tensor_ids_match_captum():
    m = two_input_net()
    torch.manual_seed(2)
    x1, x2 = torch.randn(4, 4), torch.randn(4, 3)
    scale = torch.rand(4, 1) + 0.5  # batch-aligned extra arg: tiled with the perturbations
    t = torch.tensor([0, 1, 2, 1])
    masks = (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[2, 3, 0]]))  # ids 0 and 2 span both tensors
    g = fa.target(m)
    ours = fa.feature_ablation(g, mask=masks, baseline=(0.1, -0.2))((x1, x2), scale, 0.25, target=t)
    theirs = FeatureAblation(m).attribute(
        (x1, x2), target=t, additional_forward_args=(scale, 0.25), feature_mask=masks, baselines=(0.1, -0.2)
    )
    assert isinstance(ours, tuple)
    close(ours, theirs)
    ours = fa.occlusion(g, ((2,), (2,)), stride=(1, (1,)))((x1, x2), scale, 0.25, target=t)
    theirs = Occlusion(m).attribute(
        (x1, x2), sliding_window_shapes=((2,), (2,)), strides=(1, (1,)), target=t, additional_forward_args=(scale, 0.25)
    )
    close(ours, theirs)
    ours = fa.shapley_values(g, mask=masks)((x1, x2), scale, 0.25, target=t)
    theirs = ShapleyValues(m).attribute(
        (x1, x2), target=t, additional_forward_args=(scale, 0.25), feature_mask=masks, perturbations_per_eval=24
    )
    close(ours, theirs)


def test_shapley_values_superpixels_match_captum(net, img):
    t = torch.tensor([1, 4, 0])
    mask = blocks(4)  # 4 features: 4! orderings for Captum, 2**4 coalitions for us
    ours = fa.shapley_values(fa.target(net, t), mask=mask, baseline=0.2)(img)
    theirs = ShapleyValues(net).attribute(img, target=t, feature_mask=mask, baselines=0.2, perturbations_per_eval=4)
    close(ours, theirs, atol=1e-5)


def test_feature_permutation_matches_captum_for_a_fixed_shuffle(net, img, monkeypatch):
    roll = lambda n, *a, **k: torch.arange(n).roll(1)  # noqa: E731
    monkeypatch.setattr(torch, "randperm", roll)
    monkeypatch.setattr(_perturb, "_permutations", lambda F, B, device, generator: torch.arange(B).roll(1).expand(F, B))
    t = [3, 1, 0]
    for mask in [blocks(4), None]:
        ours = fa.feature_permutation(fa.target(net, t), mask=mask)(img)
        theirs = FeaturePermutation(net).attribute(img, target=t, feature_mask=mask, perturbations_per_eval=256)
        close(ours, theirs)


def test_feature_permutation_draws_a_non_identity_shuffle_per_feature():
    p = _perturb._permutations(500, 2, torch.device("cpu"), None)
    assert (p == torch.tensor([1, 0])).all()  # with 2 examples the only non-identity shuffle
    p = _perturb._permutations(400, 5, torch.device("cpu"), None)
    assert not (p == torch.arange(5)).all(1).any()
    assert (p.sort(1).values == torch.arange(5)).all()
    assert len({tuple(r) for r in p.tolist()}) > 50  # independent draws, not one shared shuffle


# --------------------------------------------------------------------------- loop twins


def _origins(D, w, s):
    """Window starts along one dim, written independently of the library: keep sliding while
    the previous window has not reached the end."""
    o, out = 0, [0]
    while o + w < D:
        o += s
        out.append(o)
    return out


def test_occlusion_equals_loop_over_windows(net, img):
    window, stride = (2, 3, 4), (1, 2, 3)
    f = fa.target(net, torch.tensor([2, 0, 1]))
    b = torch.randn(3, 3, 8, 8) * 0.1  # per-example baseline
    base_scores = f(img)
    acc, cnt = torch.zeros_like(img), torch.zeros(3, 8, 8)
    for o in itertools.product(*[_origins(D, w, s) for D, w, s in zip(img.shape[1:], window, stride)]):
        sl = (slice(None),) + tuple(slice(a, a + w) for a, w in zip(o, window))
        occ = img.clone()
        occ[sl] = b[sl]
        drop = base_scores - f(occ)
        acc[sl] += drop.view(3, 1, 1, 1)
        cnt[sl[1:]] += 1
    ours = fa.occlusion(f, window, stride, baseline=b)(img)
    close(ours, acc / cnt)


def test_feature_ablation_equals_loop_over_features(net, img):
    mask = blocks(2, batch=3, shift=1) + 7  # ids need not start at 0 or be contiguous
    mask[1, 0, 0, 0] = 100
    f = fa.target(net, 3)
    ref = torch.zeros_like(img)
    for k in mask.unique():
        sel = (mask == k).expand_as(img)
        drop = f(img) - f(torch.where(sel, -0.3, img))
        ref += drop.view(3, 1, 1, 1) * sel
    close(fa.feature_ablation(f, mask=mask, baseline=-0.3)(img), ref)


def test_shapley_values_equal_average_over_all_orderings():
    m = two_input_net()
    x = (torch.randn(2, 4), torch.randn(2, 3))
    masks = (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[3, 3, 0]]))
    f = lambda a, b: m(a, b, 1.0)[:, 1]  # noqa: E731
    ref = [torch.zeros(2, 4), torch.zeros(2, 3)]
    perms = list(itertools.permutations(range(4)))
    for perm in perms:
        present = set()
        prev = f(*(torch.zeros_like(t) for t in x))
        for k in perm:
            present.add(k)
            cur = f(*(torch.where(sum(mk == p for p in present).bool(), t, 0.0) for mk, t in zip(masks, x)))
            for r, mk in zip(ref, masks):
                r += (cur - prev).view(2, 1) * (mk == k)
            prev = cur
    close(fa.shapley_values(f, mask=masks)(x), tuple(r / len(perms) for r in ref))


def test_shapley_sampling_equals_loop_over_given_orderings(net, img, monkeypatch):
    orders = torch.tensor([[2, 0, 3, 1], [1, 3, 0, 2], [0, 1, 2, 3]])
    monkeypatch.setattr(_perturb, "_random_orders", lambda S, F, device, generator: orders[:S])
    mask = blocks(4)
    f = fa.target(net, 2)
    ref = torch.zeros_like(img)
    for perm in orders.tolist():
        keep = torch.zeros(4, dtype=torch.bool)
        prev = f(torch.full_like(img, 0.1))
        for k in perm:
            keep[k] = True
            cur = f(torch.where(keep[mask], img, 0.1))
            ref += (cur - prev).view(3, 1, 1, 1) * (mask == k)
            prev = cur
    close(fa.shapley_sampling(f, mask=mask, baseline=0.1, samples=3)(img), ref / 3)


def _wls(Z, y, w):
    """Weighted least squares with intercept by lstsq on sqrt-weighted rows (the test's own solver)."""
    sw = w.double().sqrt()
    A = torch.cat([torch.ones(Z.shape[0], 1, dtype=torch.float64), Z.double()], 1) * sw.view(-1, 1)
    return torch.linalg.lstsq(A, (y.double() * sw).unsqueeze(1)).solution[1:, 0]


def test_kernel_shap_equals_loop_and_weighted_least_squares(net, img, monkeypatch):
    torch.manual_seed(0)
    Z = torch.rand(40, 4) < 0.5
    Z[0], Z[1] = True, False
    monkeypatch.setattr(_perturb, "_kernel_coalitions", lambda n, F, device, generator: Z[:n])
    mask = blocks(4)
    f = fa.target(net, 1)
    y = torch.stack([f(torch.where(z[mask], img, 0.0)) for z in Z])  # [n, B], one coalition at a time
    w = torch.ones(40)
    w[:2] = 1e6
    ours = fa.kernel_shap(f, mask=mask, samples=40)(img)
    for i in range(3):
        coef = _wls(Z, y[:, i], w)
        close(ours[i], coef[mask[0]].float().expand(3, 8, 8), atol=1e-4)


def _lasso_cd(Z, y, w, alpha, sweeps=300):
    """sklearn's Lasso objective Σ w r² / (2 Σ w) + α‖β‖₁ by plain coordinate descent (test's own solver)."""
    Z, y, w = Z.double(), y.double(), w.double() / w.sum()
    Zc, yc = Z - w @ Z, y - w @ y
    beta = torch.zeros(Z.shape[1], dtype=torch.float64)
    for _ in range(sweeps):
        for j in range(Z.shape[1]):
            r = yc - Zc @ beta + Zc[:, j] * beta[j]
            rho, z2 = (w * Zc[:, j] * r).sum(), (w * Zc[:, j] ** 2).sum()
            beta[j] = torch.sign(rho) * torch.clamp(rho.abs() - alpha, min=0) / z2
    return beta


def test_lime_equals_loop_with_cosine_kernel_and_lasso(net, img, monkeypatch):
    torch.manual_seed(3)
    Z = torch.rand(30, 4) < 0.5
    monkeypatch.setattr(_perturb, "_bernoulli_coalitions", lambda n, F, device, generator: Z[:n])
    mask = blocks(4)
    f = fa.target(net, 0)
    for penalty, alpha in [(None, 0.0), ("l1", 0.05), ("l2", 0.5)]:
        ours = fa.lime(f, mask=mask, samples=30, kernel_width=0.8, alpha=alpha, penalty=penalty)(img)
        for i in range(3):
            xs = [torch.where(z[mask[0]], img[i], 0.0) for z in Z]
            y = torch.stack([f(p.unsqueeze(0))[0] for p in xs])
            d = torch.stack([1 - torch.nn.functional.cosine_similarity(img[i].flatten(), p.flatten(), dim=0) for p in xs])
            w = torch.exp(-(d**2) / (2 * 0.8**2))
            if penalty is None:
                coef = _wls(Z, y, w)
            elif penalty == "l1":
                coef = _lasso_cd(Z, y, w, alpha)
            else:  # ridge: Σ w r² + α‖β‖², intercept unpenalized
                wn = w.double()
                Zc = Z.double() - (wn @ Z.double()) / wn.sum()
                yc = y.double() - (wn @ y.double()) / wn.sum()
                coef = torch.linalg.solve(Zc.t() @ (wn.view(-1, 1) * Zc) + alpha * torch.eye(4, dtype=torch.float64), Zc.t() @ (wn * yc))
            close(ours[i], coef[mask[0]].float().expand(3, 8, 8), atol=1e-4)


def test_lime_euclidean_kernel_equals_loop(net, img, monkeypatch):
    torch.manual_seed(4)
    Z = torch.rand(20, 4) < 0.5
    monkeypatch.setattr(_perturb, "_bernoulli_coalitions", lambda n, F, device, generator: Z[:n])
    mask, f = blocks(4), fa.target(net, 2)
    ours = fa.lime(f, mask=mask, baseline=0.3, samples=20, kernel_width=3.0, penalty=None, distance="euclidean")(img)
    for i in range(3):
        xs = [torch.where(z[mask[0]], img[i], 0.3) for z in Z]
        y = torch.stack([f(p.unsqueeze(0))[0] for p in xs])
        w = torch.stack([torch.exp(-((img[i] - p).norm() ** 2) / (2 * 3.0**2)) for p in xs])
        close(ours[i], _wls(Z, y, w)[mask[0]].float().expand(3, 8, 8), atol=1e-4)


def test_surrogates_with_more_features_than_samples():
    """The sample-space forms (F > n): min-norm least squares, dual ridge, lasso on X directly."""
    from funcattr import _surrogate

    torch.manual_seed(9)
    n, F = 12, 20
    Z = torch.rand(n, F) < 0.5
    y = torch.randn(n, 1, 1)
    w = torch.rand(n) + 0.5
    w = w.double()
    sw = w.sqrt()
    Zc = Z.double() - (w @ Z.double()) / w.sum()
    yc = y[:, 0, 0].double() - (w @ y[:, 0, 0].double()) / w.sum()
    ls = torch.linalg.lstsq(Zc * sw.view(-1, 1), (yc * sw).unsqueeze(1), driver="gelsd").solution[:, 0]
    close(_surrogate.fit(Z, y, w)[0, 0], ls.float(), atol=1e-5)
    ridge = torch.linalg.solve(Zc.t() @ (w.view(-1, 1) * Zc) + 0.3 * torch.eye(F, dtype=torch.float64), Zc.t() @ (w * yc))
    close(_surrogate.fit(Z, y, w, "l2", 0.3)[0, 0], ridge.float(), atol=1e-5)
    close(_surrogate.fit(Z, y, w, "l1", 0.02)[0, 0], _lasso_cd(Z, y[:, 0, 0], w, 0.02).float(), atol=1e-4)


# --------------------------------------------------------------------------- axioms


def test_linear_model_ablation_and_occlusion_give_w_times_x_minus_baseline():
    torch.manual_seed(4)
    w = torch.randn(1, 2, 6)
    m = Linear(w, 0.7)
    x, b = torch.randn(3, 2, 6), torch.randn(1, 2, 6)
    f = fa.target(m, 0)
    close(fa.feature_ablation(f, baseline=b)(x), w * (x - b))
    close(fa.occlusion(f, (1, 1), baseline=b)(x), w * (x - b))
    mask = torch.tensor([[[0, 0, 1, 1, 2, 2]]])  # features span both rows (channels)
    per = (w * (x - b)).view(3, 2, 3, 2).sum((1, 3))  # [B, 3] per feature
    close(fa.feature_ablation(f, mask=mask, baseline=b)(x), per[:, mask[0, 0]].unsqueeze(1).expand(3, 2, 6))
    for method in [fa.shapley_values(f, mask=mask, baseline=b), fa.kernel_shap(f, mask=mask, baseline=b, samples=12)]:
        close(method(x), per[:, mask[0, 0]].unsqueeze(1).expand(3, 2, 6), atol=1e-4)


def test_very_unequal_features_take_the_mask_path(monkeypatch):
    """One background feature and many single pixels: the per-feature element table would be
    far larger than the input, so the chunk is built by a per-element mask; same numbers."""
    torch.manual_seed(10)
    w = torch.randn(1, 1, 64, 64)
    m = Linear(w)
    x, b = torch.randn(3, 1, 64, 64), -0.5
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.long)
    mask[..., 0, :] = torch.arange(1, 65)  # 64 singletons + a 4032-pixel background
    from funcattr import _features

    assert _features.features(mask, (x,), 3).table(0, x.shape) is None
    contrib = w * (x - b)
    ref = torch.where(mask == 0, contrib.masked_fill(mask != 0, 0).sum((2, 3), keepdim=True), contrib)
    close(fa.feature_ablation(fa.target(m, 0), mask=mask, baseline=b)(x), ref, atol=1e-4)
    monkeypatch.setattr(torch, "randperm", lambda n, *a, **k: torch.arange(n).roll(1))
    monkeypatch.setattr(_perturb, "_permutations", lambda F, B, device, generator: torch.arange(B).roll(1).expand(F, B))
    theirs = FeaturePermutation(m).attribute(x, target=0, feature_mask=mask, perturbations_per_eval=100)
    close(fa.feature_permutation(fa.target(m, 0), mask=mask)(x), theirs, atol=1e-4)


def test_lime_on_a_linear_model_recovers_w_times_x():
    torch.manual_seed(5)
    w = torch.randn(1, 5)
    m = Linear(w)
    x = torch.randn(2, 5)
    f = fa.target(m, 0)
    close(fa.lime(f, samples=60, penalty=None)(x), w * x, atol=1e-4)
    lasso = fa.lime(f, samples=200, alpha=1e-3)(x)  # Captum's default solver, shrinkage ≤ alpha-sized
    close(lasso, w * x, rtol=0, atol=0.05)


def test_exact_shapley_of_a_product_splits_it_in_half():
    x = torch.tensor([[3.0, -2.0], [0.5, 4.0]])
    a = fa.shapley_values(lambda x: x[:, 0] * x[:, 1])(x)
    close(a, (x[:, :1] * x[:, 1:] / 2).expand(2, 2))


def test_dummy_feature_gets_zero_and_efficiency_holds(net):
    torch.manual_seed(6)
    x = torch.randn(4, 5)
    f = lambda x: torch.tanh(x[:, 0] * x[:, 1]) + x[:, 2] ** 2 - x[:, 3]  # noqa: E731  (x[:, 4] is a dummy)
    full = f(x) - f(torch.zeros_like(x))
    for method in [fa.shapley_values(f), fa.shapley_sampling(f, samples=7), fa.feature_ablation(f), fa.occlusion(f, (1,))]:
        a = method(x)
        assert a[:, 4].abs().max() < 1e-12, method.__name__  # exactly 0 up to float64 rounding of sums
    for method in [fa.shapley_values(f), fa.shapley_sampling(f, samples=3)]:
        close(method(x).sum(1), full, atol=1e-5)  # efficiency: each ordering telescopes
    close(fa.kernel_shap(f, samples=40)(x).sum(1), full, atol=1e-3)  # endpoints weighted 1e6


def test_kernel_shap_and_sampling_converge_to_exact_shapley(net, img):
    f = fa.target(net, torch.tensor([0, 2, 4]))
    mask = blocks(4)
    exact = fa.shapley_values(f, mask=mask)(img)
    scale = exact.abs().max()
    torch.manual_seed(7)
    ks = fa.kernel_shap(f, mask=mask, samples=3000)(img)
    ss = fa.shapley_sampling(f, mask=mask, samples=600)(img)
    assert (ks - exact).abs().max() < 0.05 * scale, ((ks - exact).abs().max(), scale)
    assert (ss - exact).abs().max() < 0.05 * scale, ((ss - exact).abs().max(), scale)


def test_occlusion_with_tiling_windows_is_feature_ablation_over_the_tiles(net, img):
    """Composition: non-overlapping windows that tile the input are a superpixel mask."""
    f = fa.target(net, 1)
    mask = blocks(4).expand(1, 3, 8, 8)
    close(fa.occlusion(f, (3, 4, 4), stride=(3, 4, 4))(img), fa.feature_ablation(f, mask=mask)(img))
    close(fa.occlusion(f, (1, 1, 1))(img), fa.feature_ablation(f)(img))


# --------------------------------------------------------------------------- K scores, options, memory


@pytest.mark.parametrize(
    "make",
    [
        lambda f: fa.occlusion(f, (3, 3, 3), stride=(3, 2, 2)),
        lambda f: fa.feature_ablation(f, mask=blocks(2)),
        lambda f: fa.feature_permutation(f, mask=blocks(4)),
        lambda f: fa.shapley_values(f, mask=blocks(4)),
        lambda f: fa.shapley_sampling(f, mask=blocks(4), samples=3),
        lambda f: fa.kernel_shap(f, mask=blocks(4), samples=20),
        lambda f: fa.lime(f, mask=blocks(4), samples=20),
    ],
)
def test_k_scores_equal_stacked_single_target_calls(net, img, make):
    ks = [0, 2]
    torch.manual_seed(8)
    many = make(fa.outputs(net, ks))(img)
    assert many.shape == (3, 2, 3, 8, 8)
    for j, k in enumerate(ks):
        torch.manual_seed(8)
        close(many[:, j], make(fa.target(net, k))(img), atol=1e-4)


def test_batch_size_gives_identical_results_and_bounds_rows(net, img):
    rows = []

    def counted(x):
        rows.append(x.shape[0])
        return net(x)

    f = fa.target(counted, 1)
    for make in [lambda **o: fa.occlusion(f, (1, 4, 4), (1, 2, 2), **o), lambda **o: fa.feature_ablation(f, mask=blocks(2), **o)]:
        full = make()(img)
        rows.clear()
        chunked = make(batch_size=10)(img)
        close(chunked, full, atol=1e-6)
        assert max(rows) <= 10 and len(rows) > 5, rows


def test_peak_rows_do_not_grow_with_the_number_of_windows():
    net = res_conv_net()
    rows = []

    def counted(x):
        rows.append(x.shape[0])
        return net(x)

    img = torch.randn(2, 3, 16, 16)
    peaks = {}
    with fa.options(memory_budget=4 * 2**20):  # a few MiB: many chunks
        for stride in [(1, 2, 2), (1, 1, 1)]:  # 192 vs 675 windows
            rows.clear()
            fa.occlusion(fa.target(counted, 0), (1, 2, 2), stride=stride)(img)
            peaks[stride] = (max(rows), sum(rows))
    (small_peak, small_total), (big_peak, big_total) = peaks[(1, 2, 2)], peaks[(1, 1, 1)]
    # every window once, plus a one-item probe of 2 rows (measured, discarded) on a first call
    assert big_total == 2 * (1 + 675) + 2 and small_total == 2 * (1 + 192) + 2
    # balanced chunks of at most the same number of items: the peak differs by at most one item
    assert big_peak <= small_peak + 2 and big_peak < big_total / 4, peaks


def test_no_gradients_are_recorded_and_results_keep_dtype(net, img):
    x = img.double().requires_grad_()
    a = fa.occlusion(fa.target(net.double(), 0), (3, 2, 2))(x)
    assert a.dtype == torch.float64 and not a.requires_grad


def test_callable_mask_is_built_from_the_inputs(net, img):
    f = fa.target(net, 0)
    a = fa.feature_ablation(f, mask=lambda x: blocks(2).expand(x.shape[0], 1, 8, 8))(img)
    close(a, fa.feature_ablation(f, mask=blocks(2))(img))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make, x, err, match",
    [
        (lambda f: fa.occlusion(f, (3, 9, 9)), torch.randn(1, 3, 8, 8), ValueError, "window .* larger than the input"),
        (lambda f: fa.occlusion(f, (3, 2)), torch.randn(1, 3, 8, 8), ValueError, "window .* 2 entries .* 3 non-batch"),
        (lambda f: fa.occlusion(f, (3, 2, 2), stride=(1, 2)), torch.randn(1, 3, 8, 8), ValueError, "stride .* 2 entries"),
        (lambda f: fa.occlusion(f, (3, 2, 2), stride=0), torch.randn(1, 3, 8, 8), ValueError, "stride .* positive"),
        (lambda f: fa.occlusion(f, (3, 2, 2), stride=(1, -1, 1)), torch.randn(1, 3, 8, 8), ValueError, "stride .* positive"),
        (lambda f: fa.occlusion(f, (3, 2, 2), stride=(1, 3, 2)), torch.randn(1, 3, 8, 8), ValueError, "stride .* larger than window"),
        (lambda f: fa.occlusion(f, 2), torch.randn(1, 3, 8, 8), TypeError, "window must be a tuple"),
        (lambda f: fa.feature_ablation(f, mask=torch.zeros(1, 1, 7, 8, dtype=torch.long)), torch.randn(1, 3, 8, 8), ValueError, "mask .* does not broadcast"),
        (lambda f: fa.feature_ablation(f, mask=torch.zeros(2, 1, 8, 8, dtype=torch.long)), torch.randn(3, 3, 8, 8), ValueError, "mask has 2 entries but the batch has 3 examples"),
        (lambda f: fa.feature_ablation(f, mask=torch.zeros(1, 1, 8, 8)), torch.randn(1, 3, 8, 8), TypeError, "mask must hold integer"),
        (lambda f: fa.shapley_values(f, mask=torch.zeros(1, 1, 8, 8, dtype=torch.long) + 1.5), torch.randn(1, 3, 8, 8), TypeError, "integer"),
        (lambda f: fa.feature_permutation(f), torch.randn(1, 3, 8, 8), ValueError, "at least 2 examples"),
        (lambda f: fa.shapley_values(f, mask=torch.arange(64).view(8, 8) % 17), torch.randn(1, 3, 8, 8), ValueError, r"17 features .* 2\*\*17 = 131,072 evaluations"),
        (lambda f: fa.shapley_sampling(f, samples=0), torch.randn(1, 3, 8, 8), ValueError, "samples"),
        (lambda f: fa.kernel_shap(f, samples=1), torch.randn(1, 3, 8, 8), ValueError, "samples must be an int >= 2"),
        (lambda f: fa.lime(f, kernel_width=0), torch.randn(1, 3, 8, 8), ValueError, "kernel_width"),
        (lambda f: fa.lime(f, penalty="l3"), torch.randn(1, 3, 8, 8), ValueError, "penalty"),
        (lambda f: fa.occlusion(f, (3, 2, 2), baseline=torch.zeros(2, 3, 8, 8)), torch.randn(3, 3, 8, 8), ValueError, "baseline"),
    ],
)
def test_errors_name_the_argument(net, make, x, err, match):
    with pytest.raises(err, match=match):
        make(fa.target(net, 0))(x)


def test_too_many_features_for_exact_shapley_says_how_many_evaluations(net):
    with pytest.raises(ValueError) as e:
        fa.shapley_values(fa.target(net, 0))(torch.randn(1, 3, 8, 8))  # 192 features
    msg = str(e.value)
    assert "192 features" in msg and "2**192 = about 1e57" in msg and "evaluations" in msg and "fa.kernel_shap" in msg
    fa.shapley_values(fa.target(net, 0), mask=torch.arange(64).view(8, 8) % 3)(torch.randn(1, 3, 8, 8))  # 3 is fine
