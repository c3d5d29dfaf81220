"""funcattr: model attribution as function transforms, vectorized over every step, sample,
window, feature and target of a call.

    import funcattr as fa
    f  = fa.target(model, 208)                       # x[B, ...] -> scores[B]
    ig = fa.integrated_gradients(f, steps=200)       # a pure attr_fn
    A  = ig(x)                                       # same shape as x
"""

from ._executor import options
from ._sites import input_of
from ._gradient import (
    blur_integrated_gradients,
    expected_gradients,
    gradient_shap,
    input_x_gradient,
    integrated_gradients,
    noise_tunnel,
    path_integral,
    saliency,
)
from ._scores import outputs, per_example, target
from . import metrics, viz
from ._layers import activation, cam, conductance, gradcam, neuron, upsample
from ._perturb import feature_ablation, feature_permutation, kernel_shap, lime, occlusion, shapley_sampling, shapley_values
from ._backward import deconvolution, guided_backprop, guided_gradcam
from ._deeplift import deeplift, deeplift_shap
# --- whole datasets (DESIGN §7): zarr is imported only when a store is used ---
from ._dataset import attribute_dataset
from ._store import open_store

__version__ = "0.1.0"

__all__ = [
    # what to explain
    "target",
    "outputs",
    "per_example",
    "input_of",
    # gradient family
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "path_integral",
    "noise_tunnel",
    "gradient_shap",
    "expected_gradients",
    "blur_integrated_gradients",
    # layers and neurons
    "gradcam",
    "upsample",
    "cam",
    "activation",
    "conductance",
    "neuron",
    # backward rules
    "guided_backprop",
    "deconvolution",
    "deeplift",
    "deeplift_shap",
    "guided_gradcam",
    # perturbation family
    "occlusion",
    "feature_ablation",
    "feature_permutation",
    "shapley_values",
    "shapley_sampling",
    "kernel_shap",
    "lime",
    # whole datasets
    "attribute_dataset",
    "open_store",
    # execution
    "options",
    "metrics",
    "viz",
]
