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

__all__ = ["InputOf", "input_of", "Site", "site_of", "capture", "read", "guard", "Stop"]


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


def site_of(wrt: Any, name: str = "wrt") -> Site | None:
    if wrt is None:
        return None
    if isinstance(wrt, InputOf):
        return Site(wrt.module, True)
    if isinstance(wrt, nn.Module):
        return Site(wrt, False)
    raise TypeError(f"{name} must be an nn.Module or fa.input_of(module), got {type(wrt).__name__}")


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
    """What a capture saw: ``value`` (the captured tensor) and how many times the site ran."""

    __slots__ = ("value", "calls")

    def __init__(self):
        self.value: Tensor | None = None
        self.calls = 0


@contextlib.contextmanager
def capture(site: Site, mode: str = "observe", inject: Tensor | None = None, grad_after: bool = False, stop: bool = False):
    """Capture ``site`` during the block; yields a :class:`Capture`.

    ``mode``: ``"observe"`` keeps the value as computed (in the graph when grad is on),
    ``"leaf"`` replaces it by a detached copy that requires grad (gradients w.r.t. the site;
    the forward before the site need not record anything), ``"inject"`` replaces it by
    ``inject``. ``grad_after`` switches autograd on once the site has run (the caller runs
    the forward under ``no_grad`` and restores the mode after). ``stop`` raises
    :class:`Stop` once the value is read.
    """
    box = Capture()
    token = object()
    what = "input" if site.of_input else "output"

    def take(value):
        box.calls += 1
        if box.calls > 1:
            raise RuntimeError(
                f"wrt={type(site.module).__name__} runs more than once inside f; attribute to a module "
                "that runs once per forward (wrap each use in its own module)"
            )
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{site.name} is a {type(value).__name__}, not a Tensor; attribute to a layer whose {what} is a single tensor"
            )
        if mode == "inject":
            if inject.shape != value.shape:
                raise ValueError(f"{site.name}: injected shape {tuple(inject.shape)} != {tuple(value.shape)}")
            new = inject
        elif mode == "leaf":
            new = value.detach().requires_grad_(True)
        else:
            new = value
        box.value = new
        if grad_after:
            torch.set_grad_enabled(True)
        if stop:
            raise Stop(box)
        return new.clone()  # the model goes on with a copy: in-place layers after the site are safe

    if site.of_input:

        def pre(mod, args, kwargs):
            if not _mine(token):
                return None
            if len(args) < 1:
                raise TypeError(f"{site.name}: the module was called without a positional input")
            return (take(args[0]), *args[1:]), kwargs

        handle = site.module.register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(mod, args, out):
            return take(out) if _mine(token) else None

        handle = site.module.register_forward_hook(post)
    try:
        with _activated(token):
            yield box
    finally:
        handle.remove()
    if box.calls == 0:
        raise ValueError(
            f"the layer {type(site.module).__name__} never ran inside f; pass a module that the model calls in its forward"
        )


def read(f: Callable, site: Site, xs: tuple, args: tuple = (), kwargs: dict | None = None) -> Tensor:
    """Run ``f`` until ``site`` has run and return its value (in the graph when grad is on);
    the rest of the forward is skipped."""
    with capture(site, stop=True) as box:
        try:
            f(*xs, *args, **(kwargs or {}))
        except Stop as stop:
            if stop.box is not box:
                raise
    return box.value


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
