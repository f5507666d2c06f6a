"""Probes of frozen features: how much class information a linear model or kNN can read off them.

Run them on latents, on raw pixels and on a PCA of the pixels with as many components as the
latent has dimensions: PCA is the linear auto-encoder of that size, so a latent space that probes
no better than it has learned nothing a linear projection could not.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from vae_pipeline.core.evaluation.arrays import ArrayLike, as_numpy, check_rows, subsample_indices


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
    check_rows("train_x", xtr)
    check_rows("test_x", xte)
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
    # scikit-learn is imported where it is used: every process that loads the definitions (a code
    # server, each run worker, `dg list defs`) would otherwise pay about 1.5 s for it.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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
    from sklearn.neighbors import KNeighborsClassifier  # imported here, as in linear_probe

    pred = KNeighborsClassifier(n_neighbors=k, n_jobs=n_jobs).fit(xtr, ytr).predict(xte)
    return ProbeResult(
        accuracy=float((pred == yte).mean()),
        per_class_accuracy=_per_class_accuracy(yte, pred),
        n_train=len(ytr),
        n_test=len(yte),
    )


@dataclass(frozen=True)
class PcaBaseline:
    """Probe and kNN accuracy on a PCA of the inputs with as many components as the latent has dimensions."""

    n_components: int
    explained_variance: float  # share of the training rows' variance the components keep, in [0, 1]
    probe: ProbeResult
    knn: ProbeResult

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def pca_features(
    train_x: ArrayLike, test_x: ArrayLike, n_components: int, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Project train and test rows on the top principal components of the training rows.

    Returns (train features (n_train, k), test features (n_test, k), explained variance share).
    The components are fit on the training rows only, as a latent space is learned from them.
    """
    xtr, xte = as_numpy(train_x), as_numpy(test_x)
    xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)  # (n, pixels)
    check_rows("train_x", xtr)
    check_rows("test_x", xte)
    if not 1 <= n_components <= min(xtr.shape):
        raise ValueError(
            f"n_components={n_components} must be between 1 and min(rows, features) = {min(xtr.shape)}; "
            "pass the latent dimension, or more training rows."
        )
    # The randomized solver is exact enough for the top 20 of 784 components and ~10x faster than
    # a full SVD of 10,000 x 784; its random start takes the seed.
    from sklearn.decomposition import PCA  # imported here, as in linear_probe

    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed)
    train_features = pca.fit_transform(xtr.astype(np.float64))  # (n_train, k)
    test_features = pca.transform(xte.astype(np.float64))  # (n_test, k)
    return train_features, test_features, float(pca.explained_variance_ratio_.sum())


def pca_baseline(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    n_components: int,
    seed: int,
    k: int = 5,
    max_train: int | None = None,
    max_iter: int = 200,
) -> PcaBaseline:
    """The linear probe and kNN on a PCA of the inputs fit on the probe's own training rows.

    The same seeded `max_train` subsample as `linear_probe` and `knn_accuracy` use is drawn once,
    PCA is fit on it, and both probes see exactly those rows: so with the same seed and max_train
    the baseline is compared with the latents on identical training rows.
    """
    xtr, ytr, xte, yte = _probe_inputs(train_x, train_y, test_x, test_y)
    idx = subsample_indices(len(xtr), max_train, seed)
    ftr, fte, explained = pca_features(xtr[idx], xte, n_components, seed)
    return PcaBaseline(
        n_components=n_components,
        explained_variance=explained,
        probe=linear_probe(ftr, ytr[idx], fte, yte, seed=seed, max_iter=max_iter),
        knn=knn_accuracy(ftr, ytr[idx], fte, yte, k=k, seed=seed),
    )


__all__ = ["PcaBaseline", "ProbeResult", "knn_accuracy", "linear_probe", "pca_baseline", "pca_features"]
