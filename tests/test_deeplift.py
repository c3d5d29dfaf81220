"""DeepLift, DeepLift SHAP and layer DeepLift: two runs of ``f`` (the baseline's, recorded;
then x's, with the rules applied).

Three witnesses: Captum 0.9.0 on the same model and input (in float64 where float32 rounding
of the secants would decide; where funcattr deliberately differs a test pins how), a Python
loop twin, and the summation-to-delta axiom Σ attr = f(x) − f(baseline) — also on attention
(nn.TransformerEncoderLayer both layouts, a Swin block), squeeze-excite (mobilenet_v3_small),
normalizations and products, with a named error where there is no exact rule (LSTM).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from test_backward import Twin, close, func_net, mod_net, nets
from torch import nn

import funcattr as fa

captum_attr = pytest.importorskip("captum.attr")
from captum.testing.helpers.basic_models import ReLUDeepLiftModel  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum warns at every hooked call


def f64(*ts):
    return tuple(t.double() for t in ts)


def complete(f, attr, x, b, rtol=1e-5, min_scale=1e-3):
    """Σ attr = f(x) − f(b) per example, relative to the largest output difference."""
    with torch.no_grad():
        diff = f(x) - f(b)
    total = attr.reshape(attr.shape[0], -1).sum(1)
    scale = float(diff.abs().max())
    assert scale > min_scale, "the output must depend on the input for the test to mean anything"
    assert float((total - diff).abs().max()) <= rtol * scale, (total, diff)


# --------------------------------------------------------------------------- golden numbers


def test_deeplift_exact_match():
    m = ReLUDeepLiftModel()
    x1, x2 = torch.tensor([1.0]), torch.tensor([2.0])
    (a1, a2), delta = fa.deeplift(m, baseline=0.0, return_delta=True)((x1, x2))
    assert a1.tolist() == [2.0] and a2.tolist() == [1.0] and delta.tolist() == [0.0]
    a1, a2 = fa.deeplift(m, multiply_by_inputs=False)((x1, x2))
    assert a1.tolist() == [2.0] and a2.tolist() == [0.5]


# --------------------------------------------------------------------------- against Captum 0.9.0


@pytest.mark.parametrize("mbi", [True, False])
def test_deeplift_vs_captum(mbi, data):
    """Equal to Captum in float64; in float32 both round the secants differently, and
    funcattr's two separate runs land closer to the float64 answer than Captum's one
    ``[x; b]`` batch."""
    x, b = f64(*data)
    m = mod_net().double()
    ref, ref_delta = captum_attr.DeepLift(m, multiply_by_inputs=mbi).attribute(x, b, target=2, return_convergence_delta=True)
    for net in nets(m):
        got, delta = fa.deeplift(fa.target(net, 2), b, multiply_by_inputs=mbi, return_delta=True)(x)
        close(got, ref, rtol=1e-7, floor=1e-9)
        close(delta, ref_delta, rtol=1e-6, floor=1e-9)
    if mbi:
        x32, b32 = data
        m32 = mod_net()
        err_captum = (captum_attr.DeepLift(m32).attribute(x32, b32, target=2).double() - ref).abs().max()
        err_ours = (fa.deeplift(fa.target(m32, 2), b32)(x32).double() - ref).abs().max()
        assert err_ours <= err_captum
        assert err_ours < 1e-3 * ref.abs().max()


def test_deeplift_softmax_head_differs_from_captum_and_is_complete(data):
    """Captum rescales a softmax module as a whole and subtracts the mean multiplier over the
    whole [2B, C] batch; funcattr decomposes softmax (exp, sum, reciprocal, product) and
    keeps summation to delta exactly, where Captum's result misses it."""
    x, b = f64(*data)
    m = mod_net(softmax=True).double()
    f = fa.target(m, 3)
    _, cap_delta = captum_attr.DeepLift(m).attribute(x, b, target=3, return_convergence_delta=True)
    for net in nets(m):
        got, delta = fa.deeplift(fa.target(net, 3), b, return_delta=True)(x)
        complete(f, got, x, b, rtol=1e-9, min_scale=1e-4)  # a nearly flat softmax head
        assert delta.abs().max() < 1e-12
    assert cap_delta.abs().max() > 1e-3 * float((m(x) - m(b))[:, 3].abs().max())


