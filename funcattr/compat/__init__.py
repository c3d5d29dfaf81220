"""Captum's classes over funcattr's transforms: change one import, keep the code.

    from funcattr.compat import IntegratedGradients, Occlusion, LayerGradCam, LayerAttribution
    from funcattr.compat import visualization as viz        # or funcattr.compat.attr.visualization
    from funcattr.compat.metrics import infidelity, sensitivity_max
    import funcattr.compat as captum                         # captum.attr.IntegratedGradients(model)

Each class keeps Captum 0.9.0's constructor and ``attribute(...)`` (argument names, order and
defaults) and calls one funcattr transform (``IntegratedGradients`` → ``fa.integrated_gradients``,
``LayerGradCam`` → ``fa.gradcam``, ``NeuronGradient`` → ``fa.saliency(fa.neuron(...))``, ...).

Execution hints map to funcattr's executor: ``internal_batch_size`` → ``batch_size`` (rows per
model call); ``perturbations_per_eval=k`` → ``batch_size=k·B`` (the default 1 leaves chunking to
the memory budget); ``show_progress`` → ``progress``; ``max_examples_per_batch`` (metrics) →
``batch_size``. ``nt_samples_batch_size``, ``device_ids`` and ``memory_efficient`` only tune
Captum's execution and are accepted and not needed. Any other option funcattr cannot honour
raises ``NotImplementedError`` naming it and why; the classes funcattr cannot express
(``LRP``, ``LayerLRP``, ``InternalInfluence``, ``LayerFeatureAblation``,
``LayerFeaturePermutation``, ``LimeBase``) raise when constructed. Deliberate differences
from Captum are listed in ``funcattr.compat._primary``'s and ``visualization``'s docstrings.
"""

from . import attr, metrics, visualization
from .attr import *  # noqa: F401,F403
from .attr import __all__ as _attr_all
from .metrics import infidelity, infidelity_perturb_func_decorator, sensitivity_max

__all__ = [*_attr_all, "attr", "metrics", "infidelity", "infidelity_perturb_func_decorator", "sensitivity_max"]
