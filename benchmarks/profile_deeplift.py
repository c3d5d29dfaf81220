"""DeepLift against its honest limit, with a torch.profiler breakdown.

The limit of DeepLift over B examples is what any implementation must do: a plain forward of
the B baseline rows (no autograd) plus a forward+backward of the B example rows, built by
hand over the same points. Also shown: a plain forward+backward over the ``2B`` stacked
points ``[x; baseline]`` (the limit in ``cases_backward``, what a one-batch DeepLift such as
Captum's evaluates). ``python -m benchmarks.profile_deeplift [--full] [--repeat N]
[--profile] [--threads N] [--cpu-time]``: the small CNN at 32×32, B=32 (default), or resnet18 at 224×224, B=16 (``--full``).
Medians of interleaved calls; ``--profile`` adds the top ops by self CPU time for both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import funcattr as fa

from .common import Setup


def build(full: bool):
    setup = Setup(device=torch.device("cpu"), quick=not full)
    model = setup.model(setup.model_name())
    n, B = setup.image_size(), (16 if full else 32)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 3, n, n, generator=g)
    base = torch.zeros_like(x)
    dl = fa.deeplift(fa.target(model, 3), baseline=0.0)

    def limit():
        with torch.no_grad():
            model(base)
        p = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(p)[:, 3].sum(), p)[0]

    pts = torch.cat([x, base])

    def limit_2b():
        p = pts.detach().requires_grad_(True)
        return torch.autograd.grad(model(p)[:, 3].sum(), p)[0]

    return model, x, {"funcattr": lambda: dl(x), "limit": limit, "fwd+bwd 2B": limit_2b}


def timed(fns: dict, repeat: int, clock=time.perf_counter) -> dict:
    """Median seconds per call of each function, calls interleaved. ``clock``: wall time, or
    ``time.process_time`` (this process's CPU time: with one thread, less sensitive to other
    processes on a loaded machine)."""
    for fn in fns.values():
        fn()
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = clock()
            fn()
            times[k].append(clock() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def profile(fn, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile as prof

    fn()
    with prof(activities=[ProfilerActivity.CPU]) as p:
        fn()
    return p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cpu-time", action="store_true", help="time by process CPU time (use with --threads 1 on a loaded machine)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, x, fns = build(args.full)
    t = timed(fns, args.repeat, time.process_time if args.cpu_time else time.perf_counter)
    print(f"{'resnet18 224px B=16' if args.full else 'small CNN 32px B=32'}: funcattr {t['funcattr'] * 1e3:.1f} ms, "
          f"limit {t['limit'] * 1e3:.1f} ms, ratio {t['funcattr'] / t['limit']:.3f}; fwd+bwd over 2B rows "
          f"{t['fwd+bwd 2B'] * 1e3:.1f} ms, ratio {t['funcattr'] / t['fwd+bwd 2B']:.3f} (threads {torch.get_num_threads()}, "
          f"{'CPU' if args.cpu_time else 'wall'} time, median of {args.repeat})")
    if args.profile:
        for k, fn in fns.items():
            print(f"--- {k}\n{profile(fn)}")


if __name__ == "__main__":
    main()
