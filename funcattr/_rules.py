"""Backward rules as ``torch.autograd.Function``s: how a gradient flows through one operation.

Each Function computes the operation's real value in its forward and replaces its backward
by a rule. They define ``setup_context`` and ``generate_vmap_rule``, so they run under
``torch.func`` transforms and under ``autograd.grad(..., is_grads_batched=True)`` (K targets),
and their backward uses only plain tensor ops (the legacy vmap of ``is_grads_batched`` has
batching rules for those).

* :class:`GuidedReLU` — guided backprop (``relu(g)·[x > 0]``) and deconvolution (``relu(g)``).

DeepLift's rules see the operation's inputs in the *x run* (``x``, in the autograd graph) and
in the *reference run* (``r``, the baseline's values, recorded by ``_intercept``). Each keeps
DeepLift's summation-to-delta exactly: the multipliers it back-propagates, times the input
differences, sum to the output difference.

* :class:`Rescale` — an elementwise function ``φ``: ``g · m`` with ``m = Δφ/Δx`` (Shrikumar
  et al.'s Rescale rule). Where ``|Δx|`` is too small for the secant to be computed (below
  ``eps``, as in Captum; and for smooth functions also below ``τ·|x + r|`` with
  ``τ = ε_float^(1/3)``, where ``φ(x) − φ(r)`` is mostly rounding), ``m`` is the local
  derivative — at ``x`` for piecewise-linear functions (Captum's choice), at the midpoint for
  smooth ones (the secant's limit, so completeness still holds to rounding). Multipliers
  stay bounded by the function's slope: no ``5e4`` from dividing rounding by a tiny ``Δx``.
* :class:`Product`, :class:`MatMul` — the *uniform rule* for a bilinear product of two tensors
  that both differ between the runs: ``Δ(ab) = ā·Δb + Δa·b̄`` with ``ā = (a + a_r)/2``,
  exact. :func:`at_midpoint` does the same for any other bilinear operation (``einsum``,
  ``baddbmm``, a ``linear`` whose weight differs, ...): the gradient of a bilinear map at the
  midpoint of the two runs is the uniform rule.
* :class:`MaxPool` — Captum's max-pool rule, with overlapping windows accumulated.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

__all__ = ["EPS", "GuidedReLU", "Elementwise", "Scratch", "Rescale", "Product", "MatMul", "at_midpoint", "MaxPool", "midpoint"]

EPS = 1e-10

# A backward may run while a mode of ``_intercept`` is still active (``torch.func.grad`` inside
# the block): the rules' own arithmetic must not be intercepted.
_quiet = torch._C.DisableTorchFunction


def _quietly(backward):
    @functools.wraps(backward)
    def run(ctx, *grads):
        with _quiet():
            return backward(ctx, *grads)

    return run


class GuidedReLU(Function):
    """ReLU whose backward is ``relu(g)·[x>0]`` (guided) or ``relu(g)`` (deconvolution)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, deconv):
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.deconv = inputs[1]
        if not inputs[1]:
            ctx.save_for_backward(output)

    @staticmethod
    @_quietly
    def backward(ctx, g):
        g = g.clamp_min(0)
        if not ctx.deconv:
            (out,) = ctx.saved_tensors
            g = g * (out > 0)
        return g, None


# --------------------------------------------------------------------------- elementwise: Rescale


class Elementwise:
    """An elementwise function ``fn`` (out of place), whether it is piecewise linear (``pl``:
    its secant is exact in floating point wherever ``Δx ≠ 0``), and optionally an in-place
    form ``fn_``."""

    __slots__ = ("name", "fn", "pl", "fn_")

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor], pl: bool = False, fn_: Callable | None = None):
        self.name, self.fn, self.pl, self.fn_ = name, fn, pl, fn_


