"""The explorer in Python: features beyond RGB images (greyscale, RGBA, text tokens, tabular
columns, several inputs at once), the data it accepts and how it reads it, and the notebook
view (``render()``'s display payload)."""

import base64
import sys
import types
import urllib.request

import pytest
import torch
from torch import nn

import funcattr as fa
from funcattr import insights, zoo
from funcattr.insights import _engine, _methods


def decode(b64):
    return torch.frombuffer(bytearray(base64.b64decode(b64)), dtype=torch.uint8)


class Multimodal(nn.Module):
    """A grey image, a token sequence (embedded by the feature's transform) and 4 columns."""

    def __init__(self, channels=1):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.emb = nn.Embedding(20, 8)
        self.head = nn.Linear(12, 3)
        self.tab = nn.Linear(4, 3)

    def forward(self, img, emb, tab):
        a = torch.relu(self.conv(img)).mean((2, 3))
        return self.head(torch.cat([a, emb.mean(1)], 1)) + self.tab(tab)


VOCAB = [f"w{i}" for i in range(20)]


def multimodal_data(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 16, 16, generator=g), torch.randint(0, 20, (n, 5), generator=g), torch.randn(n, 4, generator=g))


def multimodal_explorer(model, **kw):
    img, ids, tab = multimodal_data()
    feats = [insights.image("Scan"), insights.text("Notes", tokens=VOCAB, transform=lambda i: model.emb(i).detach()),
             insights.tabular("Vitals", columns=["age", "bp", "hr", "temp"])]
    return insights.Explorer(model, classes=["a", "b", "c"], data=[((img, ids, tab), torch.tensor([0, 1, 2, 0, 1, 2]))],
                             features=feats, **kw)


def test_image_text_and_tabular_features_in_one_batched_call():
    model = Multimodal()
    ex = multimodal_explorer(model)
    ids = [m["id"] for m in ex.init()["methods"]]
    assert "gradcam" not in ids and "integrated_gradients" in ids  # layer maps need a single image input
    res = ex.fetch(method="integrated_gradients", args={"steps": 16}, count=3)
    assert res["calls"] == 1 and [e["index"] for e in res["examples"]] == [0, 1, 2]
    img, ids_, tab = multimodal_data()
    for e in res["examples"]:
        i = e["index"]
        image, text, table = e["inputs"]
        assert (image["kind"], image["c"], image["w"]) == ("image", 1, 16)
        assert text["tokens"] == [VOCAB[t] for t in ids_[i].tolist()]
        assert table["columns"] == ["age", "bp", "hr", "temp"] and table["values"] == pytest.approx(tab[i].tolist())
        (mv,) = e["models"]
        # the loop twin: funcattr on this one example, the embedding as the text input
        x = (img[i:i + 1], model.emb(ids_[i:i + 1]).detach(), tab[i:i + 1])
        a = fa.integrated_gradients(fa.target(model, mv["target"]), steps=16)(x)
        want_text = a[1][0].sum(-1)
        assert mv["features"][1]["values"] == pytest.approx(want_text.tolist(), rel=1e-3, abs=1e-6)
        assert mv["features"][2]["values"] == pytest.approx(a[2][0].tolist(), rel=1e-3, abs=1e-6)
        net = torch.stack([t[0].double().sum() for t in a])
        assert mv["contributions"] == pytest.approx((net / net.abs().sum()).tolist(), rel=1e-3, abs=1e-6)
        assert sum(abs(c) for c in mv["contributions"]) == pytest.approx(1.0)
        assert "faithfulness" in mv and "localization" not in mv


@pytest.mark.parametrize("method, args", [
    ("occlusion", {"window": 4, "stride": 4}), ("feature_ablation", {"cell": 8}), ("kernel_shap", {"cell": 8, "samples": 30}),
    ("noise_tunnel", {"of": "integrated_gradients", "samples": 3, "steps": 4}), ("gradient_shap", {"samples": 4, "background": 3}),
])
def test_perturbation_and_sampling_methods_on_several_inputs(method, args):
    res = multimodal_explorer(Multimodal()).fetch(method=method, args=args, count=2)
    mv = res["examples"][0]["models"][0]
    assert [f["kind"] for f in mv["features"]] == ["image", "text", "tabular"]
    assert len(mv["features"][1]["values"]) == 5 and len(mv["features"][2]["values"]) == 4


