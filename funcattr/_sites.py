"""Sites inside ``f`` and what a call attaches to a model while ``f`` runs.

A *site* is a module's output (``wrt=layer``) or input (``wrt=fa.input_of(layer)``). A
:func:`capture` reads it, replaces it by a fresh leaf (to take gradients with respect to
it) or by a given tensor, for one evaluation. The model is handed on a *clone* of the
captured value, so an in-place layer after the site (``ReLU(inplace=True)``) never
overwrites what was captured nor trips autograd's leaf check.

Everything here is per call and per thread (DESIGN §6): a hook is registered for one
evaluation, acts only in the context that registered it — another thread running the same
model at the same moment passes through it untouched — and is removed when the evaluation
returns or raises. The same holds for :func:`guard`, which refuses batch-coupled layers
(BatchNorm in training mode) among the modules that actually run inside ``f``.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = ["InputOf", "input_of", "Site", "Sites", "Layout", "site_of", "capture", "read", "guard", "Stop"]


class InputOf:
    """Marks a module's *input* as the place to attribute to: ``wrt=fa.input_of(layer)``."""

    def __init__(self, module: nn.Module):
        if not isinstance(module, nn.Module):
            raise TypeError(f"fa.input_of needs an nn.Module, got {type(module).__name__}")
        self.module = module

    def __repr__(self):
        return f"fa.input_of({type(self.module).__name__})"


def input_of(module: nn.Module) -> InputOf:
    """``wrt=fa.input_of(layer)`` attributes to the tensor going *into* ``layer``."""
    return InputOf(module)


class Site:
    """A module's output (or input) inside ``f``."""

    def __init__(self, module: nn.Module, of_input: bool):
        self.module = module
        self.of_input = of_input

    @property
    def name(self) -> str:
        kind = "input of" if self.of_input else "output of"
        return f"the {kind} {type(self.module).__name__}"

    def __repr__(self):
        return f"Site({self.name})"


class Sites:
    """What ``wrt=`` names: one site, or a list of them read in one forward (``many``)."""

    def __init__(self, parts: tuple[Site, ...], many: bool):
        self.parts, self.many = parts, many

    @property
    def name(self) -> str:
        return self.parts[0].name if not self.many else "[" + ", ".join(p.name for p in self.parts) + "]"

    def __repr__(self):
        return f"Sites({self.name})"


def _one_site(w: Any, name: str) -> Site:
    if isinstance(w, InputOf):
        return Site(w.module, True)
    if isinstance(w, nn.Module):
        return Site(w, False)
    raise TypeError(f"{name} must be an nn.Module, fa.input_of(module) or a list of them, got {type(w).__name__}")


def site_of(wrt: Any, name: str = "wrt") -> Sites | None:
    if wrt is None:
        return None
    if isinstance(wrt, (list, tuple)):
        if not wrt:
            raise ValueError(f"{name} is an empty list; name at least one layer")
        parts = tuple(_one_site(w, f"{name}[{i}]") for i, w in enumerate(wrt))
        keys = [(id(p.module), p.of_input) for p in parts]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{name} names the same layer twice")
        return Sites(parts, True)
    return Sites((_one_site(wrt, name),), False)


class Layout:
    """How a capture's flat tuple of tensors maps back to what ``wrt=`` named: per site, one
    tensor (``single``) or a tuple of them (a tuple output, or a module's several inputs);
    a list of those when ``wrt=`` was a list."""

    def __init__(self, counts: tuple[int, ...], single: tuple[bool, ...], many: bool):
        self.counts, self.single, self.many = counts, single, many

    def split(self, flat: tuple) -> list[tuple]:
        out, i = [], 0
        for n in self.counts:
            out.append(tuple(flat[i : i + n]))
            i += n
        return out

    def restore(self, flat: tuple):
        parts = [p[0] if one else p for p, one in zip(self.split(flat), self.single)]
        return parts if self.many else parts[0]


# The hooks active in this context (thread, call): a hook whose token is not here passes through.
_active: contextvars.ContextVar[tuple] = contextvars.ContextVar("funcattr_hooks", default=())


@contextlib.contextmanager
def _activated(token: object):
    reset = _active.set((*_active.get(), token))
    try:
        yield
    finally:
        _active.reset(reset)


