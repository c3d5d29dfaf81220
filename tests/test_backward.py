"""Backward-rule methods: guided backprop, deconvolution, guided GradCAM, and what DeepLift
shares with them (loop twins, per-example targets, nothing left behind); DeepLift's own
tests are in test_deeplift.py.

Three witnesses: Captum's golden numbers, Captum 0.9.0 on module-based models (and the same
answer from a functional twin with the same weights), and axioms (DeepLift completeness).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import funcattr as fa
from funcattr import _intercept

captum_attr = pytest.importorskip("captum.attr")
from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv, ReLUDeepLiftModel  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum warns at every hooked call


def close(a, b, rtol=1e-4, floor=1e-5):
    """Equal up to rtol, with an absolute floor of ``floor`` × the reference's scale (other
    batch compositions round differently in the convolutions, and DeepLift's Δout/Δin
    amplifies that where Δin is small)."""
    torch.testing.assert_close(a, b, rtol=rtol, atol=floor * float(b.abs().max()) + 1e-12)


# --------------------------------------------------------------------------- models


class ModNet(nn.Module):
    """Module-based: eval BatchNorm, max-pool, residual add, in-place ReLU, ELU, LeakyReLU,
    Sigmoid, Tanh, Softplus modules, optional softmax head. No nonlinear module feeds another
    directly (Captum's hooks lose the gradient there; see test_captum_chained_hooks_drift)."""

    def __init__(self, softmax: bool = False, classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(8, 8, 3, padding=1)
        self.elu = nn.ELU(alpha=0.7)
        self.fc1 = nn.Linear(8 * 16, 16)
        self.leaky = nn.LeakyReLU(0.1)
        self.fc2 = nn.Linear(16, 12)
        self.sig = nn.Sigmoid()
        self.fc3 = nn.Linear(12, 12)
        self.tanh = nn.Tanh()
        self.fc4 = nn.Linear(12, 10)
        self.softplus = nn.Softplus(beta=2.0)
        self.fc5 = nn.Linear(10, classes)
        self.softmax = nn.Softmax(dim=1) if softmax else None

    def forward(self, x):
        h = self.relu1(self.bn1(self.pool(self.conv1(x))))
        h = self.relu2(h + self.bn2(self.conv2(h)))
        h = self.relu3(self.conv3(h))
        h = self.elu(self.conv4(h))
        h = self.leaky(self.fc1(h.flatten(1)))
        h = self.sig(self.fc2(h))
        h = self.tanh(self.fc3(h))
        h = self.softplus(self.fc4(h))
        out = self.fc5(h)
        return self.softmax(out) if self.softmax is not None else out


def mod_net(softmax: bool = False, seed: int = 0) -> ModNet:
    torch.manual_seed(seed)
    m = ModNet(softmax)
    with torch.no_grad():
        for bn in (m.bn1, m.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
        for fc in (m.fc2, m.fc3, m.fc4, m.fc5):
            fc.weight.mul_(3.0)
    return m.eval()


class Twin(nn.Module):
    """The same weights as a ModNet with the activations written as functions. Style "a":
    one nn.ReLU module reused twice, F.relu(inplace=True), F.max_pool2d, F.elu, F.leaky_relu,
    torch.sigmoid, Tensor.tanh, F.softplus, Tensor.softmax. Style "b": torch.relu,
    Tensor.relu_, max_pool2d with indices, Tensor.relu, in-place F.elu, F.leaky_relu_,
    F.sigmoid, torch.tanh, F.softmax."""

    def __init__(self, m: ModNet, style: str):
        super().__init__()
        self.m, self.style = m, style
        self.shared = nn.ReLU()

    def forward(self, x):
        m = self.m
        if self.style == "a":
            h = self.shared(m.bn1(F.max_pool2d(m.conv1(x), 2)))
            h = F.relu(h + m.bn2(m.conv2(h)), inplace=True)
            h = self.shared(m.conv3(h))
            h = F.elu(m.conv4(h), 0.7)
            h = F.leaky_relu(m.fc1(h.flatten(1)), 0.1)
            h = torch.sigmoid(m.fc2(h))
            h = m.fc3(h).tanh()
            h = F.softplus(m.fc4(h), beta=2.0)
            out = m.fc5(h)
            return out.softmax(1) if m.softmax is not None else out
        h, _ = F.max_pool2d(m.conv1(x), 2, return_indices=True)
        h = torch.relu(m.bn1(h))
        h = (h + m.bn2(m.conv2(h))).relu_()
        h = m.conv3(h).relu()
        h = F.elu(m.conv4(h), alpha=0.7, inplace=True)
        h = m.fc1(h.flatten(1))
        F.leaky_relu_(h, 0.1)
        h = F.sigmoid(m.fc2(h))
        h = torch.tanh(m.fc3(h))
        h = F.softplus(m.fc4(h), 2.0)
        out = m.fc5(h)
        return F.softmax(out, dim=1) if m.softmax is not None else out


def nets(m):
    return [m, Twin(m, "a"), Twin(m, "b")]


NET_IDS = ["modules", "twin-a", "twin-b"]


class FuncNet(nn.Module):
    """Functional only, with what Captum has no rule for (GELU, SiLU), overlapping max-pool,
    1-D and 3-D max-pool and a parameter-only exp (a temperature)."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc1 = nn.Linear(32, 12)
        self.fc2 = nn.Linear(12, 3)
        self.log_t = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        h = F.gelu(self.conv1(x), approximate=self.approximate)
        h = F.max_pool2d(h, 3, 2, 1)  # overlapping windows
        h = F.silu(self.conv2(h))
        h = F.max_pool1d(h.flatten(2), 2).view(h.shape[0], 4, 4, 2)
        h = F.max_pool3d(h.unsqueeze(1), (1, 1, 2)).flatten(1) * 2.0 - 0.1
        h = torch.sigmoid(self.fc1(torch.cat([h, h.flip(1)], 1)))
        return self.fc2(F.elu(h - 0.5)) * self.log_t.exp()


def func_net(approximate="none", seed=0):
    torch.manual_seed(seed)
    return FuncNet(approximate).eval()


# --------------------------------------------------------------------------- golden numbers


def test_guided_backprop_golden():
    m = BasicModel_ConvNet_One_Conv()
    x = torch.arange(16.0).view(1, 1, 4, 4)
    want = torch.tensor([[0, 1, 1, 1], [1, 3, 3, 2], [1, 3, 3, 2], [1, 2, 2, 1.0]]).view(1, 1, 4, 4)
    close(fa.guided_backprop(fa.target(m, 0))(x), want)
    two = torch.tensor([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1.0]]).view(1, 1, 4, 4)
    a1, a2 = fa.guided_backprop(fa.target(m, 0))((x, torch.ones(1, 1, 4, 4)))
    close(a1, two)
    close(a2, two)


@pytest.mark.parametrize("inplace", [False, True])
def test_deconvolution_one_conv(inplace):
    m = BasicModel_ConvNet_One_Conv(inplace=inplace)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    ref = captum_attr.Deconvolution(m).attribute(x, target=0)
    close(fa.deconvolution(fa.target(m, 0))(x), ref)
    ref = captum_attr.GuidedBackprop(m).attribute(x, target=0)
    close(fa.guided_backprop(fa.target(m, 0))(x), ref)


# --------------------------------------------------------------------------- against Captum 0.9.0


@pytest.mark.parametrize("method, cls", [("guided_backprop", "GuidedBackprop"), ("deconvolution", "Deconvolution")])
def test_modified_relu_vs_captum(method, cls, data):
    x, _ = data
    m = mod_net()
    ref = getattr(captum_attr, cls)(m).attribute(x, target=1)
    for net in nets(m):
        close(getattr(fa, method)(fa.target(net, 1))(x), ref)


def test_guided_gradcam_vs_captum(data):
    x, _ = data
    m = mod_net()
    for layer in (m.conv3, m.conv2):
        ref = captum_attr.GuidedGradCam(m, layer).attribute(x, target=3)
        for net in nets(m):
            close(fa.guided_gradcam(fa.target(net, 3), layer)(x), ref)
    ref = captum_attr.GuidedGradCam(m, m.conv4).attribute(x, target=3, attribute_to_layer_input=True)
    close(fa.guided_gradcam(fa.target(m, 3), fa.input_of(m.conv4))(x), ref)


# --------------------------------------------------------------------------- axioms and twins


@pytest.mark.parametrize(
    "make",
    [
        lambda f: fa.guided_backprop(f),
        lambda f: fa.deconvolution(f),
        lambda f: fa.deeplift(f, baseline=0.1),
        lambda f: fa.deeplift(f, baseline=0.1, multiply_by_inputs=False),
        lambda f: fa.deeplift_shap(f, 0.3 * torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5)).double()),
        lambda f: fa.deeplift(f, baseline=0.1, wrt=f.model.conv3),
        lambda f: fa.guided_gradcam(f, f.model.conv3),
    ],
    ids=["guided_backprop", "deconvolution", "deeplift", "deeplift-local", "deeplift_shap", "layer-deeplift", "guided_gradcam"],
)
@pytest.mark.parametrize("softmax", [False, True])
def test_loop_twin(make, softmax, data):
    """One batched call for K targets equals a Python loop over examples and targets (float64:
    in float32 other batch compositions round differently and Δout/Δin amplifies that)."""
    x = data[0].double()
    m = mod_net(softmax=softmax).double()
    ks = [0, 2, 4]
    batched = make(fa.outputs(m, ks))(x)
    assert batched.shape[:2] == (3, 3)
    for i in range(3):
        for j, k in enumerate(ks):
            close(make(fa.target(m, k))(x[i : i + 1])[0], batched[i, j], rtol=1e-9, floor=1e-9)


def test_per_example_targets_and_batch_size(data):
    x, b = (t.double() for t in data)
    m = mod_net().double()
    labels = torch.tensor([4, 0, 2])
    g = fa.target(m)
    want = torch.stack([fa.deeplift(fa.target(m, int(t)), b[i : i + 1])(x[i : i + 1])[0] for i, t in enumerate(labels)])
    close(fa.deeplift(g, b)(x, target=labels), want)
    dist = 0.3 * torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(6)).double()
    whole = fa.deeplift_shap(g, dist)(x, target=labels)
    close(fa.deeplift_shap(g, dist, batch_size=3)(x, target=labels), whole)  # one baseline per chunk
    close(fa.guided_backprop(g)(x, target=labels), torch.cat([fa.guided_backprop(fa.target(m, int(t)))(x[i : i + 1]) for i, t in enumerate(labels)]))


def _hooks(model):
    return sum(
        len(getattr(mod, name, {}))
        for mod in model.modules()
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    )


def test_nothing_left_behind(data):
    x, b = data
    m = mod_net(softmax=True)
    f = fa.target(m, 1)

    def plain():
        p = x.clone().requires_grad_(True)
        return torch.autograd.grad(m(p)[:, 1].sum(), p)[0]

    before = plain()
    fa.guided_backprop(f)(x)
    fa.deconvolution(f)(x)
    fa.deeplift(f, b, return_delta=True)(x)
    fa.deeplift(f, b, wrt=m.conv3)(x)
    fa.deeplift_shap(f, b)(x)
    fa.guided_gradcam(f, m.conv3)(x)
    with pytest.raises(NotImplementedError, match="cummax"):
        fa.deeplift(fa.target(lambda t: m(t).cummax(1).values, 1), b)(x)
    assert _hooks(m) == 0
    assert torch._C._len_torch_function_stack() == 0
    assert torch.equal(plain(), before)
    assert not torch.equal(fa.guided_backprop(f)(x), before)


# --------------------------------------------------------------------------- torch.func


def test_rules_under_torch_func(data):
    x, _ = data
    m = mod_net()
    t = Twin(m, "a")
    want = fa.guided_backprop(fa.target(m, 1))(x)
    with _intercept.guided("guided")(None):
        close(torch.func.grad(lambda z: t(z)[:, 1].sum())(x), want)
        close(torch.func.vmap(torch.func.grad(lambda z: t(z[None])[0, 1]))(x), want)
    close(fa.guided_backprop(fa.per_example(lambda z: t(z[None])[0, 1]))(x), want)


# --------------------------------------------------------------------------- errors


def test_guided_errors(data):
    x, _ = data
    with pytest.raises(ValueError, match="kind"):
        _intercept.guided("lrp")
    flat = nn.Sequential(nn.Flatten(), nn.Linear(192, 6), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(ValueError, match="spatial"):
        fa.guided_gradcam(fa.target(flat, 0), flat[1])(x)