def test_feature_ablation_segments_match_the_transform():
    """Image cells of 8×8 pixels, one feature per token and per column, ids distinct across inputs."""
    model = Multimodal()
    ex = multimodal_explorer(model)
    m, a = _methods.validate(ex.methods, "feature_ablation", {"cell": 8})
    attrs, *_ = _engine.attributions(ex, [_engine.Job(0, 0, 2)], m, a)
    img, ids, tab = multimodal_data()
    x = (img[:1], model.emb(ids[:1]).detach(), tab[:1])
    cells = (torch.arange(16) // 8).view(16, 1) * 2 + (torch.arange(16) // 8).view(1, 16)
    mask = (cells.view(1, 1, 16, 16), 4 + torch.arange(5).view(1, 5, 1), 9 + torch.arange(4).view(1, 4))
    want = fa.feature_ablation(fa.target(model, 2), mask=mask)(x)
    for got, w in zip(attrs, want):
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 4])
def test_greyscale_and_rgba_images(channels):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(4, channels, 12, 10)
    ex = insights.Explorer(model, data=[(x, [0, 1, 2, 0])])
    res = ex.fetch(method="gradcam", count=2)
    img = res["examples"][1]["inputs"][0]
    assert (img["c"], img["h"], img["w"]) == (channels, 12, 10)
    px = decode(img["data"]).view(12, 10, channels)
    assert torch.equal(px, (x[1].permute(1, 2, 0) * 255).round().to(torch.uint8))
    heat = res["examples"][1]["models"][0]["features"][0]
    assert (heat["h"], heat["w"]) == (12, 10) and len(decode(heat["maps"]["all"])) == 120
    assert ex.init()["classes"] == ["class 0", "class 1", "class 2"]


def test_display_un_normalizes_with_mean_and_std():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    x, y, _ = zoo.make_shapes(2, seed=zoo.TEST_SEED)
    normed = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    ex = insights.Explorer(model, data=[(normed, y)], features=insights.image("Photo", mean=mean, std=std))
    img = ex.fetch(method="saliency", count=1)["examples"][0]["inputs"][0]
    px = decode(img["data"]).view(64, 64, 3).int()
    assert (px - (x[0].permute(1, 2, 0) * 255).round().int()).abs().max() <= 1


# ----------------------------------------------------------------------------- data


def test_data_is_read_lazily_once_and_wraps_after_max_examples():
    model = zoo.load()
    reads = []

    def batches():
        for k in range(50):
            reads.append(k)
            x, y, m = zoo.make_shapes(3, seed=k)
            yield {"inputs": x, "labels": y, "masks": m}

    ex = insights.Explorer(model, classes=zoo.CLASSES, data=batches(), max_examples=7)
    res = ex.fetch(method="saliency", count=4, scores=False)
    assert [e["index"] for e in res["examples"]] == [0, 1, 2, 3] and reads == [0, 1]
    res = ex.fetch(method="saliency", offset=5, count=4, scores=False)
    assert [e["index"] for e in res["examples"]] == [5, 6, 0, 1] and res["next_offset"] == 2
    assert reads == [0, 1, 2] and ex.store.count == 7  # the third batch is cut at max_examples


def test_extra_model_arguments_follow_their_examples():
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = zoo.load()

        def forward(self, x, shift, scale):
            return self.net(x) * scale + shift

    x, y, _ = zoo.make_shapes(4, seed=3)
    shift = torch.arange(4.0).view(4, 1) * torch.ones(4, 6)
    model = Shifted()
    ex = insights.Explorer(model, classes=zoo.CLASSES, data=[{"inputs": x, "labels": y, "args": (shift, 2.0)}])
    m, a = _methods.validate(ex.methods, "integrated_gradients", {"steps": 4})
    (attrs,), *_ = _engine.attributions(ex, [_engine.Job(3, 0, 1), _engine.Job(1, 0, 2)], m, a)
    for k, (i, t) in enumerate([(3, 1), (1, 2)]):
        want = fa.integrated_gradients(fa.target(model, t), steps=4)(x[i:i + 1], shift[i:i + 1], 2.0)[0]
        torch.testing.assert_close(attrs[k], want, rtol=1e-4, atol=1e-6)