@pytest.mark.parametrize("mbi", [True, False])
def test_deeplift_shap_vs_captum(mbi, data):
    x, _ = f64(*data)
    m = mod_net().double()
    dist = 0.3 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)).double()
    ref, ref_delta = captum_attr.DeepLiftShap(m, multiply_by_inputs=mbi).attribute(x, dist, target=0, return_convergence_delta=True)
    for net in nets(m):
        got, delta = fa.deeplift_shap(fa.target(net, 0), dist, multiply_by_inputs=mbi, return_delta=True)(x)
        close(got, ref, rtol=1e-7, floor=1e-9)
        # the default delta is per example: the mean of Captum's per-(example, baseline) deltas
        assert delta.shape == (3,)
        close(delta, ref_delta.view(3, 4).mean(1), rtol=1e-6, floor=1e-9)
        # return_delta="per_sample": Captum's deltas, one per (example, baseline)
        got2, per = fa.deeplift_shap(fa.target(net, 0), dist, multiply_by_inputs=mbi, return_delta="per_sample")(x)
        assert per.shape == (3, 4)
        close(per, ref_delta.view(3, 4), rtol=1e-6, floor=1e-9)
        torch.testing.assert_close(got2, got)


def test_deeplift_shap_per_sample_delta_k_targets_and_chunks(data):
    """``[B, K, N_b]`` for K scores; equal to the per-baseline loop of fa.deeplift, whatever
    the chunking of the baselines."""
    x, _ = f64(*data)
    m = mod_net().double()
    dist = 0.3 * torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(3)).double()
    f = fa.outputs(m, [0, 4])
    _, per = fa.deeplift_shap(f, dist, return_delta="per_sample")(x)
    assert per.shape == (3, 2, 5)
    for j in range(5):
        _, dj = fa.deeplift(f, dist[j : j + 1], return_delta=True)(x)
        close(per[..., j], dj, rtol=1e-6, floor=1e-6)
    _, chunked = fa.deeplift_shap(f, dist, return_delta="per_sample", batch_size=3)(x)
    close(chunked, per, rtol=1e-6, floor=1e-6)
    with pytest.raises(ValueError, match="return_delta"):
        fa.deeplift_shap(f, dist, return_delta="each")
    with pytest.raises(ValueError, match="per_sample"):
        fa.deeplift(f, dist[:1], return_delta="per_sample")


def test_custom_attribution_func_is_a_composition(data):
    """Captum's ``custom_attribution_func(multipliers, inputs, baselines)`` is the multipliers
    (``multiply_by_inputs=False``) passed to the function."""
    x, b = f64(*data)
    m = mod_net().double()

    def custom(mult, inputs, baselines):
        return tuple((mu * (i - bl)) ** 2 for mu, i, bl in zip(mult, inputs, baselines))

    ref = captum_attr.DeepLift(m).attribute(x, b, target=1, custom_attribution_func=custom)
    mult = fa.deeplift(fa.target(m, 1), b, multiply_by_inputs=False)(x)
    close(custom((mult,), (x,), (b,))[0], ref, rtol=1e-7, floor=1e-9)

    dist = 0.3 * torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(4)).double()
    ref = captum_attr.DeepLiftShap(m).attribute(x, dist, target=1, custom_attribution_func=custom)
    ours = torch.stack(
        [custom((fa.deeplift(fa.target(m, 1), bj, multiply_by_inputs=False)(x),), (x,), (bj.expand_as(x),))[0] for bj in dist]
    ).mean(0)
    close(ours, ref, rtol=1e-7, floor=1e-9)


@pytest.mark.parametrize(
    "site, to_input",
    [("conv3", False), ("fc2", True), ("bn1", False), ("conv2", False)],
    ids=["out-conv3", "in-fc2", "out-bn1", "out-conv2"],
)
@pytest.mark.parametrize("mbi", [True, False])
def test_layer_deeplift_vs_captum(site, to_input, mbi, data):
    x, b = f64(*data)
    m = mod_net().double()
    layer = getattr(m, site)
    ref = captum_attr.LayerDeepLift(m, layer, multiply_by_inputs=mbi).attribute(x, b, target=1, attribute_to_layer_input=to_input)
    wrt = fa.input_of(layer) if to_input else layer
    for net in nets(m)[:2]:
        close(fa.deeplift(fa.target(net, 1), b, multiply_by_inputs=mbi, wrt=wrt)(x), ref, rtol=1e-7, floor=1e-9)


