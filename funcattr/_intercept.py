"""Seeing the operations ``f`` calls while it runs, and swapping rules in (DESIGN §4).

A ``TorchFunctionMode`` catches every torch call ``f`` makes — ``nn.ReLU`` modules,
``F.relu``, ``torch.relu``, ``Tensor.relu_``, a module reused several times, the builtins
inside ``F.multi_head_attention_forward`` — looks the function up in ``_ops`` and acts. Modes
are per call and per thread (the torch-function mode stack is thread-local); nothing is
attached to a model. Three modes:

* :func:`guided` — guided backprop / deconvolution: every ReLU gets ``_rules.GuidedReLU``.
* :class:`Recorder` — DeepLift's reference run (the baselines, no autograd): stores, for every
  operation that has a rule, no rule, or takes a mask or index, its tensor arguments and
  output, in call order. A recorded tensor that ``f`` later overwrites in place is cloned
  first (copy on write), so the record keeps the reference run's values.
* :class:`Applier` — DeepLift's x run (with autograd): takes the i-th record for the i-th such
  call, checks that it is the same operation on the same shapes (otherwise ``f`` took another
  path — data-dependent control flow — and DeepLift's comparison is meaningless: a clear
  error), and hands both runs' values to the operation's rule (``_decompose``). Operations
  without a rule, and masks or indices, raise ``NotImplementedError`` naming the operation when
  they differ between the runs and a gradient flows through them — never a silent plain
  gradient.

No layout is assumed: the two runs are separate evaluations, so a batch in any dim (a
sequence-first transformer) pairs each value with its own reference.
"""

from __future__ import annotations

import contextlib
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode, redispatch_function

from . import _ops
from ._decompose import RULES, Call, NoRule, bilinear
from ._rules import EPS, GuidedReLU, Scratch, pool_with_indices

__all__ = ["guided", "Recorder", "Applier", "recording", "applying", "EPS"]


# --------------------------------------------------------------------------- arguments


