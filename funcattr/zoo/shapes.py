"""Deterministic synthetic "shapes" dataset with ground-truth object masks.

Every image is an RGB ``size x size`` picture (default 64x64) containing exactly
ONE object whose class is its *shape* (the colour is random and independent of
the class), drawn at a random position, size and small rotation on a cluttered
background:

* a smooth, low-frequency colour-noise background,
* a few small distractors (tiny blobs and thin strokes) that are not any class
  shape and are always drawn *under* the object,
* mild per-pixel Gaussian noise.

The ground-truth mask of the object (``bool [size, size]``) comes with every
image, which makes the data set convenient for checking attribution maps
(pointing game, mask-overlap metrics, ...).

Everything is vectorized over images and pixels with torch and fully determined
by ``(n, seed, size)`` through a private :class:`torch.Generator`: the same call
returns bit-identical tensors.

Example::

    >>> from funcattr.zoo.shapes import make_shapes, CLASSES
    >>> x, y, m = make_shapes(8, seed=1)
    >>> x.shape, y.shape, m.shape
    (torch.Size([8, 3, 64, 64]), torch.Size([8]), torch.Size([8, 64, 64]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["CLASSES", "TRAIN_SEED", "TEST_SEED", "make_shapes", "shape_masks"]

#: Class names, in label order.
CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "diamond")

#: The shipped model was trained on ``make_shapes(n, seed=TRAIN_SEED + epoch)``
#: for ``epoch = 0, 1, ...`` (fresh images every epoch, a few dozen epochs at
#: most).
TRAIN_SEED: int = 0
#: Seed of the held-out set (never used for training): use
#: ``make_shapes(n, seed=TEST_SEED)`` for evaluation and demos.
TEST_SEED: int = 20_240_601

# Object scale, in pixels at size 64: the nominal radius r of an object.
_R_MIN, _R_MAX = 9.0, 18.0
# Maximal absolute rotation of an object (radians).  Kept small so that a
# square never looks like a diamond (a square rotated by 45 degrees) and a
# cross never looks like an "x".
_MAX_ROT = math.radians(12.0)
# Extent of the largest shape relative to r (triangle circumradius), used to
# keep objects fully inside the image.
_EXTENT = 1.2
_N_DISTRACTORS = 5
_N_COLOR_CANDIDATES = 8
_NOISE_STD = 0.02
_CHUNK = 1024


def shape_masks(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Masks of every class shape, centred at the origin of the (u, v) frame.

    Args:
        u, v: ``[..., H, W]`` pixel coordinates in the object frame (already
            translated and rotated; ``v`` points down like image rows).
        r: nominal radius broadcastable to ``u``.

    Returns:
        bool tensor ``[len(CLASSES), ..., H, W]``.
    """
    au, av = u.abs(), v.abs()
    rad = torch.sqrt(u * u + v * v)
    circle = rad <= r
    square = torch.maximum(au, av) <= 0.82 * r
    # Equilateral triangle pointing up with circumradius 1.18 r: inside iff the
    # projection on each of the three outward edge normals (at 90, 210 and 330
    # degrees) is below the inradius (half the circumradius).
    rin = 0.5 * 1.18 * r
    c, s = math.cos(math.radians(30.0)), 0.5
    triangle = (v <= rin) & (-c * u - s * v <= rin) & (c * u - s * v <= rin)
    w = 0.32 * r
    cross = ((au <= w) & (av <= r)) | ((av <= w) & (au <= r))
    ring = (rad <= r) & (rad >= 0.55 * r)
    diamond = (au + av) <= 1.12 * r
    return torch.stack([circle, square, triangle, cross, ring, diamond])


def _smooth_noise(n: int, cells: int, size: int, g: torch.Generator) -> torch.Tensor:
    """``[n, 3, size, size]`` bicubic upsampling of a ``cells x cells`` random grid."""
    low = torch.rand(n, 3, cells, cells, generator=g)
    # Bicubic interpolation is separable: build the 1-D [size, cells] matrix
    # once and apply it to rows and columns with two matmuls (much faster
    # than F.interpolate on the full batch).
    eye = torch.eye(cells).view(cells, 1, 1, cells)
    mat = F.interpolate(eye, size=(1, size), mode="bicubic", align_corners=True)
    mat = mat.view(cells, size).T.contiguous()  # [size, cells]
    return mat @ low @ mat.T


