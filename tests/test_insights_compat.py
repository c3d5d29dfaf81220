"""``funcattr.compat.insights``: seed 004's Captum Insights section (the PyTorch "Model
Understanding with Captum" tutorial) runs with its import lines changed, here on the embedded
zoo model and its images; and Captum's TextFeature / GeneralFeature / Batch arguments."""

import json
import sys
import types
import urllib.request

import pytest
import torch

import funcattr as fa
from funcattr import zoo
from funcattr.compat import insights as compat
from funcattr.insights import _engine, _methods

# The tutorial's Insights section, verbatim but for the two import lines (captum.insights ->
# funcattr.compat.insights) and the three labels, which are ImageNet classes in the tutorial.
SEED_004_INSIGHTS = '''
from funcattr.compat.insights import AttributionVisualizer, Batch
from funcattr.compat.insights import ImageFeature

# Baseline is all-zeros input - this may differ depending on your data
def baseline_func(input):
    return input * 0

# merging our image transforms from above
def full_img_transform(input):
    i = Image.open(input)
    i = transform(i)
    i = transform_normalize(i)
    i = i.unsqueeze(0)
    return i


input_imgs = torch.cat(list(map(lambda i: full_img_transform(i), imgs)), 0)

visualizer = AttributionVisualizer(
    models=[model],
    score_func=lambda o: torch.nn.functional.softmax(o, 1),
    classes=list(map(lambda k: idx_to_labels[k][1], idx_to_labels.keys())),
    features=[
        ImageFeature(
            "Photo",
            baseline_transforms=[baseline_func],
            input_transforms=[],
        )
    ],
    dataset=[Batch(input_imgs, labels=LABELS)]
)

visualizer.render()
'''


@pytest.fixture
def fake_notebook(monkeypatch):
    shown = []
    ipython = types.ModuleType("IPython")
    display = types.ModuleType("IPython.display")
    ipython.get_ipython = lambda: object()
    display.display = shown.append
    ipython.display = display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    monkeypatch.setitem(sys.modules, "google.colab", None)
    return shown