def _wide(t: Tensor) -> Tensor:
    """16-bit tensors in float32 for differences (a 16-bit Δ of nearby values is mostly rounding)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class Scratch:
    """One reusable buffer for the transient values of a call's rules (``Δin``), grown to the
    largest size asked for: ``scratch(shape, dtype)`` is a view of it, valid until the next
    request."""

    def __init__(self):
        self.buf: Tensor | None = None

    def __call__(self, shape: torch.Size, dtype: torch.dtype, device=None) -> Tensor:
        n = math.prod(shape)
        b = self.buf
        if b is None or b.numel() < n or b.dtype != dtype or (device is not None and b.device != torch.device(device)):
            b = self.buf = torch.empty(n, dtype=dtype, device=device)
        return b[:n].view(shape)


def _derivative(fn: Callable, at: Tensor) -> Tensor:
    return torch.func.jvp(fn, (at,), (torch.ones_like(at),))[1]


def _band(el: Elementwise, x: Tensor, r: Tensor, din: Tensor, eps: float, out_r: Tensor | None = None):
    """Where the secant is not computable: ``(index, local derivative there)`` or None.
    Piecewise-linear functions: ``|Δin| < eps`` (their secant is exact elsewhere); smooth
    ones also ``|Δin| ≤ τ·|x + r|`` (the secant would be rounding noise), at the midpoint."""
    if el.pl:
        band = ~(din != 0) if eps <= EPS else ~(din.abs() >= eps)
    else:
        tau = torch.finfo(din.dtype).eps ** (1 / 3)
        tol = (r + 0.5 * din).abs_().mul_(2 * tau).add_(eps)
        band = ~(din.abs() > tol)  # also NaN
    if din.dim() == 0:
        idx = () if bool(band) else None
    else:
        idx = band.nonzero(as_tuple=True) if bool(band.any()) else None
    if idx is None:
        return None
    at = x[idx] if el.pl else r[idx] + 0.5 * din[idx]
    at = torch.where(torch.isnan(at), r[idx], at)  # x = r = ±inf (masked logits)
    return idx, _derivative(el.fn, at)


def _secant(el: Elementwise, x: Tensor, r: Tensor, out_r: Tensor, din: Tensor, eps: float, apply, into):
    """``out = apply()`` and ``Δout/Δin`` (the local derivative in the band); the multiplier
    is written into ``into`` when given.

    Piecewise-linear functions with the default ``eps`` divide first and look for the band
    only when the multipliers' sum is not finite: the band is ``Δin = 0`` (``x = r``), where
    ``0/0`` is NaN, and there the derivative at ``x`` is the derivative at ``r``, which an
    in-place ``apply`` leaves intact (unless the multipliers go into ``r``'s buffer).
    Otherwise the band is found before ``apply`` may overwrite ``x``."""
    lazy = el.pl and eps <= EPS and into is None  # ``into`` may be ``r``'s buffer: then r is gone after
    fix = None if lazy else _band(el, x, r, din, eps)
    out = apply()
    m = torch.sub(_wide(out), _wide(out_r), out=into) if into is not None else _wide(out) - _wide(out_r)
    m = m.div_(din)
    if lazy and not bool(torch.isfinite(m.sum())):
        fix = _band(el, r, r, din, eps)
    if fix is not None:
        m[fix[0]] = fix[1].to(m.dtype)
    return out, m


class Rescale(Function):
    """``el.fn(x)`` with the Rescale backward ``g · Δout/Δin``. ``r``, ``out_r``: the
    reference run's input and output. ``inplace``: ``x`` is overwritten (``relu_``).
    ``scratch(shape, dtype)``: a reusable buffer for ``Δin`` (or None); ``own_r``: ``r`` is a
    copy of ours, free to hold the multiplier once read (fresh allocations — page faults —
    cost more on a CPU than the arithmetic)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, r, out_r, el, eps, inplace, scratch=None, own_r=False):
        xw, rw = _wide(x), _wide(r)
        din = torch.sub(xw, rw, out=scratch(xw.shape, xw.dtype, xw.device)) if scratch is not None and xw.dim() else xw - rw
        if inplace:
            apply = (lambda: el.fn_(x)) if el.fn_ is not None else (lambda: x.copy_(el.fn(x)))
        else:
            apply = lambda: el.fn(x)  # noqa: E731
        into = r if own_r and rw is r and r.is_contiguous() and r.shape == din.shape else None
        out, m = _secant(el, xw, rw, out_r, din, eps, apply, into)
        return out, (m.view_as(m) if into is not None else m)  # autograd saves a view of an input, not the input

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        if inputs[5]:
            ctx.mark_dirty(inputs[0])
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    @staticmethod
    @_quietly
    def backward(ctx, g, _):
        (m,) = ctx.saved_tensors
        return (g * m).to(g.dtype), None, None, None, None, None, None, None


