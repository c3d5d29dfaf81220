"""Metrics: infidelity and max-sensitivity against Captum 0.9.0 (golden numbers and
differential tests with deterministic perturbations), deletion/insertion against a plain loop
over steps and exact answers on a linear model, localization on hand-made maps, and the
model-randomization sanity check."""

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import infidelity_perturb_func_decorator
from captum.metrics import sensitivity_max as captum_sensitivity_max
from captum.testing.helpers.basic_models import BasicModel_MultiLayer
from helpers import close
from models import Linear, two_input_net
from torch import nn

from funcattr.metrics import _randomization

import funcattr as fa
from funcattr import metrics


def test_public_surface():
    assert fa.metrics is metrics
    assert "metrics" in fa.__all__
    for name in metrics.__all__:
        assert callable(getattr(metrics, name))


# --------------------------------------------------------------------------- infidelity


def _multilayer_case():
    model = BasicModel_MultiLayer()
    x = torch.arange(1.0, 13.0).view(4, 3)
    base = torch.ones(4, 3)
    add = torch.arange(1, 13).view(4, 3).float()
    targets = [(0, 1, 1), (0, 1, 1), (1, 1, 1), (0, 1, 1)]
    return model, x, base, add, targets


def test_infidelity_golden_equals_delta_squared():
    """Captum's test_classification_infidelity_tpl_target_w_baseline: [0.10686, 0, 0, 0] == delta²."""
    model, x, base, add, targets = _multilayer_case()
    f = fa.target(model, targets)
    attr, delta = fa.integrated_gradients(f, baseline=base, return_delta=True)(x, add, True)

    def to_baseline(inputs, baselines):
        return torch.ones(baselines.shape), baselines

    ours = metrics.infidelity(f, to_baseline, x, attr, baseline=base, samples=3, args=(add, True))
    close(ours, torch.tensor([0.10686, 0.0, 0.0, 0.0]), rtol=0, atol=1e-4)
    close(ours, delta * delta)
    # the with_perturbations form (Captum's decorator) gives the same number
    wrapped = metrics.with_perturbations(lambda inputs, baselines: baselines)
    close(metrics.infidelity(f, wrapped, x, attr, baseline=base, samples=3, args=(add, True)), ours)
    # and so does Captum itself on the same attributions
    theirs = captum_infidelity(
        model, to_baseline, x, attr, baselines=base, additional_forward_args=(add, True), target=targets, n_perturb_samples=3
    )
    close(ours, theirs)


def _tables(S, xs, seed=0):
    """Fixed perturbations per (sample, example): ours see them work-major, Captum's interleaved."""
    g = torch.Generator().manual_seed(seed)
    noise = tuple(0.5 * torch.randn(S, *x.shape, generator=g) for x in xs)

    def ours(inputs):
        one = not isinstance(inputs, tuple)
        ins = (inputs,) if one else inputs
        pert = tuple(n.reshape(-1, *n.shape[2:]) for n in noise)
        assert all(i.shape == p.shape for i, p in zip(ins, pert))
        xp = tuple(i - p for i, p in zip(ins, pert))
        return (pert[0], xp[0]) if one else (pert, xp)

    def captums(inputs):
        one = not isinstance(inputs, tuple)
        ins = (inputs,) if one else inputs
        pert = tuple(n.transpose(0, 1).reshape(-1, *n.shape[2:]) for n in noise)
        xp = tuple(i - p for i, p in zip(ins, pert))
        return (pert[0], xp[0]) if one else (pert, xp)

    return ours, captums


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_captum_per_example_targets(net, img, normalize):
    t = torch.tensor([0, 3, 1])
    attrs = fa.integrated_gradients(fa.target(net, t), steps=8)(img)
    S = 4
    ours_p, captum_p = _tables(S, (img,))
    ours = metrics.infidelity(fa.target(net, t), ours_p, img, attrs, samples=S, normalize=normalize, batch_size=S * 3)
    theirs = captum_infidelity(net, captum_p, img, attrs, target=t, n_perturb_samples=S, normalize=normalize)
    assert bool((theirs > 1e-5).all())
    close(ours, theirs, atol=1e-8)
    # open target at call time, passed as a batch-aligned keyword (tiled with the samples)
    open_t = metrics.infidelity(fa.target(net), ours_p, img, attrs, samples=S, normalize=normalize, kwargs={"target": t}, batch_size=S * 3)
    close(open_t, theirs, atol=1e-8)


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_captum_tuple_inputs_and_args(normalize):
    model = two_input_net()
    torch.manual_seed(2)
    x1, x2 = torch.randn(5, 4), torch.randn(5, 3)
    scale = torch.rand(5, 6) + 0.5
    t = [0, 2, 1, 1, 0]
    attrs = fa.input_x_gradient(fa.target(model, t))((x1, x2), scale)
    S = 3
    ours_p, captum_p = _tables(S, (x1, x2), seed=3)
    ours = metrics.infidelity(fa.target(model, t), ours_p, (x1, x2), attrs, samples=S, normalize=normalize, args=(scale,), batch_size=S * 5)
    theirs = captum_infidelity(model, captum_p, (x1, x2), attrs, additional_forward_args=(scale,), target=t, n_perturb_samples=S, normalize=normalize)
    assert bool((theirs > 1e-5).all())
    close(ours, theirs, atol=1e-8)