def _leaves(args: tuple, kwargs: dict) -> list[Tensor]:
    """The tensors among a call's arguments (one level into lists and tuples), in order."""
    out = []
    for v in (*args, *kwargs.values()):
        if isinstance(v, Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(t for t in v if isinstance(t, Tensor))
    return out


def _rebuild(args: tuple, kwargs: dict, leaves) -> tuple[tuple, dict]:
    """``args``, ``kwargs`` with their tensors replaced by ``leaves`` (same order)."""
    it = iter(leaves)

    def sub(v):
        if isinstance(v, Tensor):
            return next(it)
        if isinstance(v, (list, tuple)) and any(isinstance(t, Tensor) for t in v):
            return type(v)(next(it) if isinstance(t, Tensor) else t for t in v)
        return v

    new_args = tuple(sub(v) for v in args)
    return new_args, {k: sub(v) for k, v in kwargs.items()}


def _needs_grad(x: Tensor) -> bool:
    """``x.requires_grad``, seeing through ``torch.func`` wrappers (under a transform a
    wrapped tensor may report False while the tensor it wraps requires grad)."""
    while not x.requires_grad:
        if torch._C._functorch.maybe_get_level(x) == -1:
            return False
        x = torch._C._functorch.get_unwrapped(x)
    return True


def _same(t: Tensor, r: Tensor) -> bool:
    """Is ``t`` (x run) the same value as ``r`` (reference run)? A tensor that requires grad
    and is not the very same object is taken to differ (the rules are exact either way)."""
    if t is r:
        return True
    if t.shape != r.shape or t.dtype != r.dtype or _needs_grad(t):
        return False
    return bool(torch.equal(t.detach(), r))


def _same_func(a, b) -> bool:
    try:
        return a is b or a == b  # bound method wrappers are made afresh at each access
    except Exception:  # noqa: BLE001 - an exotic callable
        return False


def _kind(op: _ops.Op | None, func, leaves: list[Tensor]) -> str | None:
    """What a call is to DeepLift: a rule's kind, ``"nonlinear"``, ``"select"`` (takes a mask
    or an index), or None (linear or shape-only: nothing to record)."""
    if op is not None and (op.gate is None or op.gate(leaves)):
        return op.kind
    try:
        if func in _ops.NONLINEAR:
            return "nonlinear"
    except TypeError:
        pass
    if any(not t.is_floating_point() for t in leaves) and any(t.is_floating_point() for t in leaves):
        return "select"
    return None


def _mutated(func, op: _ops.Op | None, args: tuple, kwargs: dict) -> list[Tensor]:
    """Tensors a call writes in place: ``x.add_()``, ``x += y``, ``x[i] = v``, ``out=``,
    ``inplace=True``."""
    out = []
    name = getattr(func, "__name__", "")
    if args and isinstance(args[0], Tensor) and (
        (name.endswith("_") and not name.startswith("__") and name != "requires_grad_")
        or name in ("__iadd__", "__isub__", "__imul__", "__idiv__", "__itruediv__", "__ipow__", "__setitem__",
                    "__ifloordiv__", "__imod__", "__iand__", "__ior__", "__ixor__")
        or kwargs.get("inplace") is True
        or (op is not None and op.inplace)
    ):
        out.append(args[0])
    dest = kwargs.get("out")
    if isinstance(dest, Tensor):
        out.append(dest)
    elif isinstance(dest, (list, tuple)):
        out.extend(t for t in dest if isinstance(t, Tensor))
    return out


def _no_vmap(leaves: list[Tensor], recording: bool) -> None:
    for t in leaves:
        level = torch._C._functorch.maybe_get_level(t)
        if level != -1 and (recording or torch._C._functorch.is_batchedtensor(t)):
            raise NotImplementedError(
                "DeepLift cannot follow f through torch.func.vmap inside f (fa.per_example): its rules compare "
                "each value with the baseline's, which needs the batched function itself"
            )


class _Mode(TorchFunctionMode):
    """Looks calls up in the table; re-enters Python composites (``F.*``) so their builtins
    are seen."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            op = _ops.OPS.get(func)
        except TypeError:  # an unhashable callable
            op = None
        if op is None and _ops.composite(func):
            with self:
                return redispatch_function(func, types, args, kwargs)
        return self.call(func, op, args, kwargs)

    def call(self, func, op, args, kwargs):  # pragma: no cover - overridden
        return func(*args, **kwargs)


# --------------------------------------------------------------------------- guided backprop / deconvolution


class _Guided(_Mode):
    def __init__(self, deconv: bool):
        super().__init__()
        self.deconv = deconv

    def call(self, func, op, args, kwargs):
        if op is None or op.kind != "elementwise" or op.extra != "relu":
            return func(*args, **kwargs)
        a = _ops.bind(op.names, op.defaults, args, kwargs)
        x = a["input"]
        if not isinstance(x, Tensor) or not x.is_floating_point() or not torch.is_grad_enabled() or not _needs_grad(x):
            return func(*args, **kwargs)
        res = GuidedReLU.apply(x, self.deconv)
        if op.is_inplace(a) and not (x.is_leaf and x.requires_grad):
            return x.copy_(res)
        return res


def guided(kind: str):
    """The ``rules=`` argument of the gradient primitive for guided backprop (``"guided"``)
    or deconvolution (``"deconv"``)."""
    if kind not in ("guided", "deconv"):
        raise ValueError(f"kind must be 'guided' or 'deconv', got {kind!r}")
    return lambda xs: _Guided(kind == "deconv")


# --------------------------------------------------------------------------- DeepLift: record, then apply


class _Record:
    __slots__ = ("func", "tensors", "out", "versions", "scalars", "own")


def _storage(t: Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def _scalars(args: tuple, kwargs: dict) -> tuple:
    return tuple(v for v in (*args, *kwargs.values()) if isinstance(v, (int, float, bool)))


class Recorder(_Mode):
    """The reference run: records what the x run's rules will need (see the module doc)."""

    def __init__(self):
        super().__init__()
        self.records: list[_Record] = []
        self._owners: dict[int, list] = {}  # storage → [(record, slot)] (copy on write)

    def _own(self, rec: _Record, slot, t: Tensor) -> None:
        key = _storage(t)
        if key is not None:
            self._owners.setdefault(key, []).append((rec, slot))

    def _before_write(self, tensors: list[Tensor]) -> None:
        for t in tensors:
            for rec, slot in self._owners.pop(_storage(t), ()):
                if slot == "out":
                    rec.out = rec.out.clone()
                else:
                    rec.tensors[slot] = rec.tensors[slot].clone()
                    rec.versions[slot] = 0
                    rec.own.add(slot)  # a copy only this record holds

    def call(self, func, op, args, kwargs):
        leaves = _leaves(args, kwargs)
        _no_vmap(leaves, True)
        kind = _kind(op, func, leaves)
        if kind is None:
            written = _mutated(func, op, args, kwargs)
            if written:
                self._before_write(written)
            return func(*args, **kwargs)
        rec = _Record()
        rec.func, rec.tensors, rec.out, rec.scalars, rec.own = func, list(leaves), None, _scalars(args, kwargs), set()
        rec.versions = [t._version for t in leaves]
        for i, t in enumerate(leaves):
            self._own(rec, i, t)
        written = _mutated(func, op, args, kwargs)
        if written:
            self._before_write(written)
        if kind == "maxpool":
            a = _ops.bind(op.names, op.defaults, args, kwargs)
            stride = a["stride"] if a["stride"] not in (None, [], ()) else a["kernel_size"]
            out = pool_with_indices(op.extra, a["input"], a["kernel_size"], stride, a["padding"], a["dilation"], a["ceil_mode"])
            rec.out = out
            res = out if a.get("return_indices") else out[0]
        else:
            res = func(*args, **kwargs)
            if kind == "elementwise" and isinstance(res, Tensor):
                rec.out = res
                self._own(rec, "out", res)
        self.records.append(rec)
        return res


class Applier(_Mode):
    """The x run: applies the rules with the reference values ``records``. ``strict``: a
    value that differs between the runs but carries no gradient (a comparison, a cast, a
    detach) is an error — attributing to the inputs, every difference should reach them."""

    def __init__(self, records: list[_Record], eps: float = EPS, strict: bool = True):
        super().__init__()
        self.records, self.eps, self.strict, self.pos = records, eps, strict, 0
        self.scratch = Scratch()

    # -- matching the two runs

    def _mismatch(self, what: str):
        return ValueError(
            "DeepLift compares two runs of f operation by operation — the baseline's, then x's — but f took a "
            f"different path on x: {what}. DeepLift needs f to apply the same operations to x and to the baseline "
            "(no control flow that depends on the values)."
        )

    def _next(self, func, leaves: list[Tensor], args: tuple, kwargs: dict) -> _Record:
        i = self.pos
        if i >= len(self.records):
            raise self._mismatch(f"it called {_ops.label(func)} after the {i} operations the baseline's run made")
        rec = self.records[i]
        self.records[i] = None  # free the reference values as they are used
        self.pos += 1
        if not _same_func(rec.func, func) or len(rec.tensors) != len(leaves) or any(
            t.shape != r.shape for t, r in zip(leaves, rec.tensors)
        ):
            raise self._mismatch(
                f"operation #{i + 1} was {_ops.label(rec.func)} on {[tuple(t.shape) for t in rec.tensors]} for the "
                f"baseline and {_ops.label(func)} on {[tuple(t.shape) for t in leaves]} for x"
            )
        if rec.scalars != _scalars(args, kwargs):
            raise self._mismatch(f"{_ops.label(func)} (operation #{i + 1}) got other numbers: {rec.scalars} then {_scalars(args, kwargs)}")
        if any(t._version != v for t, v in zip(rec.tensors, rec.versions)):
            raise RuntimeError(f"funcattr: the baseline's input of {_ops.label(func)} was overwritten in place unseen")
        return rec

    def finish(self) -> None:
        if self.pos != len(self.records):
            rest = next(r for r in self.records[self.pos :] if r is not None)
            raise self._mismatch(
                f"it made {self.pos} of the operations the baseline's run made (the next was {_ops.label(rest.func)})"
            )

    # -- applying

    def _no_rule(self, func, what: str = ""):
        return NotImplementedError(
            f"DeepLift has no exact rule for {what or _ops.label(func)}, which f applies where x and the baseline "
            "differ: it would get a plain gradient and break DeepLift's summation to delta. Attribute to a layer "
            "after it (wrt=), or use a path method (fa.integrated_gradients) for this model."
        )

    def call(self, func, op, args, kwargs):
        leaves = _leaves(args, kwargs)
        _no_vmap(leaves, False)
        kind = _kind(op, func, leaves)
        if kind is None:
            return func(*args, **kwargs)
        rec = self._next(func, leaves, args, kwargs)
        floats = [(t, r) for t, r in zip(leaves, rec.tensors) if t.is_floating_point()]
        if not torch.is_grad_enabled() or not any(_needs_grad(t) for t, _ in floats) or all(t is r for t, r in floats):
            return func(*args, **kwargs)  # no gradient flows here, or nothing differs: nothing to rewrite
        for t, r in zip(leaves, rec.tensors):
            if not t.is_floating_point() and not (t is r or (t.shape == r.shape and bool(torch.equal(t, r)))):
                raise self._no_rule(func, f"{_ops.label(func)} with a mask or index that differs (a selection that depends on the values)")
        if self.strict:
            for t, r in floats:
                if not _needs_grad(t) and not _same(t, r):
                    raise self._no_rule(
                        func, f"{_ops.label(func)} of a value that differs but carries no gradient (a comparison, a cast, a detach)"
                    )
        if kind == "select":
            return func(*args, **kwargs)
        if kind == "nonlinear":
            if any(_needs_grad(t) and not _same(t, r) for t, r in floats):
                raise self._no_rule(func)
            return func(*args, **kwargs)
        if kind == "bilinear":
            c = Call(func, op.label, op, args, kwargs, None, None, None, self.eps, _same)
            def rebuilt(ts):
                a2, kw2 = _rebuild(args, kwargs, ts)
                return func(*a2, **kw2)

            try:
                return bilinear(c, leaves, rec.tensors, rebuilt)
            except NoRule as err:
                raise self._no_rule(func, str(err)) from None
        rargs, rkwargs = _rebuild(args, kwargs, rec.tensors)
        a = _ops.bind(op.names, op.defaults, args, kwargs)
        ra = _ops.bind(op.names, op.defaults, rargs, rkwargs)
        try:
            owned = {id(rec.tensors[i]) for i in rec.own}
            return RULES[kind](Call(func, op.label, op, args, kwargs, a, ra, rec.out, self.eps, _same, self.scratch, owned))
        except NoRule as err:
            raise self._no_rule(func, str(err)) from None


@contextlib.contextmanager
def recording():
    """The reference run: ``with recording() as rec: f(baseline)``; ``rec.records`` after."""
    rec = Recorder()
    with rec:
        yield rec


@contextlib.contextmanager
def applying(records: list, eps: float = EPS, strict: bool = True):
    """The x run against ``records`` (checked complete on exit)."""
    mode = Applier(records, eps, strict)
    with mode:
        yield mode
    mode.finish()

