"""Shared benchmark plumbing: models, timing, memory, and the Case record.

A case builds callables over the SAME points: ``funcattr`` (our call), ``limit`` (the model's
own plain batched forward or forward+backward over exactly the points the method evaluates,
built by hand), and Captum's call at its best setting and as the tutorials call it. Each is
timed in this process, alternately, after warm-up.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import torch
from torch import nn


@dataclasses.dataclass
class Setup:
    device: torch.device
    quick: bool
    repeat: int = 5
    model_full: str = "resnet18"

    def model(self, name: str) -> nn.Module:
        """``small`` (quick CPU model), ``resnet18`` or ``resnet101`` (random weights)."""
        torch.manual_seed(0)
        if name == "small":
            m = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
            )
        else:
            import torchvision

            m = getattr(torchvision.models, name)(weights=None)
        return m.eval().to(self.device)

    def image_size(self) -> int:
        return 32 if self.quick else 224

    def model_name(self) -> str:
        return "small" if self.quick else self.model_full


@dataclasses.dataclass
class Built:
    funcattr: Callable[[], object]
    limit: Callable[[], object]
    captum_best: Callable[[], object] | None = None
    captum_default: Callable[[], object] | None = None
    points: int = 0  # rows the method evaluates
    note: str = ""


@dataclasses.dataclass
class Case:
    name: str
    build: Callable[[Setup], Built]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fns(fns: dict[str, Callable], device: torch.device, repeat: int) -> dict[str, float]:
    """Median seconds per call; the callables are interleaved so drift hits all alike."""
    for fn in fns.values():  # warm-up (and the executor's one-time memory probe)
        fn()
        fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_memory(fn: Callable, device: torch.device) -> float | None:
    """Peak CUDA bytes above the baseline during ``fn`` (None on CPU)."""
    if device.type != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return float(torch.cuda.max_memory_allocated(device) - base)


def grad_limit(model: nn.Module, points: torch.Tensor, target: int | torch.Tensor) -> Callable[[], object]:
    """Plain forward+backward of the model over pre-built points (the hardware limit)."""

    def run():
        p = points.detach().requires_grad_(True)
        out = model(p)
        s = out[:, target] if isinstance(target, int) else out.gather(1, target.view(-1, 1))
        return torch.autograd.grad(s.sum(), p)[0]

    return run


def forward_limit(model: nn.Module, points: torch.Tensor) -> Callable[[], object]:
    """Plain batched forward over pre-built points under no_grad (the hardware limit)."""

    def run():
        with torch.no_grad():
            return model(points)

    return run
