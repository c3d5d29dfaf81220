"""Captum's ``captum.attr.visualization`` with its numpy channels-last signatures and return
values, drawn by ``fa.viz`` (the same normalization and colormaps).

Differences from Captum 0.9.0: an all-zero attribution draws an empty map (Captum asserts
"Cannot normalize by scale factor = 0"); an original image with values outside [0, 1] that is
not a 0–255 image (an ImageNet-normalized one) is min-max rescaled instead of clipped (#1098);
a grayscale image is drawn in gray. ``use_pyplot=True`` calls ``plt.show()`` as Captum does;
with ``use_pyplot=False`` the figure is not left open in pyplot.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any, Iterable

import numpy as np
import torch

import funcattr as fa

from ._base import refuse

__all__ = [
    "visualize_image_attr",
    "visualize_image_attr_multiple",
    "visualize_timeseries_attr",
    "visualize_text",
    "VisualizationDataRecord",
]


def _chw(a: Any) -> Any:
    """A numpy ``(H, W, C)`` array as a ``(C, H, W)`` tensor, so ``fa.viz`` never has to
    guess the layout; ``(H, W)`` and ``None`` pass through."""
    if a is None or isinstance(a, torch.Tensor):
        return a
    a = np.asarray(a)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) if a.ndim == 3 else a


def _done(fig, use_pyplot: bool, own: bool = True) -> None:
    """Captum shows the figure with ``use_pyplot``; otherwise a figure made here is not left
    open in pyplot."""
    import matplotlib.pyplot as plt

    if use_pyplot:
        plt.show()
    elif own:
        plt.close(fig)


def visualize_image_attr(attr, original_image=None, method="heat_map", sign="absolute_value", plt_fig_axis=None,
                         outlier_perc=2, cmap=None, alpha_overlay=0.5, show_colorbar=False, title=None,
                         fig_size=(6, 6), use_pyplot=True):
    """``fa.viz.image`` on ``(H, W, C)`` arrays; returns ``(figure, axis)``. ``attr`` may be
    None for ``method="original_image"`` (as documented by Captum; 0.9.0 itself fails there)."""
    if attr is None:
        if method != "original_image":
            raise ValueError(f"attr is None; only method='original_image' draws without an attribution, got {method!r}")
        attr = np.zeros(np.shape(original_image)[:2])
    fig, ax = plt_fig_axis if plt_fig_axis is not None else (None, None)
    fig, ax = fa.viz.image(_chw(attr), _chw(original_image), method, sign, cmap, alpha_overlay, outlier_perc,
                           show_colorbar, title, ax=ax, fig_size=fig_size)
    _done(fig, use_pyplot, own=plt_fig_axis is None)
    return fig, ax


def visualize_image_attr_multiple(attr, original_image, methods, signs, titles=None, fig_size=(8, 6),
                                  use_pyplot=True, **kwargs):
    """``fa.viz.images``: one panel per method; returns ``(figure, axes)`` as Captum does: a
    list of axes, the axis itself for one method."""
    fig, axes = fa.viz.images(_chw(attr), _chw(original_image), methods, signs, titles, fig_size, **kwargs)
    _done(fig, use_pyplot)
    return fig, (list(axes) if len(axes) > 1 else axes[0])


def visualize_timeseries_attr(attr, data, x_values=None, method="overlay_individual", sign="absolute_value",
                              channel_labels=None, channels_last=True, plt_fig_axis=None, outlier_perc=2, cmap=None,
                              alpha_overlay=0.7, show_colorbar=False, title=None, fig_size=(6, 6), use_pyplot=True,
                              **pyplot_kwargs):
    """``fa.viz.timeseries``; returns ``(figure, axes)`` as Captum's ``plt.subplots`` does: an
    array of axes (one per channel), the axis itself for one panel. (Captum 0.9.0's own
    function fails on matplotlib ≥ 3.9, which removed ``cm.get_cmap``.)"""
    if plt_fig_axis is not None:
        refuse("plt_fig_axis", "fa.viz.timeseries lays out its own panels (one per channel)")
    if pyplot_kwargs:
        refuse(f"visualize_timeseries_attr({', '.join(pyplot_kwargs)}=...)", "fa.viz.timeseries takes no line styles")
    fig, axes = fa.viz.timeseries(attr, data, x_values, method, sign, channel_labels, channels_last, outlier_perc,
                                  cmap, alpha_overlay, show_colorbar, title, fig_size)
    _done(fig, use_pyplot)
    return fig, (axes[0] if len(axes) == 1 else np.array(axes, dtype=object))


# --------------------------------------------------------------------------- text


@dataclasses.dataclass
class VisualizationDataRecord:
    """One row of :func:`visualize_text` (Captum's fields and order)."""

    word_attributions: Any
    pred_prob: float
    pred_class: Any
    true_class: Any
    attr_class: Any
    attr_score: float
    raw_input_ids: list
    convergence_score: float


class HTML(fa.viz.HTML):
    """The HTML string, rendered by notebooks; ``.data`` as on IPython's ``HTML``."""

    @property
    def data(self) -> str:
        return str(self)


def _cell(v: Any) -> str:
    return f'<td><text style="padding-right:2em"><b>{html.escape(str(v))}</b></text></td>'


def visualize_text(datarecords: Iterable[VisualizationDataRecord], legend: bool = True) -> HTML:
    """Captum's table (true, predicted, attribution label, attribution score, word importance);
    the words are drawn by ``fa.viz.text`` without normalization, as Captum does (values
    clipped to [-1, 1]). Shown in IPython when running there; returns the HTML."""
    head = "".join(f"<th>{h}</th>" for h in ("True Label", "Predicted Label", "Attribution Label",
                                                "Attribution Score", "Word Importance"))
    rows = [f"<tr>{head}</tr>"]
    for r in datarecords:
        words = fa.viz.text(r.raw_input_ids, r.word_attributions, legend=False, normalize=False)
        rows.append(
            "<tr>" + _cell(r.true_class) + _cell(f"{r.pred_class} ({r.pred_prob:.2f})") + _cell(r.attr_class)
            + _cell(f"{r.attr_score:.2f}") + f"<td>{words}</td></tr>"
        )
    key = fa.viz.text([], [], legend=True) if legend else ""
    out = HTML(f'{key}<table width="100%">{"".join(rows)}</table>')
    try:
        from IPython import get_ipython
        from IPython.display import HTML as IHTML, display
    except ImportError:
        return out
    if get_ipython() is not None:
        display(IHTML(str(out)))
    return out
