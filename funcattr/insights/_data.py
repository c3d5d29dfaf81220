"""The explorer's examples: read lazily from the user's iterable of batches, kept in order, with
each model's class scores computed once per batch (no grad) and cached.

Examples are numbered in the order the data yields them. The stream is read only as far as a
request needs, up to ``max_examples``; after that (or when the iterable ends) numbers wrap
around, so paging cycles over what was read (Captum Insights cycled too). A page is therefore
fully described by its starting number and its filters: the server keeps no per-tab state.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from ._features import Feature
from ._methods import BadRequest

__all__ = ["Store", "UserCodeError"]


class UserCodeError(RuntimeError):
    """The user's model, transform, score function or data raised or returned something unusable
    (HTTP 500; the message is shown in the page and the server keeps serving)."""


@dataclass
class _Chunk:
    start: int
    raw: tuple[Tensor, ...]  # per feature [n, ...], as the data gave them
    labels: list[int | None]
    masks: Tensor | None  # [n, H, W] bool
    args: tuple  # extra model arguments: per-example tensors [n, ...] or constants
    per_example: tuple[bool, ...]
    scores: list  # per model: Tensor [n, C] float32 on CPU, or None until computed

    @property
    def n(self) -> int:
        return self.raw[0].shape[0]


def _as_batch(batch: Any, n_features: int, where: str):
    """One item of the data → (inputs tuple, labels, masks, args)."""
    labels = masks = args = None
    if isinstance(batch, dict):
        unknown = set(batch) - {"inputs", "labels", "masks", "args"}
        if unknown or "inputs" not in batch:
            raise UserCodeError(f"{where}: a dict batch needs 'inputs' and may have 'labels', 'masks', 'args'; got keys {sorted(batch)}")
        inputs, labels, masks, args = batch["inputs"], batch.get("labels"), batch.get("masks"), batch.get("args")
    elif isinstance(batch, Tensor):
        inputs = batch
    elif isinstance(batch, (tuple, list)) and batch:
        if len(batch) > 3:
            raise UserCodeError(f"{where}: a batch is (inputs, labels) or (inputs, labels, masks); got {len(batch)} items")
        inputs = batch[0]
        labels = batch[1] if len(batch) > 1 else None
        masks = batch[2] if len(batch) > 2 else None
    else:
        raise UserCodeError(f"{where}: expected a batch (inputs, labels[, masks]), a dict or a Tensor, got {type(batch).__name__}")
    xs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs) if isinstance(inputs, (tuple, list)) else None
    if xs is None or not all(isinstance(x, Tensor) for x in xs):
        raise UserCodeError(f"{where}: inputs must be a Tensor or a tuple of Tensors (one per feature)")
    if len(xs) != n_features:
        raise UserCodeError(f"{where}: the batch has {len(xs)} input tensors but the explorer has {n_features} features")
    n = xs[0].shape[0] if xs[0].dim() else 0
    if any(x.dim() == 0 or x.shape[0] != n for x in xs):
        raise UserCodeError(f"{where}: every input tensor needs the same batch size in dim 0")
    if labels is not None:
        labels = labels.reshape(-1).tolist() if isinstance(labels, Tensor) else list(labels)
        if len(labels) != n:
            raise UserCodeError(f"{where}: {len(labels)} labels for {n} examples")
        labels = [None if v is None else int(v) for v in labels]
    else:
        labels = [None] * n
    if masks is not None:
        if not isinstance(masks, Tensor) or masks.shape[0] != n:
            raise UserCodeError(f"{where}: masks must be a Tensor [B, H, W] with one mask per example")
        masks = (masks[:, 0] if masks.dim() == 4 else masks).detach().cpu() != 0
    if args is None:
        args = ()
    elif not isinstance(args, tuple):
        args = (args,)
    per = tuple(isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n for a in args)
    return xs, labels, masks, args, per


class Store:
    """Examples and cached class scores, shared by every request (reads under a lock)."""

    def __init__(self, data: Iterable, features: Sequence[Feature], models: Sequence[Callable], score: Callable | None,
                 device: torch.device, max_examples: int):
        if isinstance(data, (Tensor, str, bytes)) or not hasattr(data, "__iter__"):
            raise TypeError(f"data must be an iterable of batches, e.g. [(x, labels)], got {type(data).__name__}")
        self._data = data
        self._it = None
        self.features = tuple(features)
        self.models = tuple(models)
        self.score = score
        self.device = device
        self.max_examples = max_examples
        self.chunks: list[_Chunk] = []
        self.row_seconds = [0.0] * len(self.models)  # fastest no-grad forward per example seen, per model
        self.count = 0  # examples read so far
        self.done = False  # no more examples will be read: numbers wrap modulo ``count``
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ reading

    def _read(self) -> bool:
        """Read one more batch; False when there is nothing more to read."""
        if self.done:
            return False
        if self._it is None:
            self._it = iter(self._data)
        try:
            batch = next(self._it)
        except StopIteration:
            self.done = True
            return False
        where = f"data batch {len(self.chunks)}"
        xs, labels, masks, args, per = _as_batch(batch, len(self.features), where)
        n = xs[0].shape[0]
        room = self.max_examples - self.count
        if n > room:  # keep what fits, stop reading
            xs = tuple(x[:room] for x in xs)
            labels, masks = labels[:room], None if masks is None else masks[:room]
            args = tuple(a[:room] if p else a for a, p in zip(args, per))
            n = room
        if n > 0:
            xs = tuple(x.detach().cpu() for x in xs)
            self.chunks.append(_Chunk(self.count, xs, labels, masks, args, per, [None] * len(self.models)))
            self.count += n
        if self.count >= self.max_examples:
            self.done = True
        return True

    def ensure(self, i: int) -> bool:
        """Read until example ``i`` exists (or the data end); is it there?"""
        with self.lock:
            while self.count <= i and self._read():
                pass
            return i < self.count

    def first(self) -> _Chunk:
        with self.lock:
            if not self.ensure(0):
                raise BadRequest("the data has no examples")
            return self.chunks[0]

    def resolve(self, i: int) -> int:
        """Stream position → example number (wrapping once everything was read)."""
        with self.lock:
            if self.ensure(i):
                return i
            if self.count == 0:
                raise BadRequest("the data has no examples")
            return i % self.count

    def _chunk(self, i: int) -> tuple[_Chunk, int]:
        lo, hi = 0, len(self.chunks) - 1
        while lo < hi:  # binary search by start
            mid = (lo + hi + 1) // 2
            if self.chunks[mid].start <= i:
                lo = mid
            else:
                hi = mid - 1
        c = self.chunks[lo]
        return c, i - c.start

    def check_index(self, i: Any) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise BadRequest(f"'index' must be a non-negative example number, got {i!r}")
        with self.lock:
            if i >= self.count and not self.ensure(i):
                raise BadRequest(f"there is no example {i} (the explorer has read {self.count})")
        return i

    # ------------------------------------------------------------------ per example

    def label(self, i: int) -> int | None:
        c, k = self._chunk(i)
        return c.labels[k]

    def mask(self, i: int) -> Tensor | None:
        c, k = self._chunk(i)
        return None if c.masks is None else c.masks[k]

    def raw(self, i: int) -> tuple[Tensor, ...]:
        c, k = self._chunk(i)
        return tuple(x[k] for x in c.raw)

    def model_inputs(self, raws: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Raw batches (one per feature) → the models' inputs on the models' device."""
        try:
            return tuple(f.model_input(r).to(self.device) for f, r in zip(self.features, raws))
        except (BadRequest, UserCodeError):
            raise
        except Exception as err:
            raise UserCodeError(f"a feature transform raised {type(err).__name__}: {err}") from err

    def gather(self, idx: Sequence[int]):
        """Examples ``idx`` as batches: (raw per feature, model inputs per feature, extra args)."""
        with self.lock:
            rows = [self._chunk(i) for i in idx]
        raw = tuple(torch.stack([c.raw[f][k] for c, k in rows]) for f in range(len(self.features)))
        args = []
        first = rows[0][0]
        for a_i, per in enumerate(first.per_example):
            if per:
                args.append(torch.stack([c.args[a_i][k] for c, k in rows]).to(self.device))
            else:
                args.append(first.args[a_i])
        return raw, self.model_inputs(raw), tuple(args)

    def scores(self, m: int, i: int) -> Tensor:
        """Model ``m``'s class scores (after the score function) for example ``i``: ``[C]``."""
        with self.lock:
            c, k = self._chunk(i)
            if c.scores[m] is None:
                c.scores[m] = self._predict(m, c)
            return c.scores[m][k]

    def _predict(self, m: int, c: _Chunk, size: int = 64) -> Tensor:
        out = []
        for lo in range(0, c.n, size):
            hi = min(c.n, lo + size)
            xs = self.model_inputs(tuple(x[lo:hi] for x in c.raw))
            args = tuple(a[lo:hi].to(self.device) if p else a for a, p in zip(c.args, c.per_example))
            try:
                t0 = time.perf_counter()
                with torch.no_grad():
                    s = self.models[m](*xs, *args)
                    if self.score is not None:
                        s = self.score(s)
                per_row = (time.perf_counter() - t0) / (hi - lo)
                self.row_seconds[m] = per_row if not self.row_seconds[m] else min(self.row_seconds[m], per_row)
            except Exception as err:
                raise UserCodeError(f"model {m} raised {type(err).__name__} on examples {c.start + lo}..{c.start + hi - 1}: {err}") from err
            if not isinstance(s, Tensor) or s.dim() not in (1, 2) or s.shape[0] != hi - lo:
                raise UserCodeError(
                    f"model {m} (with the score function) must return scores [B, C] or [B]; got "
                    f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__} for a batch of {hi - lo}"
                )
            out.append((s if s.dim() == 2 else s.unsqueeze(1)).detach().float().cpu())
        return torch.cat(out)
