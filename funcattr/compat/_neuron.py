"""Captum's neuron attribution classes: a method applied to ``fa.neuron(model, layer,
neuron_selector)`` (``fa.input_of(layer)`` for ``attribute_to_neuron_input=True``), the
neuron's value being the score. The forward stops once the layer has run."""

from __future__ import annotations

from typing import Any, Callable

import funcattr as fa

from ._base import (
    Call,
    NeuronAttribution,
    adapter,
    baseline,
    fwd_args,
    no_grad_kwargs,
    per_eval,
    refuse,
    rows,
)
from ._primary import _call, _custom_deeplift, _no_custom_shap

__all__ = [
    "NeuronGradient", "NeuronIntegratedGradients", "NeuronConductance", "NeuronDeepLift", "NeuronDeepLiftShap",
    "NeuronGradientShap", "NeuronGuidedBackprop", "NeuronDeconvolution", "NeuronFeatureAblation",
]


class _Neuron(NeuronAttribution):
    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func, layer, device_ids)
        self._multiply_by_inputs = multiply_by_inputs


class NeuronGradient(_Neuron):
    """``fa.saliency(fa.neuron(...), abs=False)``."""

    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None) -> None:
        super().__init__(forward_func, layer, device_ids, False)

    @adapter
    def attribute(self, inputs, neuron_selector, additional_forward_args=None, attribute_to_neuron_input=False):
        fn = fa.saliency(self._neuron(neuron_selector, attribute_to_neuron_input), abs=False)
        return Call(fn, fwd_args(additional_forward_args))


class NeuronIntegratedGradients(_Neuron):
    """``fa.integrated_gradients(fa.neuron(...))``."""

    @adapter
    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None, n_steps=50,
                  method="gausslegendre", internal_batch_size=None, attribute_to_neuron_input=False):
        fn = fa.integrated_gradients(self._neuron(neuron_selector, attribute_to_neuron_input), baseline(baselines),
                                     n_steps, method, self._multiply_by_inputs, batch_size=rows(internal_batch_size))
        return Call(fn, fwd_args(additional_forward_args))


class NeuronConductance(_Neuron):
    """``fa.conductance(f, fa.neuron(...))``; Captum's default rule here is ``riemann_trapezoid``."""

    @adapter
    def attribute(self, inputs, neuron_selector, baselines=None, target=None, additional_forward_args=None,
                  n_steps=50, method="riemann_trapezoid", internal_batch_size=None, attribute_to_neuron_input=False,
                  grad_kwargs=None):
        no_grad_kwargs(grad_kwargs)
        if not self._multiply_by_inputs:
            refuse("NeuronConductance(multiply_by_inputs=False)",
                   "fa.conductance always multiplies a neuron's conductance by (inputs - baselines)")
        fn = fa.conductance(self._f, self._neuron(neuron_selector, attribute_to_neuron_input), n_steps, method,
                            baseline(baselines), batch_size=rows(internal_batch_size))
        return _call(fn, target, additional_forward_args)


class NeuronDeepLift(_Neuron):
    """``fa.deeplift(fa.neuron(...))``."""

    def __init__(self, model: Callable, layer: Any, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, layer, None, multiply_by_inputs)
        self.model = model

    @adapter
    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None,
                  attribute_to_neuron_input=False, custom_attribution_func=None):
        n, b = self._neuron(neuron_selector, attribute_to_neuron_input), baseline(baselines)
        if custom_attribution_func is not None:
            call = Call(fa.deeplift(n, b, False), fwd_args(additional_forward_args))
            return _custom_deeplift(call, custom_attribution_func, inputs, baselines)
        return Call(fa.deeplift(n, b, self._multiply_by_inputs), fwd_args(additional_forward_args))


class NeuronDeepLiftShap(NeuronDeepLift):
    """``fa.deeplift_shap(fa.neuron(...), baselines)``."""

    @adapter
    def attribute(self, inputs, neuron_selector, baselines, additional_forward_args=None,
                  attribute_to_neuron_input=False, custom_attribution_func=None):
        _no_custom_shap(custom_attribution_func, "NeuronDeepLiftShap")
        fn = fa.deeplift_shap(self._neuron(neuron_selector, attribute_to_neuron_input), baselines,
                              self._multiply_by_inputs)
        return Call(fn, fwd_args(additional_forward_args))


class NeuronGradientShap(_Neuron):
    """``fa.gradient_shap(fa.neuron(...), baselines)``."""

    @adapter
    def attribute(self, inputs, neuron_selector, baselines, n_samples=5, stdevs=0.0, additional_forward_args=None,
                  attribute_to_neuron_input=False):
        fn = fa.gradient_shap(self._neuron(neuron_selector, attribute_to_neuron_input), baselines, n_samples, stdevs,
                              self._multiply_by_inputs)
        return Call(fn, fwd_args(additional_forward_args))


class NeuronGuidedBackprop(_Neuron):
    """``fa.guided_backprop(fa.neuron(...))``."""

    def __init__(self, model: Callable, layer: Any, device_ids: Any = None) -> None:
        super().__init__(model, layer, device_ids, False)
        self.model = model

    _method = staticmethod(fa.guided_backprop)

    @adapter
    def attribute(self, inputs, neuron_selector, additional_forward_args=None, attribute_to_neuron_input=False):
        fn = self._method(self._neuron(neuron_selector, attribute_to_neuron_input))
        return Call(fn, fwd_args(additional_forward_args))


class NeuronDeconvolution(NeuronGuidedBackprop):
    """``fa.deconvolution(fa.neuron(...))``."""

    _method = staticmethod(fa.deconvolution)


class NeuronFeatureAblation(_Neuron):
    """``fa.feature_ablation(fa.neuron(...))``."""

    def __init__(self, forward_func: Callable, layer: Any, device_ids: Any = None) -> None:
        super().__init__(forward_func, layer, device_ids, False)

    @adapter
    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None, feature_mask=None,
                  attribute_to_neuron_input=False, perturbations_per_eval=1):
        fn = fa.feature_ablation(self._neuron(neuron_selector, attribute_to_neuron_input), feature_mask,
                                 baseline(baselines), batch_size=per_eval(perturbations_per_eval, inputs))
        return Call(fn, fwd_args(additional_forward_args))