def post(url, path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_seed_004_insights_section_runs_with_the_import_changed(tmp_path, monkeypatch, fake_notebook):
    from PIL import Image
    import torchvision.transforms as transforms
    from torchvision.utils import save_image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "img").mkdir()
    x, y, _ = zoo.make_shapes(3, seed=zoo.TEST_SEED)
    imgs = ["img/cat.png", "img/teapot.png", "img/trilobite.png"]
    for path, xi in zip(imgs, x):
        save_image(xi, path)
    idx_to_labels = {str(i): [f"n{i:08d}", c] for i, c in enumerate(zoo.CLASSES)}
    # the tutorial's preprocessing, sized for the zoo model (which takes [0, 1] pixels)
    transform = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor()])
    transform_normalize = transforms.Normalize(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    model = zoo.load()
    namespace = dict(Image=Image, transform=transform, transform_normalize=transform_normalize, torch=torch,
                     imgs=imgs, idx_to_labels=idx_to_labels, model=model, LABELS=y.tolist())
    exec(compile(SEED_004_INSIGHTS, "seed 004 (Captum Insights)", "exec"), namespace)

    visualizer = namespace["visualizer"]
    try:
        (view,) = fake_notebook
        url = visualizer.explorer.url
        assert f'<iframe src="{url}"' in view._repr_mimebundle_()["text/html"]
        res = post(url, "api/fetch", {"method": "integrated_gradients", "args": {"steps": 16}, "count": 3})
        assert [e["label"]["name"] for e in res["examples"]] == [zoo.CLASSES[int(c)] for c in y]
        input_imgs = namespace["input_imgs"]
        for e in res["examples"]:
            mv = e["models"][0]
            i = e["index"]
            probs = model(input_imgs[i:i + 1]).softmax(1)[0].detach()
            assert mv["predictions"][0]["index"] == int(probs.argmax()) == mv["target"]  # Captum: the top class
            assert mv["predictions"][0]["name"] == idx_to_labels[str(mv["target"])][1]
        # the page's numbers are funcattr's: IG to the predicted class from the zeros baseline
        m, a = _methods.validate(visualizer.explorer.methods, "integrated_gradients", {"steps": 16})
        (attrs,), *_ = _engine.attributions(
            visualizer.explorer, [_engine.Job(i, 0, int(model(input_imgs[i:i + 1]).argmax())) for i in range(3)], m, a)
        want = fa.integrated_gradients(fa.target(model, model(input_imgs).argmax(1)), steps=16)(input_imgs)
        torch.testing.assert_close(attrs, want, rtol=1e-4, atol=1e-6)
    finally:
        visualizer.stop()


def test_serve_returns_the_port_like_captum(capsys):
    x, y, _ = zoo.make_shapes(2, seed=1)
    v = compat.AttributionVisualizer(zoo.load(), classes=list(zoo.CLASSES),
                                     features=compat.ImageFeature("Photo", baseline_transforms=None, input_transforms=None),
                                     dataset=[compat.Batch(x, labels=y)])
    port = v.serve()
    try:
        assert isinstance(port, int) and f"127.0.0.1:{port}" in capsys.readouterr().out
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/init", timeout=30) as r:
            assert json.loads(r.read())["classes"] == list(zoo.CLASSES)
    finally:
        v.stop()


class Multimodal(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.emb = torch.nn.Embedding(20, 8)
        self.head = torch.nn.Linear(12, 3)
        self.tab = torch.nn.Linear(4, 3)

    def forward(self, img, emb, tab, bias):
        a = torch.relu(self.conv(img)).mean((2, 3))
        return self.head(torch.cat([a, emb.mean(1)], 1)) + self.tab(tab) + bias


def test_text_and_general_features_with_captum_arguments():
    model = Multimodal()
    vocab = [f"w{i}" for i in range(20)]
    g = torch.Generator().manual_seed(0)
    img, ids, tab = torch.rand(4, 1, 8, 8, generator=g), torch.randint(0, 20, (4, 6), generator=g), torch.randn(4, 4, generator=g)
    bias = torch.randn(4, 3, generator=g)
    embed = lambda t: model.emb(t).detach()  # noqa: E731  (Captum: one example, no batch dim)
    features = [
        compat.ImageFeature("Scan", baseline_transforms=[lambda x: x * 0], input_transforms=[]),
        compat.TextFeature("Notes", baseline_transforms=[lambda e: e * 0], input_transforms=[embed],
                           visualization_transform=lambda t: [vocab[i] for i in t[0].tolist()]),
        compat.GeneralFeature("Vitals", categories=["age", "bp", "hr", "temp"]),
    ]
    v = compat.AttributionVisualizer([model], classes=["a", "b", "c"], features=features,
                                     dataset=[compat.Batch((img, ids, tab), labels=torch.tensor([0, 1, 2, 0]), additional_args=(bias,))])
    res = v.explorer.fetch(method="integrated_gradients", args={"steps": 8}, count=2)
    for e in res["examples"]:
        i = e["index"]
        assert e["inputs"][1]["tokens"] == [vocab[t] for t in ids[i].tolist()]
        assert e["inputs"][2]["columns"] == ["age", "bp", "hr", "temp"]
        mv = e["models"][0]
        out = model(img[i:i + 1], embed(ids[i:i + 1]), tab[i:i + 1], bias[i:i + 1])
        assert mv["target"] == int(out.argmax())
        a = fa.integrated_gradients(fa.target(model, mv["target"]), steps=8)(
            (img[i:i + 1], embed(ids[i:i + 1]), tab[i:i + 1]), bias[i:i + 1])
        assert mv["features"][1]["values"] == pytest.approx(a[1][0].sum(-1).tolist(), rel=1e-3, abs=1e-6)
        assert mv["features"][2]["values"] == pytest.approx(a[2][0].tolist(), rel=1e-3, abs=1e-6)


def test_compat_refuses_what_captum_refused():
    with pytest.raises(TypeError, match="ImageFeature, TextFeature or GeneralFeature"):
        compat.AttributionVisualizer(zoo.load(), classes=[], features=["Photo"], dataset=[])
    v = compat.AttributionVisualizer(zoo.load(), classes=list(zoo.CLASSES), features=[compat.ImageFeature("P", None, None)],
                                     dataset=[(torch.zeros(1, 3, 64, 64), [0])])
    with pytest.raises(TypeError, match="dataset must yield Batch objects"):
        v.explorer.init()
