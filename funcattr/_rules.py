"""Backward rules for nonlinearities, applied to the *operations* while ``f`` runs (DESIGN §4).

``ruled(f, kind)`` returns ``f`` run under a ``TorchFunctionMode`` that catches the
nonlinearities wherever they are called — ``nn.ReLU`` modules, ``F.relu``, ``torch.relu``,
``Tensor.relu``, in-place variants, one module reused several times — and swaps in an
``autograd.Function`` whose backward implements the rule. The Functions define
``setup_context`` and ``generate_vmap_rule``, so they also run under ``torch.func`` transforms
and under ``autograd.grad(..., is_grads_batched=True)``. Nothing is attached to a model, and
the mode is active only while ``f`` runs.

Rules (``kind``):

* ``"guided"`` (guided backprop): ReLU backward ``relu(grad_out) · [x > 0]``;
* ``"deconv"`` (deconvolution): ReLU backward ``relu(grad_out)``;
* ``"deeplift"``: the batch is ``[x rows; baseline rows]`` along dim 0 (row ``i`` pairs with
  row ``i + R/2``). ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus, GELU and SiLU use the
  Rescale rule ``grad_out · Δout/Δin`` on both halves (the plain gradient where
  ``|Δin| < eps``); max-pool and softmax use Captum's rules. Any other known elementwise
  nonlinearity on the batch raises ``NotImplementedError`` naming it — DeepLift never falls
  back to plain gradients silently.

Backward passes use only ops the mode neither rewrites nor rejects, so a backward taken while
the mode is still active (``torch.func.grad`` inside the block) is left alone.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function
from torch.overrides import TorchFunctionMode

__all__ = ["mode", "rules", "KINDS", "EPS"]

KINDS = ("guided", "deconv", "deeplift")
EPS = 1e-10


# --------------------------------------------------------------------------- autograd Functions


class _GuidedReLU(Function):
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
    def backward(ctx, g):
        g = g.clamp_min(0)
        if not ctx.deconv:
            (out,) = ctx.saved_tensors
            g = g * (out > 0)
        return g, None


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    return t.chunk(2)


def _pair_view(t: Tensor) -> Tensor:
    """``[2N, ...] -> [2, N, ...]`` (a reshape: the legacy vmap of ``is_grads_batched`` has
    no batching rule for view ops such as ``unflatten``)."""
    return t.reshape(2, t.shape[0] // 2, *t.shape[1:])


def _unpair(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def _f32(t: Tensor) -> Tensor:
    """16-bit tensors in float32 for differences (a 16-bit Δ of nearby values is mostly rounding)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _multiplier(din: Tensor, dout: Tensor, plain: Tensor, eps: float) -> Tensor:
    """``Δout/Δin``, or ``plain`` where ``|Δin| < eps``. Consumes ``din`` and ``dout`` (fresh
    temporaries: in place saves two allocations per nonlinearity)."""
    ratio = dout.div_(din)
    return torch.where(din.abs_() < eps, plain, ratio)


class _Rescale(Function):
    """An elementwise nonlinearity with DeepLift's Rescale backward: ``g · M`` where
    ``M = Δout/Δin`` is shared by the x half and the baseline half of the batch, or the plain
    local derivative where ``|Δin| < eps`` (there x and baseline coincide, and so do their
    derivatives)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, rule, eps):
        out = rule.fn(x)
        if x.dtype in (torch.float16, torch.bfloat16):  # Δout/Δin in float32
            x32 = x.float()
            xi, xb = _halves(x32)
            oi, ob = _halves(rule.fn(x32))
        else:
            xi, xb = _halves(x)
            oi, ob = _halves(out)
        return out, _multiplier(xi - xb, oi - ob, rule.grad(xi, oi), eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    @staticmethod
    def backward(ctx, g, _):
        (m,) = ctx.saved_tensors
        return _unpair(_pair_view(g) * m).to(g.dtype), None, None


class _Softmax(Function):
    """Softmax with Captum's DeepLift rule: the Rescale multiplier per element (the plain
    softmax VJP of each half where ``|Δin| < eps``), then the mean over the softmax dim
    subtracted."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim, eps):
        s = torch.softmax(x, dim)
        xi, xb = _halves(_f32(x))
        si, sb = _halves(_f32(s))
        din = xi - xb
        return s, (si - sb) / din, din.abs() < eps

    @staticmethod
    def setup_context(ctx, inputs, output):
        s, ratio, small = output
        ctx.dim = inputs[1]
        ctx.mark_non_differentiable(ratio, small)
        ctx.save_for_backward(s, ratio, small)

    @staticmethod
    def backward(ctx, g, *_):
        s, ratio, small = ctx.saved_tensors
        d = ctx.dim if ctx.dim < 0 else ctx.dim + 1  # in the [2, N, ...] view
        g2, s2 = _pair_view(g), _pair_view(s)
        plain = s2 * (g2 - (g2 * s2).sum(d, keepdim=True))
        gi = torch.where(small, plain, g2 * ratio)
        return _unpair(gi - gi.mean(d, keepdim=True)).to(g.dtype), None, None


