"""What each operation of a traced model does to a *changed patch* of its input.

Incremental occlusion (``_incremental``) runs a model's ``torch.fx`` graph node by node and
needs, for every node, one of four answers:

* ``window`` — a 2-D sliding-window op (convolution, max/avg pooling): output position ``o``
  reads inputs ``o·s − pad .. o·s − pad + k_eff − 1`` along each spatial dim. Its ``patch``
  function evaluates it on a gathered input box with the padding already in the box (so
  ``padding=0``); ``pad`` is the value of positions outside the map (0, or −inf for max).
* ``point`` — position-wise: the output at ``(row, :, h, w)`` depends only on the inputs at
  ``(row, :, h, w)`` (elementwise activations, eval batch norm, arithmetic, channel ``cat``).
* ``meta`` — reads only shapes (``x.size()``, ``x.shape``, ``x.dim()``).
* ``any`` — anything else (global pooling, flatten, linear, unknown ops): evaluated on full
  maps, exactly as the plain path does.

In-place variants (``ReLU(inplace=True)``, ``relu_``, ``F.relu(inplace=True)``, ``iadd``) are
run out of place; ``_incremental`` accepts them only where that cannot be observed (the
mutated value has no other user and is a fresh result). An unknown in-place op, or one
writing into ``out=``, makes the model not qualify (``NotQualified``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NotQualified", "Op", "classify"]


class NotQualified(Exception):
    """The model cannot be evaluated incrementally; the message says why."""


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str  # "window" | "point" | "meta" | "any"
    call: Callable[..., Any]  # plain semantics: call(*args, **kwargs) with values for nodes
    patch: Callable[[torch.Tensor], torch.Tensor] | None = None  # window ops, on a padded box
    geo: tuple[tuple[int, int, int], ...] = ()  # window ops: per spatial dim (k_eff, stride, left pad)
    pad: float = 0.0  # window ops: value outside the map
    macs: int = 0  # window/linear ops: multiply-adds per output position (per row for linear)
    inplace: bool = False  # mutates args[0] (run out of place)
    alias: bool = False  # may return its input itself (identity, eval dropout)
    channelwise: bool = False  # point op whose tensor arguments are per-channel parameters
    cat_dim: int | None = None  # point op that is torch.cat (dim must be the channel dim)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv(weight_of, bias_of, stride, padding, dilation, groups, k) -> Op:
    stride, dilation, k = _pair(stride), _pair(dilation), _pair(k)
    if isinstance(padding, str):
        if padding == "valid":
            left = (0, 0)
        elif padding == "same":
            left = tuple(d * (kk - 1) // 2 for d, kk in zip(dilation, k))
        else:
            return None
    else:
        left = _pair(padding)
    geo = tuple((d * (kk - 1) + 1, s, p) for d, kk, s, p in zip(dilation, k, stride, left))

    def call(x, *_, **__):
        return F.conv2d(x, weight_of(), bias_of(), stride, padding, dilation, groups)

    def patch(x):
        return F.conv2d(x, weight_of(), bias_of(), stride, 0, dilation, groups)

    w = weight_of()
    return Op("window", call, patch, geo, 0.0, macs=w.shape[1] * k[0] * k[1] * w.shape[0])


def _max_pool(k, stride, padding, dilation, ceil_mode) -> Op:
    k, padding, dilation = _pair(k), _pair(padding), _pair(dilation)
    stride = k if stride is None or stride == [] or stride == () else _pair(stride)
    geo = tuple((d * (kk - 1) + 1, s, p) for d, kk, s, p in zip(dilation, k, stride, padding))

    def call(x, *_, **__):
        return F.max_pool2d(x, k, stride, padding, dilation, ceil_mode=ceil_mode)

    def patch(x):
        return F.max_pool2d(x, k, stride, 0, dilation)

    return Op("window", call, patch, geo, -math.inf)


def _avg_pool(k, stride, padding, ceil_mode, count_include_pad, divisor_override) -> Op | None:
    k, padding = _pair(k), _pair(padding)
    stride = k if stride is None or stride == [] or stride == () else _pair(stride)
    if ceil_mode or (any(padding) and not count_include_pad):
        return None  # border divisors differ from a plain average over the box

    def call(x, *_, **__):
        return F.avg_pool2d(x, k, stride, padding, ceil_mode, count_include_pad, divisor_override)

    def patch(x):
        return F.avg_pool2d(x, k, stride, 0, False, True, divisor_override)

    return Op("window", call, patch, tuple((kk, s, p) for kk, s, p in zip(k, stride, padding)), 0.0)


# Activation modules → their out-of-place function (reading the module's settings at call time).
_ACTIVATIONS: dict[type, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    nn.ReLU: lambda m, x: F.relu(x),
    nn.ReLU6: lambda m, x: F.relu6(x),
    nn.LeakyReLU: lambda m, x: F.leaky_relu(x, m.negative_slope),
    nn.ELU: lambda m, x: F.elu(x, m.alpha),
    nn.CELU: lambda m, x: F.celu(x, m.alpha),
    nn.SELU: lambda m, x: F.selu(x),
    nn.GELU: lambda m, x: F.gelu(x, approximate=m.approximate),
    nn.SiLU: lambda m, x: F.silu(x),
    nn.Mish: lambda m, x: F.mish(x),
    nn.Sigmoid: lambda m, x: torch.sigmoid(x),
    nn.Tanh: lambda m, x: torch.tanh(x),
    nn.Hardtanh: lambda m, x: F.hardtanh(x, m.min_val, m.max_val),
    nn.Hardswish: lambda m, x: F.hardswish(x),
    nn.Hardsigmoid: lambda m, x: F.hardsigmoid(x),
    nn.Softplus: lambda m, x: F.softplus(x, m.beta, m.threshold),
    nn.PReLU: lambda m, x: F.prelu(x, m.weight),
}
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.Dropout3d, nn.AlphaDropout)

# Position-wise functions; value: the out-of-place function an in-place spelling maps to.
_POINT_FUNCTIONS = {
    f: f
    for f in (
        operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
        torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum, torch.neg,
        torch.relu, torch.sigmoid, torch.tanh, torch.abs, torch.exp, torch.clamp,
        F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, F.celu, F.selu, F.mish,
        F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.sigmoid, F.tanh,
    )
}
_POINT_FUNCTIONS.update({
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, torch.relu_: torch.relu, torch.sigmoid_: torch.sigmoid,
    torch.tanh_: torch.tanh, F.relu_: F.relu, F.leaky_relu_: F.leaky_relu, F.elu_: F.elu,
})
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, torch.relu_, torch.sigmoid_,
                      torch.tanh_, F.relu_, F.leaky_relu_, F.elu_}
_POINT_METHODS = {"relu", "sigmoid", "tanh", "add", "sub", "mul", "div", "clamp", "abs", "neg", "exp"}
_META_METHODS = {"size", "dim"}
_META_ATTRS = {"shape", "ndim", "dtype", "device"}


def _inplace_index(fn) -> int | None:
    """Position of a Python function's ``inplace`` parameter (None: it has none)."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # builtins: no inplace parameter
        return None
    return params.index("inplace") if "inplace" in params else None


