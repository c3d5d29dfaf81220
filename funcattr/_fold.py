"""Folding, as one idea: ``S`` work items of a batch of ``B`` examples become one batch of
``S*B`` rows, work-major, so row ``r`` belongs to example ``r mod B`` (DESIGN §3).

Everything per example — targets, baselines, masks, extra arguments — is laid out for a
folded batch here and only here (:func:`layout`, :func:`tile_args`), and its length is
checked against the number of examples: a value with one entry per example is tiled
``rows // B`` times; a value that funcattr itself tiled passes as it is; anything else is a
clear error (never a silent repeat of a shorter list).

The examples of a call are those of the *outermost* attribution call in progress
(:func:`examples`): when ``noise_tunnel`` hands ``S*B`` noisy rows to a wrapped method, or a
metric hands perturbed copies to an attribution function, a per-example value still has
``B`` entries and is tiled to whatever the inner call folds. The state is a context
variable, so threads and nested calls never see each other's.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import weakref
from typing import Any

import einops
import torch
from torch import Tensor

__all__ = ["Examples", "examples", "current", "fold", "unfold", "tile", "layout", "tile_args", "is_tiled"]


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """The user's batch: ``n`` examples, with the inputs and arguments they came with (so
    data-dependent choices such as ``fa.outputs(topk=)`` are made on the examples, not on
    noisy or perturbed copies)."""

    n: int
    xs: tuple[Tensor, ...]
    args: tuple
    kwargs: dict


_current: contextvars.ContextVar[Examples | None] = contextvars.ContextVar("funcattr_examples", default=None)


@contextlib.contextmanager
def examples(xs: tuple[Tensor, ...], args: tuple = (), kwargs: dict | None = None):
    """Enter an attribution call on ``xs``; the outermost call's examples stay in force for
    the calls nested in it. Yields the examples in force."""
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    ex = Examples(xs[0].shape[0], tuple(xs), tuple(args), dict(kwargs or {}))
    token = _current.set(ex)
    try:
        yield ex
    finally:
        _current.reset(token)


def current() -> Examples | None:
    return _current.get()


def fold(t: Tensor) -> Tensor:
    """``'m b ... -> (m b) ...'`` (a reshape: on the hot path of every call, where einops'
    pattern lookup costs more than the view itself)."""
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def unfold(t: Tensor, m: int) -> Tensor:
    """``'(m b) ... -> m b ...'``."""
    return t.reshape(m, t.shape[0] // m, *t.shape[1:])


# Values funcattr tiled itself: they may have ``rows`` entries. Identity-based (a tensor or a
# list made by ``tile``), held weakly so nothing is kept alive.
_tiled: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()


class _TiledList(list):
    """A per-example list tiled by funcattr (lists cannot be weak-referenced)."""

    __slots__ = ("__weakref__",)


def tile(v: Any, reps: int) -> Any:
    """``[B, ...] -> [reps*B, ...]`` work-major (row r is example r mod B), for a tensor or a
    list; the result is marked as folded by funcattr."""
    if reps == 1:
        return v
    if isinstance(v, Tensor):
        out = einops.repeat(v, "b ... -> (m b) ...", m=reps)
    else:
        out = _TiledList(list(v) * reps)
    _tiled[id(out)] = out
    return out


def is_tiled(v: Any) -> bool:
    return _tiled.get(id(v)) is v


def _length(v: Any) -> int | None:
    if isinstance(v, Tensor):
        return v.shape[0] if v.dim() > 0 else None
    if isinstance(v, (list, tuple)):
        return len(v)
    return None


def layout(v: Any, rows: int, name: str) -> Any:
    """A per-example value (tensor with dim 0 per example, or list) laid out for ``rows``
    rows of a (possibly folded) batch. Raises a ValueError naming ``name`` when its length is
    neither the number of examples nor a layout funcattr made."""
    n = _length(v)
    ex = _current.get()
    if n == rows and (ex is None or n == ex.n or is_tiled(v)):
        return v
    if ex is not None and n == ex.n and rows % n == 0:
        return tile(v, rows // n)
    examples_ = ex.n if ex is not None else rows
    raise ValueError(
        f"{name} has {n} entries but the batch has {examples_} examples; give exactly one entry per example"
    )


def _per_example(v: Any, n: int) -> bool:
    if isinstance(v, Tensor):
        return v.dim() > 0 and v.shape[0] == n
    return isinstance(v, list) and len(v) == n


def tile_args(args: tuple, kwargs: dict, rows: int) -> tuple[tuple, dict]:
    """Positional and keyword arguments for ``rows`` rows: those with one entry per example
    (a tensor whose dim 0, or a list whose length, is the number of examples) are tiled;
    everything else passes through untouched (Captum's ``additional_forward_args``)."""
    ex = _current.get()
    n = ex.n if ex is not None else rows
    if rows == n or rows % n:
        return args, kwargs

    def lay(v):
        return tile(v, rows // n) if _per_example(v, n) else v

    return tuple(lay(a) for a in args), {k: lay(v) for k, v in kwargs.items()}
