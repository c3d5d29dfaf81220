"""The dataset store: one zarr v3 group on disk, written batch by batch, read lazily.

    store/
      zarr.json              group; attributes["funcattr"] = the manifest
      attributions/          [N, *map]  float32 | float16 | bfloat16 (kept as int16 bits)
                             one shard (file) per batch, one inner chunk per example
      targets/  predictions/ [N] int64, -1 where none / not yet written
      metrics/<name>/        [N, ...] float32, NaN where not yet written
      indices/               [N] int64: row i holds i once its batch is committed, else -1

Row ``i`` is dataset example ``i``, whichever process computed it. Every array is chunked by
the run's batch size, so one batch is one file per array; zarr (>= 3.1.3) writes each file to
a temporary name and renames it, so a file is either absent or whole. A batch's ``indices``
chunk is written last: it is the commit record. A process killed at any moment leaves only
whole batches behind (plus rewritable files of the batch in flight), and a resumed run
recomputes exactly the batches whose ``indices`` chunk is missing. Tuple inputs give one
array per input, ``attributions_0``, ``attributions_1``, ...
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from typing import Any

import numpy as np
import torch

__all__ = ["Store", "Rows", "open_store", "Writer", "DTYPES", "MIN_ZARR"]

MIN_ZARR = (3, 1, 3)  # first release whose LocalStore writes files atomically
FORMAT = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
_NUMPY = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "int16", torch.float64: "float64"}
_BF16_NAN = 0x7FC0  # bfloat16 quiet NaN, as int16 bits


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError(
            "fa.attribute_dataset and fa.open_store keep their results in zarr; install it with "
            "pip install 'funcattr[dataset]' (zarr >= 3.1.3)"
        ) from None
    version = tuple(int(p) for p in zarr.__version__.split(".")[:3] if p.isdigit())
    if version < MIN_ZARR:
        raise ImportError(
            f"zarr {zarr.__version__} is too old: the dataset store needs zarr >= 3.1.3 (atomic file writes); "
            "pip install -U 'funcattr[dataset]'"
        )
    return zarr


def _local(path: str, read_only: bool):
    from zarr.storage import LocalStore

    return LocalStore(path, read_only=read_only)


def _is_attr(name: str) -> bool:
    return name == "attributions" or name.startswith("attributions_")


# --------------------------------------------------------------------------- reading


class Rows:
    """A lazy ``[N, ...]`` view of one stored array: indexing reads only the chunks it needs
    and returns a torch tensor::

        store.attributions[7]        # [3, 64, 64]
        store.attributions[10:20]    # [10, 3, 64, 64]
        store.attributions[[3, 9]]   # [2, 3, 64, 64]
    """

    def __init__(self, array):
        self._array = array
        self.dtype = torch.bfloat16 if array.attrs.get("funcattr_dtype") == "bfloat16" else torch.from_numpy(np.zeros(0, array.dtype)).dtype
        self.shape = torch.Size(array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.tolist() if key.dtype != torch.bool else key.numpy()
        if isinstance(key, (list, np.ndarray)):
            a = self._array.oindex[np.asarray(key)]
        else:
            a = self._array[key]
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.view(torch.bfloat16) if self.dtype == torch.bfloat16 else t

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"Rows({list(self.shape)}, {self.dtype})"


class Store:
    """A dataset store opened for reading (:func:`open_store`, or what
    :func:`attribute_dataset` returns). Nothing is read until asked for::

        store = fa.open_store("ig.zarr")
        len(store)                       # N, the dataset's length
        store.attributions[i]            # one map, read from disk
        store.targets, store.predictions, store.indices   # [N] int64 (-1: none / not committed)
        store.metrics["deletion"]        # [N] float32
        store.manifest                   # how it was made
        store.done, store.complete       # committed rows [N] bool; all of them?
    """

    def __init__(self, path: str):
        zarr = _zarr()
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"no store at {self.path}")
        try:
            self.group = zarr.open_group(_local(self.path, True), mode="r", zarr_format=3)
        except Exception as err:
            raise ValueError(f"{self.path} is not a funcattr store (not a zarr v3 group: {err})") from None
        manifest = self.group.attrs.get("funcattr")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"{self.path} is a zarr group but not a funcattr store (no funcattr manifest)")
        self.manifest: dict = manifest
        self._n = int(manifest["settings"]["dataset"]["length"])

    def __len__(self) -> int:
        return self._n

    def _names(self) -> list[str]:
        return sorted(self.group.array_keys())

    def _array(self, name: str):
        if name not in self._names():
            return None
        return self.group[name]

    @property
    def attributions(self) -> Rows | tuple[Rows, ...] | None:
        names = [n for n in self._names() if _is_attr(n)]
        if not names:
            return None
        if names == ["attributions"]:
            return Rows(self.group["attributions"])
        return tuple(Rows(self.group[n]) for n in sorted(names, key=lambda n: int(n.split("_")[1])))

    def _column(self, name: str) -> torch.Tensor | None:
        a = self._array(name)
        return None if a is None else torch.from_numpy(np.asarray(a[:]))

    @property
    def indices(self) -> torch.Tensor:
        idx = self._column("indices")
        return idx if idx is not None else torch.full((self._n,), -1, dtype=torch.int64)

    @property
    def targets(self) -> torch.Tensor | None:
        return self._column("targets")

    @property
    def predictions(self) -> torch.Tensor | None:
        return self._column("predictions")

    @property
    def metrics(self) -> dict[str, torch.Tensor]:
        if "metrics" not in self.group.group_keys():
            return {}
        g = self.group["metrics"]
        return {n: torch.from_numpy(np.asarray(g[n][:])) for n in sorted(g.array_keys())}

    @property
    def done(self) -> torch.Tensor:
        """``[N]`` bool: the rows whose batch is committed."""
        return self.indices >= 0

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def summary(self) -> dict[str, float]:
        """Mean of each metric over the committed rows (NaN-free rows only)."""
        done = self.done
        out = {}
        for name, v in self.metrics.items():
            v = v[done].double()
            v = v[~torch.isnan(v)] if v.dim() == 1 else v.flatten()
            out[name] = float(v.mean()) if v.numel() else float("nan")
        return out

    def __repr__(self) -> str:
        a = self.attributions
        shape = ", ".join(f"{list(r.shape)} {str(r.dtype).replace('torch.', '')}" for r in (a if isinstance(a, tuple) else (a,)) if r is not None)
        done = int(self.done.sum())
        return (
            f"<funcattr store {self.path!r}: {self.manifest['settings']['method']}, {done}/{self._n} examples"
            + (f", attributions {shape}" if shape else "")
            + ">"
        )


def open_store(path: str | os.PathLike) -> Store:
    """Open a store written by :func:`attribute_dataset` for lazy reading::

        store = fa.open_store("ig.zarr")
        store.attributions[0:8]          # [8, 3, 64, 64], read from disk now
    """
    return Store(path)


# --------------------------------------------------------------------------- writing


def _oserror(err: OSError, what: str) -> OSError:
    reason = err.strerror or str(err)
    hint = " (the disk is full; free space and run again: finished batches are kept)" if err.errno == errno.ENOSPC else ""
    new = type(err)(err.errno, f"{what}: {reason}{hint}") if err.errno else OSError(f"{what}: {reason}")
    return new


class Writer:
    """One process's handle for writing a store. Rank 0 calls :meth:`prepare` (create, check
    or wipe); every rank then :meth:`attach` es and writes its own batches."""

    def __init__(self, path: str, batch_size: int, n: int):
        self.zarr = _zarr()
        self.path, self.B, self.N = path, batch_size, n
        self.group = self.zarr.open_group(_local(path, False), mode="r+", zarr_format=3)
        self.arrays: dict[str, Any] = {}
        self._load_arrays()

    def _load_arrays(self) -> None:
        self.arrays = {n: self.group[n] for n in self.group.array_keys()}
        if "metrics" in self.group.group_keys():
            g = self.group["metrics"]
            self.arrays.update({f"metrics/{n}": g[n] for n in g.array_keys()})

    # ---- rank 0

    @classmethod
    def prepare(cls, path: str, manifest: dict, *, resume: bool, overwrite: bool) -> "Writer":
        """Create the store, or check that the one at ``path`` was made with the same settings."""
        zarr = _zarr()
        settings = manifest["settings"]
        try:
            existing = _read_manifest(path)
        except OSError as err:
            raise _oserror(err, f"cannot read the store at {path}") from None
        if existing is not None:
            if existing is False:
                raise ValueError(
                    f"{path} exists and is not a funcattr store; refusing to write into it or delete it "
                    "(choose another --out/out path)"
                )
            same = existing.get("settings") == settings
            if not overwrite:
                if not same:
                    from ._fingerprint import diff

                    lines = diff(existing.get("settings"), settings)
                    shown = "; ".join(lines[:4]) + (f"; and {len(lines) - 4} more" if len(lines) > 4 else "")
                    raise ValueError(
                        f"the store at {path} was made with different settings ({shown}); "
                        "pass overwrite=True (--overwrite) to replace it, or choose another path"
                    )
                if not resume:
                    raise ValueError(
                        f"a store with these settings already exists at {path}; pass resume=True to finish it "
                        "or overwrite=True (--overwrite) to start over"
                    )
            else:
                try:
                    shutil.rmtree(path)
                except OSError as err:
                    raise _oserror(err, f"cannot delete the old store at {path}") from None
                existing = None
        try:
            os.makedirs(path, exist_ok=True)
            if existing is None:
                # the manifest goes into the group's first zarr.json: no store without one
                zarr.create_group(_local(path, False), attributes={"funcattr": manifest}, zarr_format=3, overwrite=True)
            else:
                _remove_partials(path)
            w = cls(path, manifest["settings"]["batch_size"], settings["dataset"]["length"])
        except OSError as err:
            raise _oserror(err, f"cannot write the store at {path}") from None
        return w

    def has_arrays(self) -> bool:
        return "indices" in self.arrays

    def create_arrays(self, columns: dict[str, torch.Tensor]) -> None:
        """Create every array from the first batch's columns (row shapes and dtypes); the
        ``indices`` array is created last, so its presence means all of them exist."""
        N, B = self.N, self.B
        try:
            for name, t in columns.items():
                tail = tuple(t.shape[1:])
                dtype = _NUMPY.get(t.dtype, None) if t.is_floating_point() else "int64"
                if dtype is None:
                    raise TypeError(f"cannot store {name} of dtype {t.dtype}")
                fill = _BF16_NAN if t.dtype == torch.bfloat16 else (np.nan if t.is_floating_point() else -1)
                kw: dict[str, Any] = dict(shape=(N, *tail), dtype=dtype, fill_value=fill, overwrite=True)
                if _is_attr(name):  # one file per batch, one inner chunk per example
                    kw.update(chunks=(1, *tail), shards=(B, *tail), compressors=None)
                else:
                    kw.update(chunks=(B, *tail))
                if name.startswith("metrics/"):
                    parent = self.group.require_group("metrics")
                    a = parent.create_array(name.split("/", 1)[1], **kw)
                else:
                    a = self.group.create_array(name, **kw)
                if t.dtype == torch.bfloat16:
                    a.attrs["funcattr_dtype"] = "bfloat16"
            self.group.create_array("indices", shape=(N,), chunks=(B,), dtype="int64", fill_value=-1, overwrite=True)
        except OSError as err:
            raise _oserror(err, f"cannot write the store at {self.path}") from None
        self._load_arrays()

    # ---- every rank

    @classmethod
    def attach(cls, path: str, batch_size: int, n: int) -> "Writer":
        try:
            return cls(path, batch_size, n)
        except OSError as err:
            raise _oserror(err, f"cannot open the store at {path}") from None

    def committed(self) -> list[int]:
        """The batches whose commit record (``indices`` chunk) is on disk."""
        if not self.has_arrays():
            return []
        idx = np.asarray(self.arrays["indices"][:])
        return [b for b in range((self.N + self.B - 1) // self.B) if idx[b * self.B] >= 0]

    def n_committed_batches(self) -> int:
        return int(self.arrays["indices"].nchunks_initialized) if self.has_arrays() else 0

    def check_columns(self, columns: dict[str, torch.Tensor]) -> None:
        want = {n: a for n, a in self.arrays.items() if n != "indices"}
        if set(want) != set(columns):
            raise ValueError(
                f"this run produces {sorted(columns)} but the store at {self.path} holds {sorted(want)}; "
                "pass overwrite=True to start over"
            )
        for name, t in columns.items():
            a = want[name]
            if tuple(a.shape[1:]) != tuple(t.shape[1:]):
                raise ValueError(
                    f"{name} of this run have shape {list(t.shape[1:])} per example but the store at {self.path} "
                    f"holds {list(a.shape[1:])}; pass overwrite=True to start over"
                )

    def write(self, batch: int, columns: dict[str, torch.Tensor]) -> None:
        """Write one batch's rows (CPU tensors), then its commit record."""
        lo = batch * self.B
        hi = min(self.N, lo + self.B)
        try:
            for name, t in columns.items():
                if t.dtype == torch.bfloat16:
                    t = t.view(torch.int16)
                elif t.dtype == torch.bool:
                    t = t.float()
                self.arrays[name][lo:hi] = t.numpy()
            self.arrays["indices"][lo:hi] = np.arange(lo, hi, dtype=np.int64)
        except OSError as err:
            raise _oserror(
                err, f"could not write batch {batch} (examples {lo}..{hi - 1}) to the store at {self.path}"
            ) from None


def _read_manifest(path: str):
    """The manifest at ``path``; None if nothing (or an empty folder) is there; False if
    something else is."""
    if not os.path.exists(path):
        return None
    if not os.path.isdir(path):
        return False
    meta = os.path.join(path, "zarr.json")
    if not os.path.isfile(meta):
        return None if not os.listdir(path) else False
    with open(meta) as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError:
            return False
    m = doc.get("attributes", {}).get("funcattr")
    return m if isinstance(m, dict) and m.get("format") == FORMAT else False


def _remove_partials(path: str) -> None:
    """Temporary files of writes that a killed process never renamed."""
    for root, _, files in os.walk(path):
        for f in files:
            if f.endswith(".partial"):
                os.unlink(os.path.join(root, f))
