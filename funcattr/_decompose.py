"""DeepLift rules for whole operations, written as compositions of the rules in ``_rules``.

An operation ``f`` calls is handed over (by ``_intercept``) as a :class:`Call`: its arguments
in the x run and in the reference run, bound by name. A rule returns the x run's output, in
the autograd graph, with DeepLift's multipliers as its gradient. Each value is carried as a
:class:`Pair` — the x run's tensor and the reference run's — so that a decomposition reads
like the math and every nonlinear step gets the two values its rule needs:

* elementwise functions: Rescale; products, matmuls and other bilinear maps of two tensors
  that both differ between the runs: the uniform rule; division: a product with a Rescaled
  reciprocal; ``pow``, ``maximum``, ``clamp`` with one varying operand: Rescale of it;
* softmax = exp (Rescale), sum, reciprocal (Rescale), product (uniform) — with the same shift
  in both runs (the larger of the two maxima), so the shift carries no difference; likewise
  log-softmax and logsumexp. This is *not* Captum's softmax rule (Rescale on the softmax as a
  whole, then the mean multiplier subtracted): Captum's rule divides softmax differences by
  logit differences, which inside attention are near zero and give multipliers up to 5e4, and
  it is complete only approximately; the decomposition is complete exactly;
* LayerNorm / GroupNorm / RMSNorm / InstanceNorm = centre, mean of squares (uniform product),
  ``rsqrt`` (Rescale), product, affine; vector norms, ``var``, ``std`` alike;
* ``scaled_dot_product_attention`` = matmul, scale, mask, softmax, matmul;
* max-pool: Captum's rule (``_rules.MaxPool``).

Forward values of decomposed operations differ from the fused kernels' by float rounding only.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ._rules import Elementwise, MatMul, MaxPool, Product, Rescale, at_midpoint, midpoint

__all__ = ["Call", "Pair", "RULES", "NoRule", "bilinear"]


class NoRule(NotImplementedError):
    """An operation DeepLift has no exact rule for, applied where the two runs differ."""


class Call:
    """One intercepted call in the x run: the function, its bound arguments in the x run
    (``a``) and in the reference run (``ra``), the reference run's output, the options."""

    __slots__ = ("func", "name", "op", "args", "kwargs", "a", "ra", "out_r", "eps", "same", "scratch", "owned")

    def __init__(self, func, name, op, args, kwargs, a, ra, out_r, eps, same, scratch=None, owned=()):
        self.func, self.name, self.op, self.args, self.kwargs = func, name, op, args, kwargs
        self.a, self.ra, self.out_r, self.eps, self.same = a, ra, out_r, eps, same
        self.scratch, self.owned = scratch, owned  # a reusable buffer; ids of reference tensors that are ours

    def pair(self, key: str) -> "Pair":
        return Pair(self.a[key], self.ra[key])

    def plain(self):
        return self.func(*self.args, **self.kwargs)


class Pair:
    """One value in both runs: ``x`` (x run, in the autograd graph) and ``r`` (reference)."""

    __slots__ = ("x", "r")

    def __init__(self, x: Tensor, r: Tensor):
        self.x, self.r = x, r

    def map(self, fn: Callable, *args, **kwargs) -> "Pair":
        """A linear (or shape) operation, applied in both runs."""
        return Pair(fn(self.x, *args, **kwargs), fn(self.r, *args, **kwargs))

    def __add__(self, other):
        return Pair(self.x + other.x, self.r + other.r) if isinstance(other, Pair) else self.map(torch.add, other)

    def __sub__(self, other):
        return Pair(self.x - other.x, self.r - other.r) if isinstance(other, Pair) else self.map(torch.sub, other)


# --------------------------------------------------------------------------- the building blocks


def rescale(p: Pair, fn: Callable, eps: float, pl: bool = False, name: str = "") -> Pair:
    out_r = fn(p.r)
    out, _ = Rescale.apply(p.x, p.r, out_r, Elementwise(name, fn, pl), eps, False)
    return Pair(out, out_r)


def _constant(t: Any) -> bool:
    return not isinstance(t, Pair)