def _mine(token: object) -> bool:
    return token in _active.get()


class Stop(Exception):
    """Raised from a capture with ``stop=True`` once the value is read: the rest of the
    forward is skipped. It carries its capture, so nested reads stop only their own."""

    def __init__(self, box: "Capture"):
        super().__init__()
        self.box = box


class Capture:
    """What a capture saw: the captured tensors of each site (``values``, flat) and how they
    map back (``layout``)."""

    def __init__(self, n: int, many: bool):
        self.parts: list[tuple | None] = [None] * n
        self.single: list[bool] = [True] * n
        self.many = many

    @property
    def done(self) -> bool:
        return all(p is not None for p in self.parts)

    @property
    def values(self) -> tuple[Tensor, ...]:
        return tuple(t for p in self.parts for t in p)

    @property
    def value(self) -> Tensor:
        """The captured tensor of a one-tensor site."""
        return self.values[0]

    @property
    def layout(self) -> Layout:
        return Layout(tuple(len(p) for p in self.parts), tuple(self.single), self.many)


def _check_independent(i: int, values: list, box: Capture, sites: Sites) -> None:
    """Refuse a site computed from an earlier site of the same call: the gradient at both at
    once holds the later one fixed, so the earlier one would get zeros (Captum's
    ``LayerIntegratedGradients`` fails there too). Walks the graph back from the new values to
    the earlier sites' tensors (only when a call has several sites)."""
    earlier = {id(t): k for k, p in enumerate(box.parts) if p is not None for t in p}
    seen, todo = set(), [t.grad_fn for t in values if t.grad_fn is not None]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        var = getattr(node, "variable", None)
        if var is not None and id(var) in earlier:
            raise ValueError(
                f"wrt[{i}] ({sites.parts[i].name}) is computed from wrt[{earlier[id(var)]}] "
                f"({sites.parts[earlier[id(var)]].name}); a gradient at both at once would hold wrt[{i}] fixed and give "
                f"zeros at wrt[{earlier[id(var)]}]. Attribute to each in its own call"
            )
        todo.extend(n for n, _ in node.next_functions)


def _floats(tree: Any) -> tuple[list, Any, list[int]]:
    """Leaves, their structure (None: ``tree`` is one tensor) and the indices of the float ones."""
    if isinstance(tree, Tensor):  # the common case, without pytree's cost
        leaves, spec = [tree], None
    else:
        leaves, spec = tree_flatten(tree)
    return leaves, spec, [i for i, t in enumerate(leaves) if isinstance(t, Tensor) and t.is_floating_point()]


