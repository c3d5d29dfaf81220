"""``funcattr attribute``: a whole dataset into a store, on one machine or under ``torchrun``.

    funcattr attribute --model zoo:shapes --data zoo:shapes:1000 --method ig --out ig.zarr \\
                       --metrics deletion,insertion,pointing
    torchrun --nproc-per-node 8 -m funcattr attribute ... (the same arguments)
    funcattr attribute --summary ig.zarr occlusion.zarr

Running the same command again resumes an interrupted run. ``--data DIR`` reads image files:
``DIR/<class>/*.png|jpg|...`` (labels from the folder names: the model's class names if they
all match, else their sorted order, as ``torchvision.datasets.ImageFolder``) or ``DIR/*.png``
(no labels: use ``--target pred`` or a class index).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from .cli import METHODS  # one table of methods for explain and attribute

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "attribute",
        help="attribute a whole dataset into a store (resumable; distributed under torchrun)",
        description="Attribute every example of a dataset into a zarr store; run it again to resume. "
        "Under torchrun every process takes its share. --summary STORE prints a finished store's metrics.",
    )
    p.add_argument("--model", default="zoo:shapes", help="zoo:shapes (default) or torchvision:NAME")
    p.add_argument("--weights", default=None, help="PATH to a state_dict, or DEFAULT (torchvision's download)")
    p.add_argument("--data", default="zoo:shapes:1000", help="zoo:shapes:N (default 1000 held-out images) or a folder of images")
    p.add_argument("--method", default="ig", help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--target", default="label", help="label (default), pred (the model's prediction) or a class index")
    p.add_argument("--out", default=None, help="the store's folder, e.g. ig.zarr")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--metrics", default="", help="comma-separated: deletion,insertion,pointing,mass")
    p.add_argument("--overwrite", action="store_true", help="replace a store made with other settings")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: 0 on CPU, 4 per GPU)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda:LOCAL_RANK if CUDA is present, else cpu")
    p.add_argument("--seed", type=int, default=0, help="random seed of sampling methods (per batch)")
    p.add_argument("--summary", nargs="+", metavar="STORE", help="print the metrics table of finished stores and exit")


# --------------------------------------------------------------------------- methods


def make_method(name: str, model: torch.nn.Module, layer: torch.nn.Module, size: tuple[int, int]):
    """``name`` → ``attr_fn(x, target=t)`` with the target given per batch: ``funcattr
    explain``'s table, with occlusion strided for whole datasets."""
    from .cli import AT_CALL
    from .cli import make_method as table

    return table(name, model, layer, size, AT_CALL, window=max(3, size[0] // 5), stride=max(1, size[0] // 8))


# --------------------------------------------------------------------------- data


class ShapesData(torch.utils.data.Dataset):
    """``zoo:shapes:N``: the embedded held-out images, ``(x [3, 64, 64], label, mask [64, 64])``."""

    def __init__(self, n: int):
        from funcattr import zoo

        self.x, self.y, self.m = zoo.make_shapes(n, seed=zoo.TEST_SEED)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i]), self.m[i]


class ImageFiles(torch.utils.data.Dataset):
    """Image files resized to the model's input size (and normalized like its training data)."""

    def __init__(self, files: list[str], labels: list[int] | None, size, mean, std):
        self.files, self.labels, self.size, self.mean, self.std = files, labels, size, mean, std

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms.functional import normalize, pil_to_tensor, resize

        path = self.files[i]
        try:
            img = Image.open(path).convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{path} is not a readable image ({type(err).__name__})") from None
        x = resize(pil_to_tensor(img), list(self.size), antialias=True).float() / 255.0
        if self.mean is not None:
            x = normalize(x, self.mean, self.std)
        return x if self.labels is None else (x, self.labels[i])


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def load_data(spec: str, size, mean, std, classes):
    from .cli import UserError

    if spec.startswith("zoo:"):
        parts = spec.split(":")
        if parts[1] != "shapes" or len(parts) > 3:
            raise UserError(f"unknown dataset {spec!r}; use zoo:shapes:N or a folder of images")
        try:
            n = int(parts[2]) if len(parts) == 3 else 1000
        except ValueError:
            raise UserError(f"--data {spec}: N must be a number of images, e.g. zoo:shapes:1000") from None
        if n < 1:
            raise UserError(f"--data {spec}: N must be at least 1")
        return ShapesData(n)
    if not os.path.isdir(spec):
        raise UserError(f"--data {spec}: no such folder (use zoo:shapes:N or a folder of images)")
    subdirs = sorted(d for d in os.listdir(spec) if os.path.isdir(os.path.join(spec, d)))
    if subdirs:
        names = list(classes) if classes else []
        by_name = all(d in names for d in subdirs)
        files, labels = [], []
        for k, d in enumerate(subdirs):
            for f in sorted(os.listdir(os.path.join(spec, d))):
                if _is_image(f):
                    files.append(os.path.join(spec, d, f))
                    labels.append(names.index(d) if by_name else k)
    else:
        files = [os.path.join(spec, f) for f in sorted(os.listdir(spec)) if _is_image(f)]
        labels = None
    if not files:
        raise UserError(f"--data {spec}: no image files found ({', '.join(IMAGE_EXTENSIONS)})")
    return ImageFiles(files, labels, size, mean, std)


