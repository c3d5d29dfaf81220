"""Captum's primary attribution classes, each one funcattr transform.

Deliberate differences from Captum 0.9.0 (each pinned by a test in tests/test_compat.py):

* Bad arguments raise ``ValueError``/``TypeError`` naming the argument, where Captum fails an
  ``assert``; options funcattr cannot honour raise ``NotImplementedError``.
* GuidedBackprop, Deconvolution and DeepLift apply their rules to every nonlinearity that runs
  — functional (``F.relu``, ``torch.sigmoid``) and reused modules included; Captum's hooks see
  only ``nn.Module`` activations, each used once. DeepLift also keeps its definition (and
  completeness) where Captum 0.9.0's hooks go wrong: nonlinear modules chained directly,
  overlapping max-pool windows, softmax over a batch (see ``fa.deeplift``).
* DeepLiftShap accepts a distribution of a single baseline (Captum asserts more than one).
* FeaturePermutation shuffles a feature that spans several input tensors with one
  permutation (Captum draws one per tensor).
* ShapleyValues refuses more than 16 features (2**16 coalitions; Captum's F·F! evaluations).
* Lime and KernelShap draw their coalitions per example, as Captum does
  (``coalitions="per_example"``), so a batch gives its examples' results one by one.
* With ``target=None`` a perturbation class hands the forward to funcattr as it is: one value
  for the whole batch gives attributions with batch dim 1 (Captum's aggregate mode), several
  outputs per example one map per output (Captum's layouts: ``[B·K, ...]`` for
  FeatureAblation, Occlusion and FeaturePermutation, ``[B, K, ...]`` for the Shapley
  classes); Lime and KernelShap give ``[B, K, ...]`` there too, where Captum asserts.
* GuidedGradCam raises when an input's spatial dims do not match the layer's map (Captum warns
  and returns an empty tensor for that input).
* Random draws (noise, baselines, α, permutations, coalitions) come from torch's global RNG in
  funcattr's own layout, so a seeded call does not reproduce Captum's numbers draw for draw.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

import funcattr as fa

from ._base import (
    Attribution,
    Call,
    GradientAttribution,
    PerturbationAttribution,
    adapter,
    baseline,
    custom,
    flat_outputs,
    fwd_args,
    per_eval,
    per_sample,
    progress,
    refuse,
    rows,
    site,
    target,
    tensorize,
    unsupported,
)

__all__ = [
    "IntegratedGradients", "Saliency", "InputXGradient", "DeepLift", "DeepLiftShap", "GradientShap",
    "GuidedBackprop", "Deconvolution", "GuidedGradCam", "FeatureAblation", "FeaturePermutation",
    "Occlusion", "ShapleyValueSampling", "ShapleyValues", "Lime", "KernelShap", "NoiseTunnel",
    "LimeBase", "LRP", "SkLearnLasso", "SkLearnRidge", "SkLearnLinearRegression", "get_exp_kernel_similarity_function",
]


def _call(fn, t, additional_forward_args, **extra) -> Call:
    return Call(fn, fwd_args(additional_forward_args), {"target": target(t)}, **extra)


def _perturb(obj, method, t, inputs, additional_forward_args, *hyper, flat=False, **options) -> Call:
    """``method(f, *hyper, **options)`` on the forward (``target=None``) or its target's scores;
    ``flat``: Captum's ``[B·K, ...]`` layout of one map per output element."""
    f, kw = obj._scored(t)
    return Call(method(f, *hyper, **options), fwd_args(additional_forward_args), kw,
                after=flat_outputs(inputs) if flat and t is None else None)


def _custom_deeplift(call: Call, func: Callable, inputs, baselines) -> Call:
    """DeepLift's multipliers (``call`` runs it with ``multiply_by_inputs=False``) handed to
    Captum's ``custom_attribution_func(multipliers, inputs, baselines)``."""

    def then(multipliers):
        xs = inputs if isinstance(inputs, tuple) else (inputs,)
        out = custom(func, multipliers, xs, tensorize(baseline(baselines), xs))
        return out if isinstance(inputs, tuple) else out[0]

    call.then = then
    return call


class IntegratedGradients(GradientAttribution):
    """``fa.integrated_gradients``."""

    _delta = True

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func)
        self._multiply_by_inputs = multiply_by_inputs

    @adapter
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, n_steps=50,
                  method="gausslegendre", internal_batch_size=None, return_convergence_delta=False):
        fn = fa.integrated_gradients(self._f, baseline(baselines), n_steps, method, self._multiply_by_inputs,
                                     return_convergence_delta, batch_size=rows(internal_batch_size))
        return _call(fn, target, additional_forward_args, delta="example" if return_convergence_delta else None)


