"""Throughput of ``fa.attribute_dataset`` against the loop users write by hand, and across
processes.

    python -m benchmarks.dataset                       # zoo model, 512 images, IG 32 steps, CPU
    python -m benchmarks.dataset --method saliency --n 1024
    python -m benchmarks.dataset --device cuda --model resnet50 --size 224 --n 2048

In one process, over the same batches of the same dataset (median of ``--repeat`` runs, the
variants interleaved so drift hits all alike):

* ``hand loop``: ``attr_fn(x[b], target=y[b]).cpu()`` per batch, results kept in memory — what
  users write today (and the bar: at most 3 % overhead);
* ``hand loop + writes``: the same, then each batch written to a zarr store in the loop (no
  overlap of loading, compute and writing);
* ``attribute_dataset``: the call, into a fresh store (store creation and manifest included),
  without ``model=`` (so no extra prediction forward) and with it.

Then (``--processes 1 2``) the call under ``torchrun --nproc-per-node P`` against one process,
timed inside the job (rank 0, from the call to its return), so start-up is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import funcattr as fa


def build(model_name: str, n: int, size: int, device: torch.device):
    """→ (model, dataset of (x, label, mask) items, layer)."""
    if model_name == "zoo":
        from funcattr import zoo

        model = zoo.load(device=device)
        x, y, m = zoo.make_shapes(n, seed=zoo.TEST_SEED)
        return model, torch.utils.data.TensorDataset(x, y, m)
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, weights=None).eval().to(device)
    x = torch.rand(n, 3, size, size)
    y = torch.randint(0, 1000, (n,))
    return model, torch.utils.data.TensorDataset(x, y)


def method(name: str, model, steps: int):
    g = fa.target(model)
    if name == "ig":
        return fa.integrated_gradients(g, steps=steps)
    if name == "saliency":
        return fa.saliency(g)
    if name == "smoothgrad":
        return fa.noise_tunnel(fa.saliency(g), samples=10, stdev=0.15)
    raise SystemExit(f"unknown method {name}")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_loop(attr_fn, data, B, device, write_to=None):
    x, y = data.tensors[0], data.tensors[1]
    n = len(x)
    arr = None
    if write_to is not None:
        import zarr

        shutil.rmtree(write_to, ignore_errors=True)
        g = zarr.open_group(write_to, mode="w", zarr_format=3)
        arr = g.create_array("attributions", shape=tuple(x.shape), chunks=(1, *x.shape[1:]), shards=(B, *x.shape[1:]), dtype="float32", compressors=None)
    out = []
    for lo in range(0, n, B):
        xb = x[lo : lo + B].to(device, non_blocking=True)
        yb = y[lo : lo + B].to(device, non_blocking=True)
        a = attr_fn(xb, target=yb).cpu()
        if arr is not None:
            arr[lo : lo + len(a)] = a.numpy()
        else:
            out.append(a)
    sync(device)
    return out


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: every thread, the writer's included). On a
    machine shared with other jobs the CPU time is the steadier measure of overhead."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def in_process(a, device, tmp):
    model, data = build(a.model, a.n, a.size, device)
    attr_fn = method(a.method, model, a.steps)
    n, B = a.n, a.batch_size
    variants = {
        "hand loop": lambda: hand_loop(attr_fn, data, B, device),
        "hand loop + writes": lambda: hand_loop(attr_fn, data, B, device, write_to=os.path.join(tmp, "hand.zarr")),
        "attribute_dataset": lambda: fa.attribute_dataset(attr_fn, data, os.path.join(tmp, "a.zarr"), batch_size=B, overwrite=True, progress=False, device=device),
        "attribute_dataset, model=": lambda: fa.attribute_dataset(attr_fn, data, os.path.join(tmp, "b.zarr"), model=model, batch_size=B, overwrite=True, progress=False),
    }
    attr_fn(data.tensors[0][:B].to(device), target=data.tensors[1][:B].to(device))  # warm-up, cost probe
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for _ in range(a.repeat):
        for k, fn in variants.items():
            times[k].append(timed(fn))
    rows = []
    for k, ts in times.items():
        wall = statistics.median(t[0] for t in ts)
        cpu = statistics.median(t[1] for t in ts)
        rows.append({"variant": k, "seconds": wall, "cpu_seconds": cpu, "examples_per_s": n / wall, "all": ts})
    for r in rows:
        r["overhead"] = r["seconds"] / rows[0]["seconds"] - 1
        r["cpu_overhead"] = r["cpu_seconds"] / rows[0]["cpu_seconds"] - 1
    return rows


def job(a):
    """One process of a scaling run (under torchrun): time the call, print it on rank 0."""
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    model, data = build(a.model, a.n, a.size, device)
    attr_fn = method(a.method, model, a.steps)
    t0 = time.perf_counter()
    fa.attribute_dataset(attr_fn, data, a.out, model=model, batch_size=a.batch_size, overwrite=True, progress=False)
    dt = time.perf_counter() - t0
    if int(os.environ.get("RANK", "0")) == 0:
        print("RESULT " + json.dumps({"seconds": dt, "threads": torch.get_num_threads()}))


def scaling(a, tmp):
    rows = []
    for p in a.processes:
        out = os.path.join(tmp, f"p{p}.zarr")
        # --examples, not --n: torchrun reads --n as an ambiguous abbreviation of its own options
        args = ["-m", "benchmarks.dataset", "--job", "--out", out, "--model", a.model, "--examples", str(a.n), "--size", str(a.size),
                "--method", a.method, "--steps", str(a.steps), "--batch-size", str(a.batch_size), "--device", a.device]
        if p == 1:
            cmd = [sys.executable, *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(p), *args]
        best = []
        for _ in range(a.repeat):
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
            if r.returncode or not line:
                raise SystemExit(f"{p} processes failed:\n{r.stderr[-3000:]}")
            best.append(json.loads(line[0][7:]))
        secs = statistics.median(b["seconds"] for b in best)
        rows.append({"processes": p, "threads_per_process": best[0]["threads"], "seconds": secs, "examples_per_s": a.n / secs, "all": [b["seconds"] for b in best]})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="zoo", help="zoo (ShapesNet, 64x64) or a torchvision name (random weights)")
    p.add_argument("--size", type=int, default=224, help="image size for torchvision models")
    p.add_argument("--n", "--examples", dest="n", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--method", default="ig", choices=["ig", "saliency", "smoothgrad"])
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--processes", type=int, nargs="*", default=[1, 2])
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--workdir", default=None, help="where the stores are written (default: the system's temporary folder)")
    p.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.job:
        return job(a)
    device = torch.device(a.device)
    what = f"{a.model} {'64x64' if a.model == 'zoo' else f'{a.size}x{a.size}'}, {a.method}" + (f" {a.steps} steps" if a.method == "ig" else "")
    print(f"{what}, {a.n} examples, batch {a.batch_size}, {device}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="funcattr-bench-", dir=a.workdir) as tmp:
        rows = in_process(a, device, tmp)
        print(f"\n| {'one process':<26} | {'wall s':>7} | {'examples/s':>10} | {'vs hand loop':>12} | {'CPU s':>7} | {'CPU vs hand':>11} |")
        print(f"|{'-' * 28}|{'-' * 9}|{'-' * 12}|{'-' * 14}|{'-' * 9}|{'-' * 13}|")
        for r in rows:
            print(
                f"| {r['variant']:<26} | {r['seconds']:>7.2f} | {r['examples_per_s']:>10.1f} | {r['overhead']:>+11.1%} "
                f"| {r['cpu_seconds']:>7.2f} | {r['cpu_overhead']:>+10.1%} |"
            )
        scale = scaling(a, tmp) if a.processes else []
        if scale:
            print(f"\n| {'processes (torchrun)':<20} | {'threads each':>12} | {'s':>7} | {'examples/s':>10} | {'speed-up':>8} |")
            print(f"|{'-' * 22}|{'-' * 14}|{'-' * 9}|{'-' * 12}|{'-' * 10}|")
            for r in scale:
                print(f"| {r['processes']:<20} | {r['threads_per_process']:>12} | {r['seconds']:>7.2f} | {r['examples_per_s']:>10.1f} | {scale[0]['seconds'] / r['seconds']:>7.2f}x |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"setup": what, "in_process": rows, "scaling": scale}, fh, indent=1)


if __name__ == "__main__":
    main()
