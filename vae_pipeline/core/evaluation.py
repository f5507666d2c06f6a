"""Measures of what a latent space has learned: t-SNE, trustworthiness, probes, interpolation smoothness.

Every function takes plain arrays or tensors (and, for interpolation, a `decode` callable), so this
module knows nothing about the VAE class, Dagster or MLflow. Every stochastic step takes a seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from openTSNE import TSNE
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import trustworthiness
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ArrayLike = np.ndarray | torch.Tensor

# scikit-learn's trustworthiness builds dense n x n matrices (distances and ranks). Measured on a
# 2-core CPU: n = 10,000 takes 6 s and a 2.7 GB peak, n = 5,000 1.7 s and 1.3 GB. So the 10,000
# test latents are scored exactly, and larger inputs are subsampled before memory becomes the limit.
TRUSTWORTHINESS_MAX_SAMPLES = 10_000

# Smoothness verdict thresholds, measured on 784-400-20 MLPs trained 10 epochs on MNIST, decoding
# 10 points between 500 different-class test pairs (medians; 99th percentiles in brackets):
#   VAE:            max/mean step 1.38 (1.84), path ratio 1.32 (1.48)
#   plain AE:       max/mean step 1.25 (1.56), path ratio 1.43 (1.63)
#   lookup decoder: max/mean step 2.94,        path ratio 2.59   (nearest training image: all jumps)
# 2.0 sits above every continuous decoder's 99th percentile and below the discontinuous one's median.
SMOOTH_MAX_STEP_RATIO = 2.0
SMOOTH_PATH_RATIO = 2.0


def as_numpy(x: ArrayLike) -> np.ndarray:
    """A NumPy view (or copy, for tensors on an accelerator) of an array or tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_rows(name: str, x: np.ndarray, ndim: int = 2) -> None:
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


