"""Incremental occlusion (``fa.occlusion(..., incremental=...)``): each window evaluated only
where its activations differ from the unoccluded forward. Three witnesses: plain occlusion
(itself a tested loop twin of Captum), Captum 0.9.0's ``Occlusion`` on the same model, and an
axiom (a region outside the score's receptive field gets exactly zero). Exactness is checked
in float64, where float rounding cannot hide a wrong patch, and in float32 to rtol 1e-5."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Occlusion
from helpers import close, no_hooks
from models import res_conv_net
from torch import nn

import funcattr as fa
from funcattr import _incremental, _perturb, zoo


def both(f, x, window, stride, baseline=0.0, **opts):
    """(incremental, plain) attributions of the same call."""
    inc = fa.occlusion(f, window, stride, baseline, incremental=True, **opts)(x)
    plain = fa.occlusion(f, window, stride, baseline, incremental=False, **opts)(x)
    return inc, plain


def rel(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


class OpsNet(nn.Module):
    """Every local op the incremental path knows, in awkward settings: 'same' dilated conv,
    grouped and strided convs, a 1x1 stride-2 shortcut (skips positions), avg pooling with
    padding, max pooling with ceil_mode, channel cat, PReLU, and in-place activations."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding="same", dilation=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.act = nn.PReLU(8)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
        self.short = nn.Conv2d(8, 8, 1, stride=2, bias=False)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1)
        self.c3 = nn.Conv2d(16, 12, (3, 1), padding=(1, 0))
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        h = self.act(self.bn1(self.c1(x)))
        a = F.leaky_relu(self.c2(h), 0.1, inplace=True)
        a = a + self.short(h)  # residual add with a different box
        b = F.hardswish(self.avg(a) * 0.5 + 1.0)
        h = torch.cat([a, b], dim=1)
        h = self.c3(h)
        h.relu_()
        h = self.pool(h)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def ops_net(seed=0):
    torch.manual_seed(seed)
    m = OpsNet()
    with torch.no_grad():
        m.bn1.running_mean.uniform_(-0.2, 0.2)
        m.bn1.running_var.uniform_(0.5, 1.5)
    return m.eval()


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    "make, shape, window, stride",
    [
        (res_conv_net, (2, 3, 16, 16), (3, 4, 4), (3, 2, 2)),
        (ops_net, (2, 3, 20, 18), (3, 5, 4), (3, 3, 2)),
        (ops_net, (1, 3, 20, 18), (1, 5, 5), (1, 4, 4)),  # windows over one channel at a time
        (ops_net, (1, 3, 12, 12), (3, 1, 1), (3, 1, 1)),  # pixels: odd ones never reach the shortcut
        (zoo.load, (1, 3, 64, 64), (3, 15, 15), (3, 8, 8)),  # seed 004's window at the zoo model's size
        (resnet18, (1, 3, 64, 64), (3, 16, 16), (3, 16, 16)),
    ],
)
def test_equals_plain_occlusion_in_float64(make, shape, window, stride):
    m = make().double()
    torch.manual_seed(3)
    x = torch.randn(*shape, dtype=torch.float64)
    inc, plain = both(fa.target(m, 1), x, window, stride)
    assert inc.dtype == torch.float64
    close(inc, plain, rtol=1e-9, atol=1e-12 * plain.abs().max().item())


