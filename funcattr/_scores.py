"""What to explain: batched score functions built from a model.

``fa.target(model, t)`` → ``f(*x, *args, **kw) -> Tensor[N]`` with Captum's target semantics;
``fa.outputs(model, [i, j])`` / ``fa.outputs(model, topk=k)`` → ``Tensor[N, K]``;
``fa.per_example(g)`` lifts a single-example function to a batched one with ``vmap``.

Per-example targets of length ``B`` also serve a folded batch of ``N = S*B`` rows: row ``r``
belongs to example ``r mod B`` (DESIGN §3), so they are tiled ``N // B`` times.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import _fold

__all__ = ["target", "outputs", "per_example", "prepare", "as_scores", "k_form", "batch_value", "gives_rows"]

_NO_TARGET = object()


def _out_of_range(what: str, bad: int, size: int) -> ValueError:
    return ValueError(f"{what} {bad} is out of range for a model output with {size} entries in that dim")


def _check_range(idx: Tensor, size: int, what: str) -> None:
    if idx.numel() and (int(idx.min()) < -size or int(idx.max()) >= size):
        raise _out_of_range(what, int(idx.max()) if int(idx.max()) >= size else int(idx.min()), size)


def select(out: Tensor, t: Any, name: str = "target") -> Tensor:
    """Captum's ``_select_targets``, checked: the selected scores, one row per example.
    Per-example targets are laid out for a folded batch by ``_fold.layout``."""
    if t is None:
        return out
    N = out.shape[0]
    if isinstance(t, Tensor) and t.dim() == 0:
        t = int(t)
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an int, tuple, list or 1-D tensor, got bool")
    if isinstance(t, int):
        t = (t,)
    if isinstance(t, tuple):
        if len(t) > out.dim() - 1:
            raise ValueError(f"{name} {t} has {len(t)} indices but the model output has shape {tuple(out.shape)}")
        for d, i in enumerate(t):
            if not isinstance(i, int) or isinstance(i, bool):
                raise TypeError(f"{name} entries must be ints, got {type(i).__name__}")
            if not -out.shape[1 + d] <= i < out.shape[1 + d]:  # an int is checked without a tensor
                raise _out_of_range(name, i, out.shape[1 + d])
        return out[(slice(None), *t)]
    if isinstance(t, list):
        t = _fold.layout(t, N, name)
        if t and isinstance(t[0], tuple):
            idx = torch.tensor(t, device=out.device, dtype=torch.long)  # [N, d]
        else:
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in t):
                raise TypeError(f"{name} as a list must hold ints (or tuples of ints), one per example")
            idx = torch.tensor(t, device=out.device, dtype=torch.long)
    elif isinstance(t, Tensor):
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{name} tensor must hold integer class indices, got dtype {t.dtype}")
        if t.dim() > 2:
            raise ValueError(f"{name} tensor must be 1-D (one index per example), got shape {tuple(t.shape)}")
        idx = _fold.layout(t, N, name).to(out.device, torch.long)
    else:
        raise TypeError(f"{name} must be None, an int, a tuple, a list or a 1-D tensor, got {type(t).__name__}")
    if idx.dim() == 1:
        idx = idx.unsqueeze(1)
    if out.dim() < 1 + idx.shape[1]:
        raise ValueError(f"{name} indexes {idx.shape[1]} dims but the model output has shape {tuple(out.shape)}")
    for d in range(idx.shape[1]):
        _check_range(idx[:, d], out.shape[1 + d], name)
    rows = torch.arange(N, device=out.device)
    return out[(rows, *idx.unbind(1))]


class Target:
    """``f(*x, *args, target=..., **kw) -> Tensor[N]``: one score per example."""

    k_form = False

    def __init__(self, model: Callable, target: Any = _NO_TARGET):
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        self.target = target

    def __call__(self, *inputs, **kwargs):
        if self.target is _NO_TARGET:
            t = kwargs.pop("target", None)
        else:
            if "target" in kwargs:
                raise TypeError("target was fixed by fa.target(model, target); do not pass target= again")
            t = self.target
        out = self.model(*inputs, **kwargs)
        if not isinstance(out, Tensor):
            raise TypeError(f"the model must return a Tensor, got {type(out).__name__}")
        s = select(out, t)
        if t is None and s.dim() == 0:  # one value for the whole batch: the method decides
            return s
        if s.dim() > 1 and t is None and all(d == 1 for d in s.shape[1:]):
            s = s.reshape(s.shape[0])
        if s.dim() != 1:
            raise ValueError(
                f"the selected output has shape {tuple(s.shape)}; a method needs one score per example. "
                + ("Give a target (class index) for this model." if t is None else "Give a tuple target.")
            )
        return s

    def __repr__(self):
        t = "<at call>" if self.target is _NO_TARGET else repr(self.target)
        return f"fa.target({type(self.model).__name__}, {t})"


def target(model: Callable, target: Any = _NO_TARGET) -> Target:
    """The function to explain: ``x[B, ...] -> scores[B]``.

    ``target``: an int (same class for all), a tuple (index into a multi-dim output), a list or
    1-D tensor with one index per example, or None (the model already returns one score per
    example). Leave it out to pass ``target=`` at call time::

        f = fa.target(model, 208);  fa.saliency(f)(x)              # [B, 3, H, W]
        g = fa.target(model);       fa.saliency(g)(x, target=y)    # per-example labels
    """
    return Target(model, target)


class Outputs:
    """``f(*x, *args, **kw) -> Tensor[N, K]``: K scores per example."""

    k_form = True

    def __init__(self, model: Callable, indices: Tensor | None = None, topk: int | None = None, per_row: bool = False):
        self.model = model
        self.indices = indices
        self.topk = topk
        self.per_row = per_row

    def prepare(self, *inputs, **kwargs) -> "Outputs":
        """Resolve ``topk`` on the unperturbed inputs: the same K classes at every step/window."""
        if self.topk is None:
            return self
        with torch.no_grad():
            out = self.model(*inputs, **kwargs)
        if out.dim() != 2:
            raise ValueError(f"fa.outputs(topk=) needs a [B, C] model output, got {tuple(out.shape)}")
        if self.topk > out.shape[1]:
            raise ValueError(f"topk={self.topk} is larger than the {out.shape[1]} model outputs")
        return Outputs(self.model, out.topk(self.topk, dim=1).indices, per_row=True)

    def __call__(self, *inputs, **kwargs):
        if self.topk is not None:
            raise RuntimeError("fa.outputs(model, topk=k) must be prepared on the inputs first (methods do this)")
        out = self.model(*inputs, **kwargs)
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ValueError(f"fa.outputs needs a model returning [B, C] scores, got {getattr(out, 'shape', type(out))}")
        idx = self.indices.to(out.device)
        if self.per_row:
            idx = _fold.layout(idx, out.shape[0], "topk indices")
            _check_range(idx, out.shape[1], "output index")
            return out.gather(1, idx)
        _check_range(idx, out.shape[1], "output index")
        return out[:, idx]

    def __repr__(self):
        return f"fa.outputs({type(self.model).__name__}, {self.indices if self.topk is None else f'topk={self.topk}'})"


def outputs(model: Callable, indices: Sequence[int] | Tensor | None = None, *, topk: int | None = None) -> Outputs:
    """K scores per example: ``x[B, ...] -> scores[B, K]``; every method then returns
    ``[B, K, *x.shape[1:]]`` from one batched evaluation::

        f = fa.outputs(model, [3, 7, 9])      # the same three classes for every example
        f = fa.outputs(model, topk=3)         # each example's top-3 classes at the input
        fa.integrated_gradients(f)(x)         # [B, 3, 3, H, W]

    A model returning ``[B, K]`` passed to a method as it is, with no target, is read the same
    way: every output is attributed, ``[B, K, *x.shape[1:]]`` — the numbers Captum's
    perturbation methods give for a target-less multi-output forward (Captum lays them out flat,
    ``[B·K, ...]``; gradient methods there refuse). An output with more than two dims is
    refused: Captum would flatten it and mix examples; pick scores with ``fa.target`` or
    ``fa.outputs``.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if (indices is None) == (topk is None):
        raise ValueError("give exactly one of indices (a list of output indices) or topk=k")
    if topk is not None:
        if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        return Outputs(model, topk=topk)
    idx = torch.as_tensor(indices)
    if idx.dim() != 1 or idx.numel() == 0 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(f"indices must be a non-empty list of ints, got {indices!r}")
    return Outputs(model, idx.long())


