"""Defects found by trying funcattr as a user would (issue 10), each pinned at its root.

The shared properties (no_grad, in-place layers after ``wrt=``, threads, per-example values
inside noise_tunnel, bitwise-repeatable calls) run for every method in test_contract.py;
here are the defects with a shape of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from captum.attr import FeatureAblation
from helpers import close
from torch import nn

import funcattr as fa


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def after_conv1(self, h):
        return self.fc(F.relu(self.conv2(F.relu(h))).mean((2, 3)))

    def forward(self, x):
        return self.after_conv1(self.conv1(x))


def small():
    torch.manual_seed(0)
    return Small().eval()


def test_one_score_per_example_may_carry_singleton_dims():  # defect 4
    m, x = small(), torch.randn(4, 3, 6, 6)
    flat = fa.saliency(lambda v: m(v)[:, 1])(x)
    close(fa.saliency(lambda v: m(v)[:, 1:2, None, None])(x), flat)
    close(fa.saliency(fa.target(lambda v: m(v)[:, 1:2, None, None], None))(x), flat)


def test_a_function_returning_other_rows_than_the_batch_is_refused():  # defects 4, 11
    m, x = small(), torch.randn(4, 3, 6, 6)
    with pytest.raises(ValueError, match=r"returned shape \(1,\) for a batch of 4 rows"):
        fa.saliency(lambda v: m(v)[:1, 0])(x)
    with pytest.raises(ValueError, match=r"returned shape \(1,\) for a batch of 2 rows"):
        fa.integrated_gradients(lambda v: m(v)[:1, 0])(x[:2])
    with pytest.raises(ValueError, match="for a batch of"):
        fa.occlusion(lambda v: m(v)[:2, 0], window=(3, 2, 2))(x)


def test_per_example_targets_must_have_one_entry_per_example():  # defect 5
    m, x = small(), torch.randn(4, 3, 6, 6)
    with pytest.raises(ValueError, match="target has 2 entries but the batch has 4 examples"):
        fa.saliency(fa.target(m))(x, target=[0, 1])
    with pytest.raises(ValueError, match="target has 2 entries but the batch has 4 examples"):
        fa.integrated_gradients(fa.target(m))(x, target=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target has 4 entries but the batch has 8 examples"):
        fa.saliency(fa.target(m, [0, 1, 2, 0]))(torch.randn(8, 3, 6, 6))
    with pytest.raises(ValueError, match="target has 8 entries but the batch has 4 examples"):
        fa.noise_tunnel(fa.saliency(fa.target(m)), samples=2)(x, target=[0] * 8)
    # one entry per example is folded by funcattr however the call is laid out
    a = fa.integrated_gradients(fa.target(m, [0, 1, 2, 0]), steps=5)(x)
    close(a[2:3], fa.integrated_gradients(fa.target(m, 2), steps=5)(x[2:3]))


@pytest.mark.parametrize("method, rule", [(fa.guided_backprop, "guided"), (fa.deconvolution, "deconv")])
def test_guided_rules_apply_at_a_layer(method, rule):  # defect 7
    """With wrt=layer the rules act on the network after the layer: the same as the method
    on that sub-network, evaluated at the layer's value — not the plain layer gradient."""
    m, x = small(), torch.randn(4, 3, 6, 6)
    got = method(fa.target(m, 1), wrt=m.conv1)(x)
    h = m.conv1(x).detach()
    twin = method(fa.target(m.after_conv1, 1))(h)
    close(got, twin)
    plain = fa.saliency(fa.target(m, 1), abs=False, wrt=m.conv1)(x)
    assert (got - plain).abs().max() > 1e-3


class Text(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 3)

    def after_emb(self, h):
        return self.fc(torch.tanh(h).mean(1))

    def forward(self, ids):
        return self.after_emb(self.emb(ids))


def test_gradient_shap_at_an_embedding_interpolates_in_the_embedding():  # defect 8
    torch.manual_seed(0)
    m = Text().eval()
    ids = torch.randint(10, (3, 5))
    base = torch.zeros(2, 5, dtype=torch.long)
    got = fa.gradient_shap(fa.target(m, 1), base, samples=6, generator=torch.Generator().manual_seed(4), wrt=m.emb)(ids)
    g = torch.Generator().manual_seed(4)  # the same draws, in the order gradient_shap makes them
    idx, alpha = torch.randint(2, (6, 3), generator=g), torch.rand(6, 3, generator=g)
    hx, twin = m.emb(ids).detach(), torch.zeros(3, 5, 4)
    for s in range(6):
        hb = m.emb(base[idx[s]]).detach()
        pt = (hb + alpha[s].view(3, 1, 1) * (hx - hb)).requires_grad_(True)
        (gr,) = torch.autograd.grad(m.after_emb(pt)[:, 1].sum(), pt)
        twin += gr * (hx - hb) / 6
    close(got, twin)
    assert got.abs().max() > 1e-3


def test_non_finite_baselines_and_noise_are_refused():  # defect 10
    m, x = small(), torch.randn(2, 3, 6, 6)
    f = fa.target(m, 0)
    nan_img = torch.full((3, 6, 6), float("nan"))
    for make in (
        lambda: fa.integrated_gradients(f, baseline=float("nan")),
        lambda: fa.integrated_gradients(f, baseline=nan_img),
        lambda: fa.occlusion(f, (3, 2, 2), baseline=torch.full((3, 6, 6), float("inf"))),
        lambda: fa.feature_ablation(f, baseline=float("-inf")),
        lambda: fa.deeplift(f, baseline=nan_img),
        lambda: fa.gradient_shap(f, nan_img.unsqueeze(0)),
        lambda: fa.deeplift_shap(f, torch.zeros(2, 3, 6, 6).index_fill(0, torch.tensor([1]), float("inf"))),
    ):
        with pytest.raises(ValueError, match="NaN or inf|must be finite"):
            make()(x)
    with pytest.raises(ValueError, match="finite"):
        fa.noise_tunnel(fa.saliency(f), stdev=float("inf"))(x)
    with pytest.raises(ValueError, match="finite"):
        fa.gradient_shap(f, torch.zeros(2, 3, 6, 6), stdev=float("nan"))(x)


