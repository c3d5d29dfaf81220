"""Train :class:`ShapesNet` on the synthetic shapes data set (CPU).

Usage::

    python -m funcattr.zoo.train [--out PATH] [--epochs N] [--n-train N]
                                 [--n-test N] [--threads T]

Every epoch trains on ``n_train`` *fresh* images ``make_shapes(n_train,
seed=TRAIN_SEED + epoch)``; the held-out test set is ``make_shapes(n_test,
seed=TEST_SEED)`` (a seed never used for training). Training uses AdamW with a
one-cycle learning-rate schedule. The weights are saved as an fp32
``state_dict`` (default: ``funcattr/zoo/shapes_net.pt``), loadable with
``torch.load(path, weights_only=True)``.

The run is reproducible given the seeds (and the number of threads).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .model import ShapesNet
from .shapes import CLASSES, TEST_SEED, TRAIN_SEED, make_shapes

DEFAULT_OUT = Path(__file__).with_name("shapes_net.pt")


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 500):
    """Accuracy and per-class accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    preds = torch.cat([model(x[i : i + bs]).argmax(1) for i in range(0, len(x), bs)])
    correct = preds == y
    per_class = [correct[y == c].float().mean().item() for c in range(len(CLASSES))]
    return correct.float().mean().item(), per_class


def train(
    out: Path = DEFAULT_OUT,
    epochs: int = 8,
    n_train: int = 10_000,
    n_test: int = 2_000,
    batch_size: int = 64,
    lr: float = 3e-3,
    threads: int = 2,
    seed: int = 0,
) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.time()
    model = ShapesNet(n_classes=len(CLASSES)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = (n_train + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    shuffle = torch.Generator().manual_seed(seed)

    x_test, y_test, _ = make_shapes(n_test, seed=TEST_SEED)
    x_test = x_test.contiguous(memory_format=torch.channels_last)

    for epoch in range(epochs):
        te = time.time()
        x, y, _ = make_shapes(n_train, seed=TRAIN_SEED + epoch)
        x = x.contiguous(memory_format=torch.channels_last)
        model.train()
        perm = torch.randperm(n_train, generator=shuffle)
        tot_loss, tot_correct = 0.0, 0
        for i in range(0, n_train, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(idx)
            tot_correct += (logits.argmax(1) == yb).sum().item()
        acc, _ = evaluate(model, x_test, y_test)
        print(
            f"epoch {epoch + 1:2d}/{epochs}  loss {tot_loss / n_train:.4f}  "
            f"train acc {tot_correct / n_train:.4f}  test acc {acc:.4f}  "
            f"({time.time() - te:.1f}s)",
            flush=True,
        )

    acc, per_class = evaluate(model, x_test, y_test)
    print(f"held-out test accuracy (seed {TEST_SEED}, n={n_test}): {acc:.4f}")
    print("per class: " + ", ".join(f"{c} {a:.3f}" for c, a in zip(CLASSES, per_class)))
    state = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous().clone()
        for k, v in model.state_dict().items()
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    print(
        f"saved {out} ({out.stat().st_size / 1024:.1f} KiB); "
        f"total time {time.time() - t0:.1f}s"
    )
    return acc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-train", type=int, default=10_000, help="fresh images per epoch")
    p.add_argument("--n-test", type=int, default=2_000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="init / shuffling seed")
    a = p.parse_args(argv)
    train(a.out, a.epochs, a.n_train, a.n_test, a.batch_size, a.lr, a.threads, a.seed)


if __name__ == "__main__":
    main()