def test_infidelity_normalize_is_scale_invariant_and_chunking_invariant(net, img):
    f = fa.target(net, 2)
    attrs = fa.saliency(f, abs=False)(img)
    perturb = metrics.with_perturbations(lambda x: x * 0.9 + 0.01 * torch.sin(7 * x), multiply_by_inputs=False)
    a = metrics.infidelity(f, perturb, img, attrs, samples=5, normalize=True)
    b = metrics.infidelity(f, perturb, img, attrs * 100, samples=5, normalize=True)
    close(a, b)
    # one item per model call gives the same sums as all items in one call
    c = metrics.infidelity(f, perturb, img, attrs * 100, samples=5, normalize=True, batch_size=3)
    close(b, c)


def test_with_perturbations_matches_captum_decorator(img):
    base = torch.full((1, 3, 8, 8), 0.5)
    fn = lambda x, b: 0.5 * x + 0.5 * b  # noqa: E731
    for mult in (True, False):
        p1, x1 = metrics.with_perturbations(fn, multiply_by_inputs=mult)(img, base)
        p2, x2 = infidelity_perturb_func_decorator(mult)(fn)(img, base)
        close(p1, p2[0])
        close(x1, x2[0])
    p1, _ = metrics.with_perturbations(lambda x: x * 0.5)(img)
    close(p1, torch.full_like(img, 0.5))  # (x - x/2) / x


def test_infidelity_k_scores_equals_one_target_at_a_time(net, img):
    attrs = fa.integrated_gradients(fa.outputs(net, [0, 3]), steps=6)(img)  # [B, 2, 3, 8, 8]
    perturb = metrics.with_perturbations(lambda x: x * 0.8)
    both = metrics.infidelity(fa.outputs(net, [0, 3]), perturb, img, attrs, samples=2)
    assert both.shape == (3, 2)
    for k, t in enumerate([0, 3]):
        close(both[:, k], metrics.infidelity(fa.target(net, t), perturb, img, attrs[:, k], samples=2))


def test_infidelity_errors(net, img):
    f = fa.target(net, 0)
    a = torch.zeros_like(img)
    good = metrics.with_perturbations(lambda x: x * 0.5)
    with pytest.raises(ValueError, match="samples"):
        metrics.infidelity(f, good, img, a, samples=0)
    with pytest.raises(ValueError, match="attributions"):
        metrics.infidelity(f, good, img, a[:, :2])
    with pytest.raises(ValueError, match=r"perturb must return \(perturbations, perturbed_inputs\)"):
        metrics.infidelity(f, lambda x: x * 0.5, img, a)  # only perturbed inputs
    with pytest.raises(ValueError, match="expected"):
        metrics.infidelity(f, lambda x: (x[:1], x[:1]), img, a)  # wrong rows
    with pytest.raises(ValueError, match="one map per score"):
        metrics.infidelity(fa.outputs(net, [0, 1]), good, img, a)
    with pytest.raises(ValueError, match="baseline"):
        metrics.infidelity(f, good, img, a, baseline=torch.zeros(2, 3))


# --------------------------------------------------------------------------- sensitivity