def test_layer_deeplift_shap_vs_captum(data):
    x, _ = f64(*data)
    m = mod_net().double()
    dist = 0.3 * torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3)).double()
    ref = captum_attr.LayerDeepLiftShap(m, m.conv3).attribute(x, dist, target=4)
    close(fa.deeplift_shap(fa.target(Twin(m, "b"), 4), dist, wrt=m.conv3)(x), ref, rtol=1e-7, floor=1e-9)


def test_maxpool1d_vs_captum():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(16, 6), nn.Tanh(), nn.Linear(6, 2)).eval().double()
    x, b = torch.randn(3, 2, 8).double(), 0.1 * torch.randn(3, 2, 8).double()
    ref = captum_attr.DeepLift(m).attribute(x, b, target=1)
    close(fa.deeplift(fa.target(m, 1), b)(x), ref, rtol=1e-7, floor=1e-9)


class _Clone(nn.Module):
    def forward(self, x):
        return x.clone()


def test_captum_chained_hooks_drift():
    """Captum 0.9.0 hooks a module's output tensor and the next module's input tensor, which
    are the same tensor when two nonlinear modules are chained (ReLU -> MaxPool2d, Sigmoid ->
    Tanh). The upstream module's hook then receives the gradient *before* the downstream rule
    rewrites it, so Captum's numbers drift and lose completeness. With an identity clone in
    between, Captum agrees with funcattr, which is complete on both."""
    torch.manual_seed(0)
    chained = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 6), nn.Sigmoid(), nn.Tanh(), nn.Linear(6, 3)).eval()
    parted = nn.Sequential(*chained[:2], _Clone(), *chained[2:6], _Clone(), *chained[6:]).eval()
    x, b = torch.randn(2, 2, 4, 4).double(), 0.1 * torch.randn(2, 2, 4, 4).double()
    chained, parted = chained.double(), parted.double()
    _, cap_delta = captum_attr.DeepLift(chained).attribute(x, b, target=1, return_convergence_delta=True)
    assert cap_delta.abs().max() > 1e-4
    ours, delta = fa.deeplift(fa.target(chained, 1), b, return_delta=True)(x)
    assert delta.abs().max() < 1e-12
    close(ours, captum_attr.DeepLift(parted).attribute(x, b, target=1), rtol=1e-7, floor=1e-9)


def test_captum_overlapping_maxpool_incomplete():
    """Captum scatters max-pool contributions with max_unpool, which keeps one of several
    windows sharing an argmax; funcattr accumulates them, as the max-pool gradient does, and
    stays complete. (Non-overlapping pools agree: the model tests above.)"""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(3, 2, 1), nn.Flatten(), nn.Linear(48, 3)).eval()
    x, b = torch.randn(2, 2, 8, 8), 0.1 * torch.randn(2, 2, 8, 8)
    _, cap_delta = captum_attr.DeepLift(m).attribute(x, b, target=1, return_convergence_delta=True)
    assert cap_delta.abs().max() > 1e-2
    _, delta = fa.deeplift(fa.target(m, 1), b, return_delta=True)(x)
    assert delta.abs().max() < 1e-5


# --------------------------------------------------------------------------- axioms and twins


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_deeplift_completeness_functional(approximate):
    f = fa.target(func_net(approximate), 1)
    g = torch.Generator().manual_seed(4)
    x, b = torch.randn(4, 2, 8, 8, generator=g), torch.randn(4, 2, 8, 8, generator=g)
    attr, delta = fa.deeplift(f, b, return_delta=True)(x)
    complete(f, attr, x, b)
    assert torch.allclose(delta, attr.flatten(1).sum(1) - (f(x) - f(b)), atol=1e-5)
    dist = torch.randn(5, 2, 8, 8, generator=g)
    _, delta = fa.deeplift_shap(f, dist, return_delta=True)(x)
    assert delta.abs().max() < 1e-5 * float((f(x) - f(b)).abs().max())


