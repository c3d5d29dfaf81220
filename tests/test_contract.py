"""The contract every public method owes, driven by one table (STYLE 11, DESIGN §5–6).

Each row of ``METHODS`` builds a method on the table's model; the tests below run every row
through the same properties: a loop twin over targets and examples, ``batch_size=1`` against
the default, tuple inputs, dtype and device kept, ``torch.no_grad()`` around the call,
per-example baselines/masks inside ``noise_tunnel(samples=6)``, ``wrt=`` a layer followed by an
in-place op, two threads on one model, nothing left behind (also after an error mid-call),
and identical calls bitwise identical (the first included).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from helpers import close, no_hooks
from torch import nn

import funcattr as fa
from funcattr import _fold, _sites


class Net(nn.Module):
    """In-place ReLU after conv1 (the ``wrt=`` layer), one ReLU module used twice, eval
    BatchNorm, max-pool, a functional ReLU, and a global-average-pool + linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(6, 8, 3, padding=1)
        self.feat = nn.Identity()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.act(self.conv1(x))
        h = self.pool(self.act(self.bn(self.conv2(h))))
        h = self.feat(F.relu(self.conv3(h)))
        return self.fc(h.mean((2, 3)))


class TwoNet(nn.Module):
    """Two inputs: an image and a vector."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.lin = nn.Linear(5, 4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x, v):
        h = self.act(self.conv1(x)).mean((2, 3))
        return self.fc(h + torch.tanh(self.lin(v)))


def make_net(dtype=torch.float32) -> Net:
    torch.manual_seed(0)
    m = Net()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m.eval().to(dtype)


def make_two(dtype=torch.float32) -> TwoNet:
    torch.manual_seed(1)
    return TwoNet().eval().to(dtype)


def inputs(B=3, dtype=torch.float32, two=False):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(B, 3, 8, 8, generator=g, dtype=dtype)
    return (x, torch.randn(B, 5, generator=g, dtype=dtype)) if two else x


def gen():
    return torch.Generator().manual_seed(0)


def superpixels(two):
    img = (torch.arange(8) // 4).view(1, 8) + 2 * (torch.arange(8) // 4).view(8, 1)  # 4 blocks of 4x4
    img = img.view(1, 1, 8, 8)
    return (img, torch.tensor([[4, 4, 5, 5, 6]])) if two else img


def dist(two, dtype=torch.float32, n=4):
    g = torch.Generator().manual_seed(9)
    d = torch.randn(n, 3, 8, 8, generator=g, dtype=dtype)
    return (d, torch.randn(n, 5, generator=g, dtype=dtype)) if two else d


@dataclasses.dataclass
class Row:
    """``build(f, model, two, hp)`` makes the attribution function; ``hp`` carries a
    per-example baseline or mask when the property needs one."""

    build: Callable
    wrt: Callable | None = None  # build(f, model, layer) for methods that take wrt=
    two: bool = True  # works on tuple inputs
    loop: bool = True  # batch result == per-example results
    per_example: str | None = None  # "baseline" | "mask": its per-example form is tested inside noise_tunnel
    targets: bool = True  # f takes per-example targets (False: the function is fixed, e.g. a neuron)
    layer: bool = False  # attributes to a layer: results are shaped like the layer, not the inputs


def line(xs, a):
    return tuple(a.view(-1, *[1] * x.dim()).to(x.dtype) * x for x in xs)


def _occ(f, m, two):
    return fa.occlusion(f, window=((3, 4, 4), (2,)) if two else (3, 4, 4), stride=((3, 2, 2), (1,)) if two else (3, 2, 2))


METHODS = {
    "saliency": Row(lambda f, m, two, hp: fa.saliency(f), wrt=lambda f, m, L: fa.saliency(f, abs=False, wrt=L)),
    "input_x_gradient": Row(lambda f, m, two, hp: fa.input_x_gradient(f), wrt=lambda f, m, L: fa.input_x_gradient(f, wrt=L)),
    "integrated_gradients": Row(
        lambda f, m, two, hp: fa.integrated_gradients(f, baseline=hp.get("baseline", 0.0), steps=6),
        wrt=lambda f, m, L: fa.integrated_gradients(f, steps=6, wrt=L),
        per_example="baseline",
    ),
    "path_integral": Row(lambda f, m, two, hp: fa.path_integral(f, line, steps=6)),
    "blur_integrated_gradients": Row(lambda f, m, two, hp: fa.blur_integrated_gradients(f, sigma=1.0, steps=6), two=False),
    "noise_tunnel": Row(lambda f, m, two, hp: fa.noise_tunnel(fa.saliency(f), samples=3, stdev=0.1, generator=gen()), loop=False),
    "gradient_shap": Row(
        lambda f, m, two, hp: fa.gradient_shap(f, dist(two, hp["dtype"]), samples=4, stdev=0.05, generator=gen()),
        wrt=lambda f, m, L: fa.gradient_shap(f, dist(False), samples=4, generator=gen(), wrt=L),
        loop=False,
    ),
    "expected_gradients": Row(
        lambda f, m, two, hp: fa.expected_gradients(f, dist(two, hp["dtype"]), samples=4, generator=gen()),
        wrt=lambda f, m, L: fa.expected_gradients(f, dist(False), samples=4, generator=gen(), wrt=L),
        loop=False,
    ),
    "gradcam": Row(lambda f, m, two, hp: fa.gradcam(f, m.conv1), layer=True),
    "cam": Row(lambda f, m, two, hp: fa.cam(f, m.feat), two=False),
    "conductance": Row(
        lambda f, m, two, hp: fa.conductance(f, m.conv1, steps=6, baseline=hp.get("baseline", 0.0)), per_example="baseline", layer=True
    ),
    "neuron_conductance": Row(lambda f, m, two, hp: fa.conductance(f, fa.neuron(m, m.conv1, (1, 2, 2)), steps=6)),
    "neuron_integrated_gradients": Row(lambda f, m, two, hp: fa.integrated_gradients(fa.neuron(m, m.conv1, (1, 2, 2)), steps=6), targets=False),
    "guided_backprop": Row(lambda f, m, two, hp: fa.guided_backprop(f), wrt=lambda f, m, L: fa.guided_backprop(f, wrt=L)),
    "deconvolution": Row(lambda f, m, two, hp: fa.deconvolution(f), wrt=lambda f, m, L: fa.deconvolution(f, wrt=L)),
    "deeplift": Row(
        lambda f, m, two, hp: fa.deeplift(f, baseline=hp.get("baseline", 0.0)),
        wrt=lambda f, m, L: fa.deeplift(f, wrt=L),
        per_example="baseline",
    ),
    "deeplift_shap": Row(lambda f, m, two, hp: fa.deeplift_shap(f, dist(two, hp["dtype"], 3)), wrt=lambda f, m, L: fa.deeplift_shap(f, dist(False, n=3), wrt=L)),
    "guided_gradcam": Row(lambda f, m, two, hp: fa.guided_gradcam(f, m.conv1), two=False),
    "occlusion": Row(lambda f, m, two, hp: _occ(f, m, two)),
    "feature_ablation": Row(lambda f, m, two, hp: fa.feature_ablation(f, mask=hp.get("mask", superpixels(two))), per_example="mask"),
    "feature_permutation": Row(lambda f, m, two, hp: fa.feature_permutation(f, mask=superpixels(two), generator=gen()), loop=False),
    "shapley_values": Row(lambda f, m, two, hp: fa.shapley_values(f, mask=hp.get("mask", superpixels(two))), per_example="mask"),
    "shapley_sampling": Row(lambda f, m, two, hp: fa.shapley_sampling(f, mask=superpixels(two), samples=3, generator=gen())),
    "kernel_shap": Row(lambda f, m, two, hp: fa.kernel_shap(f, mask=superpixels(two), samples=12, generator=gen())),
    "lime": Row(lambda f, m, two, hp: fa.lime(f, mask=superpixels(two), samples=12, generator=gen())),
}

ALL = sorted(METHODS)
LABELS = torch.tensor([2, 0, 3])


def build(name, f, m, two=False, dtype=torch.float32, **hp):
    return METHODS[name].build(f, m, two, {"dtype": dtype, **hp})


def call(name, fn, x, target=LABELS):
    if not METHODS[name].targets:
        return fn(x)
    return fn(x, target=target)


def as_tuple(a):
    return a if isinstance(a, tuple) else (a,)


def test_the_table_covers_every_public_method():
    methods = set(fa.__all__) - {"target", "outputs", "per_example", "input_of", "options", "metrics", "viz", "upsample", "neuron", "activation"}
    covered = {n for n in METHODS} | {"neuron", "conductance"}
    assert methods <= covered, methods - covered


@pytest.mark.parametrize("name", [n for n in ALL if METHODS[n].loop])
def test_loop_twin_over_examples_and_targets(name):
    m, x = make_net(), inputs()
    batch = call(name, build(name, fa.target(m), m), x)
    for i in range(x.shape[0]):
        one = call(name, build(name, fa.target(m), m), x[i : i + 1], LABELS[i : i + 1])
        for a, b in zip(as_tuple(batch), as_tuple(one)):
            close(a[i : i + 1], b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_batch_size_one_gives_the_same_result(name):
    m, x = make_net(), inputs()
    ref = call(name, build(name, fa.target(m), m), x)
    with fa.options(batch_size=1):
        small = call(name, build(name, fa.target(m), m), x)
    for a, b in zip(as_tuple(ref), as_tuple(small)):
        close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in ALL if METHODS[n].two])
def test_tuple_inputs_give_a_tuple_shaped_like_them(name):
    m, xs = make_two(), inputs(two=True)
    out = call(name, build(name, fa.target(m), m, two=True), xs)
    if METHODS[name].layer:  # one map of the layer, whatever the inputs
        assert isinstance(out, torch.Tensor) and out.shape[0] == 3 and torch.isfinite(out).all()
        return
    assert isinstance(out, tuple) and len(out) == 2
    for a, x in zip(out, xs):
        assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()


@pytest.mark.parametrize("name", ALL)
def test_dtype_and_device_are_kept(name):
    m, x = make_net(torch.float64), inputs(dtype=torch.float64)
    out = as_tuple(call(name, build(name, fa.target(m), m, dtype=torch.float64), x))
    assert all(a.dtype == torch.float64 and a.device == x.device and not a.requires_grad for a in out)


@pytest.mark.parametrize("name", ALL)
def test_runs_inside_no_grad_and_inference_mode(name):
    m, x = make_net(), inputs()
    ref = call(name, build(name, fa.target(m), m), x)
    with torch.no_grad():
        ng = call(name, build(name, fa.target(m), m), x)
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        xi = inputs()
        im = call(name, build(name, fa.target(m), m), xi)
    for a, b, c in zip(as_tuple(ref), as_tuple(ng), as_tuple(im)):
        assert torch.equal(a, b)
        close(c.clone(), a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", [n for n in ALL if METHODS[n].per_example])
def test_per_example_hyperparameters_follow_noise_tunnel_samples(name):
    """Per-example baselines/masks keep one entry per example inside noise_tunnel, whatever
    the executor's chunking; with no noise the tunnel's mean is the method itself."""
    m, x = make_net(), inputs()
    if METHODS[name].per_example == "baseline":
        hp = {"baseline": torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.1}
    else:
        ids = superpixels(False).expand(3, 1, 8, 8).clone()
        ids[1] = ids[1] // 2  # example 1 has 2 features, the others 4
        hp = {"mask": ids}
    method = build(name, fa.target(m), m, **hp)
    ref = call(name, method, x)
    for bs in (None, 3 * 2):  # all samples at once, and 2 samples per call
        with fa.options(batch_size=bs):
            nt = call(name, fa.noise_tunnel(method, samples=6, stdev=0.0), x)
        close(nt, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in ALL if METHODS[n].wrt])
def test_wrt_a_layer_followed_by_an_in_place_op(name):
    """conv1 feeds ReLU(inplace=True): the layer's value must not be overwritten."""
    m, x = make_net(), inputs()
    out = call(name, METHODS[name].wrt(fa.target(m), m, m.conv1), x)
    assert out.shape == (3, 6, 8, 8) and torch.isfinite(out).all()
    assert no_hooks(m)
    m.act.inplace = False  # the same model without the in-place op gives the same attributions
    close(call(name, METHODS[name].wrt(fa.target(m), m, m.conv1), x), out, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ALL)
