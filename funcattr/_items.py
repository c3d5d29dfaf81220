"""What a dataset item may be, checked item by item with errors that name the index.

An item of ``data[i]`` is

* ``x`` — an input Tensor, or a tuple/list of input Tensors is *not* allowed bare (it would
  read as ``(x, label)``), so
* ``(x, label)`` or ``(x, label, mask)`` — ``x`` a Tensor or a tuple of Tensors (several
  inputs), ``label`` an int or an integer 0-d Tensor (``None``: no label), ``mask`` a Tensor
  (``[H, W]`` ground-truth region, for the pointing / mass metrics), or
* ``(x,)`` — one input, no label.

Every item must have item 0's structure, shapes and dtypes (batches are stacked), and finite
inputs. Checks run where the item is loaded (in DataLoader workers too); a bad item comes back
as a :class:`Bad` record and is raised in the main process as ``dataset item 17: ...``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import traceback
from typing import Any

import torch
from torch import Tensor

__all__ = ["Spec", "Batch", "Bad", "Checked", "collate", "ItemError"]


class ItemError(RuntimeError):
    """``data[i]`` itself raised; the original traceback is attached as a note."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """Item 0's structure, the reference every other item is checked against."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    several: bool  # x was a tuple of inputs
    has_label: bool
    mask_shape: tuple[int, ...] | None
    sha256: str  # of item 0's inputs: a resumed run must see the same data

    @classmethod
    def of(cls, data: Any) -> "Spec":
        item = _load(data, 0)
        xs, several, label, mask = _split(item, 0)
        for k, x in enumerate(xs):
            _check_input(x, 0, k, several)
        _check_label(label, 0)
        h = hashlib.sha256()
        from ._fingerprint import tensor_sha256

        for x in xs:
            tensor_sha256(x, h)
        return cls(
            shapes=tuple(tuple(x.shape) for x in xs),
            dtypes=tuple(x.dtype for x in xs),
            several=several,
            has_label=label is not None,
            mask_shape=None if mask is None else tuple(mask.shape),
            sha256="sha256:" + h.hexdigest(),
        )

    def check(self, item: Any, i: int) -> tuple[tuple[Tensor, ...], int | None, Tensor | None]:
        xs, several, label, mask = _split(item, i)
        if several != self.several or len(xs) != len(self.shapes):
            raise TypeError(
                f"dataset item {i} has {len(xs)} input{'s' if len(xs) > 1 else ''} "
                f"({'a tuple' if several else 'one Tensor'}) but item 0 has {len(self.shapes)}; every item must have the same structure"
            )
        for k, (x, shape, dtype) in enumerate(zip(xs, self.shapes, self.dtypes)):
            _check_input(x, i, k, several)
            if tuple(x.shape) != shape or x.dtype != dtype:
                raise ValueError(
                    f"dataset item {i}: {_what(k, several)} has shape {tuple(x.shape)} and dtype {x.dtype} but item 0's has "
                    f"shape {shape} and dtype {dtype}; every item must match (resize or convert in the dataset's transform)"
                )
        if (label is not None) != self.has_label:
            raise TypeError(f"dataset item {i} {'has' if label is not None else 'has no'} label but item 0 {'has' if self.has_label else 'has none'}")
        _check_label(label, i)
        if (mask is None) != (self.mask_shape is None) or (mask is not None and tuple(mask.shape) != self.mask_shape):
            got = "no mask" if mask is None else f"a mask of shape {tuple(mask.shape)}"
            want = "no mask" if self.mask_shape is None else f"a mask of shape {self.mask_shape}"
            raise ValueError(f"dataset item {i} has {got} but item 0 has {want}")
        return xs, label, mask


def _what(k: int, several: bool) -> str:
    return f"input {k}" if several else "the input"


def _load(data: Any, i: int) -> Any:
    try:
        return data[i]
    except Exception as err:
        raise ItemError(f"dataset item {i} could not be loaded: {type(err).__name__}: {err}") from err