def test_deeplift_completeness_layer(data):
    """At any layer that cuts the graph (not conv2: the residual bypasses it)."""
    x, b = data
    m = mod_net()
    for net in nets(m):
        for wrt in (m.conv3, fa.input_of(m.fc1), m.bn1, m.fc3):
            _, delta = fa.deeplift(fa.target(net, 0), b, wrt=wrt, return_delta=True)(x)
            assert delta.abs().max() < 1e-6


def test_layer_deeplift_at_input_of_a_nonlinearity():
    """Attributing to the input of a nonlinear module (here an in-place ReLU): Captum takes the
    gradient at a clone its own hook made, so the module's rule is skipped and completeness
    is lost; funcattr applies the rule there, in place or not."""
    g = torch.Generator().manual_seed(1)
    x, b = torch.randn(3, 3, 8, 8, generator=g), 0.2 * torch.randn(3, 3, 8, 8, generator=g)
    m = mod_net()
    assert m.relu2.inplace
    inplace, delta = fa.deeplift(fa.target(m, 0), b, wrt=fa.input_of(m.relu2), return_delta=True)(x)
    assert delta.abs().max() < 1e-6
    _, cap_delta = captum_attr.LayerDeepLift(m, m.relu2).attribute(
        x, b, target=0, attribute_to_layer_input=True, return_convergence_delta=True
    )
    assert cap_delta.abs().max() > 1e-3
    m.relu2.inplace = False
    close(fa.deeplift(fa.target(m, 0), b, wrt=fa.input_of(m.relu2))(x), inplace)


class _Act(nn.Module):
    def __init__(self, act):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2, self.act = nn.Linear(4, 6), nn.Linear(6, 2), act
        self.l2.weight.data.mul_(3.0)

    def forward(self, x):
        return self.l2(self.act(self.l1(x)))


@pytest.mark.parametrize(
    "act",
    [
        torch.exp, lambda h: h.exp(), F.hardswish, F.mish, F.selu, F.hardtanh, nn.ReLU6(), torch.log1p, lambda h: h**2,
        lambda h: F.log_softmax(h, 1), lambda h: h * torch.sigmoid(h), lambda h: h / (1 + h.abs()), lambda h: F.normalize(h, dim=1),
        lambda h: F.layer_norm(h, (6,)), lambda h: F.rms_norm(h, (6,)), lambda h: h.std(1, keepdim=True) * h,
        lambda h: torch.einsum("bi,bj->bij", h, h).flatten(1)[:, :6],
    ],
    ids=["exp", "Tensor.exp", "hardswish", "mish", "selu", "hardtanh", "relu6", "log1p", "square", "log_softmax",
         "x*sigmoid(x)", "x/(1+|x|)", "normalize", "layer_norm", "rms_norm", "std*x", "einsum"],
)
def test_every_rule_keeps_completeness(act):
    """Elementwise functions, products, quotients, norms: each has an exact rule (no plain
    gradient); the loop twin of the batch agrees."""
    f = fa.target(_Act(act).double(), 1)
    g = torch.Generator().manual_seed(2)
    x, b = torch.randn(4, 4, generator=g).double(), 0.3 * torch.randn(4, 4, generator=g).double()
    attr = fa.deeplift(f, b)(x)
    complete(f, attr, x, b, rtol=1e-9)
    for i in range(4):
        close(fa.deeplift(f, b[i : i + 1])(x[i : i + 1])[0], attr[i], rtol=1e-9, floor=1e-12)
    fa.guided_backprop(f)(x)  # guided backprop rewrites ReLUs only and passes other ops through


@pytest.mark.parametrize(
    "fn, name",
    [
        (lambda h: h.cummax(1).values, "cummax"),
        (lambda h: h.amax(1, keepdim=True) * torch.ones_like(h), "amax"),
        (lambda h: h.sort(1).values, "sort"),
        (lambda h: h.max(1, keepdim=True).values.expand_as(h), "max"),
        (lambda h: h[:, h[0].argsort()], "mask or index"),
    ],
)
def test_no_rule_is_named(fn, name):
    f = fa.target(_Act(fn), 1)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    with pytest.raises(NotImplementedError, match=name):
        fa.deeplift(f, 0.1)(x)


