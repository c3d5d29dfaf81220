"""What the explorer knows about each model input: how to feed it, its baseline, how to draw it.

One feature per model input, in the model's argument order::

    insights.image("Photo", baseline=0.0, mean=MEAN, std=STD)   # x[B, C, H, W], C = 1, 3 or 4
    insights.text("Review", tokens=vocab)                        # x[B, T] ids or x[B, T, D]
    insights.tabular("Vitals", columns=["age", "bp", "hr"])      # x[B, F]

``transform`` maps a batch of raw inputs to what the model takes (normalization, an embedding
lookup); attributions are taken with respect to the transformed input, as in Captum Insights.
``baseline`` is a number, a tensor (one example's shape, or broadcastable to the batch) or a
callable ``baseline(x_transformed[B, ...]) -> [B, ...]``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

import funcattr as fa

__all__ = ["Feature", "image", "text", "tabular"]

KINDS = ("image", "text", "tabular")
SIGNS = ("all", "positive", "negative", "absolute_value")


@dataclass(frozen=True)
class Feature:
    """One model input. Build it with :func:`image`, :func:`text` or :func:`tabular`."""

    name: str
    kind: str
    baseline: Any = 0.0
    transform: Callable[[Tensor], Tensor] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    tokens: Callable[[Tensor], Sequence[str]] | Sequence[str] | None = None
    columns: Sequence[str] | None = field(default=None)
    display: Callable[[Tensor], Tensor] | None = None  # image: raw example -> the picture to draw

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a feature needs a non-empty name, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"feature kind must be one of {KINDS}, got {self.kind!r}")
        if self.transform is not None and not callable(self.transform):
            raise TypeError(f"transform of feature {self.name!r} must be callable, got {type(self.transform).__name__}")
        if not (callable(self.baseline) or isinstance(self.baseline, (int, float, Tensor))) or isinstance(self.baseline, bool):
            raise TypeError(f"baseline of feature {self.name!r} must be a number, a tensor or a callable")

    # ------------------------------------------------------------------ model side

    def model_input(self, raw: Tensor) -> Tensor:
        """Raw batch → the model's input for this feature (``transform`` applied)."""
        x = raw if self.transform is None else self.transform(raw)
        if not isinstance(x, Tensor):
            raise TypeError(f"transform of feature {self.name!r} returned {type(x).__name__}, expected a Tensor")
        if x.shape[0] != raw.shape[0]:
            raise ValueError(f"transform of feature {self.name!r} changed the batch size {raw.shape[0]} -> {x.shape[0]}")
        return x

    def baselines(self, x: Tensor) -> Tensor:
        """Per-example baselines ``[B, ...]`` for model inputs ``x[B, ...]``."""
        b = self.baseline(x) if callable(self.baseline) else self.baseline
        if not isinstance(b, Tensor):
            b = torch.tensor(float(b))
        b = b.to(x.device, x.dtype if x.is_floating_point() else b.dtype)
        if b.dim() == x.dim() - 1:
            b = b.unsqueeze(0)
        try:
            return b.expand_as(x).clone()
        except RuntimeError:
            raise ValueError(
                f"baseline of feature {self.name!r} has shape {tuple(b.shape)}, which does not broadcast to the "
                f"input {tuple(x.shape)}"
            ) from None

    # ------------------------------------------------------------------ page side

    def describe(self) -> dict:
        d = {"name": self.name, "kind": self.kind}
        if self.columns is not None:
            d["columns"] = list(self.columns)
        return d

    def show_input(self, raw: Tensor, model_input: Tensor | None = None) -> dict:
        """One example's raw input as the page draws it. An image whose size differs from the
        model's input (a resizing transform) is drawn from the model's input instead, so that
        the heat maps can be laid over it."""
        if self.kind == "image":
            pic = raw if self.display is None else self.display(raw)
            if model_input is not None and tuple(pic.shape[-2:]) != tuple(model_input.shape[-2:]):
                return {"kind": "image", **_pixels(model_input)}
            return {"kind": "image", **_pixels(pic, self.mean, self.std)}
        if self.kind == "text":
            return {"kind": "text", "tokens": self.token_strings(raw)}
        vals = raw.detach().reshape(-1).float().cpu().tolist()
        cols = list(self.columns) if self.columns is not None else [f"x{i}" for i in range(len(vals))]
        return {"kind": "tabular", "columns": cols, "values": vals}

    def token_strings(self, raw: Tensor) -> list[str]:
        t = self.tokens
        if callable(t):
            out = t(raw)
        elif t is not None:
            ids = raw.detach().reshape(-1).cpu().tolist()
            out = [t[int(i)] if 0 <= int(i) < len(t) else f"<{int(i)}>" for i in ids]
        else:
            out = [str(v) for v in raw.detach().reshape(raw.shape[0], -1)[:, 0].cpu().tolist()]
        return [str(s) for s in out]

    def show_attribution(self, attr: Tensor, raw: Tensor) -> dict:
        """One example's attribution for this feature, ready to draw."""
        if self.kind == "image":
            return {"kind": "image", **heat_maps(attr)}
        if self.kind == "text":
            a = attr.detach().float().cpu()
            per_token = a.reshape(a.shape[0], -1).sum(1) if a.dim() > 1 else a  # sum over the embedding dims
            return {"kind": "text", "values": per_token.tolist()}
        return {"kind": "tabular", "values": attr.detach().float().cpu().reshape(-1).tolist()}