class Saliency(GradientAttribution):
    """``fa.saliency``."""

    @adapter
    def attribute(self, inputs, target=None, abs=True, additional_forward_args=None):
        return _call(fa.saliency(self._f, abs), target, additional_forward_args)


class InputXGradient(GradientAttribution):
    """``fa.input_x_gradient``."""

    _multiply_by_inputs = True

    @adapter
    def attribute(self, inputs, target=None, additional_forward_args=None):
        return _call(fa.input_x_gradient(self._f), target, additional_forward_args)


class DeepLift(GradientAttribution):
    """``fa.deeplift``; a ``custom_attribution_func`` gets its multipliers
    (``fa.deeplift(f, multiply_by_inputs=False)``)."""

    _delta = True

    def __init__(self, model: Callable, multiply_by_inputs: bool = True, eps: float = 1e-10) -> None:
        super().__init__(model)
        self.model = model
        self._multiply_by_inputs = multiply_by_inputs
        self.eps = eps

    @adapter
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None,
                  return_convergence_delta=False, custom_attribution_func=None):
        b = baseline(baselines)
        if custom_attribution_func is not None:
            if return_convergence_delta:
                refuse("return_convergence_delta with custom_attribution_func",
                       "funcattr's delta is the completeness gap of its own DeepLift attributions")
            call = _call(fa.deeplift(self._f, b, multiply_by_inputs=False, eps=self.eps), target, additional_forward_args)
            return _custom_deeplift(call, custom_attribution_func, inputs, baselines)
        fn = fa.deeplift(self._f, b, self._multiply_by_inputs, return_convergence_delta, eps=self.eps)
        return _call(fn, target, additional_forward_args, delta="example" if return_convergence_delta else None)


def _no_custom_shap(custom_attribution_func, name):
    if custom_attribution_func is not None:
        refuse(f"custom_attribution_func on {name}",
               "funcattr averages DeepLift over the baselines inside one call and does not hand out the "
               "multipliers of each (example, baseline) pair")


class DeepLiftShap(DeepLift):
    """``fa.deeplift_shap``."""

    def __init__(self, model: Callable, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, multiply_by_inputs)

    @adapter
    def attribute(self, inputs, baselines, target=None, additional_forward_args=None,
                  return_convergence_delta=False, custom_attribution_func=None):
        _no_custom_shap(custom_attribution_func, "DeepLiftShap")
        fn = fa.deeplift_shap(self._f, baselines, self._multiply_by_inputs,
                              "per_sample" if return_convergence_delta else False)
        return _call(fn, target, additional_forward_args, delta="sample" if return_convergence_delta else None,
                     what="DeepLiftShap")


class GradientShap(GradientAttribution):
    """``fa.gradient_shap``."""

    _delta = True

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func)
        self._multiply_by_inputs = multiply_by_inputs

    @adapter
    def attribute(self, inputs, baselines, n_samples=5, stdevs=0.0, target=None, additional_forward_args=None,
                  return_convergence_delta=False):
        fn = fa.gradient_shap(self._f, baselines, n_samples, stdevs, self._multiply_by_inputs,
                              "per_sample" if return_convergence_delta else False)
        return _call(fn, target, additional_forward_args, delta="sample" if return_convergence_delta else None,
                     what="GradientShap")


class GuidedBackprop(GradientAttribution):
    """``fa.guided_backprop``."""

    def __init__(self, model: Callable) -> None:
        super().__init__(model)
        self.model = model

    @adapter
    def attribute(self, inputs, target=None, additional_forward_args=None):
        return _call(fa.guided_backprop(self._f), target, additional_forward_args)


class Deconvolution(GuidedBackprop):
    """``fa.deconvolution``."""

    @adapter
    def attribute(self, inputs, target=None, additional_forward_args=None):
        return _call(fa.deconvolution(self._f), target, additional_forward_args)


class GuidedGradCam(GradientAttribution):
    """``fa.guided_gradcam``."""

    def __init__(self, model: Callable, layer: Any, device_ids: Any = None) -> None:
        super().__init__(model)
        self.model, self.layer, self.device_ids = model, layer, device_ids

    @adapter
    def attribute(self, inputs, target=None, additional_forward_args=None, interpolate_mode="nearest",
                  attribute_to_layer_input=False):
        fn = fa.guided_gradcam(self._f, site(self.layer, attribute_to_layer_input), interpolate_mode)
        return _call(fn, target, additional_forward_args)


# --------------------------------------------------------------------------- perturbation