def test_equals_plain_occlusion_in_float32_to_its_own_rounding():
    """float32: incremental and plain are both float rounding away from the float64 answer —
    incremental within 1e-5 of the largest attribution, or within 3x plain's own error (random
    resnet18 at 64 px: plain 5e-6, incremental 1.1e-5, incremental vs plain 1.5e-5)."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    for m, window, stride in [(zoo.load(), (3, 15, 15), (3, 8, 8)), (resnet18(), (3, 15, 15), (3, 8, 8))]:
        inc, plain = both(fa.target(m, 2), x, window, stride)
        truth = fa.occlusion(fa.target(m.double(), 2), window, stride, incremental=False)(x.double()).float()
        assert rel(plain, truth) < 1e-5
        assert rel(inc, truth) <= max(1e-5, 3 * rel(plain, truth))


# the seeds' settings (224 px: window 45 / stride 9, and 15 / 8) scaled down to 48 px, keeping
# the window/stride ratios: 10 / 4 and 8 / 4 (11 x 11 windows each)
SEED_SETTINGS = [((3, 10, 10), (3, 4, 4)), ((3, 8, 8), (3, 4, 4))]


@pytest.mark.parametrize("window, stride", SEED_SETTINGS)
@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "vgg11"])
def test_torchvision_models_equal_plain_occlusion_in_float64_at_the_seeds_settings(arch, window, stride):
    torch.manual_seed(0)
    m = getattr(torchvision.models, arch)(weights=None).eval()
    if arch == "vgg11":  # a small head: the 25088 x 4096 classifier in float64 would dominate the test
        m.classifier = nn.Linear(512 * 7 * 7, 10)
    m = m.double()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 48, 48, dtype=torch.float64)
    inc, plain = both(fa.target(m, 7), x, window, stride)
    close(inc, plain, rtol=1e-9, atol=1e-12 * plain.abs().max().item())


@pytest.mark.parametrize("window, stride", [((3, 15, 15), (3, 8, 8)), ((3, 13, 13), (3, 3, 3))])
def test_zoo_model_equals_plain_occlusion_in_float32_to_rtol_1e5(window, stride):
    """The zoo model at its own size (64 px): seed 004's setting, and 45 / 9 scaled to 64 px."""
    m = zoo.load()
    x, y, _ = zoo.make_shapes(2, seed=zoo.TEST_SEED)
    inc, plain = both(fa.target(m, y), x, window, stride)
    close(inc, plain, rtol=1e-5, atol=1e-5 * plain.abs().max().item())


