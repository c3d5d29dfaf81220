"""Captum's ``captum.metrics``: ``infidelity``, ``sensitivity_max`` and
``infidelity_perturb_func_decorator`` over ``fa.metrics``.

``max_examples_per_batch`` is an execution hint (rows per model call, ``batch_size``).
Perturbation functions receive all samples folded work-major (``[n_perturb_samples * B, ...]``,
row ``r`` belongs to example ``r mod B``), where Captum repeats each example in place
(example-major); a perturbation that does not depend on the row order gives the same numbers.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

import funcattr as fa

from ._base import fwd_args, target as _target

__all__ = ["infidelity", "infidelity_perturb_func_decorator", "sensitivity_max", "default_perturb_func"]


def infidelity(forward_func: Callable, perturb_func: Callable, inputs: Any, attributions: Any, baselines: Any = None,
               additional_forward_args: Any = None, target: Any = None, n_perturb_samples: int = 10,
               max_examples_per_batch: int | None = None, normalize: bool = False) -> torch.Tensor:
    """``fa.metrics.infidelity``: ``[B]``."""
    return fa.metrics.infidelity(
        fa.target(forward_func), perturb_func, inputs, attributions, baselines, n_perturb_samples, normalize,
        args=fwd_args(additional_forward_args), kwargs={"target": _target(target)}, batch_size=max_examples_per_batch,
    )


def infidelity_perturb_func_decorator(multiply_by_inputs: bool = True) -> Callable:
    """``fa.metrics.with_perturbations``: a function returning perturbed inputs → one returning
    ``(perturbations, perturbed_inputs)``."""
    return fa.metrics.with_perturbations(multiply_by_inputs=multiply_by_inputs)


def default_perturb_func(inputs: Any, perturb_radius: float = 0.02):
    """Captum's default for ``sensitivity_max``: uniform noise in ``[-r, r]`` (funcattr's default)."""
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    out = tuple(x + torch.empty_like(x).uniform_(-perturb_radius, perturb_radius) for x in xs)
    return out if isinstance(inputs, tuple) else out[0]


def sensitivity_max(explanation_func: Callable, inputs: Any, perturb_func: Callable = default_perturb_func,
                    perturb_radius: float = 0.02, n_perturb_samples: int = 10, norm_ord: Any = "fro",
                    max_examples_per_batch: int | None = None, **kwargs: Any) -> torch.Tensor:
    """``fa.metrics.sensitivity_max``: ``[B]``. ``explanation_func`` is any attribution
    function, e.g. a compat object's ``attribute``; ``kwargs`` (``target=``, ``baselines=``,
    ...) go to it, per-example values following the perturbed copies."""
    return fa.metrics.sensitivity_max(
        explanation_func, inputs, perturb_radius, n_perturb_samples, norm_ord,
        None if perturb_func is default_perturb_func else perturb_func, batch_size=max_examples_per_batch, **kwargs,
    )
