"""``fa.attribute_dataset``: one attribution function over a whole map-style dataset, streamed
into a store on disk, resumable after a crash, shared across the processes of ``torchrun``.

The unit of work is the *batch*: rows ``b*B .. b*B + B - 1`` of the dataset, the same batches
whatever the number of processes. A batch is loaded (DataLoader workers, pinned memory),
attributed on the process's device, copied back and handed to a writer thread, which commits
it to the store (:mod:`funcattr._store`) while the next batch computes. Pending batches are
dealt round-robin to the ranks, so no example is computed twice and none is padded. Each batch
runs under its own random seed (``seed``, batch number), so sampling methods give the same
numbers whichever process computes the batch, and after any resume.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import _store
from ._distributed import Ranks, ranks
from ._fingerprint import describe, weights_sha256
from ._items import Bad, Batch, Checked, Spec, collate

__all__ = ["attribute_dataset", "METRICS"]

METRICS = ("deletion", "insertion", "pointing", "mass")
_WRITE_DEPTH = 2  # batches waiting for the writer thread


def attribute_dataset(
    attr_fn: Callable,
    data: Any,
    out: str | os.PathLike,
    *,
    model: torch.nn.Module | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    target: str | int | None = "label",
    metrics: Sequence[str | tuple[str, Callable]] = (),
    dtype: str | torch.dtype = "float32",
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> _store.Store:
    """Attribute every example of ``data`` with ``attr_fn`` into a store at ``out``::

        g = fa.target(model)                                  # target given per batch
        store = fa.attribute_dataset(fa.integrated_gradients(g, steps=32), val_set, "ig.zarr",
                                     model=model, target="label", metrics=["deletion"], dtype="float16")
        store.attributions[i]                                 # [3, 224, 224], read from disk

    ``data``: a map-style dataset (``len`` and ``data[i]``) whose items are an input Tensor,
    ``(x, label)`` or ``(x, label, mask)``; ``x`` may be a tuple of Tensors (several inputs).
    ``target``: ``"label"`` (the item's label), ``"pred"`` (the model's prediction), a class
    index, or None (``attr_fn(x)`` alone, its function fixes what is explained); otherwise
    ``attr_fn(x, target=t)`` is called with ``t`` the batch's ``[B]`` targets.
    ``model``: the model inside ``attr_fn``; needed for predictions, ``target="pred"`` and the
    deletion/insertion metrics, and fingerprinted into the manifest.
    ``metrics``: any of ``"deletion"``, ``"insertion"`` (``fa.metrics``, on the target's
    score), ``"pointing"``, ``"mass"`` (against the items' masks), or ``(name, fn)`` pairs with
    ``fn(x, attributions, targets, masks) -> Tensor[B]``.
    ``dtype``: how attributions are stored: float32 (default), float16 or bfloat16; metrics
    use the full-precision maps.

    Each finished batch is committed atomically. Run the same call again after a crash (or
    ``kill -9``) and it finishes the job (``resume=True``), bitwise equal to a run that was
    never interrupted; a store made with other settings is refused unless ``overwrite=True``.
    Under ``torchrun`` every process calls this with the same arguments: each takes its share
    of the batches on its own device (``cuda:LOCAL_RANK`` or the CPU) and writes its own files;
    rank 0 writes the manifest and shows the progress bar. ``out`` must then be on a file
    system every process sees.

    ``device``: default ``cuda:LOCAL_RANK`` under a launcher with CUDA, else the model's
    device, else the CPU (``model`` is moved there). ``seed``: of each batch's random stream.
    ``num_workers``: DataLoader worker processes (default: 0 on CPU, where the model already
    uses every core; up to 4 per GPU). Returns the store, opened for reading
    (:func:`open_store`).
    """
    job = _Job.build(attr_fn, data, model, batch_size, num_workers, target, metrics, dtype, seed)
    out = os.fspath(out)
    rk = ranks()
    try:
        job.place(rk, device)
        return _run(job, rk, out, resume=resume, overwrite=overwrite, progress=progress)
    finally:
        rk.close()


# --------------------------------------------------------------------------- the job


class _Job:
    """The validated arguments and everything derived from them before any batch runs."""

    @classmethod
    def build(cls, attr_fn, data, model, batch_size, num_workers, target, metrics, dtype, seed) -> "_Job":
        self = cls()
        if not callable(attr_fn):
            raise TypeError(f"attr_fn must be an attribution function, got {type(attr_fn).__name__}")
        if isinstance(data, torch.utils.data.IterableDataset) or not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
            raise TypeError(
                f"data must be a map-style dataset (len(data) and data[i]), got {type(data).__name__}; "
                "an iterable dataset cannot be split by index or resumed"
            )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
            raise ValueError(f"num_workers must be an int >= 0 or None, got {num_workers!r}")
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (the model inside attr_fn), got {type(model).__name__}")
        if not (target in ("label", "pred", None) or (isinstance(target, int) and not isinstance(target, bool) and target >= 0)):
            raise ValueError(f"target must be 'label', 'pred', a class index >= 0 or None, got {target!r}")
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).replace("torch.", "")
        if dtype not in _store.DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_store.DTYPES)}, got {dtype!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        n = len(data)
        if n == 0:
            raise ValueError("data is empty: nothing to attribute")
        _store._zarr()  # fail early, before any work, if zarr is missing
        self.attr_fn, self.data, self.model, self.B, self.N = attr_fn, data, model, batch_size, n
        self.num_workers, self.target, self.dtype_name, self.seed = num_workers, target, dtype, seed
        self.dtype = _store.DTYPES[dtype]
        self.delta = bool(getattr(attr_fn, "returns_delta", False))
        self.metrics = _metric_fns(metrics)
        self.spec = Spec.of(data)
        needs_model = [m for m in self.metrics if m in ("deletion", "insertion")] + (["target='pred'"] if target == "pred" else [])
        if needs_model and model is None:
            raise ValueError(f"{', '.join(needs_model)} need the model: pass model=")
        if target is None and any(m in ("deletion", "insertion") for m in self.metrics):
            raise ValueError("deletion/insertion score the target class; give target='label', 'pred' or a class index")
        if target == "label" and not self.spec.has_label:
            raise ValueError("target='label' but the dataset items carry no label (item 0 is not (x, label, ...)); use target='pred' or a class index")
        masks = [m for m in self.metrics if m in ("pointing", "mass")]
        if masks and self.spec.mask_shape is None:
            raise ValueError(f"{', '.join(masks)} need ground-truth masks, but the dataset items have none (give items (x, label, mask))")
        return self

    def place(self, rk: Ranks, device) -> None:
        self.device = rk.device(self.model, device)
        if self.model is not None:
            self.model.to(self.device)  # in place: attr_fn's closure holds the same module
        if self.num_workers is None:
            cpus = max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
            self.num_workers = min(4, cpus) if self.device.type == "cuda" else 0

    def settings(self) -> dict:
        """What must be equal for two runs to write the same store."""
        known: dict[int, str] = {}
        model = None
        if self.model is not None:
            known[id(self.model)] = weights_sha256(self.model)
            model = {"class": type(self.model).__qualname__, "weights": known[id(self.model)]}
        return {
            "method": getattr(self.attr_fn, "__name__", type(self.attr_fn).__name__),
            "attr_fn": describe(self.attr_fn, known),
            "model": model,
            "dataset": {"length": self.N, "first_item": self.spec.sha256},
            "batch_size": self.B,
            "target": self.target,
            "metrics": list(self.metrics),
            "dtype": self.dtype_name,
            "seed": self.seed,
        }

    # ---- one batch

    def compute(self, batch: Batch) -> dict[str, Tensor]:
        """Attributions, targets, predictions and metrics of one batch, on the device."""
        dev = self.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(_batch_seed(self.seed, batch.batch))
            xs = tuple(t.to(dev, non_blocking=True) for t in batch.inputs)
            x = xs if self.spec.several else xs[0]
            cols: dict[str, Tensor] = {}
            n = xs[0].shape[0]
            lo = batch.batch * self.B
            if self.model is not None:
                with torch.no_grad():
                    logits = self.model(*xs)
                if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
                    raise ValueError(
                        f"the model returned {_shape(logits)} for a batch of {n}; predictions need logits [B, classes]"
                    )
                cols["predictions"] = logits.argmax(1)
            targets = self._targets(batch, cols.get("predictions"), n, lo, logits.shape[1] if self.model is not None else None)
            if targets is not None:
                cols["targets"] = targets
            res = self.attr_fn(x) if targets is None else self.attr_fn(x, target=targets)
            delta = None
            if self.delta:
                res, delta = res
            attrs = res if isinstance(res, tuple) else (res,)
            if not all(isinstance(a, Tensor) and a.dim() >= 1 and a.shape[0] == n for a in attrs):
                raise ValueError(f"attr_fn returned {_shape(res)} for a batch of {n} examples; expected a Tensor [B, ...] (or a tuple of them)")
            if isinstance(res, tuple):
                cols.update({f"attributions_{k}": a.detach().to(self.dtype) for k, a in enumerate(attrs)})
            else:
                cols["attributions"] = res.detach().to(self.dtype)
            masks = None if batch.masks is None else batch.masks.to(dev, non_blocking=True)
            if delta is not None:
                cols["metrics/delta"] = delta.detach().float()
            for name, fn in self.metrics.items():
                v = fn(x, res, targets, masks) if callable(fn) else self._metric(name, x, res, targets, masks)
                if not isinstance(v, Tensor) or v.dim() < 1 or v.shape[0] != n:
                    raise ValueError(f"metric {name!r} returned {_shape(v)}; expected a Tensor [B] for a batch of {n}")
                cols[f"metrics/{name}"] = v.detach().float()
            return cols

    def _targets(self, batch: Batch, preds, n: int, lo: int, classes: int | None) -> Tensor | None:
        if self.target is None:
            return None
        if self.target == "label":
            t = batch.labels.to(self.device, non_blocking=True)
        elif self.target == "pred":
            t = preds
        else:
            t = torch.full((n,), self.target, dtype=torch.int64, device=self.device)
        if classes is not None and bool((t >= classes).any()):
            k = int((t >= classes).nonzero()[0, 0])
            raise ValueError(
                f"dataset item {lo + k}: target {int(t[k])} is out of range for a model with {classes} classes"
                + (" (its label)" if self.target == "label" else "")
            )
        return t

    def _metric(self, name: str, x, a, targets, masks) -> Tensor:
        import funcattr as fa

        if name in ("deletion", "insertion"):
            if isinstance(x, tuple) or isinstance(a, tuple):
                raise ValueError(f"the {name} metric takes one input tensor; this dataset has several")
            if a.shape != x.shape:  # e.g. a [B, 1, H, W] CAM: each pixel's score for all channels
                try:
                    a = a.expand_as(x)
                except RuntimeError:
                    raise ValueError(f"{name}: attributions of shape {tuple(a.shape)} do not broadcast to the inputs {tuple(x.shape)}") from None
            fn = fa.metrics.deletion if name == "deletion" else fa.metrics.insertion
            return fn(fa.target(self.model, targets), x, a)
        heat = a[0] if isinstance(a, tuple) else a
        if name == "pointing":
            return fa.metrics.pointing_game(heat, masks).float()
        return fa.metrics.mass_inside(heat, masks)


def _metric_fns(metrics) -> dict[str, Any]:
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m]
    out: dict[str, Any] = {}
    for m in metrics:
        if isinstance(m, str):
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r}; choose from {', '.join(METRICS)} or give a (name, fn) pair")
            out[m] = m
        elif isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) and callable(m[1]):
            out[m[0]] = m[1]
        else:
            raise TypeError(f"metrics entries must be names or (name, fn) pairs, got {m!r}")
    if "delta" in out:
        raise ValueError("'delta' is reserved for the completeness gap of return_delta methods")
    return out


def _batch_seed(seed: int, batch: int) -> int:
    digest = hashlib.sha256(f"funcattr:{seed}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _shape(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"a Tensor of shape {tuple(v.shape)}"
    if isinstance(v, tuple):
        return "(" + ", ".join(_shape(p) for p in v) + ")"
    return f"a {type(v).__name__}"


# --------------------------------------------------------------------------- the run


def _manifest(job: _Job, rk: Ranks, settings: dict) -> dict:
    import zarr

    from . import __version__

    return {
        "format": _store.FORMAT,
        "settings": settings,
        "versions": {"funcattr": __version__, "torch": torch.__version__, "zarr": zarr.__version__, "python": sys.version.split()[0]},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "processes": rk.world,
        "device": job.device.type,
    }


def _run(job: _Job, rk: Ranks, out: str, *, resume: bool, overwrite: bool, progress: bool) -> _store.Store:
    settings = job.settings()
    everyone = rk.gather(settings)
    checked = Checked(job.data, job.spec, job.B)
    n_batches = (job.N + job.B - 1) // job.B

    def prepare() -> list[int]:  # rank 0: create or check the store; batch 0 creates the arrays
        for r, s in enumerate(everyone):
            if s != settings:
                from ._fingerprint import diff

                raise ValueError(f"rank {r} builds a different job than rank 0: {'; '.join(diff(settings, s)[:3])}")
        w = _store.Writer.prepare(out, _manifest(job, rk, settings), resume=resume, overwrite=overwrite)
        if not w.has_arrays():
            cols = _host(job.compute(_load(checked, 0, job)))
            w.create_arrays(cols)
            w.write(0, cols)
        done = set(w.committed())
        return [b for b in range(n_batches) if b not in done]

    pending = rk.on_rank0(prepare)
    writer = _store.Writer.attach(out, job.B, job.N)
    mine = pending[rk.rank :: rk.world]
    bar = _Bar(job, writer, pending, rk) if progress and rk.rank == 0 else None
    ok = False
    try:
        if mine:
            _stream(job, checked, writer, mine, bar)
        rk.wait_all(bar.poll if bar is not None else None)
        ok = True
    finally:
        if bar is not None:
            bar.close(keep=ok)  # a failed run's error is the last line, not the bar
    store = _store.Store(out)
    if rk.rank == 0 and not store.complete:  # every rank has finished: nothing may be missing
        missing = (~store.done).nonzero()[:, 0].tolist()
        raise RuntimeError(f"the store at {out} is missing {len(missing)} examples after the run (first: {missing[:5]}); run again to resume")
    return store


def _load(checked: Checked, b: int, job: _Job) -> Batch:
    lo, hi = b * job.B, min(job.N, (b + 1) * job.B)
    got = collate([checked[i] for i in range(lo, hi)], job.B)
    if isinstance(got, Bad):
        raise got.error()
    return got


def _host(cols: dict[str, Tensor], event=None) -> dict[str, Tensor]:
    if event is not None:
        event.synchronize()
    return {k: v.cpu() for k, v in cols.items()}


def _to_host_async(cols: dict[str, Tensor], device: torch.device):
    """Start the copies to (pinned) host memory; the writer waits on the returned event."""
    if device.type != "cuda":
        return cols, None
    host = {}
    for k, v in cols.items():
        h = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
        h.copy_(v, non_blocking=True)
        host[k] = h
    ev = torch.cuda.Event()
    ev.record()
    return host, ev


def _stream(job: _Job, checked: Checked, writer: _store.Writer, mine: list[int], bar) -> None:
    B = job.B
    sampler = [list(range(b * B, min(job.N, (b + 1) * B))) for b in mine]
    loader = torch.utils.data.DataLoader(
        checked,
        batch_sampler=sampler,
        num_workers=job.num_workers,
        collate_fn=functools.partial(collate, B=B),
        pin_memory=job.device.type == "cuda",
    )
    first = True
    with _WriterThread(writer, bar) as wt:
        for batch in loader:
            if isinstance(batch, Bad):
                raise batch.error()
            cols = job.compute(batch)
            if first:
                writer.check_columns(cols)
                first = False
            wt.put(batch.batch, *_to_host_async(cols, job.device))


class _WriterThread:
    """Commits batches on a thread while the next ones compute; at most ``_WRITE_DEPTH`` wait.
    An error in the thread is raised in the caller at its next :meth:`put` or at exit; on exit
    (an error included) every batch already handed over is committed first."""

    def __init__(self, writer: _store.Writer, bar):
        self.writer, self.bar = writer, bar
        self.q: queue.Queue = queue.Queue(maxsize=_WRITE_DEPTH)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="funcattr-writer", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _loop(self):
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is not None:
                continue  # drain: the caller learns of the error at its next put
            b, cols, ev = job
            try:
                self.writer.write(b, _host(cols, ev))
                if self.bar is not None:
                    self.bar.committed(b)
            except BaseException as err:
                self.error = err

    def put(self, b: int, cols, ev) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((b, cols, ev))

    def __exit__(self, et, ev, tb):
        self.q.put(None)
        self.thread.join()
        if self.error is not None and et is None:
            raise self.error
        return False


class _Bar:
    """Rank 0's tqdm bar over the whole job: examples committed by every process, with the
    rate and ETA. Other ranks' progress is read from the store's commit records."""

    def __init__(self, job: _Job, writer: _store.Writer, pending: list[int], rk: Ranks):
        from tqdm.auto import tqdm

        self.job, self.writer, self.rk = job, writer, rk
        size = lambda b: min(job.N, (b + 1) * job.B) - b * job.B  # noqa: E731
        todo = sum(size(b) for b in pending)
        self.bar = tqdm(total=job.N, initial=job.N - todo, desc="funcattr attribute", unit="ex", smoothing=0.1, dynamic_ncols=True)
        self._last = 0.0

    def committed(self, b: int) -> None:
        if self.rk.distributed:
            self.poll()
        else:
            self.bar.update(min(self.job.N, (b + 1) * self.job.B) - b * self.job.B)

    def poll(self) -> None:
        now = time.monotonic()
        if now - self._last < 0.5:
            return
        self._last = now
        try:
            n = min(self.job.N, self.writer.n_committed_batches() * self.job.B)
        except Exception:  # a progress bar never fails a run
            return
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def close(self, keep: bool = True) -> None:
        if self.rk.distributed and keep:
            self._last = 0.0
            self.poll()
        self.bar.leave = keep
        self.bar.close()