def mul(p: Pair | Any, q: Pair | Any) -> Pair | Any:
    """``p * q``; the uniform rule when both are pairs (values that differ between the runs)."""
    if _constant(p) or _constant(q):
        return q.map(torch.mul, p) if _constant(p) else p.map(torch.mul, q)
    return Pair(Product.apply(p.x, q.x, midpoint(p.x, p.r), midpoint(q.x, q.r)), p.r * q.r)


def matmul(p: Pair | Any, q: Pair | Any) -> Pair:
    if _constant(p):
        return q.map(lambda t: torch.matmul(p, t))
    if _constant(q):
        return p.map(torch.matmul, q)
    return Pair(MatMul.apply(p.x, q.x, midpoint(p.x, p.r), midpoint(q.x, q.r)), torch.matmul(p.r, q.r))


def reciprocal(p: Pair, eps: float) -> Pair:
    return rescale(p, torch.reciprocal, eps, name="reciprocal")


def _shift(p: Pair, dim) -> Tensor:
    """A shift shared by both runs (so it carries no difference): the larger row maximum."""
    with torch.no_grad():
        c = torch.maximum(p.x.detach().amax(dim, keepdim=True), p.r.amax(dim, keepdim=True))
        return torch.where(torch.isfinite(c), c, torch.zeros_like(c))


def softmax(p: Pair, dim: int, eps: float) -> Pair:
    e = rescale(p - _shift(p, dim), torch.exp, eps, name="exp")
    return mul(e, reciprocal(e.map(torch.sum, dim, keepdim=True), eps))


def log_softmax(p: Pair, dim: int, eps: float) -> Pair:
    z = p - _shift(p, dim)
    e = rescale(z, torch.exp, eps, name="exp")
    return z - rescale(e.map(torch.sum, dim, keepdim=True), torch.log, eps, name="log")


def _normalize(p: Pair, dims: tuple, eps_norm: float, eps: float) -> Pair:
    """``(p − mean) · rsqrt(mean((p − mean)²) + eps_norm)`` over ``dims``."""
    c = p - p.map(torch.mean, dims, keepdim=True)
    var = mul(c, c).map(torch.mean, dims, keepdim=True)
    return mul(c, rescale(var + eps_norm, torch.rsqrt, eps, name="rsqrt"))


def _affine(y: Pair, w, b) -> Pair:
    if w is not None:
        y = mul(y, w)
    if b is not None:
        y = y + b
    return y


# --------------------------------------------------------------------------- rules by kind


def _opt(c: Call, key: str):
    """An optional tensor argument as a pair (it differs between the runs) or a constant."""
    v = c.a.get(key)
    if v is None or not isinstance(v, Tensor) or c.same(v, c.ra[key]):
        return v
    return Pair(v, c.ra[key])


def _inplace(c: Call, x: Tensor, res: Tensor) -> Tensor:
    """An in-place op's result written back into ``x`` (a leaf requiring grad cannot change
    in place: then the result is returned)."""
    if x.is_leaf and x.requires_grad:
        return res
    return x.copy_(res)


def elementwise(c: Call):
    x = c.a["input"]
    inplace = c.op.is_inplace(c.a) and not (x.is_leaf and x.requires_grad)  # a leaf cannot change in place
    r = c.ra["input"]
    out, _ = Rescale.apply(x, r, c.out_r, c.op.make(c.a), c.eps, inplace, c.scratch, id(r) in c.owned)
    return out


def _binary(c: Call, name: str, fn: Callable[[Any, Any], Tensor], a_key: str, b_key: str):
    """``fn(a, b)`` elementwise with one operand differing between the runs: Rescale in it."""
    a, b = _opt(c, a_key), _opt(c, b_key)
    if isinstance(a, Pair) and isinstance(b, Pair):
        raise NoRule(f"{c.name} with both operands differing between x and the baseline")
    if not isinstance(a, Pair) and not isinstance(b, Pair):
        return c.plain()
    if isinstance(a, Pair):
        shape = torch.broadcast_shapes(a.x.shape, getattr(b, "shape", ()))
        res = rescale(a.map(torch.Tensor.expand, shape), lambda t: fn(t, b), c.eps, name=name)
    else:
        shape = torch.broadcast_shapes(b.x.shape, getattr(a, "shape", ()))
        res = rescale(b.map(torch.Tensor.expand, shape), lambda t: fn(a, t), c.eps, name=name)
    return res.x


