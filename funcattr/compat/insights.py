"""Captum Insights' names over :mod:`funcattr.insights`: code written for ``captum.insights``
(removed in Captum 0.9.0) runs with its import lines changed::

    from funcattr.compat.insights import AttributionVisualizer, Batch, ImageFeature

    visualizer = AttributionVisualizer(
        models=[model], score_func=lambda o: torch.nn.functional.softmax(o, 1), classes=classes,
        features=[ImageFeature("Photo", baseline_transforms=[baseline_func], input_transforms=[])],
        dataset=[Batch(input_imgs, labels=[282, 849, 69])],
    )
    visualizer.render()     # in a notebook; visualizer.serve() for a browser tab

As in Captum, transforms take ONE example without its batch dim; the first of
``baseline_transforms`` makes the baseline from the transformed input (zeros without one);
``visualization_transform`` gets the raw example with a batch dim of 1; the attribution target
is the predicted class (or the class clicked in the page).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

import torch
from torch import Tensor

from funcattr import insights

__all__ = ["AttributionVisualizer", "Batch", "BaseFeature", "ImageFeature", "TextFeature", "GeneralFeature"]


def _transforms(t) -> list:
    if t is None:
        return []
    return list(t) if isinstance(t, (list, tuple)) else [t]


def _per_example(transforms: list) -> Callable | None:
    """Captum applies feature transforms to one example (batch dim squeezed): a loop here."""
    if not transforms:
        return None

    def batched(x: Tensor) -> Tensor:
        out = []
        for xi in x:
            for t in transforms:
                xi = t(xi)
            out.append(xi)
        return torch.stack(out)

    return batched


def _unbatch(t: Tensor) -> Tensor:
    return t[0] if t.dim() == 4 and t.shape[0] == 1 else t


class Batch:
    """A batch of examples: ``inputs`` (a Tensor or one Tensor per feature), ``labels`` (one
    per example) and ``additional_args`` (more model arguments; tensors with one row per
    example)."""

    def __init__(self, inputs: Union[Tensor, tuple], labels: Optional[Union[Tensor, Sequence[int]]],
                 additional_args: Any = None) -> None:
        self.inputs = inputs
        self.labels = labels
        self.additional_args = additional_args


class BaseFeature:
    def __init__(self, name: str, baseline_transforms=None, input_transforms=None,
                 visualization_transform: Optional[Callable] = None) -> None:
        self.name = name
        self.baseline_transforms = _transforms(baseline_transforms)
        self.input_transforms = _transforms(input_transforms)
        self.visualization_transform = visualization_transform

    def _baseline(self) -> Any:
        if not self.baseline_transforms:
            return 0.0
        first = self.baseline_transforms[0]
        return lambda x: torch.stack([first(xi) for xi in x])

    def _one(self, fn: Callable) -> Callable:
        return lambda raw: fn(raw.unsqueeze(0))

    def to_funcattr(self) -> insights.Feature:
        raise NotImplementedError


class ImageFeature(BaseFeature):
    """An image input ``[N, C, H, W]`` (grey, RGB or RGBA)."""

    def __init__(self, name: str, baseline_transforms, input_transforms,
                 visualization_transform: Optional[Callable] = None) -> None:
        super().__init__(name, baseline_transforms, input_transforms, visualization_transform)

    @staticmethod
    def visualization_type() -> str:
        return "image"

    def to_funcattr(self) -> insights.Feature:
        vt = self.visualization_transform
        display = None if vt is None else (lambda raw: _unbatch(vt(raw.unsqueeze(0))))
        return insights.image(self.name, baseline=self._baseline(), transform=_per_example(self.input_transforms), display=display)


class TextFeature(BaseFeature):
    """A text input; ``visualization_transform`` maps the example's ids to its tokens."""

    def __init__(self, name: str, baseline_transforms, input_transforms, visualization_transform: Callable) -> None:
        super().__init__(name, baseline_transforms, input_transforms, visualization_transform)

    @staticmethod
    def visualization_type() -> str:
        return "text"

    def to_funcattr(self) -> insights.Feature:
        vt = self.visualization_transform
        tokens = None if vt is None else self._one(vt)
        return insights.text(self.name, tokens=tokens, baseline=self._baseline(), transform=_per_example(self.input_transforms))


class GeneralFeature(BaseFeature):
    """Named columns ``[N, C]`` (tabular data)."""

    def __init__(self, name: str, categories: List[str]) -> None:
        super().__init__(name, None, None, None)
        self.categories = categories

    @staticmethod
    def visualization_type() -> str:
        return "general"

    def to_funcattr(self) -> insights.Feature:
        return insights.tabular(self.name, columns=self.categories)


class _Batches:
    """Captum ``Batch`` objects as funcattr batches; re-iterable when the dataset is."""

    def __init__(self, dataset: Iterable):
        self.dataset = dataset

    def __iter__(self):
        for b in self.dataset:
            if not isinstance(b, Batch):
                raise TypeError(f"dataset must yield Batch objects, got {type(b).__name__}")
            inputs = tuple(b.inputs) if isinstance(b.inputs, (tuple, list)) else b.inputs
            args = b.additional_args
            yield {"inputs": inputs, "labels": b.labels, "args": args}


class AttributionVisualizer:
    """Captum's ``AttributionVisualizer`` on :class:`funcattr.insights.Explorer`: the same
    arguments; ``serve()`` returns the port, ``render()`` shows the page in a notebook."""

    def __init__(self, models, classes: List[str], features, dataset: Iterable[Batch],
                 score_func: Optional[Callable] = None, use_label_for_attr: bool = True) -> None:
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        for f in features:
            if not isinstance(f, BaseFeature):
                raise TypeError(f"features must be ImageFeature, TextFeature or GeneralFeature objects, got {type(f).__name__}")
        self.models, self.classes, self.features, self.dataset = models, classes, features, dataset
        self.score_func, self.use_label_for_attr = score_func, use_label_for_attr
        self.explorer = insights.Explorer(models, classes=classes, data=_Batches(dataset),
                                          features=[f.to_funcattr() for f in features], score=score_func,
                                          title="funcattr insights")

    def serve(self, blocking: bool = False, debug: bool = False, port: Optional[int] = None, bind_all: bool = False) -> int:
        """Serve the page (``bind_all``: on every interface) and return the port."""
        url = self.explorer.serve(host="0.0.0.0" if bind_all else "127.0.0.1", port=port or 0)
        print(f"\nFetch data and view funcattr insights at {url}\n", flush=True)
        port = self.explorer.port
        if blocking:
            try:
                while self.explorer.url is not None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                self.explorer.stop()
        return port

    def render(self, debug: bool = True) -> None:
        """Show the page in the notebook (served on 127.0.0.1)."""
        self.explorer.render()

    def stop(self) -> None:
        """Stop serving (not in Captum, which could not)."""
        self.explorer.stop()