@contextlib.contextmanager
def capture(
    sites: Sites | Site,
    mode: str = "observe",
    inject: list[tuple] | None = None,
    grad_after: bool = False,
    stop: bool = False,
):
    """Capture ``sites`` during the block; yields a :class:`Capture`.

    A site's value is every floating-point tensor of the module's output (a tensor, or the
    tensors of a tuple/nested output) or of its positional inputs (``fa.input_of``).
    ``mode``: ``"observe"`` keeps the values as computed (in the graph when grad is on),
    ``"leaf"`` replaces them by detached copies that require grad (gradients w.r.t. the
    site; the forward before the site need not record anything), ``"inject"`` replaces them
    by ``inject`` (per site, a tuple of tensors). ``grad_after`` switches autograd on once a
    site has run (the caller runs the forward under ``no_grad`` and restores the mode after).
    ``stop`` raises :class:`Stop` once every site has been read.
    """
    if isinstance(sites, Site):
        sites = Sites((sites,), False)
    box = Capture(len(sites.parts), sites.many)
    token = object()

    def take(i: int, site: Site, tree: Any):
        if box.parts[i] is not None:
            raise RuntimeError(
                f"wrt={type(site.module).__name__} runs more than once inside f; attribute to a module "
                "that runs once per forward (wrap each use in its own module)"
            )
        leaves, spec, idx = _floats(tree)
        if not idx:
            what = "inputs" if site.of_input else "output"
            raise TypeError(f"{site.name} holds no floating-point tensor ({type(tree).__name__}); there is nothing to attribute in its {what}")
        if mode != "observe" and any(p is not None for p in box.parts):
            _check_independent(i, [leaves[j] for j in idx], box, sites)
        if mode == "inject":
            new = inject[i]
            if len(new) != len(idx) or any(n.shape != leaves[j].shape for n, j in zip(new, idx)):
                raise ValueError(
                    f"{site.name}: injected shapes {[tuple(n.shape) for n in new]} != {[tuple(leaves[j].shape) for j in idx]}"
                )
        elif mode == "leaf":
            new = tuple(leaves[j].detach().requires_grad_(True) for j in idx)
        else:
            new = tuple(leaves[j] for j in idx)
        box.parts[i] = new
        # one tensor: a tensor output, or one positional input (Captum returns a tuple only for several)
        box.single[i] = isinstance(tree, Tensor) or (site.of_input and len(leaves) == 1 and len(new) == 1)
        if grad_after:
            torch.set_grad_enabled(True)
        if stop and box.done:
            raise Stop(box)
        for j, t in zip(idx, new):
            leaves[j] = t.clone()  # the model goes on with copies: in-place layers after the site are safe
        return leaves[0] if spec is None else tree_unflatten(leaves, spec)

    handles = []
    for i, site in enumerate(sites.parts):
        if site.of_input:

            def pre(mod, args, kwargs, i=i, site=site):
                if not _mine(token):
                    return None
                if len(args) < 1:
                    raise TypeError(f"{site.name}: the module was called without a positional input")
                return tuple(take(i, site, tuple(args))), kwargs

            handles.append(site.module.register_forward_pre_hook(pre, with_kwargs=True))
        else:

            def post(mod, args, out, i=i, site=site):
                return take(i, site, out) if _mine(token) else None

            handles.append(site.module.register_forward_hook(post))
    try:
        with _activated(token):
            yield box
    finally:
        for h in handles:
            h.remove()
    for p, site in zip(box.parts, sites.parts):
        if p is None:
            raise ValueError(
                f"the layer {type(site.module).__name__} never ran inside f; pass a module that the model calls in its forward"
            )


def read(f: Callable, sites: Sites | Site, xs: tuple, args: tuple = (), kwargs: dict | None = None) -> Capture:
    """Run ``f`` until every site has run and return the capture (values in the graph when
    grad is on); the rest of the forward is skipped."""
    with capture(sites, stop=True) as box:
        try:
            f(*xs, *args, **(kwargs or {}))
        except Stop as stop:
            if stop.box is not box:
                raise
    return box


# --------------------------------------------------------------------------- batch-coupled layers

_BATCH_COUPLED = (nn.modules.batchnorm._BatchNorm,)
# modules seen running inside a function (recorded on its first guarded evaluation)
_ran: "weakref.WeakKeyDictionary[Any, list]" = weakref.WeakKeyDictionary()


def _coupled(m: nn.Module) -> bool:
    return isinstance(m, _BATCH_COUPLED) and (m.training or not m.track_running_stats)


def _refuse(m: nn.Module, name: str) -> None:
    why = "in training mode" if m.training else "without running statistics (track_running_stats=False)"
    raise ValueError(
        f"{name} runs {type(m).__name__} {why}: its statistics would mix the examples (and the folded steps) "
        "of a batch. Call model.eval() before attributing."
    )


@contextlib.contextmanager
def guard(f: Any, name: str = "f", record: bool = True):
    """Refuse batch-coupled layers among the modules that run inside ``f`` (found through
    module calls, so a model reached through a global is seen too). The first evaluation of a
    function records which modules ran (one global pre-hook for this context only); later ones
    only re-check those modules. ``record=False`` for an evaluation stopped part-way."""
    try:
        seen = _ran.get(f)
    except TypeError:  # not weak-referenceable: record every time
        seen = None
    if seen is not None:
        for ref in seen:
            m = ref()
            if m is not None and _coupled(m):
                _refuse(m, name)
        yield
        return
    token, found = object(), {}

    def pre(mod, args):
        if _mine(token):
            found[id(mod)] = mod
            if _coupled(mod):
                _refuse(mod, name)

    handle = nn.modules.module.register_module_forward_pre_hook(pre)
    try:
        with _activated(token):
            yield
    finally:
        handle.remove()
    if not record:
        return
    try:
        _ran[f] = [weakref.ref(m) for m in found.values() if isinstance(m, _BATCH_COUPLED)]
    except TypeError:
        pass
