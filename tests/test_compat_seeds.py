"""The seeds' Captum code (../shared/reference/seeds: the Captum tutorials 000, 001, 002 and 004)
runs through funcattr.compat with only the import lines changed, and gives Captum's numbers.

Each seed's attribution and visualization lines are kept as the seed writes them (the text
below), run once as written against Captum 0.9.0 and once with ``captum.attr`` replaced by
``funcattr.compat`` in the import lines. What the seeds download (resnet18/101, a photo,
the ImageNet labels) is swapped for the embedded zoo model and one of its images in a
prelude; the class numbers the seeds name (208, 283) become zoo classes, and
``model.layer3[1].conv2`` names a conv layer of the zoo model with the same depth role.
Seed 003 computes CAM by hand and does not call Captum.
"""

import re
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import close  # noqa: E402
from PIL import Image  # noqa: E402

from funcattr import zoo  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*non-interactive.*:UserWarning",
                                        "ignore:FigureCanvasAgg is non-interactive:UserWarning")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def ours(code: str) -> str:
    """The one change a Captum user makes: the import lines."""
    code = re.sub(r"^from captum\.attr import", "from funcattr.compat import", code, flags=re.M)
    return re.sub(r"^import captum$", "import funcattr.compat as captum", code, flags=re.M)


def prelude() -> dict:
    """What the seeds download, swapped for the zoo: the model (eval mode), a photo-like
    image (PIL, 0-255), and the transforms that turn it into the model's input."""
    from torchvision import transforms

    model = zoo.load()
    x, _, _ = zoo.make_shapes(2, seed=zoo.TEST_SEED)
    model.layer3 = [None, types.SimpleNamespace(conv2=model.features.block4.conv)]  # the seeds' layer name
    img = Image.fromarray((x[1].permute(1, 2, 0) * 255).round().byte().numpy())
    return {
        "model": model,
        "img": img,
        "center_crop": transforms.Compose([]),  # the zoo image is already the model's size
        "normalize": transforms.Compose([transforms.ToTensor()]),  # the zoo model takes [0, 1] images
    }


def run(cells: list[str], change_imports: bool) -> tuple[dict, list]:
    """Run a seed's cells in one namespace, as a notebook does; returns the namespace and
    the figures each cell drew."""
    ns = prelude()
    figures = []
    for cell in cells:
        before = set(plt.get_fignums())
        exec(compile(ours(cell) if change_imports else cell, "seed", "exec"), ns)
        figures.append([plt.figure(n) for n in plt.get_fignums() if n not in before])
    return ns, figures


def same_figures(a: list, b: list) -> None:
    """The same panels: titles, and each heat map's pixels."""
    assert len(a) == len(b)
    for fa_, fc in zip(a, b):
        assert [ax.get_title() for ax in fa_.axes] == [ax.get_title() for ax in fc.axes]
        for ax, ax2 in zip(fa_.axes, fc.axes):
            if ax.images and ax.images[-1].get_array().ndim == 2:  # a heat map (not an RGB image)
                np.testing.assert_allclose(ax.images[-1].get_array(), ax2.images[-1].get_array(), rtol=1e-4,
                                           atol=1e-6)


# --------------------------------------------------------------------------- seeds 000 / 001

SEED_001 = [
    # the zoo's classes 2 and 4 stand for ImageNet's 208 (Labrador) and 283 (Persian cat)
    """
input_img = normalize(center_crop(img)).unsqueeze(0)
""",
    """
from captum.attr import Occlusion
occlusion = Occlusion(model)
strides = (3, 9, 9) # 步长越小,归因越细粒度,但速度越慢
target = (2,) # ImageNet 中的拉布拉多索引
sliding_window_shapes = (3, 45, 45) # 选择足以改变对象外观的大小
baselines = 0 # 用于遮挡图像的值。0 对应灰色
attribution_dog = occlusion.attribute(
input_img,
strides=strides,
target=target,
sliding_window_shapes=sliding_window_shapes,
baselines=baselines,
)
target = (4,) # ImageNet 中的波斯猫索引
attribution_cat = occlusion.attribute(
input_img,
strides=strides,
target=target,
sliding_window_shapes=sliding_window_shapes,
baselines=0,
)
""",
    """
import numpy as np
from captum.attr import visualization as viz
# 将计算出的归因张量转换为类似图像的 numpy 数组
attribution_dog = np.transpose(
attribution_dog.squeeze().cpu().detach().numpy(), (1, 2, 0)
)
vis_types = ["heat_map", "original_image"]
vis_signs = ["all", "all"] # "positive"、"negative" 或 "all" 以显示两者
_ = viz.visualize_image_attr_multiple(
attribution_dog,
np.array(center_crop(img)),
vis_types,
vis_signs,
["attribution for dog", "image"],
show_colorbar=True,
)
attribution_cat = np.transpose(
attribution_cat.squeeze().cpu().detach().numpy(), (1, 2, 0)
)
_ = viz.visualize_image_attr_multiple(
attribution_cat,
np.array(center_crop(img)),
["heat_map", "original_image"],
["all", "all"], # 正/负归因或全部
["attribution for cat", "image"],
show_colorbar=True,
)
""",
]