class FeatureAblation(PerturbationAttribution):
    """``fa.feature_ablation``."""

    @adapter
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  perturbations_per_eval=1, show_progress=False, **kwargs):
        if kwargs:
            refuse(f"FeatureAblation.attribute({', '.join(kwargs)}=...)", "these are Captum-internal options")
        return _perturb(self, fa.feature_ablation, target, inputs, additional_forward_args, feature_mask,
                        baseline(baselines), flat=True, batch_size=per_eval(perturbations_per_eval, inputs),
                        progress=progress(show_progress))


def _permute_feature(x: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
    """Captum's default ``perm_func``: one random non-identity shuffle of the batch, applied
    where ``feature_mask`` is set (what ``fa.feature_permutation`` does for every feature)."""
    n = x.shape[0]
    perm = torch.randperm(n)
    while n > 1 and bool((perm == torch.arange(n)).all()):
        perm = torch.randperm(n)
    return torch.where(feature_mask.bool(), x[perm], x)


class FeaturePermutation(FeatureAblation):
    """``fa.feature_permutation``."""

    def __init__(self, forward_func: Callable, perm_func: Callable = _permute_feature) -> None:
        super().__init__(forward_func)
        self.perm_func = perm_func

    @adapter
    def attribute(self, inputs, target=None, additional_forward_args=None, feature_mask=None,
                  perturbations_per_eval=1, show_progress=False, **kwargs):
        if self.perm_func is not _permute_feature:
            refuse("perm_func", "funcattr shuffles each feature across the batch itself, in folded batches")
        if kwargs:
            refuse(f"FeaturePermutation.attribute({', '.join(kwargs)}=...)", "these are Captum-internal options")
        return _perturb(self, fa.feature_permutation, target, inputs, additional_forward_args, feature_mask, flat=True,
                        batch_size=per_eval(perturbations_per_eval, inputs), progress=progress(show_progress))


class Occlusion(FeatureAblation):
    """``fa.occlusion``."""

    @adapter
    def attribute(self, inputs, sliding_window_shapes, strides=None, baselines=None, target=None,
                  additional_forward_args=None, perturbations_per_eval=1, show_progress=False):
        return _perturb(self, fa.occlusion, target, inputs, additional_forward_args, sliding_window_shapes, strides,
                        baseline(baselines), flat=True, batch_size=per_eval(perturbations_per_eval, inputs),
                        progress=progress(show_progress))


class ShapleyValueSampling(PerturbationAttribution):
    """``fa.shapley_sampling``."""

    @adapter
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  n_samples=25, perturbations_per_eval=1, show_progress=False):
        return _perturb(self, fa.shapley_sampling, target, inputs, additional_forward_args, feature_mask,
                        baseline(baselines), n_samples, batch_size=per_eval(perturbations_per_eval, inputs),
                        progress=progress(show_progress))


class ShapleyValues(PerturbationAttribution):
    """``fa.shapley_values``: every coalition at once (2**F evaluations, not F·F!)."""

    @adapter
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  perturbations_per_eval=1, show_progress=False):
        return _perturb(self, fa.shapley_values, target, inputs, additional_forward_args, feature_mask,
                        baseline(baselines), batch_size=per_eval(perturbations_per_eval, inputs),
                        progress=progress(show_progress))


class SkLearnLasso:
    """Captum's lasso surrogate (``alpha``, sklearn's default 1.0): ``fa.lime(penalty="l1")``."""

    _penalty = "l1"

    def __init__(self, **kwargs: Any) -> None:
        self.construct_kwargs = kwargs


class SkLearnRidge(SkLearnLasso):
    """Captum's ridge surrogate: ``fa.lime(penalty="l2")``."""

    _penalty = "l2"


class SkLearnLinearRegression(SkLearnLasso):
    """Captum's least-squares surrogate: ``fa.lime(penalty=None)``."""

    _penalty = None


_SURROGATES = {"SkLearnLasso": "l1", "SkLearnRidge": "l2", "SkLearnLinearRegression": None}


@dataclasses.dataclass(frozen=True)
class _ExpKernel:
    distance_mode: str
    kernel_width: float


def get_exp_kernel_similarity_function(distance_mode: str = "cosine", kernel_width: float = 1.0) -> _ExpKernel:
    """Captum's exponential kernel ``exp(−d² / (2 width²))`` of the cosine or euclidean
    distance: ``fa.lime(distance=, kernel_width=)``."""
    return _ExpKernel(distance_mode, kernel_width)


