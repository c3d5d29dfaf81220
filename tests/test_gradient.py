"""Gradient family: saliency, input×gradient, integrated gradients, noise tunnel, gradient SHAP,
expected gradients, path integrals — each by three witnesses: a plain loop twin, Captum 0.9.0,
and an axiom with an exact answer."""

import numpy as np
import pytest
import torch
from captum.attr import GradientShap, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from captum.testing.helpers.basic_models import BasicModel2, BasicModel3, BasicModel_MultiLayer
from helpers import close
from models import Linear, res_conv_net, two_input_net

import funcattr as fa


# --------------------------------------------------------------------------- Captum 0.9.0


@pytest.mark.parametrize("abs_", [True, False])
def test_saliency_matches_captum(net, img, abs_):
    t = torch.tensor([0, 3, 1])
    ours = fa.saliency(fa.target(net, t), abs=abs_)(img)
    theirs = Saliency(net).attribute(img, target=t, abs=abs_)
    close(ours, theirs)


def test_input_x_gradient_matches_captum(net, img):
    ours = fa.input_x_gradient(fa.target(net, 2))(img)
    close(ours, InputXGradient(net).attribute(img, target=2))


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_ig_matches_captum_every_rule(net, img, method):
    base = torch.randn(1, 3, 8, 8) * 0.1
    t = [4, 0, 2]
    ours, d1 = fa.integrated_gradients(fa.target(net, t), baseline=base, steps=17, method=method, return_delta=True)(img)
    theirs, d2 = IntegratedGradients(net).attribute(
        img, baselines=base, target=t, n_steps=17, method=method, return_convergence_delta=True
    )
    close(ours, theirs)
    close(d1, d2, atol=1e-4)


def test_ig_multiply_false_and_internal_batching(net, img):
    ours = fa.integrated_gradients(fa.target(net, 1), steps=20, multiply_by_inputs=False, batch_size=6)(img)
    theirs = IntegratedGradients(net, multiply_by_inputs=False).attribute(img, target=1, n_steps=20, internal_batch_size=6)
    close(ours, theirs)


def test_ig_tuple_inputs_with_extra_args_matches_captum():
    m = two_input_net()
    torch.manual_seed(2)
    x1, x2 = torch.randn(4, 4), torch.randn(4, 3)
    scale = torch.rand(4, 1) + 0.5  # batch-aligned extra arg: expanded with the steps
    t = torch.tensor([0, 1, 2, 1])
    ours = fa.integrated_gradients(fa.target(m), steps=12)((x1, x2), scale, 0.25, target=t)
    theirs = IntegratedGradients(m).attribute((x1, x2), target=t, additional_forward_args=(scale, 0.25), n_steps=12)
    assert isinstance(ours, tuple)
    close(ours, theirs)


def test_multi_target_slices_match_captum_per_target(net, img):
    ks = [0, 2, 4]
    ours = fa.integrated_gradients(fa.outputs(net, ks), steps=10)(img)
    assert ours.shape == (3, 3, 3, 8, 8)
    for j, k in enumerate(ks):
        close(ours[:, j], IntegratedGradients(net).attribute(img, target=k, n_steps=10))
    sal = fa.saliency(fa.outputs(net, ks))(img)
    for j, k in enumerate(ks):
        close(sal[:, j], Saliency(net).attribute(img, target=k))


def test_topk_outputs_use_each_examples_top_classes(net, img):
    top = net(img).topk(2, dim=1).indices
    ours = fa.input_x_gradient(fa.outputs(net, topk=2))(img)
    for i in range(img.shape[0]):
        for j in range(2):
            ref = InputXGradient(net).attribute(img[i : i + 1], target=int(top[i, j]))
            close(ours[i : i + 1, j], ref)


def test_noise_tunnel_tiny_noise_matches_captum(net, img):
    ig = fa.integrated_gradients(fa.target(net, 1), steps=8)
    for kind in ["smoothgrad", "smoothgrad_sq", "vargrad"]:
        ours = fa.noise_tunnel(ig, samples=3, stdev=2e-8, kind=kind)(img)
        theirs = NoiseTunnel(IntegratedGradients(net)).attribute(
            img, nt_type=kind, nt_samples=3, stdevs=2e-8, target=1, n_steps=8
        )
        close(ours, theirs, atol=1e-4)