def _sens_tables(S, x, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = 0.02 * torch.rand(S, *x.shape, generator=g)
    ours = lambda inputs: inputs + noise.reshape(-1, *x.shape[1:])  # noqa: E731
    theirs = lambda inputs: inputs + noise.transpose(0, 1).reshape(-1, *x.shape[1:])  # noqa: E731
    return ours, theirs


@pytest.mark.parametrize("norm", ["fro", 1, float("inf")])
def test_sensitivity_matches_captum(net, img, norm):
    t = torch.tensor([1, 0, 4])
    S = 4
    ours_p, captum_p = _sens_tables(S, img)
    ours = metrics.sensitivity_max(fa.saliency(fa.target(net)), img, samples=S, norm=norm, perturb=ours_p, target=t)
    theirs = captum_sensitivity_max(Saliency(net).attribute, img, perturb_func=captum_p, n_perturb_samples=S, norm_ord=norm, target=t)
    close(ours, theirs)


def test_sensitivity_matches_captum_ig_and_radius_argument(net, img):
    S = 3
    g = torch.Generator().manual_seed(5)
    noise = torch.rand(S, *img.shape, generator=g) * 2 - 1

    def ours_p(inputs, radius):
        return inputs + radius * noise.reshape(-1, *img.shape[1:])

    def captum_p(inputs, radius):
        return inputs + radius * noise.transpose(0, 1).reshape(-1, *img.shape[1:])

    ig = fa.integrated_gradients(fa.target(net, 2), steps=5)
    ours = metrics.sensitivity_max(ig, img, radius=0.05, samples=S, perturb=ours_p)
    theirs = captum_sensitivity_max(
        IntegratedGradients(net).attribute, img, perturb_func=captum_p, perturb_radius=0.05, n_perturb_samples=S, target=2, n_steps=5
    )
    close(ours, theirs, rtol=1e-3, atol=1e-5)


def test_sensitivity_one_folded_call_and_per_example_kwargs(net, img):
    calls = []
    sal = fa.saliency(fa.target(net))

    def attr_fn(x, target):
        calls.append((x.shape[0], target.shape[0]))
        return sal(x, target=target)

    t = torch.tensor([1, 0, 4])
    torch.manual_seed(0)
    whole = metrics.sensitivity_max(attr_fn, img, samples=7, target=t)
    # x once, then all samples in ONE folded call; the target keeps one entry per example
    # (the attribution call folds it with the copies)
    assert calls == [(3, 3), (21, 3)]
    calls.clear()
    torch.manual_seed(0)
    chunked = metrics.sensitivity_max(attr_fn, img, samples=7, target=t, batch_size=9)  # at most 3 samples per call
    assert calls == [(3, 3), (9, 3), (6, 3), (6, 3)]  # balanced chunks of whole samples
    close(chunked, whole)


def test_sensitivity_of_saliency_on_a_linear_model_is_zero():
    torch.manual_seed(0)
    lin = Linear(torch.randn(3, 4, 4))
    x = torch.randn(5, 3, 4, 4)
    s = metrics.sensitivity_max(fa.saliency(fa.target(lin, None), abs=False), x, radius=0.5, samples=6)
    assert s.shape == (5,)
    assert torch.equal(s, torch.zeros(5))


def test_sensitivity_tuple_inputs_and_errors():
    model = two_input_net()
    torch.manual_seed(2)
    x = (torch.randn(4, 4), torch.randn(4, 3))
    scale = torch.rand(4, 6) + 0.5
    ixg = fa.input_x_gradient(fa.target(model, 1))
    s = metrics.sensitivity_max(ixg, x, samples=3, args=(scale,))
    assert s.shape == (4,) and bool((s > 0).all())
    with pytest.raises(ValueError, match="samples"):
        metrics.sensitivity_max(ixg, x, samples=0, args=(scale,))
    with pytest.raises(ValueError, match="norm"):
        metrics.sensitivity_max(ixg, x, norm="nuc", args=(scale,))
    with pytest.raises(ValueError, match="perturb must return the perturbed inputs"):
        metrics.sensitivity_max(ixg, x, perturb=lambda inp: inp[0], args=(scale,))


# --------------------------------------------------------------------------- deletion / insertion


def _loop_curve(f, xs, attrs, steps, baselines, kind, mask=None, args=()):
    """Plain reference: rank each example with Python sorting, one model call per step."""
    B = xs[0].shape[0]
    flat_a = torch.cat([a.reshape(B, -1) for a in attrs], 1).double()
    if mask is None:
        ids = torch.arange(flat_a.shape[1]).expand(B, -1)
    else:
        ids = torch.cat([m.expand(x.shape).reshape(B, -1) for m, x in zip(mask, xs)], 1)
    flat_x = [x.reshape(B, -1) for x in xs]
    flat_b = [b.expand(x.shape).reshape(B, -1) for b, x in zip(baselines, xs)]
    sizes = [fx.shape[1] for fx in flat_x]
    curve = torch.zeros(B, steps + 1)
    for j in range(steps + 1):
        rows = [[] for _ in xs]
        for b in range(B):
            feats = sorted(set(ids[b].tolist()))
            score = {g: float(flat_a[b][ids[b] == g].sum()) for g in feats}
            order = sorted(feats, key=lambda g: (-score[g], g))
            n = j * len(feats) // steps
            chosen = torch.isin(ids[b], torch.tensor(order[:n], dtype=ids.dtype))
            for i, part in enumerate(chosen.split(sizes)):
                src, other = (flat_b[i][b], flat_x[i][b]) if kind == "deletion" else (flat_x[i][b], flat_b[i][b])
                rows[i].append(torch.where(part, src, other))
        pts = tuple(torch.stack(r).view(x.shape) for r, x in zip(rows, xs))
        with torch.no_grad():
            curve[:, j] = f(*pts, *args)
    return curve


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
@pytest.mark.parametrize("steps", [1, 5, 7])
def test_curve_loop_twin_elements(net, img, kind, steps):
    t = [2, 0, 4]
    f = fa.target(net, t)
    attrs = fa.saliency(f, abs=False)(img)
    base = torch.randn(3, 3, 8, 8) * 0.1  # per-example baseline
    auc, curve = getattr(metrics, kind)(f, img, attrs, steps=steps, baseline=base, return_curve=True)
    ref = _loop_curve(f, (img,), (attrs,), steps, (base,), kind)
    close(curve, ref)
    frac = torch.arange(steps + 1) * 192 // steps / 192
    close(auc, torch.trapezoid(ref, frac.expand(3, -1), dim=1))


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_curve_loop_twin_mask_segments(net, img, kind):
    f = fa.target(net, 1)
    attrs = fa.saliency(f, abs=False)(img)
    # 2x2 superpixels shared over channels, per-example ids differ (example 2 has fewer segments)
    cells = (torch.arange(8).view(8, 1) // 2 * 4 + torch.arange(8).view(1, 8) // 2).expand(3, 1, 8, 8).clone()
    cells[2] = cells[2] // 3 * 3 + 100  # ids with gaps, fewer segments
    auc, curve = getattr(metrics, kind)(f, img, attrs, steps=6, baseline=0.0, mask=cells, return_curve=True)
    ref = _loop_curve(f, (img,), (attrs,), 6, (torch.zeros(1, 1, 1, 1),), kind, mask=(cells,))
    close(curve, ref)
    assert auc.shape == (3,)


def test_curve_loop_twin_tuple_inputs_and_args():
    model = two_input_net()
    torch.manual_seed(2)
    x = (torch.randn(4, 4), torch.randn(4, 3))
    scale = torch.rand(4, 6) + 0.5
    f = fa.target(model, [0, 2, 1, 1])
    attrs = fa.input_x_gradient(f)(x, scale)
    mask = (torch.tensor([[0, 0, 1, 1]]), torch.tensor([[1, 2, 2]]))  # id 1 spans both inputs
    for kind in ("deletion", "insertion"):
        _, curve = getattr(metrics, kind)(f, x, attrs, steps=3, baseline=(0.0, 1.0), mask=mask, return_curve=True, args=(scale,))
        ref = _loop_curve(f, x, attrs, 3, (torch.zeros(1, 1), torch.ones(1, 1)), kind, mask=mask, args=(scale,))
        close(curve, ref)
        _, curve = getattr(metrics, kind)(f, x, attrs, steps=4, return_curve=True, args=(scale,), batch_size=4)
        ref = _loop_curve(f, x, attrs, 4, (torch.zeros(1, 1), torch.zeros(1, 1)), kind, args=(scale,))
        close(curve, ref)


def test_curve_exact_numbers_and_deterministic_ties():
    lin = Linear(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    f = fa.target(lin, None)
    x = torch.ones(1, 4)
    # equal attributions: features leave in index order -> 10, 9, 7, 4, 0
    auc, curve = metrics.deletion(f, x, torch.zeros(1, 4), steps=4, return_curve=True)
    close(curve, torch.tensor([[10.0, 9.0, 7.0, 4.0, 0.0]]))
    close(auc, torch.tensor([0.25 * (19 + 16 + 11 + 4) / 2]))
    auc, curve = metrics.insertion(f, x, torch.zeros(1, 4), steps=4, return_curve=True)
    close(curve, torch.tensor([[0.0, 1.0, 3.0, 6.0, 10.0]]))
    # true attributions: most important first
    auc, curve = metrics.deletion(f, x, lin.w.view(1, 4), steps=2, return_curve=True)
    close(curve, torch.tensor([[10.0, 3.0, 0.0]]))
    close(auc, torch.tensor([0.5 * 13 / 2 + 0.5 * 3 / 2]))


def test_true_attributions_beat_random_ones_on_a_linear_model():
    torch.manual_seed(0)
    lin = Linear(torch.randn(3, 6, 6))
    f = fa.target(lin, None)
    x = torch.randn(8, 3, 6, 6)
    true = fa.input_x_gradient(f)(x)  # w * x, the exact contributions against baseline 0
    dels = metrics.deletion(f, x, true, steps=12)
    ins = metrics.insertion(f, x, true, steps=12)
    for seed in range(3):
        rnd = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        assert bool((dels < metrics.deletion(f, x, rnd, steps=12)).all())
        assert bool((ins > metrics.insertion(f, x, rnd, steps=12)).all())


def test_curve_k_scores(net, img):
    g = fa.outputs(net, [0, 3])
    attrs = fa.saliency(fa.target(net, 0), abs=False)(img)
    auc, curve = metrics.deletion(g, img, attrs, steps=4, return_curve=True)
    assert auc.shape == (3, 2) and curve.shape == (3, 2, 5)
    for k, t in enumerate([0, 3]):
        a1, c1 = metrics.deletion(fa.target(net, t), img, attrs, steps=4, return_curve=True)
        close(curve[:, k], c1)
        close(auc[:, k], a1)
    # one map per score: each score follows its own ranking
    per = fa.saliency(g, abs=False)(img)  # [B, 2, 3, 8, 8]
    _, curve = metrics.insertion(g, img, per, steps=3, return_curve=True)
    for k, t in enumerate([0, 3]):
        close(curve[:, k], metrics.insertion(fa.target(net, t), img, per[:, k], steps=3, return_curve=True)[1])


def test_curve_errors(net, img):
    f = fa.target(net, 0)
    a = torch.zeros_like(img)
    with pytest.raises(ValueError, match="steps"):
        metrics.deletion(f, img, a, steps=0)
    with pytest.raises(ValueError, match="attributions"):
        metrics.insertion(f, img, a[..., :4])
    with pytest.raises(ValueError, match="mask"):
        metrics.deletion(f, img, a, mask=torch.zeros(3, 8, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="mask"):
        metrics.deletion(f, img, a, mask=torch.zeros(3, 8, 8))  # float ids
    with pytest.raises(ValueError, match="baseline"):
        metrics.deletion(f, img, a, baseline=torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        metrics.deletion(f, img, a.fill_(float("nan")))


# --------------------------------------------------------------------------- localization


def test_pointing_game_hand_made_maps():
    a = torch.zeros(4, 5, 5)
    a[0, 1, 1] = 1.0  # inside
    a[1, 4, 4] = 1.0  # outside, sqrt(5) ~ 2.24 px from the mask (nearest mask pixel (2, 3))
    a[2, 2, 4] = 1.0  # outside, 1 px from the mask
    # example 3: constant map -> first pixel (0, 0), outside, sqrt(2) px from the mask
    masks = torch.zeros(4, 5, 5, dtype=torch.bool)
    masks[:, 1:3, 1:4] = True
    assert metrics.pointing_game(a, masks).tolist() == [True, False, False, False]
    assert metrics.pointing_game(a, masks, tolerance=1).tolist() == [True, False, True, False]
    assert metrics.pointing_game(a, masks, tolerance=1.5).tolist() == [True, False, True, True]
    assert metrics.pointing_game(a, masks, tolerance=2.2).tolist() == [True, False, True, True]
    assert metrics.pointing_game(a, masks, tolerance=2.3).tolist() == [True, True, True, True]
    # channel dims: [B, 1, H, W] and [B, C, H, W] (summed)
    assert metrics.pointing_game(a[:, None], masks).tolist() == [True, False, False, False]
    c = torch.zeros(1, 3, 5, 5)
    c[0, 0, 0, 0] = 2.0  # the largest single value, outside
    c[:, :, 2, 2] = 1.0  # summed over 3 channels: 3 > 2, inside
    assert metrics.pointing_game(c, masks[:1]).tolist() == [True]
    assert metrics.pointing_game(c, masks[:1, None].long()).tolist() == [True]


def test_mass_inside_hand_made_maps():
    masks = torch.zeros(3, 2, 2, dtype=torch.bool)
    masks[:, 0] = True  # top row inside
    a = torch.tensor(
        [
            [[1.0, 2.0], [1.0, 0.0]],  # 3 of 4
            [[-5.0, 1.0], [1.0, -2.0]],  # negatives ignored: 1 of 2
            [[-1.0, 0.0], [-3.0, 0.0]],  # no positive mass -> 0
        ]
    )
    close(metrics.mass_inside(a, masks), torch.tensor([0.75, 0.5, 0.0]))
    # channels are summed before the positive part
    two = torch.stack([a, a], 1)
    close(metrics.mass_inside(two, masks), torch.tensor([0.75, 0.5, 0.0]))


def test_localization_errors():
    a = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="masks"):
        metrics.pointing_game(a, torch.ones(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="masks"):
        metrics.mass_inside(a, torch.ones(3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attributions"):
        metrics.pointing_game(torch.rand(2, 16), torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(a, torch.ones(2, 4, 4), tolerance=-1)


# --------------------------------------------------------------------------- randomization


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


def test_randomization_check_cascading():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 6)
    rng = torch.get_rng_state()
    method = lambda m: fa.saliency(fa.target(m, 1))  # noqa: E731
    # nothing randomized: the trained model against itself
    only = metrics.randomization_check(method, model, x, layers=[])
    assert list(only) == ["original"]
    close(only["original"], torch.ones(5))
    sims = metrics.randomization_check(method, model, x)
    assert list(sims) == ["original", "4", "2", "0"]  # output side first
    close(sims["original"], torch.ones(5))
    for name in ("4", "2", "0"):
        assert sims[name].shape == (5,)
        assert bool((sims[name] < 0.99).all())
    # the model passed in is unchanged, and so is the global RNG
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.equal(torch.get_rng_state(), rng)
    # same seed, same answer; pearson is available too
    again = metrics.randomization_check(method, model, x)
    for k in sims:
        assert torch.equal(sims[k], again[k])
    pear = metrics.randomization_check(method, model, x, similarity="pearson")
    close(pear["original"], torch.ones(5))


def test_randomization_check_independent_and_layers_by_module(net, img):
    model = _mlp()
    x = torch.randn(4, 6)
    method = lambda m: fa.saliency(fa.target(m, 0))  # noqa: E731
    casc = metrics.randomization_check(method, model, x, layers=[model[4], "2"])
    ind = metrics.randomization_check(method, model, x, layers=["4", model[2]], cascading=False)
    assert list(casc) == list(ind) == ["original", "4", "2"]
    close(casc["4"], ind["4"])  # the first layer is randomized identically in both modes
    assert not torch.allclose(casc["2"], ind["2"])
    # a layer method on a conv net with BatchNorm: the copies keep their structure
    cam_like = lambda m: fa.input_x_gradient(fa.target(m, 1), wrt=m.conv3)  # noqa: E731
    sims = metrics.randomization_check(cam_like, net, img, layers=["fc", "conv3"], similarity="pearson")
    close(sims["original"], torch.ones(3))
    assert bool((sims["conv3"] < 0.99).all())


def test_spearman_with_ties_matches_scipy_formula():
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0, 0.0], [5.0, 5.0, 5.0, 1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 1.0, 4.0, 3.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]], dtype=torch.float64)
    ranks = _randomization._ranks(a)
    assert ranks.tolist() == [[1.0, 2.5, 2.5, 4.0, 0.0], [3.0, 3.0, 3.0, 0.0, 1.0]]
    got = _randomization._spearman(a, b)
    for i in range(2):
        ra, rb = _randomization._ranks(a[i : i + 1])[0], _randomization._ranks(b[i : i + 1])[0]
        ref = torch.corrcoef(torch.stack([ra, rb]))[0, 1]
        close(got[i], ref)


def test_randomization_check_errors():
    model = _mlp()
    x = torch.randn(2, 6)
    method = lambda m: fa.saliency(fa.target(m, 0))  # noqa: E731
    with pytest.raises(ValueError, match="layers"):
        metrics.randomization_check(method, model, x, layers=["nope"])
    with pytest.raises(ValueError, match="layers"):
        metrics.randomization_check(method, model, x, layers=["1"])  # Tanh: nothing to reinitialize
    with pytest.raises(ValueError, match="layers"):
        metrics.randomization_check(method, model, x, layers=[nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="similarity"):
        metrics.randomization_check(method, model, x, similarity="ssim")
