"""funcattr vs Captum 0.9.0 vs the hardware limit, measured side by side in one process.

    python -m benchmarks.run --quick                 # CPU, small model, a few minutes
    python -m benchmarks.run --device cuda --json results.json
    python -m benchmarks.run --quick --cases integrated_gradients occlusion

The limit is the model's own plain batched forward (or forward+backward) over exactly the
points the method evaluates, built by hand and run in chunks of the fastest row count (a few
are searched per case; ``limit rows`` in the table). Columns: seconds per call (median), the
ratios funcattr/limit (target ≤ 1.05) and Captum/funcattr, and peak CUDA memory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

import torch

from . import common
from .common import Setup, peak_memory, time_fns

FAMILIES = ["cases_gradient", "cases_perturbation", "cases_layers", "cases_backward"]


def all_cases():
    cases = []
    for fam in FAMILIES:
        try:
            mod = importlib.import_module(f"benchmarks.{fam}")
        except ModuleNotFoundError as err:
            if err.name != f"benchmarks.{fam}":
                raise
            continue
        cases += mod.CASES
    return cases


def fmt(v, unit=""):
    if v is None:
        return "—"
    if unit == "s":
        return f"{v * 1e3:.1f} ms" if v < 10 else f"{v:.1f} s"
    if unit == "B":
        return f"{v / 2**20:.0f} MiB"
    return f"{v:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="small model and shapes (CPU, a few minutes)")
    p.add_argument("--json", metavar="PATH", help="write the results as a JSON list")
    p.add_argument("--repeat", type=int, default=None, help="timed repetitions per callable")
    p.add_argument("--cases", nargs="*", help="run only these cases")
    p.add_argument("--model", default="resnet18", choices=["resnet18", "resnet101"], help="model of the full (non-quick) run")
    p.add_argument("--no-captum-default", action="store_true", help="skip Captum's (slow) default-call column")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="wall time, or this process's CPU time (busy machines)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    device = torch.device(a.device)
    common.set_clock(a.clock)
    if a.threads:
        torch.set_num_threads(a.threads)
    setup = Setup(device=device, quick=a.quick, repeat=a.repeat or (3 if a.quick else 10), model_full=a.model)
    torch.manual_seed(0)
    cases = all_cases()
    if a.cases:
        unknown = set(a.cases) - {c.name for c in cases}
        if unknown:
            p.error(f"unknown cases {sorted(unknown)}; available: {[c.name for c in cases]}")
        cases = [c for c in cases if c.name in a.cases]
    rows = []
    head = (
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}"
        f" ({device.type}, {torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"{'quick (small CNN, 32 px)' if a.quick else a.model + ', 224 px'}, {time.strftime('%Y-%m-%d')}, "
        f"{a.clock} clock, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print(head, file=sys.stderr)
    for case in cases:
        t0 = time.perf_counter()
        built = case.build(setup)
        fns = {"funcattr": built.funcattr, "limit": built.limit}
        if built.captum_best is not None:
            fns["captum_best"] = built.captum_best
        if built.captum_default is not None and not a.no_captum_default and built.captum_default is not built.captum_best:
            fns["captum_default"] = built.captum_default
        times = time_fns(fns, device, setup.repeat)
        if "captum_default" not in fns and built.captum_default is built.captum_best:
            times["captum_default"] = times.get("captum_best")
        mem = {k: peak_memory(fn, device) for k, fn in fns.items()}
        row = {
            "case": case.name,
            "device": device.type,
            "points": built.points,
            "note": built.note,
            "funcattr_s": times["funcattr"],
            "limit_s": times["limit"],
            "limit_rows": getattr(built.limit, "chunk", None),
            "captum_s": times.get("captum_best"),
            "captum_default_s": times.get("captum_default"),
            "funcattr_over_limit": times["funcattr"] / times["limit"],
            "captum_over_funcattr": times["captum_best"] / times["funcattr"] if "captum_best" in times else None,
            "captum_default_over_funcattr": (
                times["captum_default"] / times["funcattr"] if times.get("captum_default") else None
            ),
            "peak_bytes": {k: v for k, v in mem.items() if v is not None} or None,
        }
        rows.append(row)
        print(f"  {case.name}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    print(f"\n{head}\n")
    print("| case | points | funcattr | limit | limit rows | funcattr/limit | Captum best | Captum default | Captum best/funcattr | Captum default/funcattr | peak mem (fa / limit / captum) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pk = r["peak_bytes"] or {}
        print(
            f"| {r['case']}{' (' + r['note'] + ')' if r['note'] else ''} | {r['points']} | {fmt(r['funcattr_s'], 's')} | {fmt(r['limit_s'], 's')} "
            f"| {r['limit_rows'] or '—'} "
            f"| {fmt(r['funcattr_over_limit'])} | {fmt(r['captum_s'], 's')} | {fmt(r['captum_default_s'], 's')} "
            f"| {fmt(r['captum_over_funcattr'])} | {fmt(r['captum_default_over_funcattr'])} "
            f"| {' / '.join(fmt(pk.get(k), 'B') for k in ('funcattr', 'limit', 'captum_best'))} |"
        )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