def test_gradient_shap_on_linear_model_is_exact_for_its_draws_and_agrees_with_captum():
    torch.manual_seed(0)
    w = torch.randn(1, 6)
    m = Linear(w, 0.5)
    x = torch.randn(4, 6)
    dist = torch.randn(5, 6) + 3.0  # far from 0: an implementation ignoring the baselines is off by |3 w|
    ours = fa.gradient_shap(fa.target(m, 0), dist, samples=7, generator=torch.Generator().manual_seed(7))(x)
    idx = torch.randint(5, (7, 4), generator=torch.Generator().manual_seed(7))  # its baseline draws, in order
    close(ours, ((x.unsqueeze(0) - dist[idx]) * w).mean(0))  # linear: gradients are w at every point
    # Captum draws from the global RNG: compare both with the expectation over many samples
    torch.manual_seed(1)
    ours = fa.gradient_shap(fa.target(m, 0), dist, samples=4000)(x)
    theirs = GradientShap(m).attribute(x, baselines=dist, target=0, n_samples=4000)
    exp = (x - dist.mean(0)) * w
    assert ours.shape == theirs.shape == x.shape
    assert (ours - exp).abs().max() < 0.15 and (theirs - exp).abs().max() < 0.15
    assert (x * w - exp).abs().max() > 1.0


def test_gradient_shap_statistically_matches_captum(net, img):
    dist = torch.randn(4, 3, 8, 8) * 0.2
    torch.manual_seed(0)
    ours = fa.gradient_shap(fa.target(net, 0), dist, samples=400, stdev=0.05)(img)
    theirs = GradientShap(net).attribute(img, baselines=dist, target=0, n_samples=400, stdevs=0.05)
    rel = (ours - theirs).norm() / theirs.norm()
    assert rel < 0.15, rel


# --------------------------------------------------------------------------- loop twins


def test_ig_equals_python_loop_over_steps(net, img):
    t = torch.tensor([1, 0, 3])
    base = torch.full((1, 3, 8, 8), 0.3)
    nodes, wts = np.polynomial.legendre.leggauss(9)
    alphas, weights = 0.5 * (1 + nodes), 0.5 * wts
    total = torch.zeros_like(img)
    for a, w in zip(alphas.tolist(), weights.tolist()):
        p = (base + a * (img - base)).requires_grad_()
        s = net(p).gather(1, t.view(-1, 1)).sum()
        total += w * torch.autograd.grad(s, p)[0]
    ours = fa.integrated_gradients(fa.target(net, t), baseline=base, steps=9)(img)
    close(ours, total * (img - base))


def test_noise_tunnel_equals_loop_over_samples(net, img):
    sal = fa.saliency(fa.target(net, 2), abs=False)
    torch.manual_seed(5)
    ours = fa.noise_tunnel(sal, samples=4, stdev=0.3, kind="vargrad")(img)
    torch.manual_seed(5)
    noise = 0.3 * torch.randn(4 * 3, 3, 8, 8).view(4, 3, 3, 8, 8)
    per = torch.stack([sal(img + noise[s]) for s in range(4)])
    close(ours, (per**2).mean(0) - per.mean(0) ** 2, atol=1e-5)


def test_gradient_shap_equals_loop_with_same_draws(net, img):
    dist = torch.randn(6, 3, 8, 8)
    torch.manual_seed(11)
    ours = fa.gradient_shap(fa.target(net, 3), dist, samples=5)(img)
    torch.manual_seed(11)
    idx = torch.randint(6, (5, 3))
    alpha = torch.rand(5, 3)
    acc = torch.zeros_like(img)
    for s in range(5):
        for i in range(3):
            b = dist[idx[s, i]]
            p = (b + alpha[s, i] * (img[i] - b)).unsqueeze(0).requires_grad_()
            g = torch.autograd.grad(net(p)[0, 3], p)[0][0]
            acc[i] += g * (img[i] - b)
    close(ours, acc / 5)


def test_per_example_lifts_single_example_function(net, img):
    g = fa.per_example(lambda x: net(x.unsqueeze(0))[0, 2])
    close(fa.saliency(g)(img), fa.saliency(fa.target(net, 2))(img))
    close(fa.integrated_gradients(g, steps=5)(img), fa.integrated_gradients(fa.target(net, 2), steps=5)(img))


# --------------------------------------------------------------------------- axioms


def test_ig_golden_numbers_from_captum_paper_models():
    # Captum's test_integrated_gradients_basic: inputs (3.0, 1.0), 500 steps
    for model, expected in [(BasicModel2(), (1.5, -0.5)), (BasicModel3(), (1.5, -0.5))]:
        x1, x2 = torch.tensor([3.0]), torch.tensor([1.0])
        a1, a2 = fa.integrated_gradients(model, steps=500)((x1, x2))
        assert abs(a1.item() - expected[0]) < 0.05 and abs(a2.item() - expected[1]) < 0.05