def test_noise_tunnel_wants_an_attribution_function():  # defect 12
    m, x = small(), torch.randn(2, 3, 6, 6)
    with pytest.raises(TypeError, match=r"got a model \(nn.Module\)"):
        fa.noise_tunnel(m)
    with pytest.raises(TypeError, match="got a score function"):
        fa.noise_tunnel(fa.target(m, 0))
    with pytest.raises(TypeError, match=r"returned \[\(2, 3\)\] for inputs of shape"):
        fa.noise_tunnel(lambda v: m(v))(x)
    with pytest.raises(TypeError, match="got a score function"):
        fa.metrics.sensitivity_max(fa.target(m, 0), x)


BN = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 16, 2))


def through_a_global(v):
    return BN(v)[:, 0]


def test_batch_norm_in_training_mode_is_found_through_a_global():  # defect 13
    BN.train()
    before = BN[1].running_mean.clone()
    x = torch.randn(3, 3, 6, 6)
    for method in (fa.integrated_gradients(through_a_global), fa.occlusion(through_a_global, (3, 2, 2))):
        with pytest.raises(ValueError, match="BatchNorm2d in training mode"):
            method(x)
    assert torch.equal(BN[1].running_mean, before)  # refused before the statistics moved
    BN.eval()
    fa.integrated_gradients(through_a_global, steps=4)(x)
    BN.train()  # the modules seen on a first call are checked again on later calls
    with pytest.raises(ValueError, match="training mode"):
        fa.integrated_gradients(through_a_global, steps=4)(x)
    BN.eval()
    nostats = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten()).eval()
    with pytest.raises(ValueError, match="without running statistics"):
        fa.saliency(lambda v: nostats(v)[:, 0])(x)


def test_a_fractional_baseline_on_integer_inputs_follows_captum():  # defect 14
    class Weights(nn.Module):
        def forward(self, v):
            return (v * torch.arange(1.0, 5.0)).sum(1, keepdim=True)

    x = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    ours = fa.feature_ablation(fa.target(Weights(), 0), baseline=0.4)(x)
    theirs = FeatureAblation(Weights()).attribute(x, baselines=0.4, target=0)
    close(ours, theirs.float())  # the ablated inputs are 0.4, not 0
    close(ours, ((x - 0.4) * torch.arange(1.0, 5.0)))
    # an integral baseline keeps the integer dtype (token ids stay ids)
    seen = []
    fa.feature_ablation(lambda v: seen.append(v.dtype) or (v * 1.0).sum(1), baseline=0.0)(x)
    assert set(seen) == {torch.int64}


def test_float64_path_methods_accumulate_in_float64():  # defect 15
    x = torch.randn(3, 5, dtype=torch.float64)
    a = fa.integrated_gradients(lambda v: (v**3).sum(1), steps=20)(x)
    assert a.dtype == torch.float64 and (a - x**3).abs().max() < 1e-12  # Gauss-Legendre is exact here


def test_repeated_calls_do_not_depend_on_the_cost_cache():  # defect 16
    m = small()
    x = torch.randn(2, 3, 6, 6)
    f = fa.target(m, 2)
    with fa.options(memory_budget=200_000):  # several chunks
        ig = fa.integrated_gradients(f, steps=500)
        first, second = ig(x), ig(x)
    assert torch.equal(first, second)


def test_unclear_errors_are_clear():
    m, x = small(), torch.randn(2, 3, 6, 6)
    f = fa.target(m, 0)
    with pytest.raises(ValueError, match="target 5 is out of range"):
        fa.saliency(fa.target(m, 5))(x)
    with pytest.raises(TypeError, match="must be floating point"):
        fa.noise_tunnel(fa.feature_ablation(lambda v: v.float().sum(1)))(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="holds no baselines"):
        fa.gradient_shap(f, torch.zeros(0, 3, 6, 6))(x)
    for bad in (float("nan"), float("inf"), -1, True):
        with pytest.raises(ValueError, match="memory_budget"):
            with fa.options(memory_budget=bad):
                pass
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        fa.saliency(f, progress="no")
    with pytest.raises(ValueError, match="empty feature dim"):
        fa.saliency(lambda v: v.sum(1))(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="out of range"):
        fa.neuron(m, m.conv1, (9, 0, 0))(x)


def test_gradient_methods_explain_a_model_made_under_inference_mode():
    with torch.inference_mode():
        m = small()
    with pytest.raises(ValueError, match="created under torch.inference_mode"):
        fa.saliency(fa.target(m, 0))(torch.randn(2, 3, 6, 6))


def test_the_first_call_costs_what_the_work_costs():
    """The memory probe no longer imports torch._dynamo (1.2 s and 150 MB on the first call)."""
    code = (
        "import sys, torch, funcattr as fa\n"
        "m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2)).eval()\n"
        "m(torch.zeros(1, 3, 6, 6))\n"
        "fa.integrated_gradients(fa.target(m, 0))(torch.randn(2, 3, 6, 6))\n"
        "fa.occlusion(fa.target(m, 0), (3, 2, 2))(torch.randn(2, 3, 6, 6))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