# --------------------------------------------------------------------------- attention, squeeze-excite, RNNs (issue 10, defects 9 and 17)


class _Encoder(nn.Module):
    """A TransformerEncoderLayer and a linear head; ``x`` is always ``[B, L, E]``, the layer
    sees ``[L, B, E]`` when ``batch_first=False``."""

    def __init__(self, batch_first: bool, norm_first: bool):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
        self.head = nn.Linear(16, 3)
        self.batch_first = batch_first

    def forward(self, x):
        h = self.layer(x if self.batch_first else x.transpose(0, 1))
        h = h if self.batch_first else h.transpose(0, 1)
        return self.head(h.mean(1))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layer(batch_first, norm_first):
    """Attention (matmuls of two varying tensors, softmax), LayerNorm, GELU-free FFN: complete
    and equal to the loop twin. L = 8 = 2·2·B (B = 2): the sequence length a multiple of 2B
    (defect 9: a layout check by divisibility paired the wrong rows)."""
    m = _Encoder(batch_first, norm_first).eval().double()
    f = fa.target(m, 1)
    g = torch.Generator().manual_seed(6)
    x, b = torch.randn(2, 8, 16, generator=g).double(), 0.1 * torch.randn(2, 8, 16, generator=g).double()
    attr, delta = fa.deeplift(f, b, return_delta=True)(x)
    complete(f, attr, x, b, rtol=1e-9)
    for i in range(2):
        close(fa.deeplift(f, b[i : i + 1])(x[i : i + 1])[0], attr[i], rtol=1e-9, floor=1e-12)
    dist = 0.1 * torch.randn(3, 8, 16, generator=g).double()
    sh, delta = fa.deeplift_shap(f, dist, return_delta="per_sample")(x)
    assert delta.abs().max() < 1e-9 * float((f(x) - f(dist[:1])).abs().max())
    twin = torch.stack([fa.deeplift(f, dj)(x) for dj in dist]).mean(0)
    close(sh, twin, rtol=1e-9, floor=1e-12)


def test_transformer_float32_multipliers_stay_bounded():
    """Defect 17: Captum's softmax rule divides softmax differences by near-zero logit
    differences (multipliers up to 5e4). With a baseline close to x, funcattr's multipliers
    stay of the size of the gradient and the completeness gap at float32 rounding."""
    m = _Encoder(True, False).eval()
    f = fa.target(m, 0)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 8, 16, generator=g)
    b = x + 1e-4 * torch.randn(2, 8, 16, generator=g)
    mult = fa.deeplift(f, b, multiply_by_inputs=False)(x)
    p = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(m(p)[:, 0].sum(), p)[0]
    assert mult.abs().max() < 10 * grad.abs().max()
    attr, delta = fa.deeplift(f, 0.0, return_delta=True)(x)
    assert delta.abs().max() < 1e-4 * float((f(x) - f(torch.zeros_like(x))).abs().max())


def test_swin_block():
    """A Swin transformer block (shifted-window attention with its mask and relative position
    bias, LayerNorm, GELU MLP) and its patch merging, random weights at a small size."""
    from torchvision.models.swin_transformer import PatchMerging, SwinTransformerBlock

    torch.manual_seed(0)
    net = nn.Sequential(
        SwinTransformerBlock(8, 2, [4, 4], [2, 2], stochastic_depth_prob=0.0),
        PatchMerging(8),
        nn.Flatten(1),
        nn.Linear(16 * 4 * 4, 3),
    ).eval().double()
    f = fa.target(net, 2)
    g = torch.Generator().manual_seed(8)
    x, b = torch.randn(2, 8, 8, 8, generator=g).double(), 0.1 * torch.randn(2, 8, 8, 8, generator=g).double()
    attr = fa.deeplift(f, b)(x)
    complete(f, attr, x, b, rtol=1e-9)
    close(fa.deeplift(f, b[1:])(x[1:])[0], attr[1], rtol=1e-9, floor=1e-12)
    dist = 0.1 * torch.randn(2, 8, 8, 8, generator=g).double()
    _, delta = fa.deeplift_shap(f, dist, return_delta=True)(x)
    assert delta.abs().max() < 1e-9 * float((f(x) - f(dist[:1])).abs().max())