# seed 000 is the same tutorial (Korean); its target lines end in a comma: a tuple target
SEED_000 = [
    SEED_001[0],
    """
from captum.attr import Occlusion
occlusion = Occlusion(model)
strides = (3, 9, 9) # 작을수록 = 세부적인 속성이지만 느림
target=2, # ImageNet에서 Labrador의 인덱스
sliding_window_shapes=(3,45, 45) # 객체의 모양을 변화시키기에 충분한 크기를 선택
baselines = 0 # 이미지를 가릴 값, 0은 회색
attribution_dog = occlusion.attribute(input_img,
strides = strides,
target=target,
sliding_window_shapes=sliding_window_shapes,
baselines=baselines)
target=4, # ImageNet에서 Persian cat의 인덱스
attribution_cat = occlusion.attribute(input_img,
strides = strides,
target=target,
sliding_window_shapes=sliding_window_shapes,
baselines=0)
""",
    """
import numpy as np
from captum.attr import visualization as viz
attribution_dog = np.transpose(attribution_dog.squeeze().cpu().detach().numpy(), (1,2,0))
vis_types = ["heat_map", "original_image"]
vis_signs = ["all", "all"] # "positive", "negative", 또는 모두 표시하는 "all"
_ = viz.visualize_image_attr_multiple(attribution_dog,
np.array(center_crop(img)),
vis_types,
vis_signs,
["attribution for dog", "image"],
show_colorbar = True
)
attribution_cat = np.transpose(attribution_cat.squeeze().cpu().detach().numpy(), (1,2,0))
_ = viz.visualize_image_attr_multiple(attribution_cat,
np.array(center_crop(img)),
["heat_map", "original_image"],
["all", "all"], # positive/negative 속성 또는 all
["attribution for cat", "image"],
show_colorbar = True
)
""",
]


@pytest.mark.parametrize("seed", [SEED_000, SEED_001], ids=["000", "001"])
def test_seed_occlusion_for_two_targets(seed):
    theirs, figs_c = run(seed, change_imports=False)
    mine, figs = run(seed, change_imports=True)
    assert type(mine["occlusion"]).__module__.startswith("funcattr.compat")
    for name in ("attribution_dog", "attribution_cat"):
        assert isinstance(mine[name], np.ndarray) and mine[name].shape == (64, 64, 3)
        close(torch.from_numpy(mine[name]), torch.from_numpy(theirs[name]), rtol=1e-4, atol=1e-5)
    assert not np.allclose(mine["attribution_dog"], mine["attribution_cat"])  # two targets, two maps
    for a, b in zip(figs, figs_c):
        same_figures(a, b)
    fig, axes = mine["_"]
    assert [ax.get_title() for ax in axes] == ["attribution for cat", "image"]


# --------------------------------------------------------------------------- seed 002

SEED_002 = [
    """
import captum
from captum.attr import Occlusion, LayerGradCam, LayerAttribution
input_img = normalize(center_crop(img)).unsqueeze(0)
pred_label_idx = model(input_img).argmax(1)
""",
    """
integrated_gradients = captum.attr.IntegratedGradients(model)

attributions_ig = integrated_gradients.attribute(input_img, target=pred_label_idx, n_steps=200)
""",
    """
occlusion = Occlusion(model)

attributions_occ = occlusion.attribute(input_img, target=pred_label_idx, strides=(3, 8, 8), sliding_window_shapes=(3,15, 15), baselines=0)
""",
    """
layer_gradcam = LayerGradCam(model, model.layer3[1].conv2)
attributions_lgc = layer_gradcam.attribute(input_img, target=pred_label_idx)

upsamp_attr_lgc = LayerAttribution.interpolate(attributions_lgc, input_img.shape[2:])
""",
]


def test_seed_002_integrated_gradients_occlusion_gradcam():
    theirs, _ = run(SEED_002, change_imports=False)
    mine, _ = run(SEED_002, change_imports=True)
    assert mine["integrated_gradients"].__module__.startswith("funcattr.compat")
    for name in ("attributions_ig", "attributions_occ", "attributions_lgc", "upsamp_attr_lgc"):
        close(mine[name], theirs[name], rtol=1e-4, atol=1e-5)
    assert mine["attributions_lgc"].shape == (1, 1, 16, 16) and mine["upsamp_attr_lgc"].shape == (1, 1, 64, 64)


