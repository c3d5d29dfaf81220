"""Which torch operations are which: the table the interception modes look calls up in.

Every entry is keyed by the function object ``TorchFunctionMode`` receives (``torch.relu``,
``Tensor.relu_``, ``torch._C._nn.gelu``, ...). Python wrappers in ``torch.nn.functional`` and
``torch.functional`` are not listed: the modes re-enter them (``redispatch_function``) so the
builtins they call are seen, whatever wrapper, module or method ``f`` uses.

* ``Op(kind, ...)``: an operation with a DeepLift rule (``_decompose.RULES[kind]``), how its
  arguments are named, whether it writes in place, and for elementwise functions how to build
  the function from the bound arguments.
* ``NONLINEAR``: operations DeepLift has no rule for (fused RNN kernels, max/sort reductions,
  distances, losses, linear algebra, special functions): the modes raise naming them when
  their input differs between x and the baseline and a gradient flows through them.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._rules import Elementwise

__all__ = ["Op", "OPS", "NONLINEAR", "composite", "label", "bind"]

T = torch.Tensor
_nn = torch._C._nn


def bind(names: tuple, defaults: dict, args: tuple, kwargs: dict) -> dict:
    """Positional + keyword arguments → a dict by parameter name (a small ``inspect.bind``)."""
    got = dict(defaults)
    got.update(zip(names, args))
    got.update(kwargs)
    return got


class Op:
    """An intercepted function: its rule ``kind``, parameter names and defaults, whether it
    writes its input in place, ``make(bound) -> Elementwise`` for elementwise functions,
    ``extra`` for the rule, and ``gate(leaves)``: whether a call is worth recording."""

    __slots__ = ("kind", "names", "defaults", "inplace", "make", "extra", "fn", "gate", "label")

    def __init__(self, kind, names=("input",), defaults=None, inplace=False, make=None, extra=None, fn=None, gate=None):
        self.kind, self.names, self.defaults, self.inplace = kind, names, defaults or {}, inplace
        self.make, self.extra, self.fn, self.gate = make, extra, fn, gate
        self.label = ""

    def is_inplace(self, a: dict) -> bool:
        return self.inplace or bool(a.get("inplace", False))


def _param(t: Any) -> bool:
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


def _two_varying(leaves: list) -> bool:
    """A product is linear (no rule needed) unless two of its float tensors may vary."""
    return sum(1 for t in leaves if t.is_floating_point() and not _param(t)) >= 2


def _weight_varies(leaves: list) -> bool:
    """``linear`` / ``conv``: a rule only when the weight is not a parameter."""
    return len(leaves) > 1 and not _param(leaves[1])


# --------------------------------------------------------------------------- the table

OPS: dict[Any, Op] = {}
_LABELS: dict[Any, str] = {}


def _add(funcs: list, op: Op) -> None:
    for fn, label in funcs:
        if fn is not None and fn not in OPS:
            o = Op(op.kind, op.names, op.defaults, op.inplace, op.make, op.extra, op.fn, op.gate)
            o.label = label
            OPS[fn] = o
            _LABELS[fn] = label


def _where(name: str, *, torch_=True, tensor=True, nn_=False, special=False, inplace=False) -> list:
    """``(function, label)`` for ``torch.name``, ``Tensor.name``, ``F.name`` (``torch._C._nn``)
    and ``torch.special.name`` (their in-place ``name_`` forms with ``inplace=True``)."""
    n = name + "_" if inplace else name
    out = []
    if torch_:
        out.append((getattr(torch, n, None), f"torch.{n}"))
    if tensor:
        out.append((getattr(T, n, None), f"Tensor.{n}"))
    if nn_:
        out.append((getattr(_nn, n, None), f"F.{n}"))
    if special:
        out.append((getattr(torch.special, n, None), f"torch.special.{n}"))
    return out


def _elementwise(name: str, names: tuple, defaults: dict, fn: Callable[[dict], Callable], pl: bool, fn_=None, **where):
    make = lambda a: Elementwise(name, fn(a), pl, None if fn_ is None else fn_(a))  # noqa: E731
    _add(_where(name, **where), Op("elementwise", names, defaults, make=make, extra=name))
    _add(_where(name, inplace=True, **where), Op("elementwise", names, defaults, inplace=True, make=make, extra=name))


def _simple(name: str, fn: Callable, pl: bool = False, fn_=None, **where):
    _elementwise(name, ("input",), {}, lambda a: fn, pl, None if fn_ is None else (lambda a: fn_), **where)


# piecewise linear: the secant is exact in floating point (only Δx = 0 needs the derivative)
_simple("relu", torch.relu, True, torch.relu_)
_elementwise(
    "leaky_relu", ("input", "negative_slope"), {"negative_slope": 0.01},
    lambda a: functools.partial(_nn.leaky_relu, negative_slope=a["negative_slope"]), True,
    lambda a: functools.partial(_nn.leaky_relu_, negative_slope=a["negative_slope"]), torch_=False, tensor=False, nn_=True,
)
_elementwise(
    "hardtanh", ("input", "min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0},
    lambda a: functools.partial(_nn.hardtanh, min_val=a["min_val"], max_val=a["max_val"]), True, torch_=False, tensor=False, nn_=True,
)
_simple("relu6", _nn.relu6, True, torch_=False, tensor=False, nn_=True)
_simple("hardsigmoid", _nn.hardsigmoid, True, torch_=False, tensor=False, nn_=True)
_elementwise(
    "threshold", ("input", "threshold", "value"), {},
    lambda a: functools.partial(torch.threshold, threshold=a["threshold"], value=a["value"]), True, tensor=False,
)
for _n, _f in (("hardshrink", torch.hardshrink), ("softshrink", _nn.softshrink)):
    _elementwise(_n, ("input", "lambd"), {"lambd": 0.5}, lambda a, f=_f: functools.partial(f, lambd=a["lambd"]), True, nn_=True)
for _n in ("abs", "absolute", "sign", "sgn", "floor", "ceil", "trunc", "frac", "fix"):
    _simple(_n, getattr(torch, _n), True)
_elementwise("round", ("input", "decimals"), {"decimals": 0}, lambda a: functools.partial(torch.round, decimals=a["decimals"]), True)
_add(_where("prelu"), Op("elementwise", ("input", "weight"), make=lambda a: Elementwise("prelu", functools.partial(torch.prelu, weight=a["weight"]), True)))


def _rrelu(a):
    if a["training"]:
        from ._decompose import NoRule

        raise NoRule("rrelu in training mode (random slopes differ between the two runs); call model.eval()")
    return Elementwise("rrelu", functools.partial(_nn.leaky_relu, negative_slope=(a["lower"] + a["upper"]) / 2), True)


_RR = (("input", "lower", "upper", "training"), {"lower": 1 / 8, "upper": 1 / 3, "training": False})
_add(_where("rrelu", tensor=False), Op("elementwise", *_RR, make=_rrelu))
_add(_where("rrelu", tensor=False, inplace=True), Op("elementwise", *_RR, inplace=True, make=_rrelu))

# smooth
_elementwise(
    "elu", ("input", "alpha", "scale", "input_scale"), {"alpha": 1.0, "scale": 1.0, "input_scale": 1.0},
    lambda a: functools.partial(_nn.elu, alpha=a["alpha"], scale=a["scale"], input_scale=a["input_scale"]), False,
    torch_=False, tensor=False, nn_=True,
)
_elementwise("celu", ("input", "alpha"), {"alpha": 1.0}, lambda a: functools.partial(torch.celu, alpha=a["alpha"]), False, tensor=False)
_elementwise(
    "softplus", ("input", "beta", "threshold"), {"beta": 1.0, "threshold": 20.0},
    lambda a: functools.partial(_nn.softplus, beta=a["beta"], threshold=a["threshold"]), False, torch_=False, tensor=False, nn_=True,
)
_elementwise(
    "gelu", ("input", "approximate"), {"approximate": "none"},
    lambda a: functools.partial(_nn.gelu, approximate=a["approximate"]), False, torch_=False, tensor=False, nn_=True,
)
for _n in ("silu", "mish", "hardswish"):
    _simple(_n, getattr(_nn, _n), False, torch_=False, tensor=False, nn_=True)
_simple("log_sigmoid", _nn.log_sigmoid, False, torch_=False, tensor=False, nn_=True)
_simple("selu", torch.selu, False, tensor=False)
for _n in (
    "sigmoid", "tanh", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "reciprocal",
    "square", "sin", "cos", "tan", "sinh", "cosh", "asinh", "atan", "arctan", "arcsinh", "erf", "erfc", "sinc",
    "asin", "arcsin", "acos", "arccos", "acosh", "arccosh", "atanh", "arctanh",
):
    _simple(_n, getattr(torch, _n), False, special=_n in ("exp2", "expm1", "log1p", "erf", "erfc", "sinc"))
_add([(torch.special.expit, "torch.special.expit")], OPS[torch.sigmoid])
_elementwise("logit", ("input", "eps"), {"eps": None}, lambda a: functools.partial(torch.logit, eps=a["eps"]), False, special=True)

# one varying operand: Rescale in it
_POW = ("input", "exponent")
_add(_where("pow") + _where("float_power") + [(T.__pow__, "x ** p")], Op("pow", _POW))
_add(_where("pow", torch_=False, inplace=True) + _where("float_power", torch_=False, inplace=True) + [(T.__ipow__, "x **= p")], Op("pow", _POW, inplace=True))
_add([(T.__rpow__, "p ** x")], Op("rpow", ("input", "other")))
for _n, _fn in (
    ("maximum", torch.maximum), ("minimum", torch.minimum), ("fmax", torch.fmax), ("fmin", torch.fmin),
    ("atan2", torch.atan2), ("arctan2", torch.atan2), ("hypot", torch.hypot), ("copysign", torch.copysign),
    ("xlogy", torch.xlogy), ("logaddexp", torch.logaddexp), ("logaddexp2", torch.logaddexp2),
):
    _add(_where(_n), Op("binary", ("input", "other"), extra=_n, fn=_fn))
_add([(torch.special.xlogy, "torch.special.xlogy")], OPS[torch.xlogy])
_add(_where("max") + _where("min"), Op("max", ("input", "other")))
_CLAMP = {"min": None, "max": None}
for _n in ("clamp", "clip"):
    _add(_where(_n), Op("clamp", ("input", "min", "max"), _CLAMP))
    _add(_where(_n, torch_=False, inplace=True) + _where(_n, tensor=False, inplace=True), Op("clamp", ("input", "min", "max"), _CLAMP, inplace=True))
_add(_where("clamp_min"), Op("clamp", ("input", "min"), _CLAMP))
_add(_where("clamp_max"), Op("clamp", ("input", "max"), _CLAMP))
_add(_where("clamp_min", inplace=True), Op("clamp", ("input", "min"), _CLAMP, inplace=True))
_add(_where("clamp_max", inplace=True), Op("clamp", ("input", "max"), _CLAMP, inplace=True))

# products of two varying tensors: the uniform rule
_MUL = ("input", "other")
_add(_where("mul") + _where("multiply") + [(T.__rmul__, "Tensor.__rmul__")], Op("mul", _MUL, gate=_two_varying))
_add(_where("mul", torch_=False, inplace=True) + _where("multiply", torch_=False, inplace=True) + [(T.__imul__, "x *= y")], Op("mul", _MUL, inplace=True, gate=_two_varying))
_DIV = ("input", "other", "rounding_mode")
_div_gate = lambda leaves: len(leaves) > 1 and not _param(leaves[1])  # noqa: E731
_add(_where("div") + _where("divide") + _where("true_divide") + [(T.__truediv__, "x / y")], Op("div", _DIV, gate=_div_gate))
_add(
    _where("div", torch_=False, inplace=True) + _where("divide", torch_=False, inplace=True)
    + _where("true_divide", torch_=False, inplace=True) + [(T.__itruediv__, "x /= y")],
    Op("div", _DIV, inplace=True, gate=_div_gate),
)
_add([(T.__rdiv__, "p / x")], Op("div", ("input", "other"), extra="r"))
for _n in ("matmul", "mm", "bmm", "mv"):
    _add(_where(_n), Op("matmul", _MUL, gate=_two_varying))
_add([(torch.linalg.matmul, "torch.linalg.matmul")], Op("matmul", _MUL, gate=_two_varying))
_add([(torch.linalg.vecdot, "torch.linalg.vecdot")], Op("bilinear", gate=_two_varying))
_add([(T.__matmul__, "x @ y")], Op("matmul", _MUL, gate=_two_varying))
_add([(T.__rmatmul__, "y @ x")], Op("matmul", _MUL, extra="r", gate=_two_varying))
_add([(torch.einsum, "torch.einsum")], Op("bilinear", ("equation",), extra="einsum", gate=_two_varying))
for _n in ("baddbmm", "addmm", "addbmm", "addmv", "addr", "addcmul", "outer", "ger", "dot", "vdot", "inner", "kron", "cross", "lerp"):
    _add(_where(_n), Op("bilinear", gate=_two_varying))
_add([(torch.tensordot, "torch.tensordot"), (torch.bilinear, "F.bilinear"), (torch.linalg.cross, "torch.linalg.cross")], Op("bilinear", gate=_two_varying))
for _fn, _label in (
    (_nn.linear, "F.linear"), (torch.conv1d, "F.conv1d"), (torch.conv2d, "F.conv2d"), (torch.conv3d, "F.conv3d"),
    (torch.conv_transpose1d, "F.conv_transpose1d"), (torch.conv_transpose2d, "F.conv_transpose2d"),
    (torch.conv_transpose3d, "F.conv_transpose3d"),
):
    _add([(_fn, _label)], Op("bilinear", gate=_weight_varies))

# pooling, normalization, softmax, attention
_POOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
_POOL_DEF = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
for _nd in (1, 2, 3):
    _add([(getattr(torch, f"max_pool{_nd}d"), f"F.max_pool{_nd}d")], Op("maxpool", _POOL, _POOL_DEF, extra=_nd))
    _add(
        [(getattr(_nn, f"max_pool{_nd}d_with_indices", None) or getattr(torch, f"max_pool{_nd}d_with_indices", None), f"F.max_pool{_nd}d")],
        Op("maxpool", _POOL, {**_POOL_DEF, "return_indices": True}, extra=_nd),
    )
_SM = (("input", "dim", "dtype"), {"dtype": None})
_add(_where("softmax") + [(torch.special.softmax, "torch.special.softmax")], Op("softmax", *_SM))
_add(_where("log_softmax") + [(torch.special.log_softmax, "torch.special.log_softmax")], Op("log_softmax", *_SM))
_add(_where("logsumexp") + [(torch.special.logsumexp, "torch.special.logsumexp")], Op("logsumexp", ("input", "dim", "keepdim"), {"keepdim": False}))
_LN = ("input", "normalized_shape", "weight", "bias", "eps")
_add([(torch.layer_norm, "F.layer_norm")], Op("layer_norm", _LN, {"weight": None, "bias": None, "eps": 1e-5}))
_add([(torch.group_norm, "F.group_norm")], Op("group_norm", ("input", "num_groups", "weight", "bias", "eps"), {"weight": None, "bias": None, "eps": 1e-5}))
_add([(getattr(torch, "rms_norm", None), "F.rms_norm")], Op("rms_norm", ("input", "normalized_shape", "weight", "eps"), {"weight": None, "eps": None}))
_add(
    [(torch.instance_norm, "F.instance_norm")],
    Op("instance_norm", ("input", "weight", "bias", "running_mean", "running_var", "use_input_stats", "momentum", "eps", "cudnn_enabled")),
)
_add([(torch.batch_norm, "F.batch_norm")], Op("batch_norm", ("input", "weight", "bias", "running_mean", "running_var", "training")))
_add(
    [(_nn.scaled_dot_product_attention, "F.scaled_dot_product_attention")],
    Op("sdpa", ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"),
       {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}),
)
_add([(_nn.glu, "F.glu")], Op("glu", ("input", "dim"), {"dim": -1}))
_NORM = ("input", "p", "dim", "keepdim", "dtype")
_add([(torch.norm, "torch.norm"), (T.norm, "Tensor.norm")], Op("norm", _NORM, {"p": "fro", "keepdim": False}, extra="matrix"))
_add([(torch.linalg.vector_norm, "torch.linalg.vector_norm")], Op("norm", ("input", "ord", "dim", "keepdim"), {"ord": 2, "keepdim": False}))
_add([(torch.linalg.norm, "torch.linalg.norm")], Op("norm", ("input", "ord", "dim", "keepdim"), {"ord": None, "keepdim": False}, extra="matrix"))
_VAR = (("input", "dim", "unbiased", "keepdim"), {"keepdim": False})
_add(_where("var"), Op("var", *_VAR))
_add(_where("std"), Op("std", *_VAR))
_add(_where("var_mean", tensor=False), Op("var", *_VAR, extra="mean"))
_add(_where("std_mean", tensor=False), Op("std", *_VAR, extra="mean"))
_DROP = (("input", "p", "train"), {"p": 0.5, "train": False})
for _n in ("dropout", "alpha_dropout", "feature_dropout", "feature_alpha_dropout"):
    _add(_where(_n, tensor=False), Op("dropout", *_DROP))
    _add(_where(_n, tensor=False, inplace=True), Op("dropout", *_DROP, inplace=True))


# --------------------------------------------------------------------------- no rule

NONLINEAR: dict[Any, str] = {}


def _deny(names: str, **where) -> None:
    for name in names.split():
        for inplace in (False, True):
            for fn, label in _where(name, inplace=inplace, **where):
                if fn is not None and fn not in OPS:
                    NONLINEAR.setdefault(fn, label)


_deny(
    "amax amin aminmax topk sort kthvalue median nanmedian mode quantile nanquantile cummax cummin cumprod prod "
    "logcumsumexp fmod remainder floor_divide lgamma digamma polygamma mvlgamma i0 erfinv heaviside cdist pdist "
    "cosine_similarity pairwise_distance dist renorm logdet det slogdet inverse pinverse matrix_power matrix_exp "
    "cholesky svd qr lstm gru rnn_tanh rnn_relu lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell embedding_bag "
    "histc kl_div binary_cross_entropy_with_logits poisson_nll_loss cosine_embedding_loss hinge_embedding_loss "
    "margin_ranking_loss triplet_margin_loss ctc_loss nanmean nansum addcdiv adaptive_max_pool1d "
    "_native_multi_head_attention _transformer_encoder_layer_fwd grid_sampler angle msort ldexp igamma igammac"
)
_deny(
    "mse_loss l1_loss smooth_l1_loss huber_loss binary_cross_entropy soft_margin_loss multilabel_margin_loss "
    "multi_margin_loss cross_entropy_loss adaptive_max_pool2d adaptive_max_pool3d fractional_max_pool2d "
    "fractional_max_pool3d multilabel_soft_margin_loss grid_sampler_2d",
    torch_=False, tensor=False, nn_=True,
)
for _mod, _prefix in ((torch.linalg, "torch.linalg."), (torch.special, "torch.special.")):
    for _name in dir(_mod):
        _fn = getattr(_mod, _name)
        if not _name.startswith("_") and _name != "diagonal" and callable(_fn) and _fn not in OPS and not isinstance(_fn, type):
            NONLINEAR.setdefault(_fn, _prefix + _name)
for _fn, _label in (
    (T.__floordiv__, "x // y"), (T.__rfloordiv__, "y // x"), (T.__mod__, "x % y"), (T.__rmod__, "y % x"),
    (torch.grid_sampler, "F.grid_sample"), (F.grid_sample, "F.grid_sample"),
):
    NONLINEAR.setdefault(_fn, _label)
for _k in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
    NONLINEAR[getattr(torch, _k)] = f"torch._VF.{_k} (the fused kernel of nn.{_k.split('_')[0].upper()})"


# --------------------------------------------------------------------------- naming, composites

_COMPOSITE_MODULES = ("torch.nn.functional", "torch.functional")


@functools.lru_cache(maxsize=4096)
def _composite_cached(func) -> bool:
    return isinstance(func, types.FunctionType) and getattr(func, "__module__", None) in _COMPOSITE_MODULES


def composite(func) -> bool:
    """A Python function of ``torch.nn.functional`` / ``torch.functional`` (not in the
    table): the modes re-enter it so the builtins it calls are seen."""
    try:
        return _composite_cached(func)
    except TypeError:  # unhashable
        return False


def label(func) -> str:
    """The public name of ``func`` for messages."""
    try:
        known = _LABELS.get(func) or NONLINEAR.get(func)
    except TypeError:
        known = None
    if known:
        return known
    name = getattr(func, "__name__", repr(func))
    mod = getattr(func, "__module__", None)
    if mod is None or mod.startswith("torch._C"):
        return f"Tensor.{name}" if hasattr(T, name) else f"torch.{name}"
    return f"{mod}.{name}".replace("torch.nn.functional.", "F.")