# --- t-SNE and trustworthiness ----------------------------------------------------------------


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
    more of the global layout than a random one (Kobak & Linderman 2021). The iteration counts are openTSNE's
    defaults (250 exaggerated + 500); on two CPU cores shared with another job, 20-d latents took
    31-36 s at n = 5,000 and 39-51 s at n = 10,000, mostly in the late iterations, whose FFT grid
    grows with the map.
    """
    x = np.ascontiguousarray(as_numpy(latents), dtype=np.float64)
    _check_rows("latents", x)
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
        negative_gradient_method="fft",
        n_jobs=n_jobs,
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
    _check_rows("high", hi)
    _check_rows("low", lo)
    if len(hi) != len(lo):
        raise ValueError(f"high has {len(hi)} rows but low has {len(lo)}; they must describe the same points.")
    idx = subsample_indices(len(hi), max_samples, seed)
    if not 1 <= n_neighbors < len(idx) / 2:
        raise ValueError(
            f"n_neighbors={n_neighbors} must be at least 1 and below half the {len(idx)} scored points."
        )
    return float(trustworthiness(hi[idx], lo[idx], n_neighbors=n_neighbors))


# --- probes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """Test accuracy of a classifier fit on frozen features, overall and per class."""

    accuracy: float
    per_class_accuracy: dict[int, float]
    n_train: int  # after subsampling
    n_test: int
    converged: bool | None = None  # None for methods without an iterative fit (kNN)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _probe_inputs(
    train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xtr, ytr, xte, yte = as_numpy(train_x), as_numpy(train_y), as_numpy(test_x), as_numpy(test_y)
    # Images arrive as (n, 1, 28, 28); a probe sees each as one flat feature vector.
    xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    _check_rows("train_x", xtr)
    _check_rows("test_x", xte)
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError(
            f"features and labels disagree: train {len(xtr)} vs {len(ytr)}, test {len(xte)} vs {len(yte)}."
        )
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train has {xtr.shape[1]} features but test has {xte.shape[1]}.")
    return xtr, ytr.astype(np.int64), xte, yte.astype(np.int64)


def _per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> dict[int, float]:
    return {int(c): float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)}


def linear_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    seed: int,
    max_iter: int = 200,
    max_train: int | None = None,
    C: float = 1.0,
) -> ProbeResult:
    """Test accuracy of a multinomial logistic regression on standardized features.

    How much class information is linearly readable from the features; run it on latents and on
    raw pixels to compare. `max_train` fits on a seeded subsample (raw pixels at 50,000 x 784 take
    a minute on two cores, 10,000 rows 3 s). Accuracy grows with the training rows, so compare
    features at the same `max_train`. Scaling is fit on the training rows only.
    """
    xtr, ytr, xte, yte = _probe_inputs(train_x, train_y, test_x, test_y)
    idx = subsample_indices(len(xtr), max_train, seed)
    xtr, ytr = xtr[idx], ytr[idx]
    if len(np.unique(ytr)) < 2:
        raise ValueError("the training labels hold a single class; a probe needs at least two.")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    # A probe that stops at max_iter is still a valid (slightly pessimistic) probe; record it
    # in the result instead of printing a warning nobody reads.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(xtr, ytr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    pred = model.predict(xte)
    return ProbeResult(
        accuracy=float((pred == yte).mean()),
        per_class_accuracy=_per_class_accuracy(yte, pred),
        n_train=len(ytr),
        n_test=len(yte),
        converged=converged,
    )


def knn_accuracy(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    k: int = 5,
    max_train: int | None = None,
    seed: int = 0,
    n_jobs: int | None = None,
) -> ProbeResult:
    """Test accuracy of a k-nearest-neighbour classifier in the feature space as given.

    Local class structure, where the linear probe measures global linear structure. Features are
    not standardized: a VAE's inactive units carry near-constant noise that scaling would inflate
    to the weight of an informative unit.
    """
    xtr, ytr, xte, yte = _probe_inputs(train_x, train_y, test_x, test_y)
    idx = subsample_indices(len(xtr), max_train, seed)
    xtr, ytr = xtr[idx], ytr[idx]
    if not 1 <= k <= len(xtr):
        raise ValueError(f"k={k} must be between 1 and the {len(xtr)} training rows.")
    pred = KNeighborsClassifier(n_neighbors=k, n_jobs=n_jobs).fit(xtr, ytr).predict(xte)
    return ProbeResult(
        accuracy=float((pred == yte).mean()),
        per_class_accuracy=_per_class_accuracy(yte, pred),
        n_train=len(ytr),
        n_test=len(yte),
    )


# --- interpolation smoothness -----------------------------------------------------------------


def pick_interpolation_pairs(labels: ArrayLike, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (index_a, index_b) pairs of examples with different labels, to interpolate between.

    Different classes make the path cross a class boundary, where a jump would show. Pairs are
    drawn with replacement across pairs, never within one.
    """
    y = as_numpy(labels).reshape(-1)
    if len(np.unique(y)) < 2:
        raise ValueError("labels hold a single class; different-class pairs need at least two.")
    if n_pairs < 1:
        raise ValueError(f"n_pairs={n_pairs} must be at least 1.")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(y), size=n_pairs)
    b = np.empty_like(a)
    for i, ia in enumerate(a):
        others = np.flatnonzero(y != y[ia])
        b[i] = others[rng.integers(0, len(others))]
    return a, b