def _lime_options(interpretable_model: Any, similarity_func: Any, perturb_func: Any) -> dict:
    """Captum's Lime constructor → ``fa.lime`` options. The surrogate is read by its class name
    (this module's or Captum's ``SkLearnLasso``/``Ridge``/``LinearRegression``)."""
    why = ("funcattr fits its own surrogate; give Lime interpretable_model=SkLearnLasso(alpha=)/SkLearnRidge(alpha=)/"
           "SkLearnLinearRegression() and similarity_func=get_exp_kernel_similarity_function(...) from funcattr.compat")
    opts: dict = {}
    if interpretable_model is not None:
        name, kw = type(interpretable_model).__name__, dict(getattr(interpretable_model, "construct_kwargs", {}))
        if name not in _SURROGATES or set(kw) - {"alpha"}:
            refuse(f"Lime(interpretable_model={name}({', '.join(kw)}))", why)
        opts.update(penalty=_SURROGATES[name], alpha=kw.get("alpha", 1.0))
    if similarity_func is not None:
        if not isinstance(similarity_func, _ExpKernel):
            refuse("Lime(similarity_func=...)", why)
        opts.update(distance=similarity_func.distance_mode, kernel_width=similarity_func.kernel_width)
    if perturb_func is not None:
        refuse("Lime(perturb_func=...)", "funcattr draws LIME's Bernoulli(1/2) coalitions itself")
    return opts


class Lime(PerturbationAttribution):
    """``fa.lime`` with Captum's defaults (lasso α = 0.01, exponential cosine kernel of width 1,
    Bernoulli(½) coalitions), fitted in torch: no scikit-learn."""

    _method = staticmethod(fa.lime)

    def __init__(self, forward_func: Callable, interpretable_model: Any = None, similarity_func: Any = None,
                 perturb_func: Any = None) -> None:
        super().__init__(forward_func)
        self._options = _lime_options(interpretable_model, similarity_func, perturb_func)

    @adapter
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  n_samples=25, perturbations_per_eval=1, return_input_shape=True, show_progress=False):
        if not return_input_shape:
            refuse("return_input_shape=False",
                   "funcattr returns each feature's coefficient on the elements of that feature (input-shaped)")
        return _perturb(self, self._method, target, inputs, additional_forward_args, feature_mask, baseline(baselines),
                        n_samples, **self._options, coalitions="per_example",
                        batch_size=per_eval(perturbations_per_eval, inputs), progress=progress(show_progress))


class KernelShap(Lime):
    """``fa.kernel_shap``."""

    _method = staticmethod(fa.kernel_shap)

    def __init__(self, forward_func: Callable) -> None:
        super().__init__(forward_func)


# --------------------------------------------------------------------------- noise tunnel


class NoiseTunnel(Attribution):
    """``fa.noise_tunnel`` around the transform of the compat method it wraps."""

    def __init__(self, attribution_method: Attribution) -> None:
        if not isinstance(attribution_method, Attribution):
            raise TypeError(
                "NoiseTunnel wraps a funcattr.compat attribution object (e.g. Saliency(model)), got "
                f"{type(attribution_method).__name__}"
            )
        super().__init__(attribution_method.forward_func)
        self.attribution_method = attribution_method
        self.is_delta_supported = attribution_method.has_convergence_delta()
        self._delta = self.is_delta_supported

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.attribution_method.multiplies_by_inputs

    def attribute(self, inputs, nt_type="smoothgrad", nt_samples=5, nt_samples_batch_size=None, stdevs=1.0,
                  draw_baseline_from_distrib=False, **kwargs):
        if draw_baseline_from_distrib:
            refuse("draw_baseline_from_distrib=True",
                   "fa.noise_tunnel hands the wrapped method one baseline per example (use GradientShap, which "
                   "draws its baselines from the distribution)")
        if nt_samples_batch_size is not None and (not isinstance(nt_samples_batch_size, int) or nt_samples_batch_size < 1):
            raise ValueError(f"nt_samples_batch_size must be a positive int or None, got {nt_samples_batch_size!r}")
        inner = self.attribution_method
        call = type(inner).attribute.__wrapped__(inner, inputs, **kwargs)
        if call.then is not None:
            refuse("custom_attribution_func inside NoiseTunnel", "the custom step runs after funcattr's transform")
        res = fa.noise_tunnel(call.fn, nt_samples, stdevs, nt_type)(inputs, *call.args, **call.kwargs)
        if call.delta is None:
            return call.layout(res)
        attrs, delta = res  # [B, nt_samples] (or [B, nt_samples, S]), example-major like Captum's
        return call.layout(attrs), (per_sample(delta, call.what, dims=3) if call.delta == "sample" else delta.reshape(-1))


# --------------------------------------------------------------------------- not expressible

LimeBase = unsupported(
    "LimeBase", "its user-supplied interpretable model, similarity and perturbation functions and "
    "interpretable-space transforms have no funcattr counterpart; use Lime (fa.lime) or KernelShap"
)
LRP = unsupported("LRP", "funcattr has no layer-wise relevance propagation rules yet")