# --------------------------------------------------------------------------- seed 004

SEED_004 = [
    """
import torch
import torch.nn.functional as F
import torchvision.transforms as transforms
import captum
from captum.attr import IntegratedGradients, Occlusion, LayerGradCam, LayerAttribution
from captum.attr import visualization as viz
import numpy as np
import matplotlib.pyplot as plt
from matplotlib.colors import LinearSegmentedColormap
model = model.eval()
transformed_img = normalize(center_crop(img))
input_img = transformed_img
input_img = input_img.unsqueeze(0) # the model requires a dummy batch dimension
output = model(input_img)
output = F.softmax(output, dim=1)
prediction_score, pred_label_idx = torch.topk(output, 1)
pred_label_idx.squeeze_()
""",
    """
# Initialize the attribution algorithm with the model
integrated_gradients = IntegratedGradients(model)
# Ask the algorithm to attribute our output target to
attributions_ig = integrated_gradients.attribute(input_img, target=pred_label_idx, n_steps=200)
""",
    """
# Show the original image for comparison
_ = viz.visualize_image_attr(None, np.transpose(transformed_img.squeeze().cpu().detach().numpy(), (1,2,0)),
method="original_image", title="Original Image")
""",
    """
default_cmap = LinearSegmentedColormap.from_list('custom blue',
[(0, '#ffffff'),
(0.25, '#0000ff'),
(1, '#0000ff')], N=256)
_ = viz.visualize_image_attr(np.transpose(attributions_ig.squeeze().cpu().detach().numpy(), (1,2,0)),
np.transpose(transformed_img.squeeze().cpu().detach().numpy(), (1,2,0)),
method='heat_map',
cmap=default_cmap,
show_colorbar=True,
sign='positive',
title='Integrated Gradients')
""",
    """
occlusion = Occlusion(model)
attributions_occ = occlusion.attribute(input_img,
target=pred_label_idx,
strides=(3, 8, 8),
sliding_window_shapes=(3,15, 15),
baselines=0)
_ = viz.visualize_image_attr_multiple(np.transpose(attributions_occ.squeeze().cpu().detach().numpy(), (1,2,0)),
np.transpose(transformed_img.squeeze().cpu().detach().numpy(), (1,2,0)),
["original_image", "heat_map", "heat_map", "masked_image"],
["all", "positive", "negative", "positive"],
show_colorbar=True,
titles=["Original", "Positive Attribution", "Negative Attribution", "Masked"],
fig_size=(18, 6)
)
""",
    """
layer_gradcam = LayerGradCam(model, model.layer3[1].conv2)
attributions_lgc = layer_gradcam.attribute(input_img, target=pred_label_idx)
_ = viz.visualize_image_attr(attributions_lgc[0].cpu().permute(1,2,0).detach().numpy(),
sign="all",
title="Layer 3 Block 1 Conv 2")
""",
    """
upsamp_attr_lgc = LayerAttribution.interpolate(attributions_lgc, input_img.shape[2:])
print(attributions_lgc.shape)
print(upsamp_attr_lgc.shape)
print(input_img.shape)
_ = viz.visualize_image_attr_multiple(upsamp_attr_lgc[0].cpu().permute(1,2,0).detach().numpy(),
transformed_img.permute(1,2,0).numpy(),
["original_image","blended_heat_map","masked_image"],
["all","positive","positive"],
show_colorbar=True,
titles=["Original", "Positive Attribution", "Masked"],
fig_size=(18, 6))
""",
]


def test_seed_004_tutorial():
    # Captum 0.9.0 fails on its own documented attr=None for method="original_image" (the
    # third cell): the Captum run skips that cell, the compat run draws it.
    captum_cells = SEED_004[:2] + SEED_004[3:]
    with pytest.raises(AttributeError):
        run(SEED_004[:3], change_imports=False)
    plt.close("all")
    theirs, figs_c = run(captum_cells, change_imports=False)
    mine, figs = run(SEED_004, change_imports=True)
    assert mine["occlusion"].__module__.startswith("funcattr.compat")
    for name in ("attributions_ig", "attributions_occ", "attributions_lgc", "upsamp_attr_lgc"):
        close(mine[name], theirs[name], rtol=1e-4, atol=1e-5)
    (original,) = figs[2]
    assert original.axes[0].get_title() == "Original Image"
    for a, b in zip(figs[:2] + figs[3:], figs_c):
        same_figures(a, b)
    fig, axes = mine["_"]
    assert isinstance(axes, list) and [ax.get_title() for ax in axes] == ["Original", "Positive Attribution", "Masked"]
