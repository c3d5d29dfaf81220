"""Pictures of attributions: images, token strings and time series.

This is the only part of funcattr that works in numpy. Every function takes torch
tensors (on any device, with or without grad) or numpy arrays and converts them here.

Layouts are decided by type:

* torch tensors are channels-first: ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)``;
* numpy arrays are channels-last: ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)``.
  A 3-D array whose first dim is 1 or 3 and whose last dim is not is read as
  ``(C, H, W)`` (what ``tensor.numpy()`` gives).

Attributions are summed over channels, then normalized exactly as Captum's
``visualize_image_attr`` does (see :func:`normalize`), and drawn with Captum's
colormaps and limits: ``all`` red-white-green on [-1, 1]; ``positive`` Greens,
``negative`` Reds, ``absolute_value`` Blues on [0, 1].

Differences from Captum: an all-zero attribution draws an empty map instead of
failing; ``mean``/``std`` un-normalize the original image, and an image with values
outside [0, 1] (and not a 0-255 image) is min-max rescaled instead of clipped;
grayscale images are drawn in gray; figures are never shown (no ``plt.show()``).

Example::

    from funcattr import viz
    fig, ax = viz.image(attr[0], x[0], method="blended_heat_map", sign="all")
    fig, axes = viz.images(attr[0], x[0], ["original_image", "heat_map"], ["all", "positive"])
    viz.text(["the", "movie", "was", "great"], [0.1, -0.2, 0.0, 0.9])   # HTML
    fig, axes = viz.timeseries(attr[0], series[0], method="overlay_combined")

Figures are made with pyplot so that notebooks show them inline; in long loops close
them (``plt.close(fig)``) or pass your own ``ax=``.
"""

from __future__ import annotations

import html as _html
from typing import Any, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import LinearSegmentedColormap, Normalize
from mpl_toolkits.axes_grid1 import make_axes_locatable

__all__ = ["HTML", "image", "images", "normalize", "text", "timeseries"]

SIGNS = ("all", "positive", "negative", "absolute_value")
IMAGE_METHODS = ("heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling")
TIMESERIES_METHODS = ("overlay_individual", "overlay_combined", "colored_graph")

