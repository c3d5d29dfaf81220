"""funcattr.compat's metrics and pictures against Captum 0.9.0: infidelity, sensitivity_max
and the perturbation decorator on the same arguments; the drawn heat maps equal Captum's
pixel for pixel; Captum's return values; the deliberate differences."""

import captum.metrics as CM
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from captum import attr as C  # noqa: E402
from captum.attr import visualization as CV  # noqa: E402
from captum.testing.helpers.basic_models import BasicModel_MultiLayer  # noqa: E402
from helpers import close  # noqa: E402

import funcattr.compat as X  # noqa: E402
from funcattr.compat import metrics as XM  # noqa: E402
from funcattr.compat import visualization as XV  # noqa: E402
from test_compat import cnn, multi  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------- metrics


def _shrink(inputs, baselines):
    """Deterministic and row-wise: the same numbers whatever the layout of the samples."""
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    bs = baselines if isinstance(baselines, tuple) else (baselines,) * len(xs)
    pert = tuple(0.3 * (x - b) for x, b in zip(xs, bs))
    new = tuple(x - p for x, p in zip(xs, pert))
    return (pert, new) if isinstance(inputs, tuple) else (pert[0], new[0])


def test_infidelity_of_the_whole_path_is_the_squared_delta():
    """Perturbing all the way to the baseline (I = x − b) makes the infidelity of IG's local
    attributions (multiply_by_inputs=False, so Σ attr·I is IG's sum) its convergence delta squared."""
    m, x = BasicModel_MultiLayer(), torch.arange(1.0, 13.0).view(4, 3)
    b = torch.ones(4, 3)
    _, delta = X.IntegratedGradients(m).attribute(x, baselines=b, target=[0, 1, 1, 0], n_steps=5,
                                                  return_convergence_delta=True)
    attrs = X.IntegratedGradients(m, multiply_by_inputs=False).attribute(x, baselines=b, target=[0, 1, 1, 0],
                                                                         n_steps=5)

    def whole(inputs, baselines):
        return inputs - baselines, baselines

    ours = XM.infidelity(m, whole, x, attrs, baselines=b, target=[0, 1, 1, 0], n_perturb_samples=3)
    theirs = CM.infidelity(m, whole, x, attrs, baselines=b, target=[0, 1, 1, 0], n_perturb_samples=3)
    close(ours, theirs)
    close(ours, delta**2, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_tuple_inputs_args_and_batches(normalize):
    m, xs = multi()
    attrs = X.IntegratedGradients(m).attribute(xs, target=[0, 1], additional_forward_args=(1,), n_steps=10)
    b = (0.0, torch.ones(1, 3), 2.0)
    kw = dict(baselines=b, additional_forward_args=(1,), target=[0, 1], n_perturb_samples=4, normalize=normalize)
    close(XM.infidelity(m, _shrink, xs, attrs, max_examples_per_batch=4, **kw),
          CM.infidelity(m, _shrink, xs, attrs, max_examples_per_batch=4, **kw), rtol=1e-4)


@pytest.mark.parametrize("mbi", [True, False])
def test_infidelity_perturb_func_decorator(x3, mbi):
    m = cnn()
    attrs = X.Saliency(m).attribute(x3, target=1, abs=False)

    def scaled(inputs, baselines=None):
        return inputs * 0.9 if baselines is None else baselines + 0.9 * (inputs - baselines)

    for b in (None, 0.5):
        ours = XM.infidelity(m, XM.infidelity_perturb_func_decorator(mbi)(scaled), x3, attrs, baselines=b, target=1)
        theirs = CM.infidelity(m, CM.infidelity_perturb_func_decorator(mbi)(scaled), x3, attrs, baselines=b, target=1)
        close(ours, theirs, rtol=1e-4)


@pytest.fixture
def x3():
    torch.manual_seed(3)
    return torch.randn(3, 3, 7, 7)


def _nudge(inputs, perturb_radius):
    return inputs + perturb_radius * torch.sign(inputs)


def test_sensitivity_max_with_a_compat_explanation(x3):
    m = cnn()
    kw = dict(perturb_func=_nudge, perturb_radius=0.05, n_perturb_samples=3, target=[0, 2, 1])
    close(XM.sensitivity_max(X.Saliency(m).attribute, x3, **kw),
          CM.sensitivity_max(C.Saliency(m).attribute, x3, **kw), rtol=1e-4)
    kw = dict(perturb_func=_nudge, n_perturb_samples=2, target=1, baselines=x3 * 0.5, n_steps=8,
              max_examples_per_batch=3)
    close(XM.sensitivity_max(X.IntegratedGradients(m).attribute, x3, **kw),
          CM.sensitivity_max(C.IntegratedGradients(m).attribute, x3, **kw), rtol=1e-4)


def test_sensitivity_max_default_perturbation():
    """Uniform noise in [−r, r]: a constant explanation (saliency of a linear model) never moves."""
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 2)
    x = torch.randn(5, 4)
    s = XM.sensitivity_max(X.Saliency(m).attribute, x, target=1)
    assert s.shape == (5,) and float(s.abs().max()) < 1e-6
    moved = XM.default_perturb_func(x, 0.1)
    assert moved.shape == x.shape and float((moved - x).abs().max()) <= 0.1


