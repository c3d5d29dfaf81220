"""Checks the metrics share: counts, attributions against inputs, K maps against K scores."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._inputs import as_tuple


def _check_count(v: Any, name: str) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {v!r}")


def _as_args(args: Any) -> tuple:
    return tuple(args) if isinstance(args, tuple) else (args,)


def _describe(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"a Tensor of shape {tuple(v.shape)}"
    if isinstance(v, (tuple, list)):
        return f"a {type(v).__name__} of {len(v)} (" + ", ".join(_describe(p) for p in v) + ")"
    return f"a {type(v).__name__}"


def _flat_attrs(attributions: Any, xs: tuple[Tensor, ...], name: str = "attributions") -> tuple[tuple[Tensor, ...], int | None]:
    """Attributions in the inputs' structure → ``(tuple of [B, Kr, D_i], K)``.

    Maps shaped like the inputs give ``Kr = 1`` and ``K = None``; maps with one map per score
    of a K-score function, ``[B, K, *x.shape[1:]]``, give ``Kr = K``.
    """
    at, _ = as_tuple(attributions, name)
    if len(at) != len(xs):
        raise ValueError(f"{name} has {len(at)} tensors but x has {len(xs)}; give one attribution tensor per input")
    ks, out = set(), []
    for i, (a, x) in enumerate(zip(at, xs)):
        where = f"{name}[{i}]" if len(xs) > 1 else name
        if a.shape == x.shape:
            ks.add(None)
            out.append(a.reshape(x.shape[0], 1, -1))
        elif a.dim() == x.dim() + 1 and a.shape[0] == x.shape[0] and a.shape[2:] == x.shape[1:]:
            ks.add(a.shape[1])
            out.append(a.reshape(a.shape[0], a.shape[1], -1))
        else:
            raise ValueError(
                f"{where} has shape {tuple(a.shape)} but the input has shape {tuple(x.shape)}; attributions must be "
                "shaped like the inputs (or [B, K, *x.shape[1:]], one map per score of a K-score function)"
            )
        if a.is_floating_point() and not bool(torch.isfinite(a).all()):
            raise ValueError(f"{where} contains NaN or inf values")
    if len(ks) > 1:
        raise ValueError(f"{name}: some tensors are shaped like the inputs and some carry a K axis; use one layout")
    return tuple(a.to(x.device) for a, x in zip(out, xs)), ks.pop()


def _check_k(K_attr: int | None, k_form: bool, K: int, what: str) -> None:
    if K_attr is None:
        if k_form and K > 1:
            raise ValueError(
                f"attributions: f returns {K} scores per example, so {what} needs one map per score, "
                f"attributions of shape [B, {K}, *x.shape[1:]]"
            )
    elif not k_form or K != K_attr:
        raise ValueError(
            f"attributions carry {K_attr} maps per example ([B, {K_attr}, ...]) but f returns "
            + (f"{K} scores per example" if k_form else "one score per example")
        )


def _float_dtype(*ts: Tensor) -> torch.dtype:
    dt = ts[0].dtype
    for t in ts[1:]:
        dt = torch.promote_types(dt, t.dtype)
    return dt if dt.is_floating_point else torch.float32