# --------------------------------------------------------------------------- bilinear: the uniform rule


def midpoint(x: Tensor, r: Tensor) -> Tensor:
    """``(x + r)/2``, detached (the point where a bilinear rule takes its gradient)."""
    return torch.lerp(x.detach(), r.to(x.dtype), 0.5)


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape`` (leading dims and size-1 dims)."""
    if t.shape == shape:
        return t
    lead = t.dim() - len(shape)
    dims = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and t.shape[lead + i] != 1)
    return t.sum(dims, keepdim=True).reshape(shape) if dims else t.reshape(shape)


class Product(Function):
    """``a * b`` with the uniform rule: gradients ``g·b̄`` to ``a`` and ``g·ā`` to ``b``
    (``am``, ``bm``: the midpoints of the two runs)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a, b, am, bm):
        return a * b

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, b, am, bm = inputs
        ctx.shapes = (a.shape, b.shape)
        ctx.save_for_backward(am, bm)

    @staticmethod
    @_quietly
    def backward(ctx, g):
        am, bm = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = _sum_to(g * bm, sa) if ctx.needs_input_grad[0] else None
        gb = _sum_to(g * am, sb) if ctx.needs_input_grad[1] else None
        return ga, gb, None, None


class MatMul(Function):
    """``a @ b`` (``torch.matmul`` semantics, broadcasting and 1-D operands included) with the
    uniform rule: ``g @ b̄ᵀ`` to ``a`` and ``āᵀ @ g`` to ``b``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a, b, am, bm):
        return torch.matmul(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, b, am, bm = inputs
        ctx.shapes = (a.shape, b.shape)
        ctx.save_for_backward(am, bm)

    @staticmethod
    @_quietly
    def backward(ctx, g):
        am, bm = ctx.saved_tensors
        sa, sb = ctx.shapes
        a2 = am.unsqueeze(0) if am.dim() == 1 else am
        b2 = bm.unsqueeze(-1) if bm.dim() == 1 else bm
        g2 = g
        if am.dim() == 1:
            g2 = g2.unsqueeze(-2)
        if bm.dim() == 1:
            g2 = g2.unsqueeze(-1)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = _sum_to(torch.matmul(g2, b2.transpose(-1, -2)), a2.shape).reshape(sa)
        if ctx.needs_input_grad[1]:
            gb = _sum_to(torch.matmul(a2.transpose(-1, -2), g2), b2.shape).reshape(sb)
        return ga, gb, None, None


class _Value(Function):
    """Forward: ``value``; backward: the gradient goes to ``carrier`` (same shape)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(carrier, value):
        return value.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    @_quietly
    def backward(ctx, g):
        return g, None


def at_midpoint(fn: Callable, args: list, refs: dict[int, Tensor]) -> Tensor:
    """``fn(*args)`` whose gradient is taken at the midpoint of the two runs for the
    arguments in ``refs`` (position → reference value). For an ``fn`` bilinear in two of its
    arguments (and affine in the rest) that is the uniform rule, exactly."""
    shifted = list(args)
    for i, r in refs.items():
        a = args[i]
        shifted[i] = a - ((a.detach() - r.to(a.dtype)) * 0.5)  # value (a + r)/2, gradient 1 to a
    carrier = fn(*shifted)
    with torch.no_grad():
        value = fn(*args)
    return _Value.apply(carrier, value)


# --------------------------------------------------------------------------- max-pool


_POOL = (F.max_pool1d_with_indices, F.max_pool2d_with_indices, F.max_pool3d_with_indices)


def pool_with_indices(nd: int, x: Tensor, kernel_size, stride, padding, dilation, ceil_mode):
    return _POOL[nd - 1](x, kernel_size, stride, padding, dilation, ceil_mode, True)


