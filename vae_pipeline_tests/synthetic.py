"""Synthetic data for tests of latent-space measures: labelled Gaussian blobs whose answer is known."""

from __future__ import annotations

import numpy as np

N_CLASSES = 4


def clusters(n_per_class: int, dim: int, seed: int, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs, one per class, centred on scaled basis vectors."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(N_CLASSES), n_per_class)
    centres = 5.0 * np.eye(N_CLASSES, dim)
    return centres[y] + spread * rng.standard_normal((len(y), dim)), y
