"""Incremental occlusion: multiply-adds saved per layer, exactness, and speed against the
honest limit (a plain batched forward over the same 1 + n occluded images in the fastest
chunks, ``common.Limit``) — the seed configurations on a torchvision model::

    python -m benchmarks.incremental                      # resnet18, 224 px, 45/9 and 15/8
    python -m benchmarks.incremental --model resnet50 --configs 45/9
    python -m benchmarks.incremental --quick              # 64 px, scaled windows (a minute)
    python -m benchmarks.incremental --flops-only         # the per-layer table, no timing
    python -m benchmarks.incremental --full-at 0.7        # another switch to full maps

The FLOPs table comes from ``funcattr._incremental.flops`` (the plan the incremental path
runs): per convolution/linear node, multiply-adds per window of the plain forward and of the
incremental one.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torchvision

import funcattr as fa
from funcattr import _incremental

from . import common
from .cases_perturbation import _occluded, _path_taken

SEED_CONFIGS = {"45/9": ((3, 45, 45), (3, 9, 9)), "15/8": ((3, 15, 15), (3, 8, 8))}
QUICK_CONFIGS = {"45/9": ((3, 13, 13), (3, 3, 3)), "15/8": ((3, 4, 4), (3, 2, 2))}  # the same ratios at 64 px


def flops_table(model, n: int, window, stride) -> str:
    rows = _incremental.flops(model, (3, n, n), window, stride)
    lines = ["| node | op | plain MACs/window | incremental MACs/window | saved |", "|---|---|---|---|---|"]
    for name, op, plain, inc in rows:
        lines.append(f"| {name} | {op} | {plain / 1e6:.2f} M | {inc / 1e6:.2f} M | {1 - inc / plain:.0%} |")
    tp, ti = sum(r[2] for r in rows), sum(r[3] for r in rows)
    lines.append(f"| **total** | | {tp / 1e9:.3f} G | {ti / 1e9:.3f} G | {1 - ti / tp:.0%} |")
    return "\n".join(lines)


def case(model, n: int, window, stride, repeat: int, device) -> dict:
    torch.manual_seed(0)
    x = torch.randn(1, 3, n, n, device=device)
    f = fa.target(model, 3)
    inc = fa.occlusion(f, window, stride, incremental=True)
    plain = fa.occlusion(f, window, stride, incremental=False)
    a, b = inc(x), plain(x)
    err = ((a - b).abs().max() / b.abs().max()).item()
    pts = _occluded(x, window, stride, 0.0)
    limit = common.forward_limit(model, pts)
    times = common.time_fns({"incremental": lambda: inc(x), "plain": lambda: plain(x), "limit": limit}, device, repeat)
    return {
        "windows": pts.shape[0] - 1,
        "default path": _path_taken(lambda: fa.occlusion(f, window, stride)(x)),
        "max |inc - plain| / max |plain|": err,
        "limit rows": limit.chunk,
        **{f"{k} s": v for k, v in times.items()},
        "incremental/limit": times["incremental"] / times["limit"],
        "plain/limit": times["plain"] / times["limit"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18", choices=["resnet18", "resnet50", "resnet101", "vgg11"])
    p.add_argument("--quick", action="store_true", help="64 px, windows scaled to keep the seeds' ratios")
    p.add_argument("--configs", nargs="*", default=list(SEED_CONFIGS), choices=list(SEED_CONFIGS))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--flops-only", action="store_true")
    p.add_argument("--full-at", type=float, default=None, help=f"override _incremental.FULL_AT ({_incremental.FULL_AT})")
    a = p.parse_args(argv)
    if a.full_at is not None:
        _incremental.FULL_AT = a.full_at
    common.set_clock(a.clock)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = getattr(torchvision.models, a.model)(weights=None).eval().to(device)
    n = 64 if a.quick else 224
    configs = QUICK_CONFIGS if a.quick else SEED_CONFIGS
    print(
        f"{a.model}, {n} px, {device.type} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"{platform.processor() or 'cpu'}, {time.strftime('%Y-%m-%d')}, {a.clock} clock, FULL_AT {_incremental.FULL_AT}, "
        f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}\n"
    )
    for name in a.configs:
        window, stride = configs[name]
        print(f"### window {window[1]} / stride {stride[1]} (seed setting {name})\n")
        print(flops_table(model.cpu(), n, window, stride) + "\n")
        model.to(device)
        if not a.flops_only:
            for k, v in case(model, n, window, stride, a.repeat, device).items():
                print(f"- {k}: {v:.3g}" if isinstance(v, float) else f"- {k}: {v}")
            print()


if __name__ == "__main__":
    main()
