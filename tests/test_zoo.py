"""Tests of the embedded default model and data (``funcattr.zoo``)."""

import time

import pytest
import torch
import torch.nn.functional as F

from funcattr import zoo

N = 240


@pytest.fixture(scope="module")
def data():
    return zoo.make_shapes(N, seed=5)


def test_exports():
    assert zoo.CLASSES == ("circle", "square", "triangle", "cross", "ring", "diamond")
    assert isinstance(zoo.TEST_SEED, int) and zoo.TEST_SEED != zoo.TRAIN_SEED
    assert callable(zoo.make_shapes) and issubclass(zoo.ShapesNet, torch.nn.Module)
    assert "shapes" in zoo.available()


def test_shapes_dtypes_ranges(data):
    x, y, m = data
    assert x.shape == (N, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (N,) and y.dtype == torch.int64
    assert m.shape == (N, 64, 64) and m.dtype == torch.bool
    assert x.min() >= 0 and x.max() <= 1 and torch.isfinite(x).all()
    assert y.min() >= 0 and y.max() < len(zoo.CLASSES)


def test_all_classes_occur_balanced(data):
    counts = torch.bincount(data[1], minlength=len(zoo.CLASSES))
    assert (counts == N // len(zoo.CLASSES)).all()


def test_determinism():
    a = zoo.make_shapes(50, seed=11)
    b = zoo.make_shapes(50, seed=11)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    c = zoo.make_shapes(50, seed=12)
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[2], c[2])


def test_other_size_and_empty():
    x, y, m = zoo.make_shapes(12, seed=0, size=32)
    assert x.shape == (12, 3, 32, 32) and m.shape == (12, 32, 32)
    assert m.flatten(1).any(1).all()
    x, y, m = zoo.make_shapes(0)
    assert x.shape == (0, 3, 64, 64) and y.shape == (0,) and m.shape == (0, 64, 64)


def test_masks_lie_on_the_object(data):
    x, _, m = data
    area = m.sum((1, 2))
    assert (area >= 100).all()  # every mask non-empty, object reasonably large
    # Object fully inside the image (never touches the border).
    assert not (m[:, 0].any() or m[:, -1].any() or m[:, :, 0].any() or m[:, :, -1].any())
    mf = m[:, None].float()
    inside = (x * mf).sum((2, 3)) / mf.sum((2, 3))  # [N, 3] mean object colour
    # The object is a flat colour (plus mild noise) ...
    var = ((x - inside[..., None, None]) ** 2 * mf).sum((2, 3)) / mf.sum((2, 3))
    assert var.sqrt().max() < 0.05
    # ... that clearly differs from its surroundings (a 2-px band around it).
    band = F.max_pool2d(mf, 5, 1, 2) - mf
    around = (x * band).sum((2, 3)) / band.sum((2, 3))
    assert (inside - around).norm(dim=1).min() > 0.25


def test_generator_fast():
    zoo.make_shapes(10)
    t = time.perf_counter()
    zoo.make_shapes(1000, seed=1)
    assert time.perf_counter() - t < 5.0  # ~0.7 s on 2 CPU cores


def test_load_and_accuracy():
    from pathlib import Path

    weights = Path(zoo.__file__).with_name("shapes_net.pt")
    assert weights.is_file() and weights.stat().st_size < 1_000_000
    model = zoo.load()
    assert isinstance(model, zoo.ShapesNet) and not model.training
    assert all(not mod.training for mod in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x, y, _ = zoo.make_shapes(200, seed=zoo.TEST_SEED)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert logits.shape == (200, len(zoo.CLASSES))
    assert (logits.argmax(1) == y).float().mean() >= 0.90
    # Layer layout promised for GradCAM / CAM.
    assert model.last_conv is model.features.block5 is model.features[-1]
    assert feats.shape == (200, 64, 8, 8) and (feats >= 0).all()
    cam_logits = feats.mean((2, 3)) @ model.fc.weight.T + model.fc.bias
    torch.testing.assert_close(cam_logits, logits, rtol=1e-4, atol=1e-4)
    assert not any(getattr(mod, "inplace", False) for mod in model.modules())


def test_load_unknown_name():
    with pytest.raises(ValueError, match="shapes"):
        zoo.load("resnet50")
