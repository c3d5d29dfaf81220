"""Random draws for sampling methods: from the ``generator=`` a method was given (a
``torch.Generator``, on its own device; the draw is then moved to the inputs' device), or
from the global RNG when none was. A method given a generator never touches the global RNG,
so a result is reproducible and safe across threads (DESIGN §6)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_generator", "rand", "randn", "randint", "multinomial"]


def check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _where(generator, device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def rand(shape: tuple, generator, device, dtype=None) -> Tensor:
    """``U(0, 1)`` of ``shape`` on ``device``."""
    return torch.rand(shape, generator=generator, device=_where(generator, device), dtype=dtype).to(device)


def randn(shape: tuple, generator, device, dtype=None) -> Tensor:
    """``N(0, 1)`` of ``shape`` on ``device``."""
    return torch.randn(shape, generator=generator, device=_where(generator, device), dtype=dtype).to(device)


def randint(high: int, shape: tuple, generator, device) -> Tensor:
    return torch.randint(high, shape, generator=generator, device=_where(generator, device)).to(device)


def multinomial(p: Tensor, n: int, generator, device) -> Tensor:
    """``n`` draws with replacement from the weights ``p``."""
    return torch.multinomial(p.to(_where(generator, device)), n, replacement=True, generator=generator).to(device)