def test_linear_model_gets_w_times_x_minus_baseline():
    w = torch.randn(1, 5)
    m = Linear(w, 1.0)
    x, b = torch.randn(3, 5), torch.randn(1, 5)
    for method in ["gausslegendre", "riemann_middle"]:
        close(fa.integrated_gradients(fa.target(m, 0), baseline=b, method=method)(x), w * (x - b))
    close(fa.expected_gradients(fa.target(m, 0), baselines=b, samples=3)(x), w * (x - b))


def test_ig_completeness_gap_shrinks_with_steps(net, img):
    gaps = []
    for steps in [2, 8, 64]:
        _, d = fa.integrated_gradients(fa.target(net, 0), steps=steps, return_delta=True)(img)
        gaps.append(d.abs().max().item())
    assert gaps[2] < gaps[0] and gaps[2] < 1e-3, gaps


def test_symmetric_inputs_get_equal_shares():
    m = BasicModel_MultiLayer()  # output 0 depends on x0 + x1 + x2 only
    x = torch.tensor([[7.0, 7.0, 7.0]])
    a = fa.integrated_gradients(fa.target(m, 0), steps=100)(x)
    assert torch.allclose(a[0, 0], a[0, 1]) and torch.allclose(a[0, 1], a[0, 2])


# --------------------------------------------------------------------------- composition


def test_ig_is_a_path_integral_along_the_straight_line(net, img):
    b = torch.full((1, 3, 8, 8), -0.2)
    line = lambda xs, a: tuple(b + a.view(-1, 1, 1, 1, 1) * (x - b) for x in xs)  # noqa: E731
    f = fa.target(net, 1)
    close(fa.path_integral(f, line, steps=12)(img), fa.integrated_gradients(f, baseline=b, steps=12)(img))


def test_expected_gradients_is_noise_free_gradient_shap(net, img):
    dist = torch.randn(5, 3, 8, 8)
    torch.manual_seed(3)
    a = fa.expected_gradients(fa.target(net, 1), dist, samples=6)(img)
    torch.manual_seed(3)
    b = fa.gradient_shap(fa.target(net, 1), dist, samples=6, stdev=0.0)(img)
    close(a, b)


def test_blur_ig_completes_between_blurred_and_original(net, img):
    attr, delta = fa.blur_integrated_gradients(fa.target(net, 0), sigma=2.0, steps=64, return_delta=True)(img)
    assert attr.shape == img.shape
    assert delta.abs().max() < 1e-2 * max(1.0, attr.flatten(1).sum(1).abs().max().item())


# --------------------------------------------------------------------------- execution


def test_batch_size_chunks_give_identical_results_and_bound_rows():
    net = res_conv_net()
    rows = []

    def counted(x):
        rows.append(x.shape[0])
        return net(x)

    img = torch.randn(2, 3, 8, 8)
    full = fa.integrated_gradients(fa.target(counted, 1), steps=10)(img)
    rows.clear()
    chunked = fa.integrated_gradients(fa.target(counted, 1), steps=10, batch_size=6)(img)
    assert max(rows) <= 6 and sum(rows) == 20
    close(full, chunked)
    with fa.options(batch_size=4):
        rows.clear()
        close(fa.integrated_gradients(fa.target(counted, 1), steps=10)(img), full)
        assert max(rows) <= 4


def test_memory_budget_sets_the_chunk():
    net = res_conv_net()
    rows = []

    def counted(x):
        rows.append(x.shape[0])
        return net(x)

    img = torch.randn(2, 3, 8, 8)
    f = fa.target(counted, 0)
    with fa.options(memory_budget=1):  # tiny budget: one step per call
        fa.integrated_gradients(f, steps=5)(img)
        assert rows == [2] * 6  # a one-step probe (measured, discarded), then one step per call
        rows.clear()
        fa.integrated_gradients(f, steps=5)(img)
        assert rows == [2] * 5  # the cost is known: the same chunks, no probe


def test_bf16_precision_runs_and_is_close(net, img):
    a = fa.integrated_gradients(fa.target(net, 0), steps=8)(img)
    b = fa.integrated_gradients(fa.target(net, 0), steps=8, precision="bf16")(img)
    assert b.dtype == img.dtype
    assert (a - b).norm() / a.norm() < 0.1


def test_results_keep_dtype_and_progress_bar_runs(net, capsys):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    a = fa.integrated_gradients(fa.target(net.double(), 0), steps=4, progress=True)(x)
    assert a.dtype == torch.float64
    err = capsys.readouterr().err
    assert "integrated gradients:" in err and "0/4" in err  # tqdm drew the bar (leave=False clears it)
    fa.integrated_gradients(fa.target(net.double(), 0), steps=4)(x)
    assert "integrated gradients" not in capsys.readouterr().err  # and only when asked


