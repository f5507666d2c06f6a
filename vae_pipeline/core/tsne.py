"""t-SNE maps of latent vectors and how trustworthy they are (neighbours kept from high to low dimension).

Plain arrays in, plain arrays out; every stochastic step takes a seed.
"""

from __future__ import annotations

import numpy as np
from openTSNE import TSNE
from sklearn.manifold import trustworthiness

from vae_pipeline.core.arrays import ArrayLike, as_numpy, check_rows, subsample_indices

# scikit-learn's trustworthiness builds dense n x n matrices (distances and ranks). Measured on a
# 2-core CPU: n = 10,000 takes 6 s and a 2.7 GB peak, n = 5,000 1.7 s and 1.3 GB. So the 10,000
# test latents are scored exactly, and larger inputs are subsampled before memory becomes the limit.
TRUSTWORTHINESS_MAX_SAMPLES = 10_000
# Below this many points the Barnes-Hut gradients are used, above it the FFT-interpolated ones. The
# FFT method pays for a fixed interpolation grid on every iteration whatever n is: on 2 CPU cores,
# 4-d latents, 750 iterations, 200 points took 11 s with FFT and 0.7 s with Barnes-Hut, 1,000 points
# 18 s and 5 s; from a few thousand points FFT's O(n) iterations win (openTSNE's documentation
# recommends Barnes-Hut for small data sets). The default evaluation (5,000 points) stays on FFT.
BARNES_HUT_BELOW = 2_000


def tsne_embedding(
    latents: ArrayLike,
    seed: int,
    perplexity: float = 30.0,
    n_jobs: int = 2,
    n_iter: int = 500,
    early_exaggeration_iter: int = 250,
) -> np.ndarray:
    """A 2-D t-SNE map of latent vectors (n, d) -> (n, 2), for plots and trustworthiness.

    openTSNE with FFT-interpolated gradients (Linderman et al. 2019) is O(n) per iteration, where
    Barnes-Hut is O(n log n) and slower for n >= a few thousand. Neighbours are found exactly:
    on 20-d latents at n = 10,000 the exact search took 0.4 s against Annoy's 3.3 s, and it does
    not depend on thread scheduling, so a fixed seed gives the same map. PCA initialisation keeps
    more of the global layout than a random one (Kobak & Linderman 2021). Small maps (fewer than
    BARNES_HUT_BELOW points) use Barnes-Hut gradients, one thread. The iteration counts are openTSNE's
    defaults (250 exaggerated + 500); on two CPU cores shared with another job, 20-d latents took
    31-36 s at n = 5,000 and 39-51 s at n = 10,000, mostly in the late iterations, whose FFT grid
    grows with the map.
    """
    x = np.ascontiguousarray(as_numpy(latents), dtype=np.float64)
    check_rows("latents", x)
    if len(x) <= 3 * perplexity:
        raise ValueError(
            f"t-SNE with perplexity={perplexity} needs more than {int(3 * perplexity)} points "
            f"(it looks at 3 x perplexity neighbours), got {len(x)}; lower the perplexity or pass more points."
        )
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        n_iter=n_iter,
        early_exaggeration_iter=early_exaggeration_iter,
        initialization="pca",
        neighbors="exact",
        negative_gradient_method="bh" if len(x) < BARNES_HUT_BELOW else "fft",
        n_jobs=1 if len(x) < BARNES_HUT_BELOW else n_jobs,
        random_state=seed,
        verbose=False,
    )
    return np.asarray(tsne.fit(x), dtype=np.float64)  # (n, 2)


def trustworthiness_score(
    high: ArrayLike,
    low: ArrayLike,
    n_neighbors: int = 10,
    max_samples: int | None = TRUSTWORTHINESS_MAX_SAMPLES,
    seed: int = 0,
) -> float:
    """How far the k nearest neighbours in the embedding `low` are true neighbours in `high` (1 = all).

    Above `max_samples` points a seeded subsample is scored, because scikit-learn's implementation
    is quadratic in memory. Neighbourhoods are then taken within the subsample, in both spaces,
    which lowers the score (0.980 on 5,000 of 10,000 VAE test latents against 0.989 on all), so
    compare scores only at the same number of points.
    """
    hi, lo = as_numpy(high), as_numpy(low)
    check_rows("high", hi)
    check_rows("low", lo)
    if len(hi) != len(lo):
        raise ValueError(f"high has {len(hi)} rows but low has {len(lo)}; they must describe the same points.")
    idx = subsample_indices(len(hi), max_samples, seed)
    if not 1 <= n_neighbors < len(idx) / 2:
        raise ValueError(
            f"n_neighbors={n_neighbors} must be at least 1 and below half the {len(idx)} scored points."
        )
    return float(trustworthiness(hi[idx], lo[idx], n_neighbors=n_neighbors))


__all__ = ["BARNES_HUT_BELOW", "TRUSTWORTHINESS_MAX_SAMPLES", "trustworthiness_score", "tsne_embedding"]