def _tuple(v, nd: int) -> list:
    return list(v) * (nd if len(v) == 1 else 1) if isinstance(v, (list, tuple)) else [v] * nd


def _unpool(g: Tensor, like: Tensor, idx: Tensor, nd: int, k, s, p, d, ceil) -> Tensor:
    """The max-pool gradient: ``g`` scattered to the argmax positions ``idx`` (overlapping
    windows accumulate), shaped like ``like``; 1-D pooling as 2-D over a unit height."""
    if nd == 1:
        k, s, p, d = ([one] + _tuple(v, 1) for one, v in zip((1, 1, 0, 1), (k, s, p, d)))
        return _unpool(g.unsqueeze(-2), like.unsqueeze(-2), idx.unsqueeze(-2), 2, k, s, p, d, ceil).squeeze(-2)
    op = torch.ops.aten.max_pool2d_with_indices_backward if nd == 2 else torch.ops.aten.max_pool3d_with_indices_backward
    return op(g, like, _tuple(k, nd), _tuple(s, nd), _tuple(p, nd), _tuple(d, nd), ceil, idx)


class MaxPool(Function):
    """Max-pool with Captum's DeepLift rule. Per window ``w``, ``Δout`` goes to the argmax
    ``t_w`` of whichever run (x or the reference) has the larger window max; the multiplier of
    an input element is the sum of what its windows send it divided by its ``Δin`` (overlapping
    windows accumulate, as the max-pool gradient does), or its plain max-pool gradient where
    ``|Δin| < eps``. Dividing per window — ``Δout_w / Δin[t_w]``, gathered at output size —
    before scattering makes that one scatter, like the plain max-pool backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, r, out_r, idx_r, nd, kernel_size, stride, padding, dilation, ceil_mode, eps, scratch=None):
        out, idx = pool_with_indices(nd, x, kernel_size, stride, padding, dilation, ceil_mode)
        o, o_r = _wide(out), _wide(out_r)
        # Δin at the two argmaxes, read at output size (x at x's argmax is the output itself)
        d_idx = o - _wide(r).flatten(2).gather(2, idx.flatten(2)).view_as(o)
        d_idx_r = _wide(x).flatten(2).gather(2, idx_r.flatten(2)).view_as(o) - o_r
        take_x = o >= o_r
        to = torch.where(take_x, idx, idx_r)
        d_to = torch.where(take_x, d_idx, d_idx_r)
        small_to = d_to.abs() < eps  # Δout is 0 there too (both runs' max is that very value)
        coef = (o - o_r).div_(d_to).masked_fill_(small_to, 0.0)
        plain = d_idx.abs_() < eps  # x's argmax has Δin ≈ 0: plain gradient
        same = to == idx
        coef = coef.add_(plain & same)
        apart = plain & ~same  # ... when that argmax is not where Δout went: a second scatter
        return out, idx, to, coef, apart, bool(apart.any())

    @staticmethod
    def setup_context(ctx, inputs, output):
        out, idx, to, coef, apart, any_apart = output
        ctx.set_materialize_grads(False)
        ctx.pool, ctx.in_shape, ctx.any_apart = inputs[4:10], inputs[0].shape, any_apart
        ctx.mark_non_differentiable(idx, to, coef, apart)
        ctx.save_for_backward(idx, to, coef, apart if any_apart else None)

    @staticmethod
    @_quietly
    def backward(ctx, g, *_):
        idx, to, coef, apart = ctx.saved_tensors
        nd, *pool = ctx.pool
        like = g.new_empty(ctx.in_shape)
        gi = _unpool((_wide(g) * coef).to(g.dtype), like, to, nd, *pool)
        if ctx.any_apart:
            gi = gi + _unpool(g * apart, like, idx, nd, *pool)
        return gi, *([None] * 11)


# ``Function.apply`` binds default arguments with ``inspect.signature(forward)`` on every call
# (when ``setup_context`` is defined) — about a millisecond each on a CPU, per nonlinearity
# per call. A signature stored on the function is returned as it is.
for _fn in (GuidedReLU, Rescale, Product, MatMul, _Value, MaxPool):
    _fn.forward.__signature__ = inspect.signature(_fn.forward)
