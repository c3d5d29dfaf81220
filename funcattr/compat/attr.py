"""``captum.attr``'s names: ``from funcattr.compat.attr import IntegratedGradients, visualization``."""

from . import visualization
from ._base import Attribution, GradientAttribution, LayerAttribution, NeuronAttribution, PerturbationAttribution
from ._layer import *  # noqa: F401,F403
from ._layer import __all__ as _layer_all
from ._neuron import *  # noqa: F401,F403
from ._neuron import __all__ as _neuron_all
from ._primary import *  # noqa: F401,F403
from ._primary import __all__ as _primary_all

__all__ = [
    *_primary_all,
    *_layer_all,
    *_neuron_all,
    "Attribution",
    "GradientAttribution",
    "PerturbationAttribution",
    "LayerAttribution",
    "NeuronAttribution",
    "visualization",
]
