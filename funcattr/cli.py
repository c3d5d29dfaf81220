"""The ``funcattr`` command: ``funcattr demo``, ``funcattr explain IMAGE``, ``funcattr insights`` and
``funcattr attribute`` (a whole dataset; ``funcattr/_dataset_cli.py``).

User errors (missing or unreadable files, weights that do not fit the model, an output path
that cannot be written, unknown method, bad target, offline download) print one line and exit
with status 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from typing import Callable

import torch

METHODS = ("occlusion", "ig", "saliency", "smoothgrad", "gradcam", "guided-gradcam", "cam", "deeplift", "input-x-gradient", "guided-backprop")


class UserError(Exception):
    """A mistake in how the command was called: reported in one line."""


# --------------------------------------------------------------------------- methods


AT_CALL = object()  # make_method's target: given per call (attr_fn(x, target=t))


def make_method(name: str, model: torch.nn.Module, layer: torch.nn.Module, size: tuple[int, int], target=AT_CALL, *, progress=None, window: int, stride: int) -> Callable:
    """``name`` → ``attr_fn(x) -> [B, 1 or C, H, W]`` at the input's resolution (with
    ``target=AT_CALL``: ``attr_fn(x, target=t)``). One table for ``explain``, ``demo`` and
    ``attribute``."""
    import funcattr as fa

    f = fa.target(model) if target is AT_CALL else fa.target(model, target)

    def upsampled(inner):
        def attr_fn(x, *args, **kwargs):
            return fa.upsample(inner(x, *args, **kwargs), size, mode="bilinear")

        attr_fn.__name__ = attr_fn.__qualname__ = name
        return attr_fn

    if name == "occlusion":
        return fa.occlusion(f, window=(3, window, window), stride=(3, stride, stride), progress=progress)
    if name == "ig":
        return fa.integrated_gradients(f, steps=32, progress=progress)
    if name == "saliency":
        return fa.saliency(f)
    if name == "smoothgrad":
        return fa.noise_tunnel(fa.saliency(f), samples=10, stdev=0.15)
    if name == "input-x-gradient":
        return fa.input_x_gradient(f)
    if name == "guided-backprop":
        return fa.guided_backprop(f)
    if name == "deeplift":
        return fa.deeplift(f)
    if name == "gradcam":
        return upsampled(fa.gradcam(f, layer, relu=True))
    if name == "guided-gradcam":
        return fa.guided_gradcam(f, layer)
    if name == "cam":
        return upsampled(fa.cam(f, layer))
    raise UserError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")


# --------------------------------------------------------------------------- demo


def demo(out: str, device: str, n_eval: int, methods: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    import funcattr as fa
    from funcattr import zoo

    dev = _device(device)
    model = zoo.load(device=dev)
    layer = model.last_conv
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out: cannot create the folder {out} ({err.strerror or err})") from None
    imgs, labels, masks = zoo.make_shapes(n_eval, seed=zoo.TEST_SEED)
    imgs, labels, masks = imgs.to(dev), labels.to(dev), masks.to(dev)
    size = tuple(imgs.shape[-2:])
    with torch.no_grad():
        probs = model(imgs).softmax(1)
    acc = (probs.argmax(1) == labels).float().mean().item()
    print(f"funcattr demo: the embedded zoo:shapes model ({sum(p.numel() for p in model.parameters()):,} parameters) "
          f"on {n_eval} held-out images it never saw — accuracy {acc:.1%}, device {dev}")

    samples = list(range(4))
    print("\nTop-3 predictions for the sample images:")
    top = probs[samples].topk(3, dim=1)
    for i, (p, c) in enumerate(zip(top.values, top.indices)):
        guesses = ", ".join(f"{zoo.CLASSES[k]} {v:.1%}" for v, k in zip(p.tolist(), c.tolist()))
        print(f"  image {i}: true {zoo.CLASSES[labels[i]]:<9} → {guesses}")

    print(f"\nAttribution to the true class, localization against the ground-truth object masks ({n_eval} images):\n")
    print(f"| {'method':<15} | {'time':>8} | {'pointing game':>13} | {'mass inside':>11} |")
    print(f"|{'-' * 17}|{'-' * 10}|{'-' * 15}|{'-' * 13}|")
    maps = {}
    for name in methods:
        attr_fn = make_method(name, model, layer, size, labels, progress=True, window=12, stride=8)
        t0 = time.perf_counter()
        a = attr_fn(imgs)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        heat = a.sum(1) if a.dim() == 4 else a
        hit = fa.metrics.pointing_game(heat, masks).float().mean().item()
        inside = fa.metrics.mass_inside(heat, masks).mean().item()
        print(f"| {name:<15} | {dt:>6.2f} s | {hit:>12.1%} | {inside:>10.1%} |")
        maps[name] = a[samples].detach()
    share = masks.float().mean().item()
    print(f"\n(a random map hits the object {share:.1%} of the time and puts {share:.1%} of its mass inside)")

    for i in samples:
        cols = 1 + len(maps)
        fig = Figure(figsize=(2.2 * cols, 2.6))
        axes = fig.subplots(1, cols)
        fa.viz.image(imgs[i], imgs[i], method="original_image", ax=axes[0], title=f"{zoo.CLASSES[labels[i]]}")
        for ax, (name, a) in zip(axes[1:], maps.items()):
            fa.viz.image(a[i], imgs[i], method="blended_heat_map", sign="absolute_value", ax=ax, title=name)
        fig.tight_layout()
        path = os.path.join(out, f"demo-{i}.png")
        fig.savefig(path, dpi=90)
    print(f"\nFigures (original + one heat map per method): {os.path.join(out, 'demo-*.png')}")


# --------------------------------------------------------------------------- explain

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _load_model(spec: str, weights: str | None, dev: torch.device):
    """→ (model, size, mean, std, class names, layer for CAM-style methods)."""
    if spec == "zoo:shapes":
        from funcattr import zoo

        model = zoo.load(device=dev)
        if weights not in (None, "DEFAULT"):
            _apply_weights(model, weights)
        return model, (64, 64), None, None, list(zoo.CLASSES), model.last_conv
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise UserError(f"unknown torchvision model {name!r} (see torchvision.models.list_models())")
        if weights == "DEFAULT":
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # torch.hub's "Downloading: ..." line
                    model = torchvision.models.get_model(name, weights="DEFAULT")
            except Exception as err:  # offline: URLError / OSError / HTTP errors
                raise UserError(
                    f"could not download torchvision's DEFAULT weights for {name} ({type(err).__name__}); "
                    "are you offline? pass --weights PATH to a saved state_dict"
                ) from None
            classes = torchvision.models.get_model_weights(name).DEFAULT.meta.get("categories")
        else:
            model = torchvision.models.get_model(name, weights=None)
            if weights is None:
                print("funcattr: warning: no --weights given; explaining a randomly initialized model", file=sys.stderr)
            else:
                _apply_weights(model, weights)
            classes = None
        model = model.eval().to(dev)
        return model, (224, 224), IMAGENET_MEAN, IMAGENET_STD, classes, _last_conv(model)
    raise UserError(f"unknown model {spec!r}; use zoo:shapes or torchvision:NAME")


def _read_weights(path: str):
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt file, or a pickle that is not plain tensors
        if "Unsupported global" in str(err):
            raise UserError(
                f"could not read weights from {path}: it holds Python objects besides tensors, which are not loaded "
                "for safety; save model.state_dict() instead"
            ) from None
        raise UserError(f"could not read weights from {path}: not a file saved by torch.save (corrupt or another format)") from None


def _apply_weights(model: torch.nn.Module, path: str) -> None:
    """Load a state_dict file into ``model``; a file that does not fit says how, in one line."""
    sd = _read_weights(path)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):  # a training checkpoint
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UserError(
            f"{path} holds a {type(sd).__name__}, not a state_dict "
            "(a dict of tensors saved by torch.save(model.state_dict(), PATH))"
        )
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and (not isinstance(sd[k], torch.Tensor) or sd[k].shape != own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {what} (e.g. {keys[0]!r})")
        raise UserError(f"the weights in {path} do not fit {type(model).__name__}: keys " + ", ".join(parts))
    model.load_state_dict(sd)


def _last_conv(model: torch.nn.Module) -> torch.nn.Module:
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise UserError("the model has no Conv2d layer for gradcam/cam")
    return convs[-1]


def _load_image(path: str, size, mean, std, dev) -> tuple[torch.Tensor, torch.Tensor]:
    if not os.path.isfile(path):
        raise UserError(f"image file not found: {path}")
    import warnings

    import numpy as np
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import normalize, resize

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UserError(f"{path} is too large to decode safely: {str(err).split(',')[0]}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UserError(f"not an image file: {path}") from None
    x = _to_tensor(img, np)
    x = resize(x, list(size), antialias=True)
    shown = x.clone()
    if mean is not None:
        x = normalize(x, mean, std)
    return x.unsqueeze(0).to(dev), shown


def _to_tensor(img, np) -> torch.Tensor:
    """A PIL image as float RGB ``[3, H, W]`` in ``[0, 1]``: 16- and 32-bit grey images are
    scaled by their range (PIL's ``convert("RGB")`` would clip them to white), alpha is
    dropped, palette and grey images become RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        if img.mode in ("I", "F") and a.max() <= 1.0 and a.min() >= 0.0:
            top = 1.0
        g = torch.from_numpy(np.clip(a / top, 0.0, 1.0)).float()
        return g.unsqueeze(0).expand(3, *g.shape).clone()
    a = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0


_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".eps", ".ps")