# sign -> (default colormap, vmin, vmax), as in Captum.
_SIGN_STYLE = {
    "all": (LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"]), -1, 1),
    "positive": ("Greens", 0, 1),
    "negative": ("Reds", 0, 1),
    "absolute_value": ("Blues", 0, 1),
}


# ----------------------------------------------------------------------------- input handling


def _check_choice(value: str, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def _numpy(x: Any) -> np.ndarray:
    """Any tensor (any device, grad or not) or array-like -> numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def _hwc(x: Any, name: str) -> np.ndarray:
    """Image-shaped input -> numpy ``(H, W)`` or ``(H, W, C)`` (layout rules in the module doc)."""
    a = _numpy(x)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and (isinstance(x, torch.Tensor) or (a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3))):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be (H, W), (C, H, W) for a tensor or (H, W, C) for an array, "
            f"with an optional leading batch of 1; got shape {tuple(np.shape(x))}"
        )
    return a


def _display_image(x: Any, mean: Any = None, std: Any = None) -> np.ndarray:
    """Original image -> float ``(H, W)`` or ``(H, W, 3|4)`` in [0, 1], ready for imshow.

    ``mean``/``std`` given: ``x * std + mean`` (per channel), clipped to [0, 1].
    Otherwise [0, 1] data is kept, integer data or data in [0, 255] is divided by
    255, and anything else (e.g. ImageNet-normalized pixels) is min-max rescaled.
    """
    raw = _hwc(x, "image")
    a = raw.astype(np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if mean is not None or std is not None:
        s = _numpy(1.0 if std is None else std).astype(np.float64)
        m = _numpy(0.0 if mean is None else mean).astype(np.float64)
        return np.clip(a * s + m, 0.0, 1.0)
    lo, hi = (a.min(), a.max()) if a.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1 and not np.issubdtype(raw.dtype, np.integer):
        return a
    if lo >= 0 and hi <= 255:
        return a / 255.0
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


# ----------------------------------------------------------------------------- normalization


def _scale(a: np.ndarray, sign: str, outlier_perc: float) -> np.ndarray:
    """Captum's sign transform + cumulative-mass threshold + divide and clip to [-1, 1].

    The threshold is the smallest |value| at which the ascending cumulative sum of
    |values| reaches ``100 - outlier_perc`` percent of the total (not a percentile).
    """
    _check_choice(sign, SIGNS, "sign")
    if not 0 <= outlier_perc <= 100:
        raise ValueError(f"outlier_perc must be in [0, 100], got {outlier_perc}")
    if sign == "positive":
        a = np.maximum(a, 0)
    elif sign == "negative":
        a = np.minimum(a, 0)
    elif sign == "absolute_value":
        a = np.abs(a)
    mags = np.sort(np.abs(a), axis=None)
    mass = np.cumsum(mags)
    reached = np.flatnonzero(mass >= mass[-1] * 0.01 * (100.0 - outlier_perc)) if a.size else ()
    threshold = mags[reached[0] if len(reached) else -1] if a.size else 0
    if threshold == 0:  # all-zero map: Captum asserts here, we draw nothing
        return np.zeros(a.shape)
    return np.clip(a / (-threshold if sign == "negative" else threshold), -1, 1)


def _channel_sum(a: np.ndarray) -> np.ndarray:
    return np.sum(a, axis=2) if a.ndim == 3 else a


def normalize(attr: Any, sign: str = "absolute_value", outlier_perc: float = 2) -> np.ndarray:
    """The ``(H, W)`` map that :func:`image` draws, equal to Captum's.

    Sums ``attr`` over channels, keeps the chosen sign (``all``, ``positive``,
    ``negative`` -> made positive, ``absolute_value``), divides by the value below
    the top ``outlier_perc`` percent of the attribution mass and clips to [-1, 1].
    An all-zero attribution gives zeros.

    Example::

        m = viz.normalize(attr[0], sign="positive")   # attr[0]: (C, H, W) tensor
    """
    return _scale(_channel_sum(_hwc(attr, "attr")), sign, outlier_perc)


# ----------------------------------------------------------------------------- drawing


def _new_figure(fig_size: tuple[float, float]):
    import matplotlib.pyplot as plt  # lazy: figure creation only; never plt.show()

    return plt.figure(figsize=fig_size)


def _colorbar(ax, mappable, pad: float) -> None:
    """Horizontal colorbar in a 5% axis below ``ax``; hidden when nothing is mapped."""
    cax = make_axes_locatable(ax).append_axes("bottom", size="5%", pad=pad)
    if mappable is None:
        cax.axis("off")
    else:
        ax.figure.colorbar(mappable, cax=cax, orientation="horizontal")


def _check_image_args(method: str, sign: str, has_image: bool) -> None:
    _check_choice(method, IMAGE_METHODS, "method")
    _check_choice(sign, SIGNS, "sign")
    if method != "heat_map" and not has_image:
        raise ValueError(f"method={method!r} needs the original `image` argument")
    if method in ("masked_image", "alpha_scaling") and sign == "all":
        raise ValueError(f"method={method!r} cannot show both signs; use sign 'positive', "
                         "'negative' or 'absolute_value'")


def _draw_image(ax, a, img, method, sign, cmap=None, alpha_overlay=0.5, outlier_perc=2,
                show_colorbar=False, title=None) -> None:
    """Draw converted inputs (``a``: HW/HWC attribution, ``img``: display image or None)."""
    _check_image_args(method, sign, img is not None)
    norm = _scale(_channel_sum(a), sign, outlier_perc)
    if img is not None and img.shape[:2] != norm.shape:
        raise ValueError(f"image is {img.shape[:2]} but attr is {norm.shape} (H, W)")
    default_cmap, vmin, vmax = _SIGN_STYLE[sign]
    heat = dict(cmap=default_cmap if cmap is None else cmap, vmin=vmin, vmax=vmax)
    gray = dict(cmap="gray", vmin=0, vmax=1)  # used for 2-D pictures, ignored for RGB(A)
    mappable = None
    if method == "heat_map":
        mappable = ax.imshow(norm, **heat)
    elif method == "blended_heat_map":
        ax.imshow(img if img.ndim == 2 else img[..., :3].mean(axis=2), cmap="gray")
        mappable = ax.imshow(norm, alpha=alpha_overlay, **heat)
    elif method == "original_image":
        ax.imshow(img, **gray)
    elif method == "masked_image":
        ax.imshow(img * norm if img.ndim == 2 else img[..., :3] * norm[..., None], **gray)
    else:  # alpha_scaling
        rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        ax.imshow(np.concatenate([rgb, norm[..., None]], axis=2))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if show_colorbar:
        _colorbar(ax, mappable, pad=0.1)
    if title:
        ax.set_title(title)


def image(attr, image=None, method="heat_map", sign="absolute_value", cmap=None,
          alpha_overlay=0.5, outlier_perc=2, show_colorbar=False, title=None, ax=None,
          mean=None, std=None, fig_size=(6, 6)):
    """Draw one attribution map; returns ``(fig, ax)``.

    ``attr``/``image``: a ``(C, H, W)`` / ``(H, W)`` / ``(1, C, H, W)`` tensor or an
    ``(H, W, C)`` / ``(H, W)`` array. ``method``: ``heat_map`` (no image needed),
    ``blended_heat_map`` (heat map with ``alpha_overlay`` over the gray image),
    ``original_image``, ``masked_image`` (image x map) or ``alpha_scaling`` (map as
    alpha); the last two need a one-signed ``sign``. ``mean``/``std`` undo the input
    normalization of ``image``. ``ax`` draws into existing axes.

    Example::

        fig, ax = viz.image(attr[0], x[0], method="blended_heat_map", sign="all",
                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    """
    _check_image_args(method, sign, image is not None)
    a = _hwc(attr, "attr")
    img = None if image is None else _display_image(image, mean, std)
    fig = _new_figure(fig_size) if ax is None else ax.figure
    ax = fig.add_subplot() if ax is None else ax
    _draw_image(ax, a, img, method, sign, cmap, alpha_overlay, outlier_perc, show_colorbar, title)
    return fig, ax


def images(attr, image, methods, signs, titles=None, fig_size=(8, 6), **kwargs):
    """Several views side by side (1 x len(methods)); returns ``(fig, list_of_axes)``.

    ``kwargs`` (``cmap``, ``alpha_overlay``, ``outlier_perc``, ``show_colorbar``,
    ``mean``, ``std``) apply to every panel.

    Example::

        fig, axes = viz.images(attr[0], x[0], ["original_image", "heat_map"],
                               ["all", "positive"], titles=["input", "IG"])
    """
    methods, signs = list(methods), list(signs)
    if len(methods) != len(signs) or (titles is not None and len(titles) != len(methods)):
        raise ValueError(f"methods ({len(methods)}), signs ({len(signs)}) and titles "
                         f"({'-' if titles is None else len(titles)}) must have the same length")
    if not methods:
        raise ValueError("methods must not be empty")
    for m, s in zip(methods, signs):
        _check_image_args(m, s, image is not None)
    a = _hwc(attr, "attr")
    img = None if image is None else _display_image(image, kwargs.pop("mean", None), kwargs.pop("std", None))
    fig = _new_figure(fig_size)
    axes = list(fig.subplots(1, len(methods), squeeze=False)[0])
    for i, (ax, m, s) in enumerate(zip(axes, methods, signs)):
        _draw_image(ax, a, img, m, s, title=titles[i] if titles else None, **kwargs)
    fig.tight_layout()
    return fig, axes


def _bands(ax, x: np.ndarray, values: np.ndarray, cmap, cnorm, alpha: float) -> PolyCollection:
    """One full-height band per sample, colored by its attribution (Captum's axvspan)."""
    if len(x) > 1:
        mid = (x[1:] + x[:-1]) / 2
        edges = np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])
    else:
        edges = np.array([x[0] - 0.5, x[0] + 0.5])
    lo, hi = edges[:-1], edges[1:]
    zero, one = np.zeros_like(lo), np.ones_like(lo)
    verts = np.stack([np.stack(p, axis=-1) for p in ((lo, zero), (lo, one), (hi, one), (hi, zero))], axis=1)
    bands = PolyCollection(verts, transform=ax.get_xaxis_transform(), cmap=cmap, norm=cnorm,
                           alpha=alpha, edgecolors="none")
    bands.set_array(values)
    ax.add_collection(bands, autolim=False)
    return bands


def _series(x: Any, name: str, channels_last: bool) -> np.ndarray:
    a = _numpy(x)
    if a.ndim == 1:
        a = a[:, None] if channels_last else a[None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (N, C) / (C, N); got shape {a.shape}")
    return a.T if channels_last else a


def timeseries(attr, data, x_values=None, method="overlay_individual", sign="absolute_value",
               channel_labels=None, channels_last=True, outlier_perc=2, cmap=None,
               alpha_overlay=0.7, show_colorbar=False, title=None, fig_size=(6, 6)):
    """Attribution over a multichannel series; returns ``(fig, list_of_axes)``.

    ``attr`` and ``data`` are ``(N, C)`` (``(C, N)`` with ``channels_last=False``) or
    1-D. ``method``: ``overlay_individual`` (a panel per channel with colored bands),
    ``overlay_combined`` (all channels in one panel, attribution summed over channels)
    or ``colored_graph`` (each channel's line colored by its attribution).

    Example::

        fig, axes = viz.timeseries(attr[0], series[0], method="colored_graph", sign="all")
    """
    _check_choice(method, TIMESERIES_METHODS, "method")
    _check_choice(sign, SIGNS, "sign")
    a, d = _series(attr, "attr", channels_last), _series(data, "data", channels_last)
    if a.shape != d.shape:
        raise ValueError(f"attr {a.shape} and data {d.shape} must have the same shape")
    n_chan, n = d.shape
    x = np.arange(n) if x_values is None else _numpy(x_values).reshape(-1)
    if len(x) != n:
        raise ValueError(f"x_values has {len(x)} points, data has {n}")
    if channel_labels is not None and len(channel_labels) != n_chan:
        raise ValueError(f"{len(channel_labels)} channel_labels for {n_chan} channels")
    combined = method == "overlay_combined"
    norm = _scale(a.sum(axis=0, keepdims=True) if combined else a, sign, outlier_perc)
    default_cmap, vmin, vmax = _SIGN_STYLE[sign]
    cmap = matplotlib.colormaps.get_cmap(default_cmap if cmap is None else cmap)
    cnorm = Normalize(vmin, vmax)
    fig = _new_figure(fig_size)
    axes = list(fig.subplots(len(norm), 1, sharex=True, squeeze=False)[:, 0])
    for row, ax in enumerate(axes):
        if method == "colored_graph":
            pts = np.stack([x, d[row]], axis=1)
            mappable = LineCollection(np.stack([pts[:-1], pts[1:]], axis=1), cmap=cmap, norm=cnorm)
            mappable.set_array((norm[row, :-1] + norm[row, 1:]) / 2)
            ax.add_collection(mappable)
            ax.autoscale_view()
        else:
            if combined:
                ax.set_prop_cycle(color=matplotlib.colormaps["Dark2"].colors)
            for c in range(n_chan) if combined else [row]:
                ax.plot(x, d[c], label=None if channel_labels is None else channel_labels[c])
            mappable = _bands(ax, x, norm[row], cmap, cnorm, alpha_overlay)
        if channel_labels is not None and not combined:
            ax.set_ylabel(channel_labels[row])
    if combined and channel_labels is not None:
        axes[0].legend(loc="best")
    if n > 1:
        axes[-1].set_xlim(x[0], x[-1])
    fig.subplots_adjust(hspace=0)
    if show_colorbar:
        _colorbar(axes[-1], mappable, pad=0.4)
    if title:
        axes[0].set_title(title)
    return fig, axes


# ----------------------------------------------------------------------------- text


class HTML(str):
    """An HTML fragment: a plain ``str`` that notebooks render (``_repr_html_``)."""

    def _repr_html_(self) -> str:
        return str(self)


def _token_color(v: float) -> str:
    """Captum's ``_get_color``: green for > 0, red for <= 0, lighter near 0."""
    v = max(-1.0, min(1.0, float(v)))
    if v > 0:
        return f"hsl(120, 75%, {100 - int(50 * v)}%)"
    return f"hsl(0, 75%, {100 - int(-40 * v)}%)"


def text(tokens, attributions, legend=True, normalize=True) -> HTML:
    """Tokens highlighted by attribution (green positive, red negative) as :class:`HTML`.

    With ``normalize`` the values are divided by their max |value|; otherwise they are
    clipped to [-1, 1]. Tokens are HTML-escaped; the raw value is the hover title.

    Example::

        viz.text(tokenizer.convert_ids_to_tokens(ids), attr[0].sum(-1))
    """
    if isinstance(tokens, str):
        raise ValueError("tokens must be a sequence of strings, not one string")
    tokens = [str(t) for t in tokens]
    raw = _numpy(attributions).astype(np.float64)
    raw = raw[0] if raw.ndim == 2 and raw.shape[0] == 1 else raw
    if raw.ndim != 1 or len(raw) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but attributions have shape {raw.shape}; "
                         "expected one value per token (sum over the embedding dim first)")
    peak = np.abs(raw).max() if raw.size else 0.0
    shown = raw / peak if normalize and peak > 0 else raw
    marks = "".join(
        f'<mark style="background-color: {_token_color(v)}; color: black; opacity: 1.0; '
        f'line-height: 1.75" title="{r:.4g}">{_html.escape(t)}</mark> '
        for t, v, r in zip(tokens, shown, raw)
    )
    parts = [f"<div>{marks}</div>"]
    if legend:
        swatch = ('<span style="display: inline-block; width: 10px; height: 10px; '
                  'border: 1px solid; background-color: {}"></span> {} ')
        parts.append('<div style="border-top: 1px solid; margin-top: 5px; padding-top: 5px">'
                     "<b>Legend: </b>"
                     + "".join(swatch.format(_token_color(v), label)
                               for v, label in ((-1, "Negative"), (0, "Neutral"), (1, "Positive")))
                     + "</div>")
    return HTML("".join(parts))