# --------------------------------------------------------------------------- pictures


def _hwc(t):
    return np.transpose(t.squeeze().cpu().detach().numpy(), (1, 2, 0))


@pytest.fixture
def pics():
    torch.manual_seed(0)
    attr = torch.randn(3, 12, 10)
    image = torch.rand(3, 12, 10)
    return _hwc(attr), _hwc(image)


@pytest.mark.parametrize("sign", ["all", "positive", "negative", "absolute_value"])
def test_heat_map_pixels_equal_captums(pics, sign):
    attr, _ = pics
    fig, ax = XV.visualize_image_attr(attr, method="heat_map", sign=sign, show_colorbar=True, title="t")
    fig2, ax2 = CV.visualize_image_attr(attr, method="heat_map", sign=sign, show_colorbar=True, title="t")
    assert isinstance(fig, matplotlib.figure.Figure) and isinstance(ax, matplotlib.axes.Axes)
    np.testing.assert_allclose(ax.images[0].get_array(), ax2.images[0].get_array(), rtol=1e-6)
    assert ax.images[0].get_clim() == ax2.images[0].get_clim()
    assert ax.get_title() == ax2.get_title() == "t"
    assert len(fig.axes) == len(fig2.axes) == 2  # the colorbar axis


@pytest.mark.parametrize("method", ["blended_heat_map", "masked_image", "alpha_scaling", "original_image"])
def test_image_methods_match_captum(pics, method):
    attr, image = pics
    sign = "positive"
    fig, ax = XV.visualize_image_attr(attr, image, method=method, sign=sign, outlier_perc=5, alpha_overlay=0.3)
    fig2, ax2 = CV.visualize_image_attr(attr, image, method=method, sign=sign, outlier_perc=5, alpha_overlay=0.3)
    assert len(ax.images) == len(ax2.images)
    ours, theirs = ax.images[-1].get_array(), ax2.images[-1].get_array()
    if method == "blended_heat_map":
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
        assert ax.images[-1].get_alpha() == ax2.images[-1].get_alpha() == 0.3
    else:  # Captum draws 0-255 ints, truncating the image and then the masked image; funcattr floats in [0, 1]
        np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float) / 255,
                                   atol=2.01 / 255)