def pow_(c: Call):
    return _binary(c, "pow", torch.pow, "input", "exponent")


def rpow(c: Call):  # Tensor.__rpow__(self, other) = other ** self
    return _binary(c, "pow", lambda s, o: torch.pow(o, s), "input", "other")


def binary(c: Call):
    return _binary(c, c.op.extra, c.op.fn, "input", "other")


def clamp(c: Call):
    lo, hi = _opt(c, "min"), _opt(c, "max")
    if isinstance(lo, Pair) or isinstance(hi, Pair):
        raise NoRule(f"{c.name} with bounds that differ between x and the baseline")
    x = Pair(c.a["input"], c.ra["input"])
    shape = torch.broadcast_shapes(x.x.shape, *(t.shape for t in (lo, hi) if isinstance(t, Tensor)))
    return rescale(x.map(torch.Tensor.expand, shape), lambda t: torch.clamp(t, lo, hi), c.eps, pl=True, name="clamp").x


def product(c: Call):
    a, b = _opt(c, "input"), _opt(c, "other")
    if not isinstance(a, Pair) or not isinstance(b, Pair):
        return c.plain()
    res = mul(a, b).x
    return _inplace(c, c.a["input"], res) if c.op.is_inplace(c.a) else res


def divide(c: Call):
    """``a / b`` = ``a · (1/b)``: Rescale on the reciprocal, the uniform rule on the product."""
    if c.a.get("rounding_mode") is not None:
        return nonlinear(c)
    key_a, key_b = ("other", "input") if c.op.extra == "r" else ("input", "other")
    a, b = _opt(c, key_a), _opt(c, key_b)
    if not isinstance(b, Pair):
        return c.plain()
    res = mul(a, reciprocal(b, c.eps))
    res = res.x if isinstance(res, Pair) else res
    return _inplace(c, c.a["input"], res) if c.op.is_inplace(c.a) else res


def matmul_(c: Call):
    a, b = _opt(c, "input"), _opt(c, "other")
    if c.op.extra == "r":
        a, b = b, a
    if not isinstance(a, Pair) or not isinstance(b, Pair):
        return c.plain()
    return matmul(a, b).x


def bilinear(c: Call, leaves: list, refs: list, rebuild: Callable):
    """Any op bilinear in two tensor arguments (and affine in the rest): the uniform rule as
    the gradient at the midpoint of the two runs."""
    differ = {i: r for i, (t, r) in enumerate(zip(leaves, refs)) if t.is_floating_point() and not c.same(t, r)}
    if len(differ) < 2:
        return c.plain()
    if c.op.extra == "einsum" and len(differ) > 2:
        raise NoRule(f"{c.name} of {len(differ)} operands that differ between x and the baseline (trilinear)")
    return at_midpoint(lambda *ts: rebuild(ts), leaves, differ)


def maxpool(c: Call):
    a = c.a
    stride = a["stride"]
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = a["kernel_size"]
    x, nd = a["input"], c.op.extra
    if x.dim() != nd + 2:
        raise NoRule(f"{c.name} on an unbatched input of shape {tuple(x.shape)} (the rule needs [N, C, ...])")
    out_r, idx_r = c.out_r
    out, idx, *_ = MaxPool.apply(
        x, c.ra["input"], out_r, idx_r, nd, a["kernel_size"], stride, a["padding"], a["dilation"], a["ceil_mode"], c.eps, c.scratch
    )
    return (out, idx) if a.get("return_indices") else out


def _dim(c: Call, x: Tensor) -> int:
    dim = c.a.get("dim")
    if dim is None:  # F.softmax's legacy implicit dim
        dim = 0 if x.dim() in (0, 1, 3) else 1
    return dim


def _cast(c: Call, key: str = "input") -> Pair:
    p = c.pair(key)
    dtype = c.a.get("dtype")
    return p.map(torch.Tensor.to, dtype) if dtype is not None else p


def softmax_(c: Call):
    return softmax(_cast(c), _dim(c, c.a["input"]), c.eps).x


def log_softmax_(c: Call):
    return log_softmax(_cast(c), _dim(c, c.a["input"]), c.eps).x