def per_example(g: Callable, *, randomness: str = "error") -> Callable:
    """Lift ``g(*x_one, *args_one)`` written for ONE example (no batch dim) to a batched
    function with ``torch.func.vmap``. Tensors among the arguments whose dim 0 is the batch are
    mapped over; everything else is passed to every example as is::

        f = fa.per_example(lambda x: model(x[None])[0, 3])   # [C,H,W] -> scalar
        fa.saliency(f)(x)                                      # [B, C, H, W]
    """
    if not callable(g):
        raise TypeError(f"g must be callable, got {type(g).__name__}")

    def batched(*inputs, **kwargs):
        N = inputs[0].shape[0]
        dims = tuple(0 if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == N else None for a in inputs)
        keys = list(kwargs)
        kd = tuple(0 if isinstance(kwargs[k], Tensor) and kwargs[k].dim() > 0 and kwargs[k].shape[0] == N else None for k in keys)

        def call(*flat):
            a, k = flat[: len(inputs)], flat[len(inputs):]
            return g(*a, **dict(zip(keys, k)))

        return torch.func.vmap(call, in_dims=dims + kd, randomness=randomness)(*inputs, *[kwargs[k] for k in keys])

    batched.__wrapped__ = g
    return batched


def prepare(f: Callable, xs: tuple, args: tuple, kwargs: dict) -> Callable:
    """Give a score function a chance to fix data-dependent choices (topk) — on the user's
    examples when a call is in progress (not on the noisy or perturbed copies a wrapper
    hands on), else on ``xs``."""
    p = getattr(f, "prepare", None)
    if p is None:
        return f
    ex = _fold.current()
    if ex is not None:
        xs, args, kwargs = ex.xs, ex.args, ex.kwargs
    return p(*xs, *args, **kwargs)


