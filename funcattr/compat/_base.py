"""What every compat class shares: Captum's argument forms translated to funcattr's, the
base classes Captum users subclass-check against, and the one place a call is made.

A class's ``attribute(...)`` builds a :class:`Call` — one funcattr transform and the
arguments it is called with — and runs it. ``NoiseTunnel`` takes the same ``Call`` from the
method it wraps (through ``attribute.__wrapped__``, as Captum's own NoiseTunnel does) and
wraps its transform in ``fa.noise_tunnel``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable

import torch
from torch import Tensor

import funcattr as fa

__all__ = [
    "Attribution",
    "GradientAttribution",
    "PerturbationAttribution",
    "LayerAttribution",
    "NeuronAttribution",
    "Call",
    "adapter",
    "unsupported",
]


# --------------------------------------------------------------------------- argument forms


def fwd_args(additional_forward_args: Any) -> tuple:
    """Captum's ``additional_forward_args``: one object or a tuple, appended after the inputs."""
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)


def baseline(baselines: Any) -> Any:
    """``None`` means zeros; every other Captum form (scalar, tensor, tuple) funcattr takes as is."""
    return 0.0 if baselines is None else baselines


def target(t: Any) -> Any:
    """Captum reads a one-element tensor as one class for every example."""
    if isinstance(t, Tensor) and t.numel() == 1 and t.dim() > 0 and not t.is_floating_point():
        return int(t.item())
    return t


def rows(internal_batch_size: Any) -> int | None:
    """``internal_batch_size`` → ``batch_size``: both count rows per model call."""
    if internal_batch_size is not None and (not isinstance(internal_batch_size, int) or internal_batch_size < 1):
        raise ValueError(f"internal_batch_size must be a positive int or None, got {internal_batch_size!r}")
    return internal_batch_size


def per_eval(perturbations_per_eval: Any, inputs: Any) -> int | None:
    """``perturbations_per_eval`` → ``batch_size``: k perturbations of the batch per model call.
    Captum's default 1 leaves the chunk size to funcattr's memory budget."""
    ppe = perturbations_per_eval
    if not isinstance(ppe, int) or isinstance(ppe, bool) or ppe < 1:
        raise ValueError(f"perturbations_per_eval must be a positive int, got {ppe!r}")
    if ppe == 1:
        return None
    first = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
    return ppe * first.shape[0]


def progress(show_progress: bool) -> bool | None:
    return True if show_progress else None


def layer_list(layer: Any) -> Callable | None:
    """Captum returns the attributions of a list of layers as a list (a layer with a tuple
    output or several inputs gives a tuple)."""
    return list if isinstance(layer, (list, tuple)) else None


def flat_outputs(xs: Any) -> Callable:
    """Captum's FeatureAblation/Occlusion/FeaturePermutation lay one map per output element
    (funcattr's ``[B, K, ...]``) out as ``[B·K, ...]``, example-major."""
    xs = xs if isinstance(xs, tuple) else (xs,)

    def after(attrs: Any) -> Any:
        parts = attrs if isinstance(attrs, tuple) else (attrs,)
        if not all(a.dim() == x.dim() + 1 for a, x in zip(parts, xs)):
            return attrs
        out = tuple(a.flatten(0, 1) for a in parts)
        return out if isinstance(attrs, tuple) else out[0]

    return after


def site(layer: Any, to_input: bool) -> Any:
    """``layer`` / ``attribute_to_layer_input`` → ``wrt=``: a module, ``fa.input_of(module)``,
    or a list of them (Captum's list of layers)."""
    if isinstance(layer, (list, tuple)):
        return [fa.input_of(m) if to_input else m for m in layer]
    return fa.input_of(layer) if to_input else layer


def refuse(option: str, why: str) -> None:
    raise NotImplementedError(f"{option} is not supported by funcattr.compat because {why}")


def no_grad_kwargs(grad_kwargs: Any) -> None:
    if grad_kwargs:
        refuse(
            "grad_kwargs",
            "funcattr takes its gradients itself (torch.func transforms and chunked backward passes), "
            "so there is no torch.autograd.grad call to hand them to",
        )


def per_sample(delta: Tensor, what: str, dims: int = 2) -> Tensor:
    """A ``[B, S]`` per-sample delta (``[B, S_noise, S]`` inside a noise tunnel) in Captum's
    flat, example-major layout."""
    if delta.dim() < dims:
        refuse(
            f"return_convergence_delta on {what}",
            "Captum returns one delta per example and sample, and funcattr's core does not give "
            "per-sample deltas yet (issue 11, capability 3: return_delta='per_sample')",
        )
    return delta.reshape(-1)