def logsumexp(c: Call):
    p, dim = c.pair("input"), c.a["dim"]
    s = _shift(p, dim)
    e = rescale(p - s, torch.exp, c.eps, name="exp").map(torch.sum, dim, keepdim=True)
    out = rescale(e, torch.log, c.eps, name="log") + s
    return out.x if c.a.get("keepdim") else out.x.squeeze(dim)


def layer_norm(c: Call):
    shape = c.a["normalized_shape"]
    n = 1 if isinstance(shape, int) else len(shape)
    dims = tuple(range(-n, 0))
    return _affine(_normalize(c.pair("input"), dims, c.a["eps"], c.eps), _opt(c, "weight"), _opt(c, "bias")).x


def group_norm(c: Call):
    p = c.pair("input")
    N, C, G = p.x.shape[0], p.x.shape[1], c.a["num_groups"]
    y = _normalize(p.map(torch.reshape, (N, G, -1)), (-1,), c.a["eps"], c.eps).map(torch.reshape, p.x.shape)
    view = (1, C) + (1,) * (p.x.dim() - 2)
    w, b = _opt(c, "weight"), _opt(c, "bias")
    w = w.map(torch.reshape, view) if isinstance(w, Pair) else (None if w is None else w.reshape(view))
    b = b.map(torch.reshape, view) if isinstance(b, Pair) else (None if b is None else b.reshape(view))
    return _affine(y, w, b).x


def instance_norm(c: Call):
    if not c.a["use_input_stats"]:
        return c.plain()  # running statistics: an affine map
    p = c.pair("input")
    dims = tuple(range(2, p.x.dim()))
    y = _normalize(p, dims, c.a["eps"], c.eps)
    view = (1, p.x.shape[1]) + (1,) * (p.x.dim() - 2)
    w, b = c.a.get("weight"), c.a.get("bias")
    return _affine(y, None if w is None else w.reshape(view), None if b is None else b.reshape(view)).x


def rms_norm(c: Call):
    p = c.pair("input")
    shape = c.a["normalized_shape"]
    n = 1 if isinstance(shape, int) else len(shape)
    dims = tuple(range(-n, 0))
    eps_norm = c.a.get("eps")
    if eps_norm is None:
        eps_norm = torch.finfo(p.x.dtype).eps
    ms = mul(p, p).map(torch.mean, dims, keepdim=True)
    return _affine(mul(p, rescale(ms + eps_norm, torch.rsqrt, c.eps, name="rsqrt")), _opt(c, "weight"), None).x


def batch_norm(c: Call):
    if c.a["training"]:
        raise NoRule(f"{c.name} in training mode (batch statistics mix the examples); call model.eval()")
    return c.plain()


def _vector_norm(p: Pair, ord, dim, keepdim: bool, eps: float, name: str) -> Pair:
    if ord in ("fro", None):
        ord = 2
    if not isinstance(ord, (int, float)) or math.isinf(ord) or ord <= 0:
        raise NoRule(f"{name} with ord={ord!r} (a max/min or a count) on values that differ between x and the baseline")
    dim = () if dim is None else dim
    if ord == 2:
        s = mul(p, p)
    else:
        s = rescale(rescale(p, torch.abs, eps, pl=True, name="abs"), lambda t: t.pow(ord), eps, name="pow")
    s = s.map(torch.sum, dim, keepdim=keepdim) if dim != () else s.map(torch.sum)
    if ord == 1:
        return s
    return rescale(s, torch.sqrt if ord == 2 else (lambda t: t.pow(1.0 / ord)), eps, name="root")


def norm(c: Call):
    a = c.a
    ord = a.get("p", a.get("ord", 2))
    dim = a.get("dim")
    if c.op.extra == "matrix" and (ord not in ("fro", None, 2) or (isinstance(dim, (tuple, list)) and len(dim) == 2 and ord == 2)):
        raise NoRule(f"{c.name} with ord={ord!r} (a matrix norm)")
    return _vector_norm(_cast(c), ord, dim, bool(a.get("keepdim")), c.eps, c.name).x


