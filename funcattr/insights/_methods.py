"""The attribution methods the explorer offers: their arguments, bounds, cost and construction.

Every method is a funcattr transform applied to one score function that covers a whole page
(examples × models × classes, see ``_engine``). Arguments are validated here and bounded so
that a request cannot pin the machine: each argument has a range, and the whole request has a
budget of model evaluations (rows through a model) checked before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

import funcattr as fa

__all__ = ["Arg", "Method", "BadRequest", "catalog", "validate"]


class BadRequest(ValueError):
    """A request the explorer refuses (HTTP 400); the message is shown in the page."""


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str  # "int" | "float" | "bool" | "choice"
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()
    help: str = ""

    def describe(self) -> dict:
        d = {"name": self.name, "kind": self.kind, "default": self.default, "help": self.help}
        if self.lo is not None:
            d["min"] = self.lo
        if self.hi is not None:
            d["max"] = self.hi
        if self.choices:
            d["choices"] = list(self.choices)
        return d

    def check(self, value: Any, method: str) -> Any:
        where = f"{method}: argument '{self.name}'"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise BadRequest(f"{where} must be true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise BadRequest(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise BadRequest(f"{where} must be a finite number, got {value!r}")
        if self.kind == "int":
            if float(value) != int(value):
                raise BadRequest(f"{where} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise BadRequest(f"{where} must be between {self.lo:g} and {self.hi:g}, got {value:g}")
        return value


@dataclass(frozen=True)
class Method:
    id: str
    label: str
    group: str
    args: tuple[Arg, ...]
    build: Callable  # (f, ctx, args) -> attr_fn
    cost: Callable  # (ctx, args) -> model rows per job
    layer: bool = False  # needs a layer of each model: evaluated one model at a time
    captum: str | None = None

    def describe(self) -> dict:
        return {"id": self.id, "label": self.label, "group": self.group, "captum": self.captum,
                "layer": self.layer, "args": [a.describe() for a in self.args]}


@dataclass
class Ctx:
    """What a method needs besides the score function, for the jobs of one call."""

    kinds: tuple[str, ...]  # feature kinds
    shapes: tuple[tuple[int, ...], ...]  # one example's model-input shape per feature
    baselines: tuple[torch.Tensor, ...] = ()  # [J, ...] per feature
    background: Callable[[int], tuple[torch.Tensor, ...]] | None = None
    layer: Any = None
    extra: dict = field(default_factory=dict)

    def baseline(self):
        return self.baselines[0] if len(self.baselines) == 1 else self.baselines


# ----------------------------------------------------------------------------- segments


def _image_cells(shape: tuple[int, ...], cell: int) -> tuple[torch.Tensor, int]:
    H, W = shape[-2:]
    if cell > max(H, W):
        raise BadRequest(f"cell {cell} is larger than the image ({H}×{W})")
    rows = torch.arange(H) // cell
    cols = torch.arange(W) // cell
    ncols = math.ceil(W / cell)
    ids = rows.view(H, 1) * ncols + cols.view(1, W)
    return ids.view(*([1] * (len(shape) - 2)), H, W), math.ceil(H / cell) * ncols


def segments(ctx: Ctx, cell: int) -> tuple[tuple[torch.Tensor, ...], int]:
    """Feature ids per input, ``[1, ...]`` broadcastable to it, distinct across inputs: image
    features in ``cell``×``cell`` squares (all channels together), a token or a column each."""
    masks, total = [], 0
    for kind, shape in zip(ctx.kinds, ctx.shapes):
        if kind == "image":
            ids, n = _image_cells(shape, cell)
        else:
            n = shape[0] if shape else 1
            ids = torch.arange(n).view(n, *([1] * (len(shape) - 1))) if shape else torch.zeros((), dtype=torch.long)
        masks.append((ids + total).unsqueeze(0))
        total += n
    return tuple(masks), total


def pixel_segments(ctx: Ctx) -> tuple[torch.Tensor, ...]:
    """One id per pixel (channels together) / token / column: the features of the
    deletion and insertion curves."""
    return segments(ctx, 1)[0]


def _windows(ctx: Ctx, window: int, stride: int) -> tuple[tuple, tuple, int]:
    ws, ss, n = [], [], 0
    for kind, shape in zip(ctx.kinds, ctx.shapes):
        if kind == "image":
            H, W = shape[-2:]
            if window > min(H, W):
                raise BadRequest(f"occlusion: window {window} is larger than the image ({H}×{W})")
            lead = tuple(shape[:-2])
            ws.append(lead + (window, window))
            ss.append(lead + (stride, stride))
            n += (math.ceil((H - window) / stride) + 1) * (math.ceil((W - window) / stride) + 1)
        else:
            ws.append((1,) + tuple(shape[1:]))
            ss.append((1,) + tuple(shape[1:]))
            n += shape[0] if shape else 1
    one = len(ws) == 1
    return (ws[0] if one else tuple(ws)), (ss[0] if one else tuple(ss)), n


def _n_segments(ctx: Ctx, cell: int, limit: int, method: str) -> int:
    n = segments(ctx, cell)[1]
    if n > limit:
        raise BadRequest(f"{method}: cell {cell} gives {n} features; at most {limit} (use a larger cell)")
    return n


# ----------------------------------------------------------------------------- the catalog


def _layered(fn):
    """A layer map ``[J, 1, h, w]`` resized to the image: bilinear, as the CLI draws it."""

    def attr_fn(x, *args):
        return fa.upsample(fn(x, *args), _size_of(x), mode="bilinear")

    return attr_fn


def _size_of(x):
    t = x[0] if isinstance(x, tuple) else x
    return tuple(t.shape[-2:])


STEPS = Arg("steps", "int", 50, 1, 500, help="integration steps (Captum: n_steps)")
QUAD = Arg("method", "choice", "gausslegendre",
           choices=("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"),
           help="quadrature rule")
BACKGROUND = Arg("background", "int", 8, 1, 64, help="baseline distribution: the first N examples of the data")
SAMPLES = Arg("samples", "int", 20, 1, 200, help="random samples per example")
NT_OF = ("saliency", "input_x_gradient", "integrated_gradients", "guided_backprop", "deconvolution", "deeplift")


def _cell_arg(default: int, hi: int) -> Arg:
    return Arg("cell", "int", default, 1, hi, help="image features: side in pixels of a square feature (tokens and columns are one feature each)")


def _noisy(ctx: Ctx, name: str, f, a: dict):
    """The method inside the noise tunnel. The tunnel hands it ``m·J`` rows (``m`` noisy copies
    of the ``J`` jobs, sample-major), so per-job baselines are tiled ``m`` times per call."""
    if name not in ("integrated_gradients", "deeplift") or all(b.shape[0] == 1 for b in ctx.baselines):
        return _gradient_method(ctx, name, f, a)
    J = max(b.shape[0] for b in ctx.baselines)

    def attr_fn(x, *args):
        m = (x[0] if isinstance(x, tuple) else x).shape[0] // J
        tiled = Ctx(ctx.kinds, ctx.shapes, tuple(b if b.shape[0] == 1 else b.repeat(m, *[1] * (b.dim() - 1)) for b in ctx.baselines))
        return _gradient_method(tiled, name, f, a)(x, *args)

    return attr_fn


def _gradient_method(ctx: Ctx, name: str, f, a: dict):
    """The plain (non-layer) gradient methods, shared by their own entries and the noise tunnel."""
    if name == "saliency":
        return fa.saliency(f, abs=a.get("abs", True))
    if name == "input_x_gradient":
        return fa.input_x_gradient(f)
    if name == "integrated_gradients":
        return fa.integrated_gradients(f, baseline=ctx.baseline(), steps=a["steps"], method=a.get("method", "gausslegendre"))
    if name == "guided_backprop":
        return fa.guided_backprop(f)
    if name == "deconvolution":
        return fa.deconvolution(f)
    if name == "deeplift":
        return fa.deeplift(f, baseline=ctx.baseline())
    raise BadRequest(f"unknown method {name!r}")


def _cost_of(name: str, a: dict) -> int:
    return {"integrated_gradients": a.get("steps", 50), "deeplift": 2}.get(name, 1)


def catalog(kinds: tuple[str, ...], shapes: tuple[tuple[int, ...], ...], has_layer: bool) -> dict[str, Method]:
    """The methods for these features (defaults sized to the first image), by id, in page order."""
    ctx = Ctx(kinds, shapes)
    images = [s for k, s in zip(kinds, shapes) if k == "image"]
    one_image = len(images) == 1 and len(kinds) == 1
    side = min(images[0][-2:]) if images else 1
    big = max(max(s[-2:]) for s in images) if images else 1
    window = max(2, side // 8)
    M: list[Method] = [
        Method("saliency", "Saliency", "gradient", (Arg("abs", "bool", True, help="absolute value of the gradient"),),
               lambda f, c, a: fa.saliency(f, abs=a["abs"]), lambda c, a: 1, captum="Saliency"),
        Method("input_x_gradient", "Input × Gradient", "gradient", (),
               lambda f, c, a: fa.input_x_gradient(f), lambda c, a: 1, captum="InputXGradient"),
        Method("integrated_gradients", "Integrated Gradients", "path", (STEPS, QUAD),
               lambda f, c, a: _gradient_method(c, "integrated_gradients", f, a), lambda c, a: a["steps"],
               captum="IntegratedGradients"),
        Method("gradient_shap", "Gradient SHAP", "path",
               (SAMPLES, Arg("stdev", "float", 0.0, 0.0, 10.0, help="input noise (absolute)"), BACKGROUND),
               lambda f, c, a: fa.gradient_shap(f, baselines=c.background(a["background"]), samples=a["samples"], stdev=a["stdev"]),
               lambda c, a: a["samples"], captum="GradientShap"),
        Method("expected_gradients", "Expected Gradients", "path", (SAMPLES, BACKGROUND),
               lambda f, c, a: fa.expected_gradients(f, baselines=c.background(a["background"]), samples=a["samples"]),
               lambda c, a: a["samples"]),
        Method("deeplift", "DeepLift", "backward rules", (),
               lambda f, c, a: fa.deeplift(f, baseline=c.baseline()), lambda c, a: 2, captum="DeepLift"),
        Method("deeplift_shap", "DeepLift SHAP", "backward rules", (Arg("background", "int", 8, 1, 32, help=BACKGROUND.help),),
               lambda f, c, a: fa.deeplift_shap(f, baselines=c.background(a["background"])),
               lambda c, a: 2 * a["background"], captum="DeepLiftShap"),
        Method("guided_backprop", "Guided Backprop", "backward rules", (),
               lambda f, c, a: fa.guided_backprop(f), lambda c, a: 1, captum="GuidedBackprop"),
        Method("deconvolution", "Deconvolution", "backward rules", (),
               lambda f, c, a: fa.deconvolution(f), lambda c, a: 1, captum="Deconvolution"),
    ]
    if images:
        M.insert(3, Method("blur_integrated_gradients", "Blur Integrated Gradients", "path",
                           (Arg("sigma", "float", float(max(1, side // 32)), 0.1, float(max(1, side // 4)),
                                help="blur of the path's start (pixels)"),
                            Arg("steps", "int", 20, 1, 500, help="integration steps")),
                           lambda f, c, a: fa.blur_integrated_gradients(f, sigma=a["sigma"], steps=a["steps"]),
                           lambda c, a: a["steps"]))
    if one_image and has_layer:
        M += [
            Method("gradcam", "GradCAM", "layer", (Arg("relu", "bool", True, help="keep the positive part"),),
                   lambda f, c, a: _layered(fa.gradcam(f, c.layer, relu=a["relu"])), lambda c, a: 1, layer=True,
                   captum="LayerGradCam"),
            Method("guided_gradcam", "Guided GradCAM", "layer", (),
                   lambda f, c, a: fa.guided_gradcam(f, c.layer), lambda c, a: 2, layer=True, captum="GuidedGradCam"),
            Method("cam", "CAM", "layer", (),
                   lambda f, c, a: _layered(fa.cam(f, c.layer)), lambda c, a: 2, layer=True),
        ]
    M += [
        Method("occlusion", "Occlusion", "perturbation",
               (Arg("window", "int", window, 1, big, help="side of the square window (pixels)"),
                Arg("stride", "int", max(1, window // 2), 1, big, help="step between windows (pixels)")),
               lambda f, c, a: fa.occlusion(f, *(_windows(c, a["window"], a["stride"])[:2]), baseline=c.baseline()),
               lambda c, a: _windows(c, a["window"], a["stride"])[2] + 1, captum="Occlusion"),
        Method("feature_ablation", "Feature Ablation", "perturbation", (_cell_arg(window, big),),
               lambda f, c, a: fa.feature_ablation(f, mask=_mask(c, a["cell"]), baseline=c.baseline()),
               lambda c, a: _n_segments(c, a["cell"], 4096, "feature_ablation") + 1, captum="FeatureAblation"),
        Method("shapley_sampling", "Shapley Value Sampling", "perturbation",
               (_cell_arg(max(2, side // 4), big), Arg("samples", "int", 10, 1, 200, help="random feature orderings")),
               lambda f, c, a: fa.shapley_sampling(f, mask=_mask(c, a["cell"]), baseline=c.baseline(), samples=a["samples"]),
               lambda c, a: a["samples"] * _n_segments(c, a["cell"], 4096, "shapley_sampling") + 2,
               captum="ShapleyValueSampling"),
        Method("shapley_values", "Shapley Values (exact)", "perturbation", (_cell_arg(max(2, math.ceil(side / 3)), big),),
               lambda f, c, a: fa.shapley_values(f, mask=_mask(c, a["cell"]), baseline=c.baseline()),
               lambda c, a: 2 ** _n_segments(c, a["cell"], 12, "shapley_values"), captum="ShapleyValues"),
        Method("kernel_shap", "KernelSHAP", "perturbation",
               (_cell_arg(max(2, side // 8), big), Arg("samples", "int", 200, 2, 2000, help="coalitions")),
               lambda f, c, a: fa.kernel_shap(f, mask=_mask(c, a["cell"]), baseline=c.baseline(), samples=a["samples"]),
               _coalitions("kernel_shap"), captum="KernelShap"),
        Method("lime", "LIME", "perturbation",
               (_cell_arg(max(2, side // 8), big), Arg("samples", "int", 200, 1, 2000, help="coalitions")),
               lambda f, c, a: fa.lime(f, mask=_mask(c, a["cell"]), baseline=c.baseline(), samples=a["samples"]),
               _coalitions("lime"), captum="Lime"),
        Method("noise_tunnel", "Noise Tunnel (SmoothGrad)", "noise tunnel",
               (Arg("of", "choice", "saliency", choices=NT_OF, help="the method averaged over noisy inputs"),
                Arg("samples", "int", 10, 1, 100, help="noisy copies per example"),
                Arg("stdev", "float", 0.15, 0.0, 10.0, help="noise (absolute, in input units)"),
                Arg("kind", "choice", "smoothgrad", choices=("smoothgrad", "smoothgrad_sq", "vargrad")),
                Arg("steps", "int", 20, 1, 500, help="integration steps when 'of' is integrated_gradients")),
               lambda f, c, a: fa.noise_tunnel(_noisy(c, a["of"], f, a), samples=a["samples"], stdev=a["stdev"], kind=a["kind"]),
               lambda c, a: a["samples"] * _cost_of(a["of"], a), captum="NoiseTunnel"),
    ]
    return {m.id: m for m in M}


def _coalitions(name: str):
    def cost(ctx: Ctx, a: dict) -> int:
        _n_segments(ctx, a["cell"], 4096, name)  # refuses too many features
        return a["samples"]

    return cost


def _mask(ctx: Ctx, cell: int):
    masks, _ = segments(ctx, cell)
    return masks[0] if len(masks) == 1 else masks


def validate(methods: dict[str, Method], method: Any, args: Any) -> tuple[Method, dict]:
    """The method and its complete, checked arguments (defaults filled in), or BadRequest."""
    if not isinstance(method, str) or method not in methods:
        raise BadRequest(f"unknown method {method!r}; choose one of: {', '.join(methods)}")
    m = methods[method]
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadRequest(f"{method}: 'args' must be an object of argument values, got {type(args).__name__}")
    known = {a.name: a for a in m.args}
    for k in args:
        if k not in known:
            expected = ", ".join(known) or "none"
            raise BadRequest(f"{method}: unknown argument {k!r} (arguments: {expected})")
    out = {a.name: a.check(args[a.name], method) if a.name in args else a.default for a in m.args}
    if m.id == "integrated_gradients" and out["method"] != "gausslegendre" and out["steps"] < 2:
        raise BadRequest(f"{method}: argument 'steps' must be at least 2 for method {out['method']!r}")
    return m, out