def test_multiple_matches_captum(pics):
    attr, image = pics
    methods, signs = ["original_image", "heat_map", "heat_map", "masked_image"], ["all", "positive", "negative", "positive"]
    titles = ["Original", "Positive", "Negative", "Masked"]
    fig, axes = XV.visualize_image_attr_multiple(attr, image, methods, signs, show_colorbar=True, titles=titles,
                                                 fig_size=(18, 6))
    fig2, axes2 = CV.visualize_image_attr_multiple(attr, image, methods, signs, show_colorbar=True, titles=titles,
                                                   fig_size=(18, 6))
    assert type(axes) is type(axes2) and len(axes) == len(axes2) == 4
    assert [a.get_title() for a in axes] == titles
    for a, b in zip(axes[1:3], axes2[1:3]):
        np.testing.assert_allclose(a.images[0].get_array(), b.images[0].get_array(), rtol=1e-6)
    fig, ax = XV.visualize_image_attr_multiple(attr, image, ["heat_map"], ["all"], use_pyplot=False)
    _, ax2 = CV.visualize_image_attr_multiple(attr, image, ["heat_map"], ["all"], use_pyplot=False)
    assert isinstance(ax, matplotlib.axes.Axes) and isinstance(ax2, matplotlib.axes.Axes)  # one method: the axis
    assert fig not in [plt.figure(n) for n in plt.get_fignums()]  # use_pyplot=False leaves nothing open


def test_into_given_axes(pics):
    attr, image = pics
    fig, ax = plt.subplots()
    out = XV.visualize_image_attr(attr, image, "blended_heat_map", "all", plt_fig_axis=(fig, ax), use_pyplot=False)
    assert out == (fig, ax) and len(ax.images) == 2


def test_difference_original_image_without_attr(pics):
    """Captum documents attr=None for original_image, but 0.9.0 fails on it (attr.shape)."""
    _, image = pics
    with pytest.raises(AttributeError):
        CV.visualize_image_attr(None, image, method="original_image")
    fig, ax = XV.visualize_image_attr(None, image, method="original_image", title="Original Image")
    np.testing.assert_allclose(ax.images[0].get_array(), image)


def test_difference_zero_attribution_draws_an_empty_map():
    with pytest.raises(AssertionError, match="scale factor = 0"):
        CV.visualize_image_attr(np.zeros((4, 4, 3)), sign="all")
    fig, ax = XV.visualize_image_attr(np.zeros((4, 4, 3)), sign="all")
    assert not ax.images[0].get_array().any()


def test_timeseries():
    """Captum 0.9.0's own visualize_timeseries_attr fails on matplotlib >= 3.9 (cm.get_cmap is
    gone), so the witness is its documented layout: one panel per channel (an array of axes),
    one panel for overlay_combined (the axis), each channel's line drawn."""
    rng = np.random.default_rng(1)
    attr, data = rng.standard_normal((30, 2)), rng.standard_normal((30, 2))
    with pytest.raises(AttributeError, match="get_cmap"):
        CV.visualize_timeseries_attr(attr, data, sign="all", use_pyplot=False)
    fig, axes = XV.visualize_timeseries_attr(attr, data, method="overlay_individual", sign="all",
                                             channel_labels=["a", "b"], use_pyplot=False)
    assert isinstance(axes, np.ndarray) and axes.shape == (2,)
    for ax, ch in zip(axes, data.T):
        np.testing.assert_allclose(ax.lines[0].get_ydata(), ch)
    fig, ax = XV.visualize_timeseries_attr(attr, data, method="overlay_combined", sign="all", use_pyplot=False)
    assert isinstance(ax, matplotlib.axes.Axes) and len(ax.lines) == 2
    fig, axes = XV.visualize_timeseries_attr(attr, data, method="colored_graph", sign="all", use_pyplot=False)
    assert isinstance(axes, np.ndarray) and axes.shape == (2,)
    with pytest.raises(NotImplementedError, match="plt_fig_axis"):
        XV.visualize_timeseries_attr(attr, data, plt_fig_axis=plt.subplots())


def test_visualize_text():
    rec = XV.VisualizationDataRecord(torch.tensor([0.5, -0.2, 1.5]), 0.91, "pos", "neg", "pos", 1.234,
                                     ["good", "<bad>", "movie"], 0.01)
    out = XV.visualize_text([rec, rec])
    assert out.data == str(out) and out._repr_html_() == str(out)
    for text in ("True Label", "Word Importance", "pos (0.91)", "1.23", "&lt;bad&gt;", "Legend"):
        assert text in out
    assert out.count("<tr>") == 3
    assert "hsl(120, 75%, 50%)" in out  # 1.5 clipped to 1, not normalized (Captum's colors)
    assert "Legend" not in XV.visualize_text([rec], legend=False)