def test_unlabelled_data_and_attributing_to_labels():
    model = zoo.load()
    x, y, _ = zoo.make_shapes(6, seed=4)
    ex = insights.Explorer(model, classes=zoo.CLASSES, data=[x])
    assert not ex.init()["has_labels"]
    res = ex.fetch(method="saliency", prediction="correct", count=2, scores=False)
    assert res["examples"] == [] and res["note"].startswith("0 of the 6 examples match") and "no labels" in res["note"]
    wrong = (y + 1) % 6
    ex = insights.Explorer(model, classes=zoo.CLASSES, data=[(x, wrong)], target="label")
    res = ex.fetch(method="saliency", count=3, scores=False)
    assert [e["models"][0]["target"] for e in res["examples"]] == wrong[:3].tolist()
    res = ex.fetch(method="saliency", count=3, scores=False, target="predicted")
    assert [e["models"][0]["target"] for e in res["examples"]] == model(x[:3]).argmax(1).tolist()


@pytest.mark.parametrize("kwargs, error", [
    (dict(models=[]), TypeError), (dict(features=["image"]), TypeError), (dict(score="sigmoid"), TypeError),
    (dict(target="true"), ValueError), (dict(max_evaluations=0), ValueError), (dict(layers=[None, None]), ValueError),
    (dict(data=torch.zeros(3)), TypeError),
])
def test_constructor_errors(kwargs, error):
    args = dict(models=zoo.load(), data=[])
    args.update(kwargs)
    with pytest.raises(error):
        insights.Explorer(args.pop("models"), **args)


# ----------------------------------------------------------------------------- notebooks


@pytest.fixture
def fake_ipython(monkeypatch):
    shown = []
    ipython = types.ModuleType("IPython")
    display = types.ModuleType("IPython.display")
    ipython.get_ipython = lambda: object()
    display.display = lambda obj: shown.append(obj)
    ipython.display = display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    monkeypatch.setitem(sys.modules, "google.colab", None)
    return shown


def test_render_displays_the_served_page_in_an_iframe(fake_ipython):
    x, y, _ = zoo.make_shapes(4, seed=5)
    with insights.Explorer(zoo.load(), classes=zoo.CLASSES, data=[(x, y)]) as ex:
        assert "not serving" in ex._repr_mimebundle_()["text/plain"]
        assert ex.render() is None
        (obj,) = fake_ipython
        bundle = obj._repr_mimebundle_()
        assert set(bundle) == {"text/html", "text/plain"}
        assert f'<iframe src="{ex.url}"' in bundle["text/html"] and ex.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(ex.url, timeout=30) as page:
            assert b"static/app.js" in page.read()
        assert f'src="{ex.url}"' in ex._repr_mimebundle_()["text/html"]
        ex.render(proxy="/proxy/{port}/")
        assert f'<iframe src="/proxy/{ex.port}/"' in fake_ipython[-1]._repr_mimebundle_()["text/html"]


def test_render_outside_a_notebook_prints_the_address(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "IPython", None)
    x, y, _ = zoo.make_shapes(4, seed=5)
    with insights.Explorer(zoo.load(), data=[(x, y)]) as ex:
        ex.render()
        assert ex.url in capsys.readouterr().out


def test_a_model_with_one_output_score():
    """Captum's case for ``use_label_for_attr=False``: one score per example, the class is its
    rounded value, the attribution is of the score itself."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1), nn.Sigmoid())
    x = torch.randn(4, 3, 2, 2)
    ex = insights.Explorer(model, classes=["no", "yes"], data=[(x, [0, 1, 1, 0])], score=None)
    res = ex.fetch(method="saliency", args={"abs": False}, count=4, scores=False)
    for e in res["examples"]:
        (mv,) = e["models"]
        s = float(model(x[e["index"]:e["index"] + 1]).detach())
        assert mv["predictions"] == [{"index": round(s), "name": ["no", "yes"][round(s)], "score": pytest.approx(s)}]
    (attrs,), *_ = _engine.attributions(ex, [_engine.Job(2, 0, 1)], ex.methods["saliency"], {"abs": False})
    torch.testing.assert_close(attrs[0], fa.saliency(fa.target(model, None), abs=False)(x[2:3])[0])
