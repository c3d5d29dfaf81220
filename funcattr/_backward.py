"""Methods that change how gradients flow through ReLUs: guided backprop, deconvolution and
guided GradCAM (DeepLift, which needs a reference run, lives in ``_deeplift``).

Each is an ordinary gradient of ``f`` taken while ``_intercept.guided`` swaps
``_rules.GuidedReLU`` in for the ReLUs ``f`` calls (DESIGN §4): no module hooks, nothing left
behind, and functional ReLUs (``F.relu``, ``torch.relu``, ``Tensor.relu_``, reused modules)
get the rule exactly like ``nn.ReLU`` modules.
"""

from __future__ import annotations

from typing import Any, Callable

from . import _executor, _intercept
from ._call import begin, check_fn, mark
from ._inputs import as_tuple, restore

__all__ = ["guided_backprop", "deconvolution", "guided_gradcam"]


# --------------------------------------------------------------------------- modified ReLU gradients


def _modified_relu(f: Callable, kind: str, name: str, wrt, batch_size, precision, progress):
    check_fn(f)
    opts = _executor.resolve(batch_size, precision, progress)

    rules = _intercept.guided(kind)

    def attr_fn(x, *args, **kwargs):
        with begin(f, x, args, kwargs, opts, grad=True, wrt=wrt, rules=rules, rules_key=kind) as c:
            gs = c.run(lambda lo, hi: tuple(g[0] for g in c.grads(c.xs, 1)), 1, "grad", desc=name.replace("_", " "))
            return c.finish(gs)

    return mark(attr_fn, name)


def guided_backprop(f: Callable, *, wrt=None, batch_size=None, precision=None, progress=None):
    """Guided backpropagation (Springenberg et al. 2015), Captum's ``GuidedBackprop``: the
    gradient with every ReLU's backward replaced by ``relu(grad_out) · [x > 0]``::

        fa.guided_backprop(fa.target(model, 3))(x)     # [B, 3, H, W] -> [B, 3, H, W]

    Every ReLU that runs inside ``f`` gets the rule — ``nn.ReLU`` modules, ``F.relu``,
    ``torch.relu``, ``Tensor.relu``, in-place and reused ones (Captum's hooks see only
    ``nn.ReLU`` modules). Other nonlinearities keep their plain gradients, as in Captum.
    """
    return _modified_relu(f, "guided", "guided_backprop", wrt, batch_size, precision, progress)


def deconvolution(f: Callable, *, wrt=None, batch_size=None, precision=None, progress=None):
    """Deconvolution (Zeiler & Fergus 2014), Captum's ``Deconvolution``: the gradient with
    every ReLU's backward replaced by ``relu(grad_out)`` (the forward mask is ignored)::

        fa.deconvolution(fa.target(model, 3))(x)       # [B, 3, H, W] -> [B, 3, H, W]
    """
    return _modified_relu(f, "deconv", "deconvolution", wrt, batch_size, precision, progress)


# --------------------------------------------------------------------------- guided GradCAM


def guided_gradcam(
    f: Callable, layer: Any, mode: str = "nearest", *, batch_size=None, precision=None, progress=None
):
    """Guided GradCAM (Selvaraju et al. 2017), Captum's ``GuidedGradCam``: guided backprop
    times ``relu(GradCAM)`` of ``layer`` upsampled to the input's spatial size (``mode`` as in
    ``fa.upsample``)::

        fa.guided_gradcam(fa.target(model, 3), model.layer4)(x)   # [B, 3, H, W] -> [B, 3, H, W]

    ``layer`` is a module (its output) or ``fa.input_of(module)`` (Captum's
    ``attribute_to_layer_input``).
    """
    from ._layers import gradcam, upsample

    check_fn(f)
    cam_fn = gradcam(f, layer, relu=True, batch_size=batch_size, precision=precision, progress=progress)
    gbp_fn = guided_backprop(f, batch_size=batch_size, precision=precision, progress=progress)

    def attr_fn(x, *args, **kwargs):
        cam = cam_fn(x, *args, **kwargs)  # [B, 1, *s] or [B, K, 1, *s]
        gbp, _ = as_tuple(gbp_fn(x, *args, **kwargs), "attributions")
        xs, is_tuple = as_tuple(x)
        out = []
        for i, (g, xi) in enumerate(zip(gbp, xs)):
            size = tuple(xi.shape[2:])
            k_form = g.dim() == xi.dim() + 1
            if len(size) != cam.dim() - (3 if k_form else 2):
                where = f"x[{i}]" if is_tuple else "x"
                raise ValueError(
                    f"guided_gradcam: {where} of shape {tuple(xi.shape)} has {len(size)} spatial dims but the "
                    f"GradCAM map of the layer has shape {tuple(cam.shape)}; the layer must keep the input's spatial layout"
                )
            out.append(g * upsample(cam, size, mode).to(g.dtype))
        return restore(tuple(out), is_tuple)

    return mark(attr_fn, "guided_gradcam")
