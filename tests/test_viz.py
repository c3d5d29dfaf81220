"""funcattr.viz against Captum 0.9.0's visualization (the reference oracle)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from captum.attr import visualization as captum_viz  # noqa: E402
from captum.attr._utils.visualization import _normalize_attr  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402

from funcattr import viz  # noqa: E402

SIGNS = ["all", "positive", "negative", "absolute_value"]
METHODS = ["heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _attr(seed, shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _captum_norm(hwc, sign, outlier_perc=2):
    # captum 0.9.0 sums channels in visualize_image_attr, not in _normalize_attr
    return _normalize_attr(np.sum(hwc, axis=2) if hwc.ndim == 3 else hwc, sign, outlier_perc)


# ------------------------------------------------------------------ normalization


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("channels", [1, 3])
def test_normalize_equals_captum(sign, seed, channels):
    chw = _attr(seed, (channels, 12, 15), scale=10.0 ** (seed - 1))
    hwc_view = np.transpose(chw, (1, 2, 0))  # what a Captum user passes for a CHW tensor
    hwc = np.ascontiguousarray(hwc_view)
    expected_view, expected = _captum_norm(hwc_view, sign), _captum_norm(hwc, sign)
    for got, exp in [
        (viz.normalize(torch.from_numpy(chw), sign), expected_view),  # CHW tensor
        (viz.normalize(torch.from_numpy(chw)[None], sign), expected_view),  # 1xCxHxW
        (viz.normalize(hwc, sign), expected),  # HWC array
        (viz.normalize(chw, sign), expected_view),  # CHW array is accepted too
    ]:
        assert got.shape == (12, 15) and got.dtype == exp.dtype
        np.testing.assert_array_equal(got, exp)


@pytest.mark.parametrize("outlier_perc", [0.5, 10, 50])
def test_normalize_outlier_perc_and_2d(outlier_perc):
    hw = _attr(7, (9, 11))
    for sign in SIGNS:
        np.testing.assert_array_equal(viz.normalize(hw, sign, outlier_perc), _normalize_attr(hw, sign, outlier_perc))
        np.testing.assert_array_equal(viz.normalize(torch.from_numpy(hw), sign, outlier_perc),
                                      _normalize_attr(hw, sign, outlier_perc))


def test_normalize_all_zero_and_one_signed():
    for sign in SIGNS:
        assert not viz.normalize(torch.zeros(3, 5, 5), sign).any()
    # only positive values: the negative map is empty (Captum raises here)
    assert not viz.normalize(torch.rand(3, 5, 5) + 0.1, "negative").any()
    with pytest.raises(ValueError, match="absolute_value"):
        viz.normalize(torch.rand(3, 5, 5), "abs")


# ------------------------------------------------------------------ image


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("channels", [1, 3])
def test_heat_map_matches_captum_figure(sign, channels):
    chw = _attr(11 + channels, (channels, 10, 13))
    hwc = np.ascontiguousarray(np.transpose(chw, (1, 2, 0)))
    _, ref_ax = captum_viz.visualize_image_attr(hwc, method="heat_map", sign=sign, use_pyplot=False)
    ref = ref_ax.images[0]
    for attr in (hwc, torch.from_numpy(np.ascontiguousarray(chw))):
        fig, ax = viz.image(attr, sign=sign)
        assert ax.figure is fig and len(ax.images) == 1
        got = ax.images[0]
        # a CHW tensor sums in another memory order than the contiguous HWC array: last-ulp differences
        np.testing.assert_allclose(got.get_array(), ref.get_array(), rtol=0, atol=1e-6)
        assert got.get_cmap().name == ref.get_cmap().name
        assert got.get_clim() == ref.get_clim()
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    np.testing.assert_array_equal(viz.image(hwc, sign=sign)[1].images[0].get_array(), ref.get_array())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sign", SIGNS)
def test_every_method_and_sign(method, sign):
    attr = torch.randn(3, 8, 8)
    img = torch.rand(3, 8, 8)
    if method in ("masked_image", "alpha_scaling") and sign == "all":
        with pytest.raises(ValueError, match="sign"):
            viz.image(attr, img, method=method, sign=sign)
        return
    fig, ax = viz.image(attr, img, method=method, sign=sign, show_colorbar=True, title="t")
    assert ax.get_title() == "t" and len(ax.images) >= 1
    assert len(fig.axes) == 2  # the colorbar axis (hidden when nothing is mapped)
    if method != "heat_map":
        with pytest.raises(ValueError, match="image"):
            viz.image(attr, method=method, sign=sign)
    # grayscale image, HW numpy and 1xHxW tensor
    for gray in (np.random.rand(8, 8), torch.rand(1, 8, 8)):
        viz.image(attr, gray, method=method, sign=sign)


def test_bad_method_and_sign_list_choices():
    with pytest.raises(ValueError, match="heat_map.*alpha_scaling"):
        viz.image(torch.randn(3, 4, 4), method="heatmap")
    with pytest.raises(ValueError, match="positive.*absolute_value"):
        viz.image(torch.randn(3, 4, 4), sign="pos")
    with pytest.raises(ValueError, match="shape"):
        viz.image(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError):
        viz.image(torch.randn(3, 4, 4), torch.rand(3, 5, 5), method="blended_heat_map")


def test_all_zero_attribution_draws_zeros():
    fig, ax = viz.image(torch.zeros(3, 6, 6), sign="all")
    assert not np.asarray(ax.images[0].get_array()).any()
    viz.image(np.zeros((6, 6, 3)), np.random.rand(6, 6, 3), method="masked_image", sign="positive")


def test_original_image_rescaling_and_unnormalize():
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    pixels = np.random.default_rng(0).uniform(0.05, 0.95, (3, 7, 9))  # CHW in [0, 1]
    normed = torch.tensor((pixels - mean[:, None, None]) / std[:, None, None], requires_grad=True)
    attr = torch.randn(3, 7, 9, requires_grad=True)
    # mean/std given: x * std + mean, exactly
    _, ax = viz.image(attr, normed, method="original_image", mean=mean, std=std)
    expected = np.transpose(normed.detach().numpy(), (1, 2, 0)) * std + mean
    np.testing.assert_allclose(ax.images[0].get_array(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(expected, np.transpose(pixels, (1, 2, 0)), atol=1e-12)
    # no mean/std: negative pixels are min-max rescaled into [0, 1], not clipped
    _, ax = viz.image(attr, normed, method="original_image")
    shown = np.asarray(ax.images[0].get_array())
    raw = np.transpose(normed.detach().numpy(), (1, 2, 0))
    np.testing.assert_allclose(shown, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-12)
    assert shown.min() == 0 and shown.max() == 1
    # [0, 1] floats stay; uint8 / 0-255 images are shown as they are (scaled to [0, 1])
    hwc = np.transpose(pixels, (1, 2, 0))
    np.testing.assert_array_equal(viz.image(attr, hwc, method="original_image")[1].images[0].get_array(), hwc)
    u8 = (hwc * 255).astype(np.uint8)
    np.testing.assert_array_equal(viz.image(attr, u8, method="original_image")[1].images[0].get_array(), u8 / 255)
    np.testing.assert_array_equal(
        viz.image(attr, u8.astype(np.float32), method="original_image")[1].images[0].get_array(), u8 / 255
    )


def test_masked_and_alpha_use_normalized_map():
    attr, img = _attr(3, (6, 6, 3)), np.random.default_rng(3).random((6, 6, 3))
    norm = viz.normalize(attr, "positive")
    _, ax = viz.image(attr, img, method="masked_image", sign="positive")
    np.testing.assert_allclose(ax.images[0].get_array(), img * norm[..., None])
    _, ax = viz.image(attr, img, method="alpha_scaling", sign="positive")
    rgba = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(rgba[..., 3], norm)
    np.testing.assert_allclose(rgba[..., :3], img)
    _, ax = viz.image(attr, img, method="blended_heat_map", sign="positive", alpha_overlay=0.3)
    assert len(ax.images) == 2 and ax.images[1].get_alpha() == 0.3
    np.testing.assert_array_equal(ax.images[1].get_array(), norm)


def test_tensor_with_grad_and_given_axes():
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    attr = (x * 2).squeeze(0)  # non-leaf tensor with grad history
    fig, ax0 = plt.subplots()
    fig2, ax = viz.image(attr, x, method="blended_heat_map", ax=ax0, cmap="viridis")
    assert fig2 is fig and ax is ax0 and ax.images[1].get_cmap().name == "viridis"


def test_images_grid_and_mismatched_lengths():
    attr, img = torch.randn(3, 8, 8), torch.rand(3, 8, 8)
    fig, axes = viz.images(attr, img, ["original_image", "heat_map", "masked_image"],
                           ["all", "all", "positive"], titles=["a", "b", "c"], show_colorbar=True)
    assert len(axes) == 3 and [a.get_title() for a in axes] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="same length"):
        viz.images(attr, img, ["heat_map", "heat_map"], ["all"])
    with pytest.raises(ValueError, match="same length"):
        viz.images(attr, img, ["heat_map"], ["all"], titles=["a", "b"])
    with pytest.raises(ValueError, match="image"):
        viz.images(attr, None, ["heat_map", "original_image"], ["all", "all"])


# ------------------------------------------------------------------ text


def test_text_html():
    html = viz.text(["good", "<b>", "bad"], torch.tensor([0.5, 0.0, -1.0]))
    assert isinstance(html, str) and html._repr_html_() == str(html)
    assert "&lt;b&gt;" in html and "<b><" not in html.split("Legend")[0]
    marks = html.split("<mark")[1:4]
    assert "hsl(120, 75%, 75%)" in marks[0]  # 0.5 / max|a| = 0.5 -> lightness 100 - 50 * 0.5
    assert "hsl(0, 75%, 100%)" in marks[1]
    assert "hsl(0, 75%, 60%)" in marks[2]
    assert "Legend" in html and "Legend" not in viz.text(["a"], [1.0], legend=False)
    # without normalization values are clipped to [-1, 1]
    raw = viz.text(["a", "b"], np.array([0.2, -3.0]), normalize=False)
    assert "hsl(120, 75%, 90%)" in raw and "hsl(0, 75%, 60%)" in raw
    with pytest.raises(ValueError):
        viz.text(["a", "b"], [1.0])


# ------------------------------------------------------------------ timeseries


@pytest.mark.parametrize("method", ["overlay_individual", "overlay_combined", "colored_graph"])
def test_timeseries_methods(method):
    attr = torch.randn(40, 3, requires_grad=True)
    data = np.sin(np.linspace(0, 6, 120)).reshape(40, 3)
    fig, axes = viz.timeseries(attr, data, method=method, sign="all", channel_labels=["a", "b", "c"],
                               show_colorbar=True, title="ts")
    assert len(axes) == (1 if method == "overlay_combined" else 3) and axes[0].get_title() == "ts"
    kind = LineCollection if method == "colored_graph" else PolyCollection
    colls = [c for c in axes[0].collections if isinstance(c, kind)]
    assert len(colls) == 1
    expected = _normalize_attr(attr.detach().numpy().T, "all")
    if method == "overlay_combined":
        expected = _normalize_attr(attr.detach().numpy().T.sum(axis=0), "all")
    values = np.asarray(colls[0].get_array())
    if method == "colored_graph":
        np.testing.assert_allclose(values, (expected[0, :-1] + expected[0, 1:]) / 2, rtol=1e-6)
    else:
        np.testing.assert_array_equal(values, expected if method == "overlay_combined" else expected[0])
    # channels first, 1-D input
    viz.timeseries(attr.T, data.T, method=method, channels_last=False)
    viz.timeseries(torch.randn(30), np.random.rand(30), method=method, x_values=np.linspace(0, 1, 30))
    with pytest.raises(ValueError):
        viz.timeseries(attr, data[:10], method=method)