def _split(item: Any, i: int):
    if isinstance(item, Tensor):
        return (item,), False, None, None
    if isinstance(item, (tuple, list)) and 1 <= len(item) <= 3:
        x = item[0]
        label = item[1] if len(item) > 1 else None
        mask = item[2] if len(item) > 2 else None
        if isinstance(x, (tuple, list)):
            if not x or not all(isinstance(t, Tensor) for t in x):
                raise TypeError(f"dataset item {i}: its inputs must be Tensors, got {_describe(x)}")
            xs, several = tuple(x), True
        elif isinstance(x, Tensor):
            xs, several = (x,), False
        else:
            raise TypeError(f"dataset item {i}: the input must be a Tensor (or a tuple of Tensors), got {_describe(x)}{_hint(x)}")
        if mask is not None and not isinstance(mask, Tensor):
            raise TypeError(f"dataset item {i}: the mask (third element) must be a Tensor, got {_describe(mask)}")
        return xs, several, label, mask
    raise TypeError(
        f"dataset item {i} is {_describe(item)}; expected a Tensor or a tuple (input, label[, mask]) "
        f"with input a Tensor or a tuple of Tensors{_hint(item)}"
    )


def _hint(v: Any) -> str:
    return " (add a ToTensor()/PILToTensor() transform)" if type(v).__module__.startswith("PIL") else ""


def _describe(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"a Tensor of shape {tuple(v.shape)}"
    if isinstance(v, (tuple, list)):
        return f"a {type(v).__name__} of {len(v)}"
    return f"a {type(v).__module__ + '.' if type(v).__module__ != 'builtins' else ''}{type(v).__qualname__}"


def _check_input(x: Tensor, i: int, k: int, several: bool) -> None:
    if x.dim() == 0:
        raise ValueError(f"dataset item {i}: {_what(k, several)} is a 0-d Tensor; give one example per item, without a batch dim")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"dataset item {i}: {_what(k, several)} contains NaN or inf values")


def _check_label(label: Any, i: int) -> None:
    if label is None:
        return
    if isinstance(label, Tensor):
        if label.dim() != 0 or label.is_floating_point() or label.dtype == torch.bool:
            raise TypeError(f"dataset item {i}: the label must be an int (or an integer 0-d Tensor), got {_describe(label)} of dtype {label.dtype}")
        label = int(label)
    elif not isinstance(label, int) or isinstance(label, bool):
        raise TypeError(f"dataset item {i}: the label must be an int (or an integer 0-d Tensor), got {_describe(label)}")
    if label < 0:
        raise ValueError(f"dataset item {i}: the label is {label}; class indices are >= 0")


# --------------------------------------------------------------------------- loading


@dataclasses.dataclass
class Batch:
    batch: int  # batch number: rows batch*B .. batch*B + len - 1
    inputs: tuple[Tensor, ...]
    labels: Tensor | None  # [B] int64
    masks: Tensor | None

    def pin_memory(self) -> "Batch":  # DataLoader(pin_memory=True) calls this
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return Batch(self.batch, tuple(t.pin_memory() for t in self.inputs), pin(self.labels), pin(self.masks))


@dataclasses.dataclass
class Bad:
    """A bad item, carried out of a DataLoader worker to be raised in the main process."""

    kind: str
    message: str
    cause: str = ""

    def error(self) -> Exception:
        cls = {"TypeError": TypeError, "ValueError": ValueError}.get(self.kind, ItemError)
        err = cls(self.message)
        if self.cause and hasattr(err, "add_note"):  # Python >= 3.11
            err.add_note(self.cause)
        return err


class Checked(torch.utils.data.Dataset):
    """``data`` whose items are checked against ``spec``: ``checked[i]`` is ``(i, inputs,
    label, mask)`` or a :class:`Bad` record."""

    def __init__(self, data: Any, spec: Spec, batch_size: int):
        self.data, self.spec, self.B = data, spec, batch_size

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        try:
            item = _load(self.data, i)
        except ItemError as err:
            cause = "".join(traceback.format_exception(err.__cause__)) if err.__cause__ else ""
            return Bad("ItemError", str(err), cause)
        try:
            return (i, *self.spec.check(item, i))
        except (TypeError, ValueError) as err:
            return Bad(type(err).__name__, str(err))


def collate(items: list, B: int) -> Batch | Bad:
    for it in items:
        if isinstance(it, Bad):
            return it
    idx = [it[0] for it in items]
    n = len(items[0][1])
    inputs = tuple(torch.stack([it[1][k] for it in items]) for k in range(n))
    labels = None if items[0][2] is None else torch.tensor([int(it[2]) for it in items], dtype=torch.int64)
    masks = None if items[0][3] is None else torch.stack([it[3] for it in items])
    return Batch(idx[0] // B, inputs, labels, masks)
