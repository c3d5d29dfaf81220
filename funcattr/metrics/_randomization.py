"""The model-parameter randomization test (Adebayo et al. 2018)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .._inputs import as_tuple, check_inputs
from ._checks import _describe

__all__ = ["randomization_check"]


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = ((a * a).sum(1) * (b * b).sum(1)).sqrt()
    num = (a * b).sum(1)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


def _ranks(v: Tensor) -> Tensor:
    """Average ranks (ties share the mean of their positions), per row."""
    v = v.contiguous()
    s = v.sort(1).values
    lo = torch.searchsorted(s, v, right=False)
    hi = torch.searchsorted(s, v, right=True)
    return (lo + hi - 1).to(v.dtype) / 2


def _spearman(a: Tensor, b: Tensor) -> Tensor:
    return _pearson(_ranks(a), _ranks(b))


_SIMILARITIES = {"spearman": _spearman, "pearson": _pearson}


def _resettable(module: nn.Module) -> bool:
    return any(callable(getattr(m, "reset_parameters", None)) for m in module.modules())


def _layer_names(model: nn.Module, layers: Any) -> list[str]:
    named = dict(model.named_modules())
    if layers is None:
        names = [
            n
            for n, m in named.items()
            if callable(getattr(m, "reset_parameters", None)) and next(m.parameters(recurse=False), None) is not None
        ]
        if not names:
            raise ValueError("layers: the model has no module with reset_parameters() and parameters of its own; name the layers")
        return names[::-1]  # registration order reversed: output side first
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    by_id = {id(m): n for n, m in named.items()}
    out = []
    for layer in layers:
        if isinstance(layer, str):
            if layer not in named:
                raise ValueError(f"layers: the model has no module named {layer!r}")
            name = layer
        elif isinstance(layer, nn.Module):
            if id(layer) not in by_id:
                raise ValueError(f"layers: {type(layer).__name__} module is not part of the model")
            name = by_id[id(layer)]
        else:
            raise TypeError(f"layers must hold module names or modules of the model, got {type(layer).__name__}")
        if not _resettable(named[name]):
            raise ValueError(f"layers: {name!r} has no (sub)module with reset_parameters() to reinitialize")
        if name in out:
            raise ValueError(f"layers: {name!r} is listed twice")
        out.append(name)
    return out


def _randomize(model: nn.Module, name: str, seed: int) -> None:
    mod = model.get_submodule(name)
    cuda = sorted({p.device.index or 0 for p in mod.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for sub in mod.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()


def randomization_check(
    method: Callable[[nn.Module], Callable],
    model: nn.Module,
    x: Any,
    *,
    layers: Any = None,
    similarity: str | Callable = "spearman",
    cascading: bool = True,
    seed: int = 0,
    abs: bool = True,
    **call_kwargs,
) -> dict[str, Tensor]:
    """Model-parameter randomization test (Adebayo et al. 2018, "Sanity checks for saliency
    maps"): attributions of the trained model vs. those of copies whose layers are
    reinitialized, one similarity per example and layer::

        sims = fa.metrics.randomization_check(lambda m: fa.saliency(fa.target(m, 3)), model, x)
        sims   # {"original": [B] (≈ 1), "fc": [B], "conv3": [B], ...}  in randomization order

    ``method(model) -> attr_fn`` builds the attribution function for a model; each is called
    as ``attr_fn(x, **call_kwargs)``. ``layers``: module names or modules of ``model`` in the
    order to randomize (default: every module with ``reset_parameters()`` and parameters of its
    own, output side first, i.e. registration order reversed); a named block reinitializes
    every submodule inside it. ``cascading=True`` randomizes cumulatively from the top (copy
    ``i`` has layers ``0..i`` reinitialized), ``False`` one layer at a time. Layer ``i`` is
    reinitialized by ``reset_parameters()`` under seed ``seed + i`` (the same weights in both
    modes) without touching the global RNG; ``model`` itself is never modified (deep copies).

    ``"original"`` (first) compares with an unrandomized deep copy: 1 for a deterministic
    method, the noise floor for a stochastic one. ``similarity``: ``"spearman"`` (rank
    correlation, ties averaged) or ``"pearson"`` of each example's flattened attributions (all
    inputs), of absolute values when ``abs``; or a callable ``(a[B, D], b[B, D]) -> [B]``. A
    constant map has zero variance and gets similarity 0.

    Each copy's attributions come from ONE call of its ``attr_fn`` (all its steps/samples are one
    folded batch through the executor). Copies are evaluated one after another, so only one
    copy is alive at a time (memory of one extra model) and methods that reach into the
    model's layers (``wrt=m.layer4``) work on the copies unchanged.
    """
    if not callable(method):
        raise TypeError(f"method must be a function model -> attr_fn, got {type(method).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(similarity, str):
        if similarity not in _SIMILARITIES:
            raise ValueError(f"similarity must be one of {tuple(_SIMILARITIES)} or a callable, got {similarity!r}")
        sim = _SIMILARITIES[similarity]
    elif callable(similarity):
        sim = similarity
    else:
        raise TypeError(f"similarity must be a name or a callable, got {type(similarity).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    names = _layer_names(model, layers)
    xs, _ = as_tuple(x)
    B = check_inputs(xs, grad=False)

    def attributions(m: nn.Module) -> Tensor:
        fn = method(m)
        if not callable(fn):
            raise TypeError(f"method(model) must return an attribution function, got {type(fn).__name__}")
        res = fn(x, **call_kwargs)
        if getattr(fn, "returns_delta", False):
            res = res[0]
        parts, _ = as_tuple(res, "method(model)(x)")
        flat = torch.cat([t.detach().reshape(B, -1).to(torch.float64) for t in parts], 1)
        return flat.abs() if abs else flat

    def compare(a: Tensor) -> Tensor:
        r = sim(ref, a)
        if not isinstance(r, Tensor) or r.shape != (B,):
            raise ValueError(f"similarity must return a Tensor [B] = [{B}], got {_describe(r)}")
        return r.to(dtype)

    first = as_tuple(x)[0][0]
    dtype = first.dtype if first.is_floating_point() else torch.float32
    ref = attributions(model)
    out: dict[str, Tensor] = {}
    current = copy.deepcopy(model)
    out["original"] = compare(attributions(current))
    for i, name in enumerate(names):
        if cascading:
            _randomize(current, name, seed + i)
            out[name] = compare(attributions(current))
        else:
            cp = copy.deepcopy(model)
            _randomize(cp, name, seed + i)
            out[name] = compare(attributions(cp))
            del cp
    return out