def interpolate_latents(z_a: torch.Tensor, z_b: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` evenly spaced points on each straight line z_a -> z_b, endpoints included: (n_pairs, steps, d)."""
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"z_a and z_b must both be (n_pairs, d); got {tuple(z_a.shape)} and {tuple(z_b.shape)}.")
    if steps < 3:
        raise ValueError(f"steps={steps} must be at least 3 for the step sizes to vary.")
    t = torch.linspace(0.0, 1.0, steps, device=z_a.device, dtype=z_a.dtype)  # (steps,)
    return z_a[:, None, :] + t[None, :, None] * (z_b - z_a)[:, None, :]  # (n_pairs, steps, d)


def decode_interpolations(
    decode: Callable[[torch.Tensor], torch.Tensor],
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    steps: int = 10,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Decoded images along each straight latent line: (n_pairs, steps, *image_shape), on the CPU.

    `decode` must return pixel-space images (Bernoulli probabilities or Gaussian means), not
    logits: step sizes in logit space are dominated by saturated background pixels. The latents
    stay on the device they came in on; `decode` must accept them there.
    """
    z = interpolate_latents(z_a, z_b, steps)  # (n_pairs, steps, d)
    flat = z.reshape(-1, z.shape[-1])  # (n_pairs * steps, d)
    with torch.inference_mode():
        images = torch.cat([decode(flat[i : i + batch_size]).cpu() for i in range(0, len(flat), batch_size)])
    if len(images) != len(flat):
        raise ValueError(f"decode returned {len(images)} images for {len(flat)} latent codes.")
    return images.reshape(z.shape[0], steps, *images.shape[1:])  # (n_pairs, steps, c, h, w)


def total_variation(images: np.ndarray) -> np.ndarray:
    """Anisotropic total variation of each image (..., h, w): the summed absolute neighbour differences."""
    dh = np.abs(np.diff(images, axis=-2)).sum(axis=(-2, -1))
    dw = np.abs(np.diff(images, axis=-1)).sum(axis=(-2, -1))
    return dh + dw


@dataclass(frozen=True)
class SmoothnessStats:
    """Per-pair path measures of decoded interpolations, and their median and 90th percentile.

    max_step_ratio: largest pixel-space L2 step / mean step (1 = even motion; steps-1 = one jump).
    path_ratio: path length / endpoint distance (1 = a straight cross-fade; large = a detour).
    mean_tv: mean total variation of the frames (sharpness / noise of what is decoded).
    Pairs whose endpoints decode to the same image have no defined ratio (NaN) and are counted in
    n_degenerate, not in the aggregates.
    """

    steps: int
    n_pairs: int
    n_degenerate: int
    max_step_ratio: np.ndarray  # (n_pairs,)
    path_ratio: np.ndarray  # (n_pairs,)
    mean_tv: np.ndarray  # (n_pairs,)

    def summary(self) -> dict[str, float | int]:
        """Median and 90th percentile over pairs of each measure, flat, for metadata and metrics."""
        out: dict[str, float | int] = {"steps": self.steps, "n_pairs": self.n_pairs, "n_degenerate": self.n_degenerate}
        for name in ("max_step_ratio", "path_ratio", "mean_tv"):
            values = getattr(self, name)
            finite = values[np.isfinite(values)]
            out[f"{name}_median"] = float(np.median(finite)) if len(finite) else math.nan
            out[f"{name}_p90"] = float(np.percentile(finite, 90)) if len(finite) else math.nan
        return out


def path_smoothness(frames: ArrayLike) -> SmoothnessStats:
    """Smoothness measures of decoded interpolation paths (n_pairs, steps, *image_shape)."""
    x = as_numpy(frames).astype(np.float64)
    if x.ndim not in (4, 5) or x.shape[1] < 3:
        raise ValueError(f"frames must be (n_pairs, steps >= 3, [channels,] height, width), got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("the decoded frames hold NaN or infinite values; the decoder is broken.")
    n_pairs, steps = x.shape[:2]
    flat = x.reshape(n_pairs, steps, -1)  # (n_pairs, steps, pixels)
    step_sizes = np.linalg.norm(np.diff(flat, axis=1), axis=-1)  # (n_pairs, steps - 1)
    path_length = step_sizes.sum(axis=1)  # (n_pairs,)
    endpoint = np.linalg.norm(flat[:, -1] - flat[:, 0], axis=-1)  # (n_pairs,)
    moving = step_sizes.mean(axis=1) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        max_step_ratio = np.where(moving, step_sizes.max(axis=1) / step_sizes.mean(axis=1), np.nan)
        path_ratio = np.where(endpoint > 0, path_length / endpoint, np.nan)
    images = x.reshape(n_pairs, steps, -1, *x.shape[-2:])  # (n_pairs, steps, channels, h, w)
    mean_tv = total_variation(images).sum(axis=-1).mean(axis=1)  # channels summed, frames averaged
    return SmoothnessStats(
        steps=steps,
        n_pairs=n_pairs,
        n_degenerate=int((~np.isfinite(max_step_ratio) | ~np.isfinite(path_ratio)).sum()),
        max_step_ratio=max_step_ratio,
        path_ratio=path_ratio,
        mean_tv=mean_tv,
    )


def interpolation_smoothness(
    decode: Callable[[torch.Tensor], torch.Tensor],
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    steps: int = 10,
    batch_size: int = 1024,
) -> SmoothnessStats:
    """Decode straight latent lines between pairs of codes and measure how evenly the images move."""
    return path_smoothness(decode_interpolations(decode, z_a, z_b, steps, batch_size))


def smoothness_verdict(
    stats: SmoothnessStats,
    threshold: float = SMOOTH_MAX_STEP_RATIO,
    path_ratio_threshold: float = SMOOTH_PATH_RATIO,
) -> tuple[bool, str]:
    """Answer "is the latent space smooth?" from interpolation stats: (verdict, a sentence with the numbers).

    Smooth means a typical straight latent line decodes to images that move evenly: the median
    max/mean step ratio is below `threshold` and the median path ratio below `path_ratio_threshold`.
    The step ratio lies in [1, steps - 1]; a single jump between two frames gives steps - 1 (9 at
    the default 10 steps), so 2 means "no step more than twice the average". The path ratio
    catches the other failure, a path that wanders through unrelated images between the endpoints.

    The thresholds were set on 10-step paths (numbers next to SMOOTH_MAX_STEP_RATIO). With more
    steps a continuous decoder's ratio barely moves (VAE 1.41 at 20 steps) while a jumpy one's
    grows (lookup 5.6), so they only get stricter for jumps. Continuity of the decoder, not the KL
    term, is what these measure: a plain auto-encoder's decoded paths between encoded test images
    were as even as the VAE's, with a slightly longer detour (path ratio 1.43 vs 1.32).
    """
    s = stats.summary()
    ratio, path = s["max_step_ratio_median"], s["path_ratio_median"]
    if not (np.isfinite(ratio) and np.isfinite(path)):
        return False, (
            f"not smooth: all {stats.n_pairs} pairs decode to identical endpoints, so no step ratio is defined."
        )
    smooth = ratio < threshold and path < path_ratio_threshold
    sentence = (
        f"{'smooth' if smooth else 'not smooth'}: over {stats.n_pairs - stats.n_degenerate} pairs and "
        f"{stats.steps} steps, the largest decoded step is {ratio:.2f}x the mean step at the median "
        f"({s['max_step_ratio_p90']:.2f}x at the 90th percentile; threshold {threshold:g}), and the "
        f"path is {path:.2f}x the endpoint distance ({s['path_ratio_p90']:.2f}x at p90; threshold "
        f"{path_ratio_threshold:g})."
    )
    return smooth, sentence


# --- per-example errors -----------------------------------------------------------------------


def per_class_error_stats(errors: ArrayLike, labels: ArrayLike) -> pd.DataFrame:
    """Count, mean, std, median, 90th percentile and max of a per-example error, one row per class."""
    e, y = as_numpy(errors).reshape(-1), as_numpy(labels).reshape(-1)
    if len(e) != len(y):
        raise ValueError(f"errors has {len(e)} values but labels has {len(y)}.")
    frame = pd.DataFrame({"label": y.astype(np.int64), "error": e.astype(np.float64)})
    stats = frame.groupby("label")["error"].agg(
        count="count",
        mean="mean",
        std="std",
        median="median",
        p90=lambda v: float(np.percentile(v, 90)),
        max="max",
    )
    return stats.astype({"count": np.int64})


def extreme_indices(errors: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k largest (worst, largest first) and k smallest (best, smallest first) errors.

    Ties keep the lower index first, so the selection is deterministic.
    """
    e = as_numpy(errors).reshape(-1)
    if not 1 <= k <= len(e):
        raise ValueError(f"k={k} must be between 1 and the {len(e)} errors.")
    order = np.argsort(e, kind="stable")  # ascending
    worst = np.argsort(-e, kind="stable")[:k]
    return worst, order[:k]


__all__ = [
    "SMOOTH_MAX_STEP_RATIO",
    "SMOOTH_PATH_RATIO",
    "TRUSTWORTHINESS_MAX_SAMPLES",
    "ProbeResult",
    "SmoothnessStats",
    "as_numpy",
    "decode_interpolations",
    "extreme_indices",
    "interpolate_latents",
    "interpolation_smoothness",
    "knn_accuracy",
    "linear_probe",
    "path_smoothness",
    "per_class_error_stats",
    "pick_interpolation_pairs",
    "smoothness_verdict",
    "subsample_indices",
    "total_variation",
    "trustworthiness_score",
]
