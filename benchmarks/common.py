"""Shared benchmark plumbing: models, timing, memory, and the Case record.

A case builds callables over the SAME points: ``funcattr`` (our call), ``limit`` (the model's
own plain batched forward or forward+backward over exactly the points the method evaluates,
built by hand), and Captum's call at its best setting and as the tutorials call it. Each is
timed in this process, alternately, after warm-up.

The limit is *honest*: the points are pre-built and evaluated in chunks of the row count that
runs fastest on this device (``Limit``: a few sizes are searched first), not as one giant
batch (on a CPU one batch of hundreds of images is slower than cache-sized chunks).
"""

from __future__ import annotations

import dataclasses
import math
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
    limit: "Limit | Callable[[], object]"
    captum_best: Callable[[], object] | None = None
    captum_default: Callable[[], object] | None = None
    points: int = 0  # rows the method evaluates
    note: str = ""


@dataclasses.dataclass
class Case:
    name: str
    build: Callable[[Setup], Built]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter  # set by run.py --clock; "cpu" (this process's CPU time) resists a busy machine


def set_clock(name: str) -> None:
    global clock
    clock = CLOCKS[name]


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
            t = clock()
            fn()
            sync(device)
            times[k].append(clock() - t)
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


CHUNK_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Limit:
    """The hardware limit of a case: ``rows(lo, hi)`` evaluates points ``lo:hi`` (a plain
    forward, or forward+backward, of the model on pre-built points); calling the limit runs
    all ``n`` points in chunks of ``chunk`` rows, the fastest of ``CHUNK_ROWS`` (and ``n``
    itself when it is at most 256) on a probe of the first ``max(chunk, probe)`` points, best of
    two runs per candidate."""

    def __init__(self, rows: Callable[[int, int], object], n: int, device: torch.device, probe: int = 64):
        self.rows, self.n = rows, n
        cands = sorted({c for c in CHUNK_ROWS if c < n} | ({n} if n <= max(CHUNK_ROWS) else set()))
        self.searched = {}
        for c in cands:
            m = min(n, max(c, probe))
            self._run(c, m)  # warm-up at this shape
            best = math.inf
            for _ in range(2):
                sync(device)
                t = clock()
                self._run(c, m)
                sync(device)
                best = min(best, clock() - t)
            self.searched[c] = best / m
        self.chunk = min(self.searched, key=self.searched.get)

    def _run(self, chunk: int, n: int):
        return [self.rows(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]

    def __call__(self):
        return self._run(self.chunk, self.n)


def grad_limit(model: nn.Module, points: torch.Tensor, target: int | torch.Tensor) -> Limit:
    """Plain forward+backward of the model over pre-built points, in the fastest chunks."""

    def rows(lo, hi):
        p = points[lo:hi].detach().requires_grad_(True)
        out = model(p)
        s = out[:, target] if isinstance(target, int) else out.gather(1, target[lo:hi].view(-1, 1))
        return torch.autograd.grad(s.sum(), p)[0]

    return Limit(rows, points.shape[0], points.device)


def forward_limit(model: nn.Module, points: torch.Tensor) -> Limit:
    """Plain batched forward over pre-built points under no_grad, in the fastest chunks."""

    def rows(lo, hi):
        with torch.no_grad():
            return model(points[lo:hi])

    return Limit(rows, points.shape[0], points.device)