def test_vgg11_equals_plain_occlusion():
    torch.manual_seed(0)
    m = torchvision.models.vgg11(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    inc, plain = both(fa.target(m, 5), x, (3, 32, 32), (3, 32, 32))
    assert rel(inc, plain) < 1e-5


def test_matches_captum_occlusion():
    m = zoo.load()
    x, y, _ = zoo.make_shapes(2, seed=zoo.TEST_SEED)
    ours = fa.occlusion(fa.target(m, y), (3, 15, 15), (3, 8, 8), incremental=True)(x)
    theirs = Occlusion(m).attribute(x, sliding_window_shapes=(3, 15, 15), strides=(3, 8, 8), target=y, perturbations_per_eval=64)
    close(ours, theirs, rtol=1e-4, atol=1e-5 * theirs.abs().max().item())


class Corner(nn.Module):
    """Two 3x3 convs, then only the top-left 4x4 of the map counts: the score's receptive
    field is the input's top-left 6x6."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 16, 3)

    def forward(self, x):
        h = self.c2(torch.tanh(self.c1(x)))
        return self.fc(h[:, :, :4, :4].flatten(1))


def test_a_region_outside_the_receptive_field_gets_exactly_zero():
    torch.manual_seed(0)
    m = Corner().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    a = fa.occlusion(fa.target(m, 0), (3, 2, 2), (3, 2, 2), incremental=True)(x)
    assert a[:, :, 6:, :].abs().max() == 0 and a[:, :, :, 6:].abs().max() == 0
    assert a[:, :, :6, :6].abs().min() > 0


# --------------------------------------------------------------------------- when it applies


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.c(x)
        if h.mean() > 0:  # data-dependent control flow: not traceable
            h = -h
        return self.fc(h.mean((2, 3)))


class FlipFirst(Branchy):
    def forward(self, x):
        return self.fc(self.c(x.flip(-1)).mean((2, 3)))


class RollMidway(Branchy):
    def forward(self, x):
        h = torch.relu(self.c(x))
        return self.fc(torch.roll(h, 3, dims=-1).mean((2, 3)))  # unknown op: full maps from here


class AliasedInplace(Branchy):
    def forward(self, x):
        h = self.c(x)
        v = h.flatten(2)  # a view of h ...
        h.relu_()  # ... sees this mutation
        return self.fc(h.mean((2, 3)) + v.mean(2))


class ReadAfterInplace(Branchy):
    def forward(self, x):
        h = self.c(x)
        twice = h * 2  # reads h before the mutation
        h.relu_()  # later reads of h see relu(h)
        h += twice
        return self.fc(h.mean((2, 3)))


class Flagged(Branchy):
    flip = False

    def forward(self, x):
        h = self.c(x)
        if self.flip:  # a plain Python attribute: fixed in the trace
            h = -h
        return self.fc(h.mean((2, 3)))


def plain_calls(monkeypatch):
    calls = []
    orig = _perturb._evaluate
    monkeypatch.setattr(_perturb, "_evaluate", lambda *a, **k: calls.append(1) or orig(*a, **k))
    return calls


@pytest.mark.parametrize(
    "model, match",
    [
        (Branchy(), "torch.fx cannot trace"),
        (FlipFirst(), "first op on the input, 'flip'"),
        (AliasedInplace(), "relu_.*view was taken before"),
    ],
)
def test_models_that_do_not_qualify_fall_back_or_raise(monkeypatch, model, match):
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(2, 3, 12, 12)
    f = fa.target(model, 1)
    calls = plain_calls(monkeypatch)
    close(fa.occlusion(f, (3, 3, 3), (3, 2, 2))(x), fa.occlusion(f, (3, 3, 3), (3, 2, 2), incremental=False)(x))
    assert len(calls) == 2  # both calls took the plain path
    with pytest.raises(ValueError, match=match):
        fa.occlusion(f, (3, 3, 3), (3, 2, 2), incremental=True)(x)


@pytest.mark.parametrize("model", [RollMidway, ReadAfterInplace])
def test_unknown_ops_midway_and_reads_after_in_place_ops(model):
    torch.manual_seed(0)
    m = model().double().eval()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    inc, plain = both(fa.target(m, 0), x, (3, 3, 3), (3, 2, 2))
    close(inc, plain, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "f, x, kw, match",
    [
        (fa.target(lambda x: res_conv_net()(x), 0), torch.randn(1, 3, 8, 8), {}, "not an nn.Module"),
        (lambda x: x.sum((1, 2, 3)), torch.randn(1, 3, 8, 8), {}, "not built by fa.target"),
        (fa.target(nn.Flatten()), torch.randn(1, 3, 8), {}, r"shape \[B, C, H, W\]"),
    ],
)
def test_incremental_true_says_why_it_does_not_apply(f, x, kw, match):
    window = (3,) + (2,) * (x.dim() - 2)
    with pytest.raises(ValueError, match=match):
        fa.occlusion(f, window, incremental=True)(x)


def test_train_mode_batch_norm_does_not_qualify():
    """A batch norm in train mode couples the windows of a batch: incremental=True says so,
    and the default goes to the plain path, which refuses such a model (it is never silently
    evaluated)."""
    m = resnet18().train()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="incremental occlusion does not apply.*BatchNorm2d.*train mode"):
        fa.occlusion(fa.target(m, 0), (3, 8, 8), (3, 8, 8), incremental=True)(x)
    with pytest.raises(Exception, match="eval"):
        fa.occlusion(fa.target(m, 0), (3, 8, 8), (3, 8, 8))(x)
    m.eval()
    inc, plain = both(fa.target(m, 0), x, (3, 8, 8), (3, 8, 8))
    close(inc, plain, rtol=1e-4, atol=1e-5 * plain.abs().max().item())


def test_extra_model_arguments_and_tuple_inputs_do_not_qualify():
    from models import two_input_net

    m = two_input_net()
    with pytest.raises(ValueError, match="one floating-point input"):
        fa.occlusion(fa.target(m), ((2,), (2,)), incremental=True)((torch.randn(2, 4), torch.randn(2, 3)), 1.0, target=0)
    with pytest.raises(ValueError, match="extra arguments"):
        fa.occlusion(fa.target(res_conv_net()), (3, 2, 2), incremental=True)(torch.randn(1, 3, 8, 8), scale=2)


def test_flag_is_checked():
    with pytest.raises(ValueError, match="incremental must be None"):
        fa.occlusion(fa.target(res_conv_net(), 0), (3, 2, 2), incremental="yes")


def test_a_stale_trace_is_caught_by_the_unoccluded_scores(monkeypatch):
    torch.manual_seed(0)
    m = Flagged().eval()
    x = torch.randn(2, 3, 12, 12)
    f = fa.target(m, 1)
    first = fa.occlusion(f, (3, 3, 3), (3, 2, 2), incremental=True)(x)
    close(first, fa.occlusion(f, (3, 3, 3), (3, 2, 2), incremental=False)(x), rtol=1e-5, atol=1e-6)
    m.flip = True  # the cached trace still has flip=False
    with pytest.raises(ValueError, match="does not reproduce its scores"):
        fa.occlusion(f, (3, 3, 3), (3, 2, 2), incremental=True)(x)
    calls = plain_calls(monkeypatch)
    close(fa.occlusion(f, (3, 3, 3), (3, 2, 2))(x), fa.occlusion(f, (3, 3, 3), (3, 2, 2), incremental=False)(x))
    assert len(calls) == 2


def test_forward_hooks_do_not_qualify_and_nothing_is_left_attached():
    m = res_conv_net()
    x = torch.randn(1, 3, 8, 8)
    handle = m.conv2.register_forward_hook(lambda mod, i, o: o * 2)
    with pytest.raises(ValueError, match="hooks"):
        fa.occlusion(fa.target(m, 0), (3, 2, 2), incremental=True)(x)
    handle.remove()
    fa.occlusion(fa.target(m, 0), (3, 2, 2), incremental=True)(x)
    assert no_hooks(m)


def test_none_decides_by_the_work_saved(monkeypatch):
    runs = []
    orig = _incremental._Chunk.run
    monkeypatch.setattr(_incremental._Chunk, "run", lambda self: runs.append(1) or orig(self))
    fa.occlusion(fa.target(res_conv_net(), 0), (3, 2, 2))(torch.randn(1, 3, 8, 8))  # tiny: plain
    assert not runs
    fa.occlusion(fa.target(resnet18(), 0), (3, 15, 15), (3, 8, 8))(torch.randn(1, 3, 64, 64))  # saves 15%: plain
    assert not runs
    x, _, _ = zoo.make_shapes(1, seed=zoo.TEST_SEED)
    fa.occlusion(fa.target(zoo.load(), 0), (3, 15, 15), (3, 8, 8))(x)  # saves 66%
    assert runs


# --------------------------------------------------------------------------- the call's options


def test_batch_size_does_not_change_the_result():
    m = zoo.load().double()
    x, _, _ = zoo.make_shapes(2, seed=zoo.TEST_SEED)
    x = x.double()
    f = fa.target(m, 0)
    a = fa.occlusion(f, (3, 16, 16), (3, 12, 12), incremental=True)(x)
    for bs in (2, 6):
        close(fa.occlusion(f, (3, 16, 16), (3, 12, 12), incremental=True, batch_size=bs)(x), a, rtol=1e-10, atol=1e-14)


def test_k_scores_topk_and_per_example_targets():
    m = zoo.load().double()
    x, y, _ = zoo.make_shapes(2, seed=zoo.TEST_SEED)
    x = x.double()
    w, s = (3, 16, 16), (3, 16, 16)
    for f, kw in [
        (fa.outputs(m, [0, 3, 5]), {}),
        (fa.outputs(m, topk=2), {}),
        (fa.target(m, y.tolist()), {}),
        (fa.target(m), {"target": y}),
    ]:
        inc = fa.occlusion(f, w, s, incremental=True)(x, **kw)
        plain = fa.occlusion(f, w, s, incremental=False)(x, **kw)
        close(inc, plain, rtol=1e-9, atol=1e-12)
    assert inc.shape == x.shape


def test_per_example_baseline_and_no_grad_around_the_call():
    m = ops_net().double()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 20, 18, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 3, 20, 18, dtype=torch.float64)
    with torch.no_grad():
        inc, plain = both(fa.target(m, [0, 2, 3]), x, (3, 6, 5), (3, 4, 3), baseline=b)
    close(inc, plain, rtol=1e-9, atol=1e-12)
    assert not inc.requires_grad


def test_bf16_is_as_close_to_fp32_as_plain_bf16():
    m = zoo.load()
    x, y, _ = zoo.make_shapes(1, seed=zoo.TEST_SEED)
    f = fa.target(m, y)
    ref = fa.occlusion(f, (3, 15, 15), (3, 8, 8), incremental=False)(x)
    plain = fa.occlusion(f, (3, 15, 15), (3, 8, 8), incremental=False, precision="bf16")(x)
    inc = fa.occlusion(f, (3, 15, 15), (3, 8, 8), incremental=True, precision="bf16")(x)
    assert rel(inc, ref) < 2 * rel(plain, ref) + 1e-2


def test_flops_are_saved_where_windows_are_small_and_not_after_global_ops():
    table = {name: (plain, inc) for name, _, plain, inc in _incremental.flops(resnet18(), (3, 224, 224), (3, 45, 45), (3, 9, 9))}
    assert table["conv1"][1] < 0.1 * table["conv1"][0]
    assert table["fc"][1] == table["fc"][0]
    assert sum(i for _, i in table.values()) < 0.6 * sum(p for p, _ in table.values())