def image(name: str = "Image", *, baseline: Any = 0.0, transform: Callable | None = None,
          mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
          display: Callable | None = None) -> Feature:
    """An image input ``[B, C, H, W]`` (grey ``C = 1``, RGB ``C = 3``, RGBA ``C = 4``).

    ``mean``/``std`` un-normalize the *raw* image for display (give them when the raw data are
    already normalized); otherwise [0, 1] and [0, 255] data are shown as is and anything else
    min-max rescaled, like ``fa.viz``. ``display(raw_example) -> [C, H, W]`` changes what is
    drawn (Captum's ``visualization_transform``)::

        insights.image("Photo", baseline=0.0, transform=normalize)
    """
    return Feature(name, "image", baseline, transform, mean=mean, std=std, display=display)


def text(name: str = "Text", *, tokens: Callable | Sequence[str] | None = None, baseline: Any = 0.0,
         transform: Callable | None = None) -> Feature:
    """A token sequence: raw ``[B, T]`` ids (``transform`` may embed them to ``[B, T, D]``).

    ``tokens`` is a vocabulary (``tokens[id]``) or a callable ``tokens(raw_example) -> list[str]``;
    the attribution of a token is summed over its embedding dims::

        insights.text("Review", tokens=vocab, transform=lambda ids: model.embedding(ids))
    """
    return Feature(name, "text", baseline, transform, tokens=tokens)


def tabular(name: str = "Features", *, columns: Sequence[str] | None = None, baseline: Any = 0.0,
            transform: Callable | None = None) -> Feature:
    """Named columns ``[B, F]`` (Captum's ``GeneralFeature``), drawn as signed bars::

        insights.tabular("Vitals", columns=["age", "blood pressure", "heart rate"])
    """
    return Feature(name, "tabular", baseline, transform, columns=None if columns is None else tuple(columns))


# ----------------------------------------------------------------------------- encoding


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode("ascii")


def _pixels(raw: Tensor, mean=None, std=None) -> dict:
    """One image ``[C, H, W]`` / ``[H, W]`` → ``{w, h, c, data}``: uint8 HWC bytes, base64.

    The display rule is ``fa.viz``'s: ``mean``/``std`` undo a normalization, [0, 1] data are
    kept, [0, 255] data divided by 255, anything else min-max rescaled. Other channel counts
    than 1, 3, 4 are shown as their mean (grey).
    """
    a = raw.detach().cpu().double()
    if a.dim() == 2:
        a = a.unsqueeze(0)
    if a.dim() != 3:
        raise ValueError(f"an image feature needs [C, H, W] examples, got shape {tuple(raw.shape)}")
    if mean is not None or std is not None:
        m = torch.as_tensor(0.0 if mean is None else mean, dtype=torch.float64).reshape(-1, 1, 1)
        s = torch.as_tensor(1.0 if std is None else std, dtype=torch.float64).reshape(-1, 1, 1)
        a = (a * s + m).clamp(0, 1)
    else:
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 1 and raw.is_floating_point():
            pass
        elif lo >= 0 and hi <= 255:
            a = a / 255.0
        else:
            a = (a - lo) / (hi - lo) if hi > lo else torch.zeros_like(a)
    if a.shape[0] not in (1, 3, 4):
        a = a.mean(0, keepdim=True)
    c, h, w = a.shape
    px = (a.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255)
    return {"w": w, "h": h, "c": c, "data": _b64(px)}


def heat_maps(attr: Tensor) -> dict:
    """An image attribution ``[C, H, W]`` → the four normalized ``[H, W]`` maps ``fa.viz`` draws
    (one per sign), each as uint8 bytes: ``all`` maps [-1, 1] to 0..255, the others [0, 1]."""
    a = attr.detach().float().cpu()
    if a.dim() == 2:
        a = a.unsqueeze(0)
    hw = tuple(a.shape[-2:])
    maps = {}
    for sign in SIGNS:
        m = fa.viz.normalize(a, sign=sign)
        maps[sign] = _b64(((m + 1.0) * 127.5 if sign == "all" else m * 255.0).round().clip(0, 255))
    return {"w": int(hw[1]), "h": int(hw[0]), "maps": maps}
