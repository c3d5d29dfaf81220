"""Captum's layer attribution classes: a gradient method taken with respect to a layer
(``wrt=layer``, or ``wrt=fa.input_of(layer)`` for ``attribute_to_layer_input=True``), or the
layer methods (``fa.gradcam``, ``fa.activation``, ``fa.conductance``). A list of layers, a
layer with a tuple output or several inputs go to funcattr as they are (issue 11, capability 2).
"""

from __future__ import annotations

from typing import Any, Callable

import funcattr as fa

from ._base import (
    Call,
    LayerAttribution,
    adapter,
    baseline,
    custom,
    fwd_args,
    layer_list,
    no_grad_kwargs,
    refuse,
    rows,
    site,
    target,
    tensorize,
    unsupported,
)
from ._primary import _call, _no_custom_shap

__all__ = [
    "LayerGradCam", "LayerActivation", "LayerConductance", "LayerDeepLift", "LayerDeepLiftShap",
    "LayerGradientShap", "LayerGradientXActivation", "LayerIntegratedGradients", "InternalInfluence",
    "LayerFeatureAblation", "LayerFeaturePermutation", "LayerLRP",
]


class _Layer(LayerAttribution):
    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func, layer, device_ids)
        self._multiply_by_inputs = multiply_by_inputs


class LayerGradCam(_Layer):
    """``fa.gradcam`` (not upsampled: ``LayerAttribution.interpolate`` / ``fa.upsample``)."""

    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None) -> None:
        super().__init__(forward_func, layer, device_ids, False)

    @adapter
    def attribute(self, inputs, target=None, additional_forward_args=None, attribute_to_layer_input=False,
                  relu_attributions=False, attr_dim_summation=True, grad_kwargs=None):
        no_grad_kwargs(grad_kwargs)
        fn = fa.gradcam(self._f, site(self.layer, attribute_to_layer_input), relu_attributions,
                        sum_channels=attr_dim_summation)
        return _call(fn, target, additional_forward_args)


class LayerActivation(_Layer):
    """``fa.activation``."""

    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None) -> None:
        super().__init__(forward_func, layer, device_ids, False)

    @adapter
    def attribute(self, inputs, additional_forward_args=None, attribute_to_layer_input=False):
        fn = fa.activation(self.forward_func, site(self.layer, attribute_to_layer_input))
        return Call(fn, fwd_args(additional_forward_args), after=layer_list(self.layer))


class LayerConductance(_Layer):
    """``fa.conductance`` with a layer."""

    _delta = True

    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None) -> None:
        super().__init__(forward_func, layer, device_ids, True)

    @adapter
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, n_steps=50,
                  method="gausslegendre", internal_batch_size=None, return_convergence_delta=False,
                  attribute_to_layer_input=False, grad_kwargs=None):
        no_grad_kwargs(grad_kwargs)
        fn = fa.conductance(self._f, site(self.layer, attribute_to_layer_input), n_steps, method,
                            baseline(baselines), return_convergence_delta, batch_size=rows(internal_batch_size))
        return _call(fn, target, additional_forward_args, delta="example" if return_convergence_delta else None)


class LayerDeepLift(_Layer):
    """``fa.deeplift(f, wrt=layer)``; a ``custom_attribution_func`` gets the multipliers at the
    layer and the layer's values at the inputs and at the baselines (``fa.activation``)."""

    _delta = True

    def __init__(self, model: Callable, layer: Any, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, layer, None, multiply_by_inputs)
        self.model = model

    @adapter
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None,
                  return_convergence_delta=False, attribute_to_layer_input=False, custom_attribution_func=None,
                  grad_kwargs=None):
        no_grad_kwargs(grad_kwargs)
        s, b = site(self.layer, attribute_to_layer_input), baseline(baselines)
        if custom_attribution_func is None:
            fn = fa.deeplift(self._f, b, self._multiply_by_inputs, return_convergence_delta, wrt=s)
            return _call(fn, target, additional_forward_args, delta="example" if return_convergence_delta else None)
        if return_convergence_delta:
            refuse("return_convergence_delta with custom_attribution_func",
                   "funcattr's delta is the completeness gap of its own DeepLift attributions")
        act, args = fa.activation(self.forward_func, s), fwd_args(additional_forward_args)

        def then(multipliers):
            xs = inputs if isinstance(inputs, tuple) else (inputs,)
            bs = tensorize(b, xs)
            out = custom(custom_attribution_func, multipliers, act(inputs, *args),
                         act(bs if isinstance(inputs, tuple) else bs[0], *args))
            return out[0] if len(out) == 1 else out

        return _call(fa.deeplift(self._f, b, False, wrt=s), target, additional_forward_args, then=then)


