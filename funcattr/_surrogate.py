"""Weighted linear surrogates in torch, batched over examples and scores (no scikit-learn).

``fit(Z, y, w, penalty, alpha)`` fits ``y ≈ b + Z β`` for every example and score at once:
``Z[n, F]`` are the sampled coalitions (shared by the batch; ``Z[n, B, F]``: drawn per
example), ``y[n, B, K]`` the scores,
``w[n]`` or ``w[n, B]`` the sample weights. The intercept is never penalized; as in
scikit-learn the data are centred by their weighted means first. Solved in float64:

* ``penalty=None`` — weighted least squares, minimum-norm when under-determined (like
  ``sklearn.linear_model.LinearRegression``, KernelSHAP's surrogate);
* ``"l2"`` — ``Σ w r² + α‖β‖²`` (``sklearn.linear_model.Ridge``), a batched linear solve
  (primal or dual, whichever is smaller);
* ``"l1"`` — ``Σ w r² / (2 Σ w) + α‖β‖₁`` (``sklearn.linear_model.Lasso`` with sample
  weights, LIME's default), by FISTA with adaptive restarts (in sample space when F > n).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fit", "PENALTIES"]

PENALTIES = (None, "l1", "l2")


def fit(Z: Tensor, y: Tensor, w: Tensor, penalty: str | None = None, alpha: float = 0.0,
        max_iter: int = 10000, tol: float = 1e-9) -> Tensor:
    """Coefficients ``[B, K, F]`` (intercepts dropped)."""
    n, F = Z.shape[0], Z.shape[-1]
    X = Z.to(torch.float64)
    X = X.unsqueeze(0) if X.dim() == 2 else X.transpose(0, 1)  # [1|B, n, F]
    Y = y.to(torch.float64).permute(1, 0, 2)  # [B, n, K]
    W = w.to(torch.float64)
    W = W.view(1, n) if W.dim() == 1 else W.t()  # [1 or B, n]
    tot = W.sum(1, keepdim=True).clamp_min(1e-300)
    mx = (W.unsqueeze(1) @ X).squeeze(1) / tot  # [1|B, F]
    my = torch.einsum("bn,bnk->bk", W, Y) / tot  # [B, K]
    sw = W.sqrt().unsqueeze(-1)  # [1|B, n, 1]
    Xs = (X - mx.unsqueeze(1)) * sw  # [1|B, n, F]
    Ys = (Y - my.unsqueeze(1)) * sw  # [B, n, K]
    if penalty is None:
        beta = torch.linalg.pinv(Xs) @ Ys  # [B, F, K]
    elif penalty == "l2":
        eye = torch.eye(min(n, F), dtype=X.dtype, device=X.device)
        if F <= n:  # primal: (XᵀX + αI)⁻¹ Xᵀy
            beta = torch.linalg.solve(Xs.transpose(1, 2) @ Xs + alpha * eye, Xs.transpose(1, 2) @ Ys)
        else:  # dual, in sample space: Xᵀ (XXᵀ + αI)⁻¹ y
            beta = Xs.transpose(1, 2) @ torch.linalg.solve(Xs @ Xs.transpose(1, 2) + alpha * eye, Ys)
    elif penalty == "l1":
        beta = _lasso(Xs / tot.sqrt().view(-1, 1, 1), Ys / tot.sqrt().view(-1, 1, 1), alpha, max_iter, tol)
    else:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    return beta.transpose(1, 2).to(y.dtype if y.is_floating_point() else torch.float32)


def _lasso(X: Tensor, Y: Tensor, alpha: float, max_iter: int, tol: float) -> Tensor:
    """argmin ½‖Xβ − Y‖² + α‖β‖₁ per batch entry and column of ``Y``, by FISTA with adaptive
    restarts. ``X[1|B, n, F]``; the Gram matrix is formed only when it is the smaller side."""
    n, F = X.shape[1], X.shape[2]
    Xt = X.transpose(1, 2)
    if F <= n:
        G, c = Xt @ X, Xt @ Y  # [1|B, F, F], [B, F, K]

        def grad(z):
            return G @ z - c

        L = torch.linalg.eigvalsh(G)[..., -1]
    else:

        def grad(z):
            return Xt @ (X @ z - Y)

        L = torch.linalg.eigvalsh(X @ Xt)[..., -1]
    L = L.clamp_min(1e-12).view(-1, 1, 1)
    step, thr = 1.0 / L, alpha / L
    beta = X.new_zeros(Y.shape[0], F, Y.shape[2])
    z = beta
    t = torch.ones_like(beta[:, :1])  # one momentum per batch entry and column
    for it in range(max_iter):
        new = z - step * grad(z)
        new = new.sign() * (new.abs() - thr).clamp_min(0.0)
        t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt())
        uphill = ((z - new) * (new - beta)).sum(1, keepdim=True) > 0  # restart the momentum
        t_new = torch.where(uphill, torch.ones_like(t_new), t_new)
        z = torch.where(uphill, new, new + ((t - 1.0) / t_new) * (new - beta))
        if it % 10 == 9 and float((new - beta).abs().max()) <= tol * max(1.0, float(new.abs().max())):
            beta = new
            break
        beta, t = new, t_new
    return beta
