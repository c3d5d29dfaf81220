"""``funcattr insights``: serve the explorer on the embedded zoo model and its held-out shapes (with
their labels and object masks), on a torchvision model, or on a folder of images; offline."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import webbrowser

import torch

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ZOO_IMAGES = 240  # held-out shapes served by default


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("insights", help="serve the interactive attribution explorer in a browser (Captum Insights' successor)",
                       description="Serve the interactive attribution explorer. Offline: nothing is downloaded.")
    p.add_argument("--model", default="zoo:shapes", help="zoo:shapes (default) or torchvision:NAME")
    p.add_argument("--weights", default=None, help="PATH to a state_dict for the model (torchvision models start untrained)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="a folder of images; in ImageFolder layout (one subfolder per class) the folder names give the labels")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return p


def _image_files(root: str):
    """→ [(path, folder name or None)], sorted; ImageFolder layout when there are subfolders."""
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    out = []
    if subdirs:
        for d in subdirs:
            for dirpath, _, files in sorted(os.walk(os.path.join(root, d))):
                out += [(os.path.join(dirpath, f), d) for f in sorted(files) if f.lower().endswith(IMAGE_EXTS)]
    out += [(os.path.join(root, f), None) for f in sorted(os.listdir(root))
            if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(root, f))]
    return out


def _folder_data(root: str, size, classes, limit: int, UserError):
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    if not os.path.isdir(root):
        raise UserError(f"image folder not found: {root}")
    files = _image_files(root)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTS)}) in {root}")
    lookup = {c.lower(): i for i, c in enumerate(classes or ())}
    unknown = set()
    xs, ys = [], []
    for path, folder in files[:limit]:
        try:
            img = Image.open(path).convert("RGB")
        except (UnidentifiedImageError, OSError):
            print(f"funcattr insights: skipping {path}: not an image", file=sys.stderr)
            continue
        t = pil_to_tensor(img)
        t = center_crop(resize(t, min(size), antialias=True), list(size))
        xs.append(t.float() / 255.0)
        label = None
        if folder is not None:
            if folder.lower() in lookup:
                label = lookup[folder.lower()]
            elif folder.isdigit() and (classes is None or int(folder) < len(classes)):
                label = int(folder)
            else:
                unknown.add(folder)
        ys.append(label)
    if not xs:
        raise UserError(f"no readable images in {root}")
    for folder in sorted(unknown):
        print(f"funcattr insights: folder {folder!r} is not one of the model's classes; its images have no label", file=sys.stderr)
    if len(files) > limit:
        print(f"funcattr insights: serving the first {limit} of {len(files)} images", file=sys.stderr)
    return [(torch.stack(xs), ys)]


def build(a):
    """The explorer for the parsed arguments, and a one-line description of it."""
    from funcattr.cli import UserError, _device, _load_model

    from . import Explorer, image

    dev = _device(a.device)
    if a.images is None and a.model.startswith("torchvision:"):
        import torchvision

        if a.model.split(":", 1)[1] in torchvision.models.list_models(module=torchvision.models):
            raise UserError(f"--images DIR is needed with {a.model} (the embedded images are for zoo:shapes)")
    model, size, mean, std, classes, layer = _load_model(a.model, a.weights, dev)
    if a.model.startswith("torchvision:") and classes is None:
        import torchvision

        meta = torchvision.models.get_model_weights(a.model.split(":", 1)[1]).DEFAULT.meta.get("categories")
        with torch.no_grad():
            n_out = model(torch.zeros(1, 3, *size, device=dev)).shape[1]
        classes = meta if meta and len(meta) == n_out else None
    if a.model == "zoo:shapes":
        layer = model.last_conv
    if a.images is not None:
        data, what = _folder_data(a.images, size, classes, 500, UserError), f"the images in {a.images}"
    elif a.model == "zoo:shapes":
        from funcattr import zoo

        x, y, masks = zoo.make_shapes(ZOO_IMAGES, seed=zoo.TEST_SEED)
        data, what = [(x, y, masks)], f"{ZOO_IMAGES} held-out shapes images (labels and object masks)"
    else:
        raise UserError(f"--images DIR is needed with {a.model} (the embedded images are for zoo:shapes)")
    if mean is not None:
        m = torch.tensor(mean, device=dev).view(1, -1, 1, 1)
        s = torch.tensor(std, device=dev).view(1, -1, 1, 1)
        feature = image("Image", transform=lambda x: (x.to(dev) - m) / s)  # raw [0, 1] pixels shown as is
    else:
        feature = image("Image")
    ex = Explorer(model, classes=classes, data=data, features=[feature], layers=layer, names=[a.model],
                  title=f"funcattr insights — {a.model}")
    return ex, f"{a.model} on {what}"


def run(a) -> int:
    from funcattr.cli import UserError

    try:
        ex, what = build(a)
        try:
            url = ex.serve(host=a.host, port=a.port)
        except OSError as err:
            raise UserError(str(err)) from None
    except UserError as err:
        print(f"funcattr: error: {err}", file=sys.stderr)
        return 2
    print(f"funcattr insights: {what}; a request may take up to about {ex.max_seconds:g} s", flush=True)
    print(f"serving at {url}  (Ctrl+C stops)", flush=True)
    if not a.no_browser:
        webbrowser.open(url)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ex._lock.locked():
            print("funcattr insights: letting the running attribution finish…", flush=True)
        ex.stop()
    print("funcattr insights: stopped", flush=True)
    return 0