def _uses_inplace(fn, node) -> bool:
    i = _inplace_index(fn)
    if i is None:
        return False
    v = node.args[i] if len(node.args) > i else node.kwargs.get("inplace", False)
    if not isinstance(v, bool):
        raise NotQualified(f"'{getattr(fn, '__name__', fn)}' takes a computed inplace= flag")
    return v


def _out_of_place(fn):
    i = _inplace_index(fn)
    if i is None:
        return fn

    def call(*a, **k):
        if len(a) > i:
            a = a[:i] + (False,) + a[i + 1 :]
        else:
            k = {**k, "inplace": False}
        return fn(*a, **k)

    return call


def _module_op(m: nn.Module, name: str) -> Op:
    t = type(m)
    if t is nn.Conv2d:
        if m.padding_mode != "zeros":
            return Op("any", m)
        op = _conv(lambda: m.weight, lambda: m.bias, m.stride, m.padding, m.dilation, m.groups, m.kernel_size)
        return op if op is not None else Op("any", m)
    if t is nn.MaxPool2d and not m.return_indices:
        return _max_pool(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    if t is nn.AvgPool2d:
        op = _avg_pool(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)
        return op if op is not None else Op("any", m)
    if t is nn.BatchNorm2d and not m.training and m.running_mean is not None:
        def bn(x):
            return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

        return Op("point", bn)
    if t in _ACTIVATIONS:
        fn = _ACTIVATIONS[t]
        return Op("point", lambda x: fn(m, x), inplace=bool(getattr(m, "inplace", False)))
    if t in _IDENTITY_MODULES and not m.training:
        return Op("point", lambda x: x, alias=True)
    if getattr(m, "inplace", False):
        raise NotQualified(f"module '{name}' ({t.__name__}) works in place and funcattr does not know its locality")
    if t is nn.Linear:
        return Op("any", lambda x: F.linear(x, m.weight, m.bias), macs=m.in_features * m.out_features)
    return Op("any", m)


def _arg(node, i: int, name: str, default):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _function_op(node, const: Callable[[Any], Any]) -> Op:
    fn = node.target
    if "out" in node.kwargs:
        raise NotQualified(f"'{getattr(fn, '__name__', fn)}' writes into out=")
    if fn in (F.conv2d,) and const(_arg(node, 1, "weight", None)) is not None:
        weight, bias = _arg(node, 1, "weight", None), _arg(node, 2, "bias", None)
        w = const(weight)
        op = _conv(
            lambda: const(weight), lambda: const(bias), _arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0),
            _arg(node, 5, "dilation", 1), _arg(node, 6, "groups", 1), tuple(w.shape[2:]),
        )
        if op is not None and (bias is None or const(bias) is not None):
            return op
    if fn is F.max_pool2d and not _arg(node, 6, "return_indices", False):
        return _max_pool(
            _arg(node, 1, "kernel_size", None), _arg(node, 2, "stride", None), _arg(node, 3, "padding", 0),
            _arg(node, 4, "dilation", 1), _arg(node, 5, "ceil_mode", False),
        )
    if fn is F.avg_pool2d:
        op = _avg_pool(
            _arg(node, 1, "kernel_size", None), _arg(node, 2, "stride", None), _arg(node, 3, "padding", 0),
            _arg(node, 4, "ceil_mode", False), _arg(node, 5, "count_include_pad", True), _arg(node, 6, "divisor_override", None),
        )
        if op is not None:
            return op
    if fn is F.batch_norm and not _arg(node, 5, "training", False):
        return Op("point", fn, channelwise=True)
    if fn is F.prelu:
        return Op("point", fn, channelwise=True)
    if fn in (F.dropout, F.dropout2d) and _arg(node, 2, "training", True) is False:
        return Op("point", lambda x, *a, **k: x, alias=True, inplace=_uses_inplace(fn, node))
    if fn is torch.cat:
        return Op("point", fn, cat_dim=_arg(node, 1, "dim", 0))
    if fn in _POINT_FUNCTIONS:
        inplace = fn in _INPLACE_FUNCTIONS or _uses_inplace(fn, node)
        return Op("point", _out_of_place(_POINT_FUNCTIONS[fn]), inplace=inplace)
    if fn is getattr and len(node.args) == 2 and node.args[1] in _META_ATTRS:
        return Op("meta", fn)
    name = getattr(fn, "__name__", "")
    if fn is operator.setitem or (name.endswith("_") and not name.endswith("__")) or _uses_inplace(fn, node):
        raise NotQualified(f"'{name or fn}' modifies a tensor in place and funcattr does not know its locality")
    return Op("any", fn)