class LayerDeepLiftShap(LayerDeepLift):
    """``fa.deeplift_shap(f, baselines, wrt=layer)``."""

    @adapter
    def attribute(self, inputs, baselines, target=None, additional_forward_args=None, return_convergence_delta=False,
                  attribute_to_layer_input=False, custom_attribution_func=None):
        _no_custom_shap(custom_attribution_func, "LayerDeepLiftShap")
        fn = fa.deeplift_shap(self._f, baselines, self._multiply_by_inputs,
                              "per_sample" if return_convergence_delta else False,
                              wrt=site(self.layer, attribute_to_layer_input))
        return _call(fn, target, additional_forward_args, delta="sample" if return_convergence_delta else None,
                     what="LayerDeepLiftShap")


class LayerGradientShap(_Layer):
    """``fa.gradient_shap(f, baselines, wrt=layer)``."""

    _delta = True

    @adapter
    def attribute(self, inputs, baselines, n_samples=5, stdevs=0.0, target=None, additional_forward_args=None,
                  return_convergence_delta=False, attribute_to_layer_input=False):
        fn = fa.gradient_shap(self._f, baselines, n_samples, stdevs, self._multiply_by_inputs,
                              "per_sample" if return_convergence_delta else False,
                              wrt=site(self.layer, attribute_to_layer_input))
        return _call(fn, target, additional_forward_args, delta="sample" if return_convergence_delta else None,
                     what="LayerGradientShap")


class LayerGradientXActivation(_Layer):
    """``fa.input_x_gradient(f, wrt=layer)``; with ``multiply_by_inputs=False`` the layer
    gradient ``fa.saliency(f, abs=False, wrt=layer)``. ``memory_efficient`` (Captum's CPU
    offload of the activations) is an execution hint funcattr does not need.

    A list of layers is one call per layer: Captum gives each layer's total derivative, also
    through the other listed layers, and funcattr's ``wrt=[a, b]`` holds ``b`` fixed when
    taking the gradient at ``a`` (zero where ``b`` lies after ``a``)."""

    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None, multiply_by_inputs: bool = True,
                 memory_efficient: bool = False) -> None:
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)
        self.memory_efficient = memory_efficient

    @adapter
    def attribute(self, inputs, target=None, additional_forward_args=None, attribute_to_layer_input=False,
                  grad_kwargs=None):
        no_grad_kwargs(grad_kwargs)
        def one(s):
            return fa.input_x_gradient(self._f, wrt=s) if self._multiply_by_inputs else fa.saliency(self._f, False, wrt=s)

        s = site(self.layer, attribute_to_layer_input)
        if not isinstance(s, list):
            return _call(one(s), target, additional_forward_args)
        fns = [one(si) for si in s]

        def each(inputs, *args, **kwargs):
            return [fn(inputs, *args, **kwargs) for fn in fns]

        each.is_attribution = True  # a layer map per listed layer: NoiseTunnel may wrap it
        return _call(each, target, additional_forward_args, after=list)


class LayerIntegratedGradients(_Layer):
    """``fa.integrated_gradients(f, wrt=layer)``: the path runs in the layer's space, between
    its values at the baselines and at the inputs. A list of layers moves all of them along
    their paths at once, in one forward per step, as Captum does (its layers must not feed
    one another)."""

    _delta = True

    @adapter
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, n_steps=50,
                  method="gausslegendre", internal_batch_size=None, return_convergence_delta=False,
                  attribute_to_layer_input=False, grad_kwargs=None):
        no_grad_kwargs(grad_kwargs)
        fn = fa.integrated_gradients(self._f, baseline(baselines), n_steps, method, self._multiply_by_inputs,
                                     return_convergence_delta, wrt=site(self.layer, attribute_to_layer_input),
                                     batch_size=rows(internal_batch_size))
        return _call(fn, target, additional_forward_args, delta="example" if return_convergence_delta else None,
                     after=layer_list(self.layer))


# --------------------------------------------------------------------------- not expressible

InternalInfluence = unsupported(
    "InternalInfluence",
    "it integrates the layer's gradient along the straight path in *input* space, and funcattr's layer "
    "path integral (fa.integrated_gradients(f, wrt=layer, multiply_by_inputs=False)) runs in the layer's "
    "space; the two agree only when the layer is affine in the inputs",
)
LayerFeatureAblation = unsupported(
    "LayerFeatureAblation", "funcattr's perturbation methods perturb the inputs; they take no wrt= layer yet"
)
LayerFeaturePermutation = unsupported(
    "LayerFeaturePermutation", "funcattr's perturbation methods perturb the inputs; they take no wrt= layer yet"
)
LayerLRP = unsupported("LayerLRP", "funcattr has no layer-wise relevance propagation rules yet")
