"""Metrics: is an attribution faithful, robust and right?

Every metric evaluates all of its perturbations / steps / samples of a call as one folded
batch (work-major, row ``r`` belongs to example ``r mod B``) through the executor, like the
methods do::

    f = fa.target(model, labels)
    A = fa.integrated_gradients(f)(x)
    fa.metrics.infidelity(f, perturb, x, A)            # [B]   (Captum's numbers)
    fa.metrics.sensitivity_max(fa.saliency(f), x)      # [B]
    fa.metrics.deletion(f, x, A, steps=20)             # [B]   area under the deletion curve
    fa.metrics.insertion(f, x, A, steps=20)            # [B]
    fa.metrics.pointing_game(A, masks)                 # bool [B]
    fa.metrics.mass_inside(A, masks)                   # [B]
    fa.metrics.randomization_check(lambda m: fa.saliency(fa.target(m, 3)), model, x)

One idea per module: ``_robustness`` (infidelity, max-sensitivity), ``_curves`` (deletion,
insertion), ``_localization`` (pointing game, mass inside), ``_randomization``.
"""

from ._curves import deletion, insertion
from ._localization import mass_inside, pointing_game
from ._randomization import randomization_check
from ._robustness import infidelity, sensitivity_max, with_perturbations

__all__ = [
    "infidelity",
    "with_perturbations",
    "sensitivity_max",
    "deletion",
    "insertion",
    "pointing_game",
    "mass_inside",
    "randomization_check",
]