def make_shapes(
    n: int, seed: int = 0, size: int = 64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` images of the shapes data set.

    Args:
        n: number of images.
        seed: seed of the private ``torch.Generator``; ``(n, seed, size)``
            fully determine the output (bit-identical on repeated calls).
        size: image height and width in pixels (shapes scale with it).

    Returns:
        ``(images, labels, masks)``: ``images`` float32 ``[n, 3, size, size]``
        in ``[0, 1]``; ``labels`` int64 ``[n]`` indexing :data:`CLASSES`
        (balanced: every class occurs ``n // 6`` or ``n // 6 + 1`` times, in
        random order); ``masks`` bool ``[n, size, size]``, True on the object's
        pixels.
    """
    n, size = int(n), int(size)
    if n < 0 or size < 8:
        raise ValueError(f"need n >= 0 and size >= 8, got n={n}, size={size}")
    g = torch.Generator().manual_seed(int(seed))
    k = len(CLASSES)
    scale = size / 64.0

    # ---- per-image random parameters (all drawn up front) -----------------
    perm = torch.randperm(n, generator=g)
    labels = perm % k
    r = (_R_MIN + (_R_MAX - _R_MIN) * torch.rand(n, generator=g)) * scale
    margin = _EXTENT * r + 1.0
    cx = margin + (size - 1 - 2 * margin) * torch.rand(n, generator=g)
    cy = margin + (size - 1 - 2 * margin) * torch.rand(n, generator=g)
    theta = (2 * torch.rand(n, generator=g) - 1) * _MAX_ROT
    color_cand = torch.rand(n, _N_COLOR_CANDIDATES, 3, generator=g)

    nd = _N_DISTRACTORS
    d_kind = torch.rand(n, nd, generator=g) < 0.5  # True: stroke, False: blob
    d_pos = torch.rand(n, nd, 2, generator=g) * (size - 1)
    d_ang = torch.rand(n, nd, generator=g) * math.pi
    d_len = (6.0 + 10.0 * torch.rand(n, nd, generator=g)) * scale  # stroke length
    d_wid = (0.7 + 0.8 * torch.rand(n, nd, generator=g)) * scale  # stroke half-width
    d_ra = (1.5 + 2.0 * torch.rand(n, nd, generator=g)) * scale  # blob radii
    d_rb = (1.5 + 2.0 * torch.rand(n, nd, generator=g)) * scale
    d_col = torch.rand(n, nd, 3, generator=g)

    bg = 0.12 + 0.55 * _smooth_noise(n, 4, size, g) + 0.25 * _smooth_noise(n, 8, size, g)

    images = torch.empty(n, 3, size, size)
    masks = torch.empty(n, size, size, dtype=torch.bool)
    coords = torch.arange(size, dtype=torch.float32)
    yy = coords.view(1, size, 1)
    xx = coords.view(1, 1, size)

    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        b = hi - lo
        img = bg[lo:hi].clone()

        # ---- distractors (drawn first, i.e. under the object) -------------
        for j in range(nd):
            px = d_pos[lo:hi, j, 0].view(b, 1, 1)
            py = d_pos[lo:hi, j, 1].view(b, 1, 1)
            ca = torch.cos(d_ang[lo:hi, j]).view(b, 1, 1)
            sa = torch.sin(d_ang[lo:hi, j]).view(b, 1, 1)
            du, dv = xx - px, yy - py
            a = ca * du + sa * dv  # along the stroke / major axis
            c = -sa * du + ca * dv
            half = 0.5 * d_len[lo:hi, j].view(b, 1, 1)
            stroke = (a.abs() <= half) & (c.abs() <= d_wid[lo:hi, j].view(b, 1, 1))
            ra = d_ra[lo:hi, j].view(b, 1, 1)
            rb = d_rb[lo:hi, j].view(b, 1, 1)
            blob = (a / ra) ** 2 + (c / rb) ** 2 <= 1.0
            dm = torch.where(d_kind[lo:hi, j].view(b, 1, 1), stroke, blob)
            img = torch.where(dm.unsqueeze(1), d_col[lo:hi, j].view(b, 3, 1, 1), img)

        # ---- the object ---------------------------------------------------
        ct = torch.cos(theta[lo:hi]).view(b, 1, 1)
        st = torch.sin(theta[lo:hi]).view(b, 1, 1)
        du = xx - cx[lo:hi].view(b, 1, 1)
        dv = yy - cy[lo:hi].view(b, 1, 1)
        u = ct * du + st * dv
        v = -st * du + ct * dv
        all_masks = shape_masks(u, v, r[lo:hi].view(b, 1, 1))  # [k, b, H, W]
        lab = labels[lo:hi]
        m = all_masks.permute(1, 0, 2, 3)[torch.arange(b), lab]  # [b, H, W]

        # Colour: among a few random candidates, the one farthest from the
        # mean background colour under the object (keeps the object visible
        # while the colour stays random and class-independent).
        mf = m.unsqueeze(1).to(img.dtype)
        bg_mean = (img * mf).sum((2, 3)) / mf.sum((2, 3)).clamp_min(1.0)  # [b,3]
        dist = (color_cand[lo:hi] - bg_mean.unsqueeze(1)).pow(2).sum(-1)
        best = dist.argmax(1)
        col = color_cand[lo:hi][torch.arange(b), best]  # [b,3]
        img = torch.where(m.unsqueeze(1), col.view(b, 3, 1, 1), img)

        img = img + _NOISE_STD * torch.randn(img.shape, generator=g)
        images[lo:hi] = img.clamp_(0.0, 1.0)
        masks[lo:hi] = m

    return images, labels.to(torch.int64), masks