def _variance(c: Call) -> tuple[Pair, Pair]:
    a = c.a
    p = c.pair("input")
    dim = a.get("dim")
    dims = tuple(range(p.x.dim())) if dim is None else ((dim,) if isinstance(dim, int) else tuple(dim))
    corr = a.get("correction")
    if corr is None:
        corr = 1 if a.get("unbiased", True) is not False else 0
    n = math.prod(p.x.shape[d] for d in dims)
    m = p.map(torch.mean, dims, keepdim=True)
    c2 = p - m
    v = mul(c2, c2).map(torch.sum, dims, keepdim=True).map(torch.div, max(n - corr, 0))
    if not a.get("keepdim"):
        v, m = v.map(torch.squeeze, dims), m.map(torch.squeeze, dims)
    return v, m


def var(c: Call):
    v, m = _variance(c)
    return (v.x, m.x) if c.op.extra == "mean" else v.x


def std(c: Call):
    v, m = _variance(c)
    s = rescale(v, torch.sqrt, c.eps, name="sqrt")
    return (s.x, m.x) if c.op.extra == "mean" else s.x


def glu(c: Call):
    p, dim = c.pair("input"), c.a["dim"]
    first, second = p.map(lambda t: t.chunk(2, dim)[0]), p.map(lambda t: t.chunk(2, dim)[1])
    return mul(first, rescale(second, torch.sigmoid, c.eps, name="sigmoid")).x


def max_(c: Call):
    """``torch.max(a, b)`` is ``maximum``; ``torch.max(x, dim)`` a reduction with no rule."""
    if isinstance(c.a.get("other"), Tensor):
        return _binary(c, "maximum" if "max" in c.name else "minimum", torch.maximum if "max" in c.name else torch.minimum, "input", "other")
    raise NoRule(c.name)


def sdpa(c: Call):
    """``softmax(q kᵀ · scale + mask) v``, decomposed."""
    a = c.a
    if a.get("dropout_p"):
        raise NoRule(f"{c.name} with dropout_p > 0 (a random mask differs between the two runs)")
    q, k, v = (_opt(c, n) for n in ("query", "key", "value"))
    qx = q.x if isinstance(q, Pair) else q
    L, S, E = qx.shape[-2], (k.x if isinstance(k, Pair) else k).shape[-2], qx.shape[-1]
    if a.get("enable_gqa"):
        rep = qx.shape[-3] // (k.x if isinstance(k, Pair) else k).shape[-3]
        k, v = (t.map(torch.repeat_interleave, rep, -3) if isinstance(t, Pair) else t.repeat_interleave(rep, -3) for t in (k, v))
    kt = k.map(torch.transpose, -2, -1) if isinstance(k, Pair) else k.transpose(-2, -1)
    scale = a.get("scale")
    scale = 1.0 / math.sqrt(E) if scale is None else scale
    s = matmul(q, kt)
    if not isinstance(s, Pair):
        s = Pair(s, s)
    s = s.map(torch.mul, scale)
    mask = a.get("attn_mask")
    if a.get("is_causal"):
        keep = torch.ones(L, S, dtype=torch.bool, device=qx.device).tril()
        s = s.map(torch.Tensor.masked_fill, ~keep, float("-inf"))
    if mask is not None:
        m = _opt(c, "attn_mask")
        if mask.dtype == torch.bool:
            s = s.map(torch.Tensor.masked_fill, ~mask, float("-inf"))
        else:
            s = s + m
    out = matmul(softmax(s, -1, c.eps), v)
    return out.x if isinstance(out, Pair) else out


def dropout(c: Call):
    if c.a.get("train", c.a.get("training")) and c.a.get("p", 0.5) > 0:
        raise NoRule(f"{c.name} in training mode (random masks differ between the two runs); call model.eval()")
    return c.plain()


def nonlinear(c: Call):
    raise NoRule(f"{c.name}")


RULES: dict[str, Callable] = {
    "elementwise": elementwise,
    "pow": pow_,
    "rpow": rpow,
    "binary": binary,
    "clamp": clamp,
    "mul": product,
    "div": divide,
    "matmul": matmul_,
    "maxpool": maxpool,
    "softmax": softmax_,
    "log_softmax": log_softmax_,
    "logsumexp": logsumexp,
    "layer_norm": layer_norm,
    "group_norm": group_norm,
    "instance_norm": instance_norm,
    "rms_norm": rms_norm,
    "batch_norm": batch_norm,
    "norm": norm,
    "var": var,
    "std": std,
    "glu": glu,
    "sdpa": sdpa,
    "dropout": dropout,
    "max": max_,
}
