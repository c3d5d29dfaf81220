"""Processes under PyTorch's launcher: which rank we are, our device, and the few control
messages a dataset run needs (rank 0 decides, the others follow).

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is initialized
here if the caller has not done it — NCCL when CUDA is present, gloo otherwise — and torn down
at the end if we made it. Control messages (a list of batches, an error) travel on a gloo group,
so a NCCL job does not route Python objects through the GPUs.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any, Callable

import torch
import torch.distributed as dist

__all__ = ["Ranks", "ranks"]

_ERRORS = {c.__name__: c for c in (ValueError, TypeError, IndexError, RuntimeError, OSError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError, ImportError)}


class FromRank0:
    """Mixin marking an error rank 0 raised and broadcast: the other ranks raise it too but
    need not report it again."""


def _rebuild(kind: str, message: str) -> Exception:
    from ._items import ItemError

    base = {**_ERRORS, "ItemError": ItemError}.get(kind, RuntimeError)
    cls = type(base.__name__, (base, FromRank0), {"__module__": base.__module__})
    return cls(message)


class Ranks:
    def __init__(self, rank: int, world: int, local_rank: int, group, owns: bool):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self._group, self._owns = group, owns

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def device(self, model: torch.nn.Module | None, requested) -> torch.device:
        """``requested``; else ``cuda:LOCAL_RANK`` under a launcher with CUDA; else the model's
        device; else the CPU."""
        if requested is not None:
            dev = torch.device(requested)
            if dev.type == "cuda" and dev.index is None:
                dev = torch.device("cuda", self.local_rank if self.distributed else torch.cuda.current_device())
            return dev
        if self.distributed and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        if model is not None:
            p = next(iter(model.parameters()), None)
            if p is not None:
                return p.device
        return torch.device("cpu")

    def on_rank0(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 and hand its result (or its error) to every rank."""
        if not self.distributed:
            return fn()
        box: list = [None]
        error = None
        if self.rank == 0:
            try:
                box[0] = ("ok", fn())
            except Exception as err:  # every rank must hear about it, or they would wait forever
                error = err
                box[0] = ("error", type(err).__name__, str(err))
        dist.broadcast_object_list(box, src=0, group=self._group)
        if error is not None:
            raise error
        if box[0][0] == "error":
            raise _rebuild(box[0][1], box[0][2])
        return box[0][1]

    def gather(self, obj: Any) -> list:
        if not self.distributed:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj, group=self._group)
        return out

    def wait_all(self, poll: Callable[[], None] | None = None, every: float = 0.5) -> None:
        """A barrier; rank 0 keeps calling ``poll`` (the progress bar) while it waits."""
        if not self.distributed:
            return
        work = dist.barrier(group=self._group, async_op=True)
        if poll is None:
            work.wait()
            return
        while not work.is_completed():
            poll()
            time.sleep(every)
        work.wait()

    def close(self) -> None:
        if self._owns and dist.is_initialized():
            dist.destroy_process_group()


def ranks() -> Ranks:
    """The current process's place in a launcher's job (or a job of one)."""
    if dist.is_available() and dist.is_initialized():
        owns = False
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))
        owns = True
    else:
        return Ranks(0, 1, 0, None, False)
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count() or 1)))
    group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return Ranks(rank, world, local, group, owns)