def _check_out(out: str) -> str:
    """The figure path to write: ``.png`` added when it has no extension; the format must be
    one matplotlib writes and the folder must exist and be writable."""
    root, ext = os.path.splitext(out)
    if not ext:
        out, ext = out + ".png", ".png"
    if ext.lower() not in _FORMATS:
        raise UserError(f"--out {out}: unknown image format {ext!r}; use one of {', '.join(_FORMATS)}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise UserError(f"--out {out}: the folder {folder} {what}")
    if not os.access(folder, os.W_OK):
        raise UserError(f"--out {out}: the folder {folder} is not writable")
    return out


def explain(image: str, model_spec: str, weights: str | None, method: str, target: str, out: str | None, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    import funcattr as fa

    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    dev = _device(device)
    out = _check_out(out or f"{os.path.splitext(os.path.basename(image))[0]}-{method}.png")
    if os.path.exists(out) and os.path.samefile(out, image):
        raise UserError(f"--out {out} is the input image; choose another file name")
    model, size, mean, std, classes, layer = _load_model(model_spec, weights, dev)
    x, shown = _load_image(image, size, mean, std, dev)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    if target == "top":
        t = int(probs.argmax())
    else:
        try:
            t = int(target)
        except ValueError:
            raise UserError(f"--target must be a class index or 'top', got {target!r}") from None
        if not 0 <= t < probs.shape[0]:
            raise UserError(f"--target {t} is out of range: the model has {probs.shape[0]} classes")
    name = lambda k: classes[k] if classes else f"class {k}"  # noqa: E731
    top = probs.topk(min(3, probs.shape[0]))
    print("top predictions: " + ", ".join(f"{name(k)} {v:.1%}" for v, k in zip(top.values.tolist(), top.indices.tolist())))
    attr_fn = make_method(method, model, layer, size, t, progress=True, window=max(3, size[0] // 5), stride=max(1, size[0] // 25))
    t0 = time.perf_counter()
    a = attr_fn(x)
    print(f"{method} for {name(t)}: {time.perf_counter() - t0:.2f} s")
    fig = Figure(figsize=(8, 4))
    ax1, ax2 = fig.subplots(1, 2)
    fa.viz.image(shown, shown, method="original_image", ax=ax1, title="input")
    fa.viz.image(a[0], shown, method="blended_heat_map", sign="absolute_value", ax=ax2, title=f"{method}: {name(t)}")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as err:
        raise UserError(f"--out {out}: could not write it ({err.strerror or err})") from None
    print(f"wrote {out}")


# --------------------------------------------------------------------------- entry point


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return torch.device(name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="funcattr", description="Functional, vectorized attribution for PyTorch models.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="explain the embedded model's predictions with every method; write figures")
    d.add_argument("--out", default="funcattr-demo", help="folder for the PNG figures (default: ./funcattr-demo)")
    d.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    d.add_argument("--images", type=int, default=200, help="held-out images for the localization table")
    d.add_argument("--methods", nargs="*", default=["occlusion", "ig", "saliency", "smoothgrad", "gradcam", "guided-gradcam", "cam", "deeplift"])
    e = sub.add_parser("explain", help="explain one image file")
    e.add_argument("image")
    e.add_argument("--model", default="zoo:shapes", help="zoo:shapes (default) or torchvision:NAME")
    e.add_argument("--weights", default=None, help="PATH to a state_dict, or DEFAULT (torchvision's download)")
    e.add_argument("--method", default="ig", help=f"one of: {', '.join(METHODS)}")
    e.add_argument("--target", default="top", help="class index, or 'top' for the predicted class")
    e.add_argument("--out", default=None, help="output PNG (default: IMAGE-METHOD.png)")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    # --- funcattr attribute: a whole dataset into a store (funcattr/_dataset_cli.py) ---
    from . import _dataset_cli

    _dataset_cli.add_parser(sub)
    # --- end funcattr attribute ---
    # --- insights (begin): the explorer's subcommand; its logic is in funcattr/insights/_cli.py ---
    from .insights import _cli as insights_cli

    insights_cli.add_parser(sub)
    a = p.parse_args(argv)
    if a.command == "attribute":  # funcattr attribute reports its own errors
        return _dataset_cli.main(a)
    if a.command == "insights":
        return insights_cli.run(a)
    # --- insights (end) ---
    try:
        if a.command == "demo":
            for m in a.methods:
                if m not in METHODS:
                    raise UserError(f"unknown method {m!r}; choose from: {', '.join(METHODS)}")
            if a.images < 4:
                raise UserError("--images must be at least 4")
            demo(a.out, a.device, a.images, a.methods)
        else:
            explain(a.image, a.model, a.weights, a.method, a.target, a.out, a.device)
    except UserError as err:
        print(f"funcattr: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
