"""Assertions the test files share."""

import torch
from torch import nn

RTOL, ATOL = 1e-4, 1e-5


def close(a, b, rtol=RTOL, atol=ATOL):
    """``a`` equals ``b`` (a tensor, a list, or a tuple of them) in shape and to rtol/atol."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for p, q in zip(a, b):
            close(p, q, rtol, atol)
        return
    b = torch.as_tensor(b.detach() if isinstance(b, torch.Tensor) else b, dtype=a.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def no_hooks(model: nn.Module) -> bool:
    """Nothing is left attached to any submodule."""
    return all(
        not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
        for m in model.modules()
    )