def k_form(f: Callable) -> bool | None:
    """Whether ``f`` gives K scores per example (``fa.outputs``), one (``fa.target``,
    ``fa.neuron``), or None when only its outputs tell (K > 1 columns)."""
    return getattr(f, "k_form", None)


def as_scores(out: Any, rows: int) -> Tensor:
    """A score function's output → ``[rows, K]`` scores. One score per example may come as
    ``[B]`` or ``[B, 1, ...]``; K scores as ``[B, K]``."""
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the function to explain must return a Tensor of scores, got {type(out).__name__}; "
            "wrap a model with fa.target(model, target)"
        )
    if out.dim() == 0 or out.shape[0] != rows:
        raise ValueError(
            f"the function to explain returned shape {tuple(out.shape)} for a batch of {rows} rows; it must return "
            "one row of scores per example (dim 0 = the batch)"
        )
    if out.dim() == 1:
        return out.unsqueeze(1)
    if out.dim() == 2:
        return out
    if all(d == 1 for d in out.shape[1:]):
        return out.reshape(rows, 1)
    raise ValueError(
        f"the function to explain returned shape {tuple(out.shape)}; it must return one score per "
        "example [B] or K scores [B, K]. Wrap the model with fa.target(model, target) or fa.outputs(model, [...])"
    )


def batch_value(out: Any, rows: int) -> Tensor | None:
    """One value for the whole batch — a Python number, a 0-d tensor, or a one-element tensor
    when the batch has more than one row — as a 0-d tensor; None for anything else."""
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return torch.tensor(float(out), dtype=torch.float64)  # a Python float is a double
    if isinstance(out, Tensor) and out.numel() == 1 and (out.dim() == 0 or rows > 1):
        return out.reshape(())
    return None


def gives_rows(f: Callable, kwargs: dict) -> bool:
    """Whether ``f`` is known to give one row of scores per example (a target is chosen, or
    K outputs, or a neuron); otherwise only its output tells (it may give one value for
    the whole batch, e.g. a dataset-level loss)."""
    if isinstance(f, Target):
        t = kwargs.get("target") if f.target is _NO_TARGET else f.target
        return t is not None
    return getattr(f, "k_form", None) is not None