def tensorize(baselines: Any, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Captum's ``_tensorize_baseline``: the baselines a ``custom_attribution_func`` receives,
    one full tensor per input."""
    bs = baselines if isinstance(baselines, tuple) else (baselines,) * len(xs)
    return tuple(torch.as_tensor(b, dtype=x.dtype, device=x.device).expand_as(x) for b, x in zip(bs, xs))


def custom(func: Callable, multipliers: Any, inputs: Any, baselines: Any) -> tuple[Tensor, ...]:
    """Captum's ``_call_custom_attribution_func``: 1, 2 or 3 parameters, tuples in, tuple out."""
    n = len(inspect.signature(func).parameters)
    if n not in (1, 2, 3):
        raise ValueError("custom_attribution_func must take one to three arguments (multipliers, inputs, baselines)")
    as_t = lambda v: v if isinstance(v, tuple) else (v,)  # noqa: E731
    return func(*(as_t(multipliers), as_t(inputs), as_t(baselines))[:n])


# --------------------------------------------------------------------------- the call


@dataclasses.dataclass
class Call:
    """One funcattr transform and what it is called with: ``fn(inputs, *args, **kwargs)``.

    ``delta``: how the transform's delta maps to Captum's — ``"example"`` ([B], as is) or
    ``"sample"`` ([B, S] flattened example-major). ``then``: a last step on the result that
    a noise tunnel cannot wrap (``custom_attribution_func``). ``after``: a change of layout
    of the attributions (Captum's shapes), applied after a noise tunnel too."""

    fn: Callable
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    delta: str | None = None
    then: Callable | None = None
    what: str = ""
    after: Callable | None = None

    def run(self, inputs: Any):
        res = self.fn(inputs, *self.args, **self.kwargs)
        if self.then is not None:
            return self.then(res)
        if self.delta == "sample":
            attrs, d = res
            return self.layout(attrs), per_sample(d, self.what)
        if self.delta is not None:
            attrs, d = res
            return self.layout(attrs), d
        return self.layout(res)

    def layout(self, attrs: Any) -> Any:
        return attrs if self.after is None else self.after(attrs)


def adapter(plan: Callable) -> Callable:
    """``attribute`` from a method that returns the :class:`Call`; the plan stays reachable as
    ``attribute.__wrapped__`` (and gives ``inspect.signature`` Captum's signature)."""

    @functools.wraps(plan)
    def attribute(self, inputs, *args, **kwargs):
        return plan(self, inputs, *args, **kwargs).run(inputs)

    return attribute


# --------------------------------------------------------------------------- base classes


class Attribution:
    """Captum's ``Attribution``: holds ``forward_func``; subclasses define ``attribute``."""

    _delta = False

    def __init__(self, forward_func: Callable) -> None:
        self.forward_func = forward_func
        self._f = fa.target(forward_func)  # one score function per object: funcattr caches its costs by it

    @classmethod
    def get_name(cls) -> str:
        """``IntegratedGradients`` → ``"Integrated Gradients"``, as Captum spells it."""
        return "".join(ch if ch.islower() or i == 0 else " " + ch for i, ch in enumerate(cls.__name__))

    def has_convergence_delta(self) -> bool:
        return self._delta

    @property
    def multiplies_by_inputs(self) -> bool:
        return getattr(self, "_multiply_by_inputs", False)

    def attribute_future(self, *args, **kwargs):
        refuse("attribute_future", "funcattr evaluates a call's perturbations itself, in folded batches")


class GradientAttribution(Attribution):
    pass


class PerturbationAttribution(Attribution):
    """With ``target=None`` the forward goes to funcattr as it is, so its output decides, as in
    Captum: one score per example, one value for the whole batch (a dataset-level loss:
    attributions with batch dim 1), or several outputs per example (one map per output)."""

    def _scored(self, t: Any) -> tuple[Callable, dict]:
        """The function to explain and the keywords it takes: ``fa.target`` with a target."""
        return (self.forward_func, {}) if t is None else (self._f, {"target": target(t)})


class LayerAttribution(Attribution):
    """Captum's ``LayerAttribution``: ``forward_func``, ``layer`` and ``device_ids`` (a
    DataParallel hint funcattr does not need), and the static ``interpolate``."""

    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None) -> None:
        super().__init__(forward_func)
        self.layer = layer
        self.device_ids = device_ids

    @staticmethod
    def interpolate(layer_attribution: Tensor, interpolate_dims: Any, interpolate_mode: str = "nearest") -> Tensor:
        """Upsample a layer map to ``interpolate_dims`` (``fa.upsample``, i.e. ``F.interpolate``)."""
        return fa.upsample(layer_attribution, interpolate_dims, interpolate_mode)


class NeuronAttribution(Attribution):
    """Captum's ``NeuronAttribution``: a layer whose neurons ``neuron_selector`` picks."""

    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None) -> None:
        super().__init__(forward_func)
        self.layer = layer
        self.device_ids = device_ids
        self._neurons: dict = {}

    def _neuron(self, neuron_selector: Any, attribute_to_neuron_input: bool):
        """``fa.neuron`` for this layer, one object per index (funcattr caches costs by it)."""
        s = site(self.layer, attribute_to_neuron_input)
        key = (neuron_selector, attribute_to_neuron_input)
        try:
            hash(key)
        except TypeError:  # a tensor or list index, or slices (unhashable before Python 3.12)
            return fa.neuron(self.forward_func, s, neuron_selector)
        if callable(neuron_selector) or isinstance(neuron_selector, Tensor):
            return fa.neuron(self.forward_func, s, neuron_selector)
        if key not in self._neurons:
            self._neurons[key] = fa.neuron(self.forward_func, s, neuron_selector)
        return self._neurons[key]


def unsupported(name: str, why: str) -> type:
    """A Captum class funcattr cannot express: constructing it raises, naming the reason."""

    def __init__(self, *args, **kwargs):
        refuse(name, why)

    return type(name, (Attribution,), {"__init__": __init__, "__doc__": f"Not supported: {why}."})