def test_two_threads_on_one_model(name):
    """Thread A runs the method while thread B runs GradCAM (which hooks conv1) on the same
    model: each sees only its own hooks and gets the single-thread results."""
    m, x = make_net(), inputs()
    ref = call(name, build(name, fa.target(m), m), x)
    ref_cam = fa.gradcam(fa.target(m), m.conv1)(x, target=LABELS)
    errors, wrong = [], []

    def run_method():
        try:
            for _ in range(4):
                got = call(name, build(name, fa.target(m), m), x)
                if not all(torch.equal(a, b) for a, b in zip(as_tuple(got), as_tuple(ref))):
                    wrong.append(name)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def run_cam():
        try:
            for _ in range(8):
                if not torch.equal(fa.gradcam(fa.target(m), m.conv1)(x, target=LABELS), ref_cam):
                    wrong.append("gradcam")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=run_method), threading.Thread(target=run_cam)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong, (errors, wrong)
    assert no_hooks(m)


class Boom(nn.Module):
    """A model that fails on its ``fail_at``-th forward."""

    def __init__(self, inner, fail_at):
        super().__init__()
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return self.inner(x)


def nothing_left(m) -> None:
    assert no_hooks(m)
    mm = torch.nn.modules.module
    assert not (mm._global_forward_hooks or mm._global_forward_pre_hooks or mm._global_backward_hooks)
    assert torch.overrides._get_current_function_mode_stack() == []
    assert torch.is_grad_enabled()
    assert _fold.current() is None and _sites._active.get() == ()


@pytest.mark.parametrize("fail_at", [1, 2])
@pytest.mark.parametrize("name", ALL)
def test_nothing_is_left_behind_also_after_an_error_mid_call(name, fail_at):
    net = make_net()
    m = Boom(net, fail_at)
    x = inputs()
    try:
        call(name, build(name, fa.target(m), net), x)
    except RuntimeError as err:
        assert "boom" in str(err)
    nothing_left(net)
    net2 = make_net()
    call(name, build(name, fa.target(net2), net2), x)
    nothing_left(net2)


@pytest.mark.parametrize("name", ALL)
def test_identical_calls_are_bitwise_identical_the_first_included(name):
    m, x = make_net(), inputs()
    f = fa.target(m)  # a new function: nothing cached for it yet
    first = call(name, build(name, f, m), x)
    second = call(name, build(name, f, m), x)
    assert all(torch.equal(a, b) for a, b in zip(as_tuple(first), as_tuple(second)))