def test_swin_t_float32():
    """torchvision's swin_t itself (random weights, 32×32): complete in float32."""
    torch.manual_seed(0)
    m = torchvision.models.swin_t(num_classes=4).eval()
    f = fa.target(m, 1)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    attr = fa.deeplift(f)(x)
    complete(f, attr, x, torch.zeros_like(x), rtol=1e-4)


def test_squeeze_excite_mobilenet_v3_small():
    """mobilenet_v3_small: squeeze-excite products (x · hardsigmoid(fc(pool(x)))), hardswish."""
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small(num_classes=4).eval()
    for mod in m.modules():  # the default init is so small that the output barely depends on x
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight)
        elif isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, std=0.1)
    m = m.double()
    f = fa.target(m, 1)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(10)).double()
    attr = fa.deeplift(f)(x)
    complete(f, attr, x, torch.zeros_like(x), rtol=1e-9)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_fused_rnn_is_named(cell):
    """A fused RNN kernel has no DeepLift rule: the error names it (never a plain gradient);
    a layer after it is attributable."""
    torch.manual_seed(0)
    rnn, head = cell(5, 7, batch_first=True), nn.Linear(7, 2)
    f = fa.target(lambda z: head(rnn(z)[0][:, -1]), 1)
    x = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(11))
    with pytest.raises(NotImplementedError, match=cell.__name__.lower()):
        fa.deeplift(f, 0.0)(x)
    _, delta = fa.deeplift(f, 0.0, wrt=head, return_delta=True)(x)
    assert delta.abs().max() < 1e-5


# --------------------------------------------------------------------------- errors


def test_deeplift_errors(data):
    x, b = data
    m = mod_net()
    f = fa.target(m, 1)
    with pytest.raises(NotImplementedError, match="vmap"):  # its rules need the batched function itself
        fa.deeplift(fa.per_example(lambda z: m(z[None])[0, 1]))(x)
    with pytest.raises(ValueError, match="never ran"):
        fa.deeplift(f, wrt=nn.ReLU())(x)
    with pytest.raises(ValueError, match="distribution"):
        fa.deeplift_shap(f, torch.zeros(3, 8, 8))(x)
    with pytest.raises(ValueError, match="baseline"):
        fa.deeplift(f, torch.zeros(2, 3, 8, 8))(x)
    with pytest.raises(ValueError, match="different path"):  # data-dependent control flow
        fa.deeplift(fa.target(lambda z: m(z) if z.sum() > 0 else m(z.relu()), 1), -1.0)(x.abs())


def test_baseline_equal_to_x_in_places(data):
    """Where x = baseline (Δin = 0 at the ReLUs, in-place ones included, and at max-pool's
    argmax) the multiplier is the local derivative at x: the attributions equal Captum's, and
    for an example equal to its baseline everywhere the multipliers are the plain gradient
    (DeepLift's definition). Captum 0.9.0's multipliers there are not the gradient (pinned)."""
    x, _ = f64(*data)
    b = x.clone()
    b[:, :, :4] = 0.0  # half of each image equals x
    b[1] = x[1]  # one example equals its baseline everywhere
    m = mod_net().double()
    ref = captum_attr.DeepLift(m).attribute(x, b, target=2)
    p = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(m(p)[:, 2].sum(), p)[0]
    for net in nets(m):
        got, delta = fa.deeplift(fa.target(net, 2), b, return_delta=True)(x)
        close(got, ref, rtol=1e-7, floor=1e-9)
        assert delta.abs().max() < 1e-12
        mult = fa.deeplift(fa.target(net, 2), b, multiply_by_inputs=False)(x)
        assert torch.isfinite(mult).all()
        close(mult[1], grad[1], rtol=1e-9, floor=1e-12)
    cap_mult = captum_attr.DeepLift(m, multiply_by_inputs=False).attribute(x, b, target=2)
    assert (cap_mult[1] - grad[1]).abs().max() > 1e-2 * grad[1].abs().max()