# --------------------------------------------------------------------------- errors


def test_errors_name_the_argument(net, img):
    f = fa.target(net, 0)
    with pytest.raises(ValueError, match="target 7 is out of range"):
        fa.saliency(fa.target(net, 7))(img)
    with pytest.raises(ValueError, match="target"):
        fa.saliency(fa.target(net))(img, target=[0, 1, 9])
    with pytest.raises(TypeError, match="wrt="):
        fa.saliency(f)(torch.ones(2, 3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="steps"):
        fa.integrated_gradients(f, steps=0)
    with pytest.raises(ValueError, match="steps must be at least 2"):
        fa.integrated_gradients(f, steps=1, method="riemann_left")
    with pytest.raises(ValueError, match="method"):
        fa.integrated_gradients(f, method="simpson")
    with pytest.raises(ValueError, match="baseline.*does not broadcast"):
        fa.integrated_gradients(f, baseline=torch.zeros(3, 4, 4))(img)
    with pytest.raises(ValueError, match="NaN or inf"):
        fa.saliency(f)(img.clone().index_fill_(0, torch.tensor([1]), float("nan")))
    with pytest.raises(ValueError, match="empty batch"):
        fa.saliency(f)(img[:0])
    with pytest.raises(ValueError, match="kind"):
        fa.noise_tunnel(fa.saliency(f), kind="smooth")
    with pytest.raises(ValueError, match="samples"):
        fa.gradient_shap(f, torch.zeros(2, 3, 8, 8), samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        fa.saliency(f, batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        fa.saliency(f, precision="fp8")
    with pytest.raises(ValueError, match="one score per example"):
        fa.saliency(fa.target(net))(img)  # no target for a [B, 5] output


def test_training_mode_batchnorm_is_refused():
    net = res_conv_net().train()
    with pytest.raises(ValueError, match="BatchNorm2d.*training mode"):
        fa.saliency(fa.target(net, 0))(torch.randn(2, 3, 8, 8))


def test_outputs_argument_errors(net):
    with pytest.raises(ValueError, match="exactly one"):
        fa.outputs(net)
    with pytest.raises(ValueError, match="topk"):
        fa.outputs(net, topk=0)
    with pytest.raises(ValueError, match="out of range"):
        fa.saliency(fa.outputs(net, [0, 9]))(torch.randn(2, 3, 8, 8))


def test_layer_input_of_an_inplace_module_is_not_overwritten():
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
    from torch import nn

    torch.manual_seed(0)
    inplace = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)).eval()
    plain = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    plain.load_state_dict(inplace.state_dict())
    x = torch.randn(5, 3)
    at = fa.input_of(inplace[1])
    close(
        fa.integrated_gradients(fa.target(inplace, 0), wrt=at)(x),
        LayerIntegratedGradients(plain, plain[1]).attribute(x, target=0, attribute_to_layer_input=True),
    )
    close(
        fa.input_x_gradient(fa.target(inplace, 1), wrt=at)(x),
        LayerGradientXActivation(plain, plain[1]).attribute(x, target=1, attribute_to_layer_input=True),
    )


def test_sampled_deltas_work_for_one_dimensional_inputs():
    w = torch.tensor([[2.0, -1.0, 0.5]])
    m = Linear(w)
    x = torch.randn(4, 3)
    _, delta = fa.gradient_shap(fa.target(m, 0), torch.zeros(2, 3), samples=3, return_delta=True)(x)
    assert delta.shape == (4,) and delta.abs().max() < 1e-5  # linear: complete for every draw
    _, d1 = fa.integrated_gradients(lambda v: v.sum(1) ** 2, return_delta=True)(torch.randn(3, 2))
    assert d1.shape == (3,) and d1.abs().max() < 1e-4


def test_noise_tunnel_chunks_samples_under_a_budget_with_identical_results(net, img):
    rows = []

    def counted(x):
        rows.append(x.shape[0])
        return net(x)

    sal = fa.saliency(fa.target(counted, 2), abs=False)
    torch.manual_seed(9)
    whole = fa.noise_tunnel(sal, samples=6, stdev=0.2, kind="smoothgrad_sq")(img)
    assert rows == [3, 18]  # a one-sample probe (discarded), then all samples at once
    rows.clear()
    torch.manual_seed(9)
    with fa.options(batch_size=2 * 3):  # two samples of the 3 examples per call
        chunked = fa.noise_tunnel(sal, samples=6, stdev=0.2, kind="smoothgrad_sq")(img)
    assert max(rows) <= 6 and sum(rows) == 18
    close(chunked, whole)