class _MaxPool(Function):
    """Max-pool with Captum's DeepLift rule. Per output element, ``Δout`` is given to the
    argmax of whichever of the pair (x, baseline) has the larger window max; the sum of both
    halves' contributions divided by ``Δin`` is the multiplier of both halves (each half's
    plain gradient where ``|Δin| < eps``). Overlapping windows accumulate, as the max-pool
    gradient does."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, nd, kernel_size, stride, padding, dilation, ceil_mode, eps):
        pool = (F.max_pool1d_with_indices, F.max_pool2d_with_indices, F.max_pool3d_with_indices)[nd - 1]
        out, idx = pool(x, kernel_size, stride, padding, dilation, ceil_mode, True)
        oi, ob = _halves(_f32(out))
        xmax = torch.maximum(oi, ob)
        xi, xb = _halves(_f32(x))
        din = xi - xb
        return out, idx, torch.cat([xmax - ob, oi - xmax]), din, din.abs() < eps

    @staticmethod
    def setup_context(ctx, inputs, output):
        out, idx, dout, din, small = output
        ctx.in_shape = inputs[0].shape
        ctx.mark_non_differentiable(idx, dout, din, small)
        ctx.save_for_backward(idx, dout, din, small)

    @staticmethod
    def backward(ctx, g, *_):
        idx, dout, din, small = ctx.saved_tensors
        R, C = g.shape[:2]
        N = R // 2
        n_in = math.prod(ctx.in_shape[2:])
        index = idx.reshape(R, C, -1)
        plain = g.new_zeros(R, C, n_in).scatter_add(2, index, g.reshape(R, C, -1))
        src = (g * dout).reshape(R, C, -1)
        num = src.new_zeros(N, C, n_in).scatter_add(2, index[:N], src[:N]).scatter_add(2, index[N:], src[N:])
        num = num.reshape(N, *ctx.in_shape[1:])
        gi = torch.where(small, _pair_view(plain.reshape(ctx.in_shape)), num / din)
        return _unpair(gi).to(g.dtype), None, None, None, None, None, None, None


# --------------------------------------------------------------------------- elementwise rules


class _Elementwise:
    """``fn(x)`` and its plain local derivative ``grad(x, out)`` (used where ``|Δin| < eps``)."""

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor], grad: Callable[[Tensor, Tensor], Tensor]):
        self.name, self.fn, self.grad = name, fn, grad


def _relu():
    return _Elementwise("relu", lambda x: x.clamp_min(0), lambda x, o: (x > 0).to(x.dtype))


def _sigmoid():
    return _Elementwise("sigmoid", torch.sigmoid, lambda x, o: o * (1 - o))


def _tanh():
    return _Elementwise("tanh", torch.tanh, lambda x, o: 1 - o * o)


@functools.lru_cache(maxsize=64)
def _elu(alpha: float):
    return _Elementwise(
        "elu", lambda x: torch._C._nn.elu(x, alpha), lambda x, o: torch.where(x > 0, torch.ones_like(x), o + alpha)
    )


@functools.lru_cache(maxsize=64)
def _leaky(slope: float):
    return _Elementwise(
        "leaky_relu",
        lambda x: torch._C._nn.leaky_relu(x, slope),
        lambda x, o: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope)),
    )


@functools.lru_cache(maxsize=64)
def _softplus(beta: float, threshold: float):
    return _Elementwise(
        "softplus",
        lambda x: torch._C._nn.softplus(x, beta, threshold),
        lambda x, o: torch.where(x * beta > threshold, torch.ones_like(x), torch.sigmoid(x * beta)),
    )


def _gelu_grad(approximate: str):
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)

        def grad(x, o):
            t = torch.tanh(k * (x + 0.044715 * x**3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)

        return grad

    def grad(x, o):
        return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    return grad


@functools.lru_cache(maxsize=4)
def _gelu(approximate: str):
    return _Elementwise("gelu", lambda x: torch._C._nn.gelu(x, approximate=approximate), _gelu_grad(approximate))


def _silu():
    def grad(x, o):
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))

    return _Elementwise("silu", torch._C._nn.silu, grad)


# --------------------------------------------------------------------------- which ops, parsed how


def _bind(names: tuple, defaults: dict, args: tuple, kwargs: dict) -> dict:
    """Positional + keyword arguments → a dict by parameter name (a small ``inspect.bind``)."""
    got = dict(defaults)
    got.update(zip(names, args))
    got.update(kwargs)
    return got


class _Op:
    """An intercepted function: its kind (relu, sigmoid, ..., maxpool, softmax), whether it
    is in-place, and its parameter names."""

    def __init__(self, kind: str, names: tuple = ("input",), defaults: dict | None = None, inplace: bool = False, nd: int = 0):
        self.kind, self.names, self.defaults, self.inplace, self.nd = kind, names, defaults or {}, inplace, nd


def _table() -> dict[Any, _Op]:
    T = torch.Tensor
    ops: dict[Any, _Op] = {}

    def add(funcs, op):
        for fn in funcs:
            if fn is not None:
                ops[fn] = op

    g = lambda mod, name: getattr(mod, name, None)  # noqa: E731
    add([F.relu], _Op("relu", ("input", "inplace"), {"inplace": False}))
    add([torch.relu, T.relu], _Op("relu"))
    add([torch.relu_, T.relu_, g(F, "relu_")], _Op("relu", inplace=True))
    add([torch.sigmoid, T.sigmoid, g(torch.special, "expit")], _Op("sigmoid"))
    add([torch.sigmoid_, T.sigmoid_], _Op("sigmoid", inplace=True))
    add([torch.tanh, T.tanh], _Op("tanh"))
    add([torch.tanh_, T.tanh_], _Op("tanh", inplace=True))
    add([F.elu], _Op("elu", ("input", "alpha", "inplace"), {"alpha": 1.0, "inplace": False}))
    add([g(F, "elu_")], _Op("elu", ("input", "alpha"), {"alpha": 1.0}, inplace=True))
    add([F.leaky_relu], _Op("leaky_relu", ("input", "negative_slope", "inplace"), {"negative_slope": 0.01, "inplace": False}))
    add([g(F, "leaky_relu_")], _Op("leaky_relu", ("input", "negative_slope"), {"negative_slope": 0.01}, inplace=True))
    add([F.softplus], _Op("softplus", ("input", "beta", "threshold"), {"beta": 1.0, "threshold": 20.0}))
    add([F.gelu], _Op("gelu", ("input", "approximate"), {"approximate": "none"}))
    add([F.silu], _Op("silu", ("input", "inplace"), {"inplace": False}))
    pool = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    pool_def = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False}
    for nd in (1, 2, 3):
        add([g(F, f"max_pool{nd}d"), g(F, f"_max_pool{nd}d"), g(torch, f"max_pool{nd}d")], _Op("maxpool", pool, pool_def, nd=nd))
        add(
            [g(F, f"max_pool{nd}d_with_indices"), g(torch, f"max_pool{nd}d_with_indices"), g(torch._C._nn, f"max_pool{nd}d_with_indices")],
            _Op("maxpool", pool, {**pool_def, "return_indices": True}, nd=nd),
        )
    add([F.softmax], _Op("softmax", ("input", "dim", "_stacklevel", "dtype"), {"dim": None, "dtype": None}))
    add([torch.softmax, T.softmax, g(torch.special, "softmax")], _Op("softmax", ("input", "dim", "dtype"), {"dtype": None}))
    return ops


def _unsupported() -> dict[Any, str]:
    """Elementwise nonlinearities DeepLift has no rule for: → their public name."""
    T = torch.Tensor
    found: dict[Any, str] = {}
    for name in (
        "exp", "exp2", "expm1", "log", "log1p", "log2", "log10", "sqrt", "rsqrt", "reciprocal", "erf", "erfc",
        "sin", "cos", "tan", "abs", "pow", "square", "clamp", "clip", "clamp_min", "clamp_max", "sign", "selu",
        "celu", "prelu", "rrelu", "hardshrink", "log_softmax", "logsigmoid", "sinc", "atan", "asinh",
    ):
        for mod, prefix in ((torch, "torch."), (T, "Tensor.")):
            for suffix in ("", "_"):
                fn = getattr(mod, name + suffix, None)
                if fn is not None:
                    found.setdefault(fn, prefix + name + suffix)
    for name in (
        "hardswish", "hardsigmoid", "mish", "selu", "celu", "hardtanh", "hardtanh_", "relu6", "threshold",
        "threshold_", "rrelu", "rrelu_", "glu", "logsigmoid", "softsign", "tanhshrink", "softshrink", "hardshrink",
        "log_softmax", "softmin", "prelu", "gumbel_softmax", "celu_", "selu_",
    ):
        fn = getattr(F, name, None)
        if fn is not None:
            found[fn] = "F." + name
    found[T.__pow__] = "Tensor.__pow__ (x ** p)"
    found[T.__rpow__] = "Tensor.__rpow__ (p ** x)"
    found[T.__abs__] = "Tensor.__abs__ (abs(x))"
    return found


_OPS = _table()
_UNSUPPORTED = _unsupported()


def _rule_of(op: _Op, a: dict) -> _Elementwise:
    k = op.kind
    if k == "relu":
        return _relu()
    if k == "sigmoid":
        return _sigmoid()
    if k == "tanh":
        return _tanh()
    if k == "elu":
        return _elu(float(a["alpha"]))
    if k == "leaky_relu":
        return _leaky(float(a["negative_slope"]))
    if k == "softplus":
        return _softplus(float(a["beta"]), float(a["threshold"]))
    if k == "gelu":
        return _gelu(str(a["approximate"]))
    if k == "silu":
        return _silu()
    raise AssertionError(k)


def _needs_grad(x: Tensor) -> bool:
    """``x.requires_grad``, seeing through ``torch.func`` wrappers (under ``vmap`` a batched
    tensor reports False even when the tensor it wraps requires grad)."""
    while not x.requires_grad:
        if torch._C._functorch.maybe_get_level(x) == -1:
            return False
        x = torch._C._functorch.get_unwrapped(x)
    return True


def _name(func) -> str:
    mod = getattr(func, "__module__", None) or "torch.Tensor"
    return f"{mod}.{getattr(func, '__name__', func)}"


# --------------------------------------------------------------------------- the mode


class _Mode(TorchFunctionMode):
    """Swaps rule Functions in for the nonlinearities ``f`` calls. ``rows`` is the number of
    rows of the ``[x; baseline]`` batch (DeepLift only)."""

    def __init__(self, kind: str, rows: int | None = None, leaves: tuple = (), eps: float = EPS):
        super().__init__()
        self.kind, self.rows, self.leaves, self.eps = kind, rows, leaves, eps

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            op, bad = _OPS.get(func), self.kind == "deeplift" and func in _UNSUPPORTED
        except TypeError:  # an unhashable callable
            op, bad = None, False
        if op is None:
            if bad:
                x = args[0] if args else None
                if isinstance(x, Tensor) and _needs_grad(x) and self._from_batch(x):
                    raise NotImplementedError(
                        f"DeepLift has no rule for {_UNSUPPORTED[func]}, which f applies to the batch; it would "
                        "silently get a plain gradient and break DeepLift's completeness. Supported "
                        "nonlinearities: relu, elu, leaky_relu, sigmoid, tanh, softplus, gelu, silu, max_pool1d/2d/3d, "
                        "softmax. Use a gradient method (e.g. fa.integrated_gradients) for this model."
                    )
            return func(*args, **kwargs)
        if self.kind != "deeplift" and op.kind != "relu":
            return func(*args, **kwargs)
        a = _bind(op.names, op.defaults, args, kwargs)
        x = a["input"]
        if not isinstance(x, Tensor) or not x.is_floating_point() or not _needs_grad(x):
            return func(*args, **kwargs)
        if "out" in a and a["out"] is not None:
            raise NotImplementedError(f"{_name(func)}(..., out=) is not supported while attribution rules are active")
        inplace = op.inplace or bool(a.get("inplace", False))
        if self.kind in ("guided", "deconv"):
            res = _GuidedReLU.apply(x, self.kind == "deconv")
        elif not self._paired(x, _name(func)):
            return func(*args, **kwargs)
        elif op.kind == "maxpool":
            return self._maxpool(op, a, x)
        elif op.kind == "softmax":
            res = self._softmax(a, x)
        else:
            res, _ = _Rescale.apply(x, _rule_of(op, a), self.eps)
        if inplace and not (x.is_leaf and x.requires_grad):  # a leaf cannot change in place: return the result
            return x.copy_(res)
        return res

    # -- DeepLift pieces

    def _paired(self, x: Tensor, name: str) -> bool:
        """Does ``x`` carry the ``[x; baseline]`` batch (so the rule applies)? Parameters and
        tensors computed from them alone do not; a batch tensor whose dim 0 no longer pairs
        rows raises."""
        if not _needs_grad(x):
            return False
        R = self.rows
        if x.dim() > 0 and x.shape[0] % R == 0:
            return True  # (a parameter that happens to fit gets the rule too: harmless, no input grad flows there)
        if not self._from_batch(x):
            return False
        raise ValueError(
            f"DeepLift pairs each input row with its baseline row along dim 0 of every tensor (a batch of "
            f"{R} rows: x then baseline), but {name} got a tensor of shape {tuple(x.shape)} computed from the "
            "batch whose dim 0 is not a multiple of that. DeepLift needs f to keep the batch in dim 0 "
            "(no per-example loops, no vmap inside f, no batch-second layouts at nonlinearities)."
        )

    def _from_batch(self, x: Tensor) -> bool:
        """Is ``x`` computed from the batch? (An input leaf is in its autograd history; a
        tensor wrapped by a ``torch.func`` transform inside ``f`` counts as the batch.)"""
        if torch._C._functorch.maybe_get_level(x) != -1:
            return True
        ids = {id(t) for t in self.leaves}

        def batch_leaf(v) -> bool:
            return isinstance(v, Tensor) and (
                id(v) in ids or (not isinstance(v, nn.Parameter) and v.dim() > 0 and v.shape[0] == self.rows)
            )

        if x.grad_fn is None:
            return batch_leaf(x)
        seen, stack = set(), [x.grad_fn]
        while stack and len(seen) < 100_000:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if batch_leaf(getattr(node, "variable", None)):
                return True
            stack.extend(n for n, _ in node.next_functions)
        return False

    def _softmax(self, a: dict, x: Tensor) -> Tensor:
        dim = a["dim"]
        if a.get("dtype") is not None:
            x = x.to(a["dtype"])
        if dim is None:
            dim = F._get_softmax_dim("softmax", x.dim(), 3)
        if dim % x.dim() == 0:
            raise ValueError("DeepLift's softmax rule needs the softmax over a non-batch dim (dim 0 pairs x with its baseline)")
        s, _, _ = _Softmax.apply(x, dim, self.eps)
        return s

    def _maxpool(self, op: _Op, a: dict, x: Tensor):
        nd = op.nd
        if x.dim() != nd + 2:
            raise ValueError(
                f"DeepLift's max_pool{nd}d rule needs a batched input [N, C, ...] ({nd + 2} dims), got shape {tuple(x.shape)}"
            )
        stride = a["stride"]
        if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
            stride = a["kernel_size"]
        out, idx, _, _, _ = _MaxPool.apply(x, nd, a["kernel_size"], stride, a["padding"], a["dilation"], a["ceil_mode"], self.eps)
        return (out, idx) if a["return_indices"] else out


@contextlib.contextmanager
def rules(kind: str, rows: int | None = None, leaves: tuple = (), eps: float = EPS):
    """Activate backward rules for a block: ``with rules("guided"): torch.autograd.grad(...)``.
    For ``"deeplift"``, ``rows`` is the size of the ``[x; baseline]`` batch (even)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "deeplift" and (not isinstance(rows, int) or rows < 2 or rows % 2):
        raise ValueError(f"DeepLift needs an even number of rows [x; baseline], got {rows!r}")
    with _Mode(kind, rows, leaves, eps):
        yield


def mode(kind: str, eps: float = EPS) -> Callable:
    """The rules of ``kind`` as the ``rules=`` argument of the gradient primitive: a callable
    of the evaluation points returning the context ``f`` runs in."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def enter(xs: tuple[Tensor, ...]):
        if kind != "deeplift":
            return _Mode(kind)
        return rules(kind, xs[0].shape[0], xs, eps)

    return enter
