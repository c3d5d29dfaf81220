"""What a dataset store records about how it was made, so that a resumed run can prove it is
the same job: a readable description of an attribution function (its method, the
hyperparameters and models it closes over) and a fingerprint of a model's weights.

    describe(fa.integrated_gradients(fa.target(model), steps=32))
    # {'function': 'funcattr._gradient.integrated_gradients.<locals>.attr_fn',
    #  'closure': {'steps': 32, 'baseline': 0.0, 'method': 'gausslegendre',
    #              'f': {'object': 'funcattr._scores.Target',
    #                    'attrs': {'model': {'module': 'ShapesNet', 'weights': 'sha256:…'}, …}}, …}}

The description is built from what Python shows of any function (closure cells, defaults,
the globals its code names), so it works for the library's methods and for a user's lambda
alike, and is the same in every process that builds the same function.
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
import types
from typing import Any

import torch
from torch import nn

__all__ = ["describe", "weights_sha256", "tensor_sha256", "diff"]

# Display-only options: changing them never changes a result.
_IGNORED = frozenset({"progress"})
_MAX_DEPTH = 12
_SMALL = 8  # tensors with at most this many elements are written out


def _name(obj: Any) -> str:
    mod = getattr(obj, "__module__", None) or ""
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__qualname__
    return f"{mod}.{qual}" if mod and mod != "builtins" else qual


def tensor_sha256(t: torch.Tensor, h=None) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (device-independent)."""
    own = h is None
    h = h or hashlib.sha256()
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        flat = t.to("cpu").contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().data)
    return "sha256:" + h.hexdigest() if own else ""


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over a module's ``state_dict`` (names, dtypes, shapes and bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict(keep_vars=False).items()):
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            tensor_sha256(t, h)
        else:
            h.update(repr(t).encode())
    return "sha256:" + h.hexdigest()


def describe(obj: Any, weights: dict[int, str] | None = None) -> Any:
    """A JSON-able description of ``obj``, equal for equal functions built the same way.
    ``weights``: known ``id(module) -> weights_sha256(module)``, to hash a big model once."""
    return _Describer(weights).run(obj, 0)


class _Describer:
    def __init__(self, weights: dict[int, str] | None = None):
        self.seen: dict[int, str] = {}
        self.modules: dict[int, str] = weights if weights is not None else {}

    def run(self, obj: Any, depth: int) -> Any:
        if obj is None or isinstance(obj, (bool, int, str)):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else repr(obj)
        if isinstance(obj, (torch.dtype, torch.device, torch.Size)):
            return str(obj)
        if isinstance(obj, torch.Tensor):
            if obj.numel() <= _SMALL and not obj.requires_grad:
                return {"tensor": obj.detach().to("cpu").tolist(), "dtype": str(obj.dtype)}
            return {"tensor": list(obj.shape), "dtype": str(obj.dtype), "bytes": tensor_sha256(obj)}
        if isinstance(obj, nn.Module):
            key = id(obj)
            if key not in self.modules:
                self.modules[key] = weights_sha256(obj)
            return {"module": type(obj).__qualname__, "weights": self.modules[key]}
        if isinstance(obj, torch.Generator):
            return {"generator": obj.initial_seed()}
        if isinstance(obj, (types.ModuleType, type)) or isinstance(obj, types.BuiltinFunctionType):
            return _name(obj)
        if depth >= _MAX_DEPTH:
            return {"object": _name(type(obj))}
        key = id(obj)
        if key in self.seen:
            return {"ref": self.seen[key]}
        self.seen[key] = _name(obj) if callable(obj) else _name(type(obj))
        d = depth + 1
        if isinstance(obj, (tuple, list)):
            return [self.run(v, d) for v in obj]
        if isinstance(obj, dict):
            return {str(k): self.run(v, d) for k, v in obj.items()}
        if isinstance(obj, (set, frozenset)):
            return sorted((self.run(v, d) for v in obj), key=repr)
        if isinstance(obj, functools.partial):
            return {"partial": self.run(obj.func, d), "args": self.run(obj.args, d), "keywords": self.run(obj.keywords, d)}
        if isinstance(obj, types.MethodType):
            return {"method": self.run(obj.__func__, d), "self": self.run(obj.__self__, d)}
        if isinstance(obj, types.FunctionType):
            return self._function(obj, d)
        out: dict[str, Any] = {"object": _name(type(obj))}
        attrs = getattr(obj, "__dict__", None)
        if attrs:
            out["attrs"] = {k: self.run(v, d) for k, v in sorted(attrs.items()) if k not in _IGNORED and not k.startswith("__")}
        return out

    def _function(self, fn: types.FunctionType, d: int) -> dict:
        out: dict[str, Any] = {"function": _name(fn)}
        code = fn.__code__
        if fn.__closure__:
            cells = {}
            for name, cell in zip(code.co_freevars, fn.__closure__):
                if name in _IGNORED:
                    continue
                try:
                    cells[name] = self.run(cell.cell_contents, d)
                except ValueError:  # an empty cell
                    cells[name] = None
            out["closure"] = cells
        if not _in_library(fn):  # a user's function: its literals are part of what it does
            consts = _constants(code)
            if consts:
                out["constants"] = consts
        if fn.__defaults__:
            out["defaults"] = self.run(fn.__defaults__, d)
        if fn.__kwdefaults__:
            out["kwdefaults"] = {k: self.run(v, d) for k, v in fn.__kwdefaults__.items() if k not in _IGNORED}
        glob = {}
        # a library's module-level state (caches, registries) is not a hyperparameter: its
        # version is recorded apart; a user's function may name a model or a setting globally
        for name in sorted(_global_names(code)) if not _in_library(fn) else ():
            if name in fn.__globals__ and name not in _IGNORED:
                v = fn.__globals__[name]
                if not isinstance(v, (types.ModuleType, type, types.BuiltinFunctionType)) and not _is_library(v):
                    glob[name] = self.run(v, d)
        if glob:
            out["globals"] = glob
        return out


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _global_names(c)
    return names


def _constants(code: types.CodeType) -> list:
    out = []
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out += _constants(c)
        elif isinstance(c, (int, float, str, bytes, tuple, frozenset)) and not isinstance(c, bool):
            out.append(repr(c))
    return out


_LIBRARIES = ("torch", "funcattr", "numpy", "torchvision", "einops", "math", "functools")


def _in_library(fn: types.FunctionType) -> bool:
    return (fn.__module__ or "").split(".")[0] in _LIBRARIES


def _is_library(v: Any) -> bool:
    """A function a library defines at module level (``torch.relu``, ``fa.upsample``): the code
    refers to it by name, and its module's version is recorded apart. Functions a library
    built at run time (an ``attr_fn`` closing over hyperparameters) are described in full."""
    if not isinstance(v, types.FunctionType) or not _in_library(v):
        return False
    if not v.__closure__:
        return True
    home = sys.modules.get(v.__module__)  # a decorated module-level function (a context manager, a cache)
    return home is not None and getattr(home, v.__qualname__, None) is v


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Paths where two descriptions differ: ``['attr_fn.closure.steps: 32 in the store, 64 now']``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in new:
                out.append(f"{sub}: {_short(old[k])} in the store, absent now")
            elif k not in old:
                out.append(f"{sub}: absent in the store, {_short(new[k])} now")
            else:
                out += diff(old[k], new[k], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in diff(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {_short(old)} in the store, {_short(new)} now"]


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."