def _method_op(node) -> Op:
    name = node.target
    if name in _META_METHODS:
        return Op("meta", lambda x, *a, **k: getattr(x, name)(*a, **k))
    if name in _POINT_METHODS or (name.endswith("_") and name[:-1] in _POINT_METHODS):
        plain = name.rstrip("_")
        return Op("point", lambda x, *a, **k: getattr(x, plain)(*a, **k), inplace=name.endswith("_"))
    if name == "contiguous":
        return Op("point", lambda x, *a, **k: x.contiguous(*a, **k), alias=True)
    if name.endswith("_") and not name.endswith("__"):
        raise NotQualified(f"'.{name}()' modifies a tensor in place and funcattr does not know its locality")
    return Op("any", lambda x, *a, **k: getattr(x, name)(*a, **k))


def classify(node, modules: dict[str, nn.Module], const: Callable[[Any], Any]) -> Op:
    """The :class:`Op` of an fx ``call_module``/``call_function``/``call_method`` node.
    ``const(arg)`` gives the value of a constant argument node (a parameter), else None."""
    if node.op == "call_module":
        return _module_op(modules[node.target], node.target)
    if node.op == "call_function":
        return _function_op(node, const)
    if node.op == "call_method":
        return _method_op(node)
    raise ValueError(node.op)
