"""Plain-array helpers shared by the evaluation modules: NumPy views, row checks, seeded subsamples."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def as_numpy(x: ArrayLike) -> np.ndarray:
    """A NumPy view (or copy, for tensors on an accelerator) of an array or tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_rows(name: str, x: np.ndarray, ndim: int = 2) -> None:
    """Refuse an array of the wrong rank, with no rows, or with NaN / infinite values."""
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}.")
    if len(x) == 0:
        raise ValueError(f"{name} is empty; pass at least one row.")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values; fix the model or data that produced it.")


def subsample_indices(n: int, max_n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subsample of range(n) of size max_n (all of them if max_n is None or >= n)."""
    if max_n is None or max_n >= n:
        return np.arange(n)
    if max_n < 1:
        raise ValueError(f"max_n={max_n} must be at least 1, or None to keep all {n} rows.")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_n, replace=False))


__all__ = ["ArrayLike", "as_numpy", "check_rows", "subsample_indices"]