# --------------------------------------------------------------------------- entry point


def _parse_target(t: str):
    from .cli import UserError

    if t in ("label", "pred"):
        return t
    try:
        k = int(t)
    except ValueError:
        raise UserError(f"--target must be label, pred or a class index, got {t!r}") from None
    if k < 0:
        raise UserError(f"--target {k}: class indices are >= 0")
    return k


def _print_table(rows: list[dict], names: list[str]) -> None:
    arrows = {"deletion": " ↓", "insertion": " ↑", "pointing": " ↑", "mass": " ↑"}
    head = ["store", "method", "examples"] + [n + arrows.get(n, "") for n in names]
    lines = [head] + [[r["store"], r["method"], r["examples"]] + [r["means"].get(n, "") for n in names] for r in rows]
    lines = [[c if isinstance(c, str) else f"{c:.4f}" for c in row] for row in lines]
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"  # noqa: E731
    print(fmt(lines[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in lines[1:]:
        print(fmt(row))


def summary(paths: list[str]) -> None:
    import funcattr as fa

    rows, names = [], []
    for p in paths:
        s = fa.open_store(p)
        done = int(s.done.sum())
        means = s.summary()
        names += [n for n in means if n not in names]
        rows.append({
            "store": p,
            "method": s.manifest["settings"]["method"],
            "examples": f"{done}/{len(s)}" + ("" if done == len(s) else " (incomplete: run again to resume)"),
            "means": means,
        })
    if not names:
        print("(no metrics in these stores: make them with --metrics deletion,insertion,pointing,mass)")
    _print_table(rows, names)


def main(a: argparse.Namespace) -> int:
    from .cli import UserError, _load_model
    from ._distributed import FromRank0
    from ._items import ItemError

    rank = int(os.environ.get("RANK", "0"))
    try:
        if a.summary:
            summary(a.summary)
            return 0
        if not a.out:
            raise UserError("--out STORE is required (the folder the store is written to), or --summary STORE")
        if a.method not in METHODS:
            raise UserError(f"unknown method {a.method!r}; choose one of: {', '.join(METHODS)}")
        if a.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if a.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        import funcattr as fa

        target = _parse_target(a.target)
        metrics = [m.strip() for m in a.metrics.split(",") if m.strip()]
        model, size, mean, std, classes, layer = _load_model(a.model, a.weights, torch.device("cpu"))
        data = load_data(a.data, size, mean, std, classes)
        attr_fn = make_method(a.method, model, layer, size)
        t0 = time.perf_counter()
        store = fa.attribute_dataset(
            attr_fn, data, a.out, model=model, batch_size=a.batch_size, num_workers=a.num_workers, target=target,
            metrics=metrics, dtype=a.dtype, overwrite=a.overwrite, progress=True, seed=a.seed,
            device=a.device or ("cuda" if torch.cuda.is_available() else "cpu"),  # cuda means cuda:LOCAL_RANK
        )
        dt = time.perf_counter() - t0
        if rank == 0:
            attrs = store.attributions
            print(f"wrote {a.out}: {len(store)} examples, {a.method} attributions {list(attrs.shape)} {a.dtype}, in {dt:.1f} s")
            if metrics:
                summary([a.out])
    except (UserError, ValueError, TypeError, IndexError, OSError, ImportError, ItemError) as err:
        if os.environ.get("FUNCATTR_DEBUG"):
            raise
        if rank == 0 or not isinstance(err, FromRank0):
            print(f"funcattr: error: {err}", file=sys.stderr)
        return 2
    return 0
