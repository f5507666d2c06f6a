"""Frozen configuration for data, model and training; each default says why it is what it is.

Every config validates itself on construction, so a bad value fails before any work starts
and with a message that names the field and the fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DATASETS = ("mnist", "fashion_mnist")
ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
BINARIZATIONS = ("dynamic", "static", "none")
OFFICIAL_TRAIN_IMAGES = 60_000  # the training file of MNIST and of Fashion-MNIST; validation is carved from it


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and the fix."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, f"{name}={value!r} is not supported; use one of {', '.join(allowed)}.")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to ingest and how to split it."""

    dataset: str = "mnist"  # "fashion_mnist" uses the same IDX format and code path
    val_size: int = 10_000  # carved from the 60k training images; test stays untouched
    split_seed: int = 0  # the split is a seeded permutation, so it is reproducible

    def __post_init__(self) -> None:
        _one_of("dataset", self.dataset, DATASETS)
        _require(
            0 < self.val_size < OFFICIAL_TRAIN_IMAGES,
            f"val_size={self.val_size} must be between 1 and {OFFICIAL_TRAIN_IMAGES - 1} "
            f"(the training set has {OFFICIAL_TRAIN_IMAGES} images).",
        )

    @property
    def max_train_images(self) -> int:
        """The most training images this split can leave (fewer for a deliberate slice of the files)."""
        return OFFICIAL_TRAIN_IMAGES - self.val_size


@dataclass(frozen=True)
class ModelConfig:
    """The encoder/decoder architecture and the likelihood p(x|z)."""

    architecture: str = "mlp"  # "mlp" is Kingma & Welling's 784-400-20; "conv" a small CNN
    hidden_dims: tuple[int, ...] = (400,)  # the reference PyTorch example's single hidden layer
    latent_dim: int = 20  # reference example; enough for MNIST without many inactive units
    likelihood: str = "bernoulli"  # MNIST pixels are near-binary; Bernoulli gives NLL in nats comparable to the literature
    gaussian_sigma: float | None = None  # fixed decoder std for "gaussian"; None learns one shared log-sigma
    variational: bool = True  # False builds the deterministic auto-encoder baseline, same architecture
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (channels, height, width) of the input
    conv_channels: tuple[int, ...] = (32, 64)  # conv encoder channels; the decoder mirrors them

    def __post_init__(self) -> None:
        _one_of("architecture", self.architecture, ARCHITECTURES)
        _one_of("likelihood", self.likelihood, LIKELIHOODS)
        _require(self.latent_dim >= 1, f"latent_dim={self.latent_dim} must be at least 1.")
        _require(
            len(self.hidden_dims) >= 1 and all(h >= 1 for h in self.hidden_dims),
            f"hidden_dims={self.hidden_dims} must list at least one positive width.",
        )
        _require(
            self.gaussian_sigma is None or self.gaussian_sigma > 0,
            f"gaussian_sigma={self.gaussian_sigma} must be positive, or None to learn it.",
        )
        _require(
            len(self.conv_channels) >= 1 and all(c >= 1 for c in self.conv_channels),
            f"conv_channels={self.conv_channels} must list at least one positive channel count.",
        )

    @property
    def input_dim(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: epochs, batches, the objective's knobs and the seed."""

    epochs: int = 10  # enough for a useful model in ~1 minute on a 2-core CPU
    batch_size: int = 128  # the reference example's batch; the benchmark compares at this size
    learning_rate: float = 1e-3  # Adam default; stable for this model size
    beta: float = 1.0  # weight of the KL term; 1.0 is the true ELBO (beta-VAE otherwise)
    kl_warmup_epochs: int = 0  # linear ramp of beta from 0 over this many epochs; 0 disables
    free_bits: float = 0.0  # per-dimension KL floor in nats (Kingma et al. 2016); 0 disables
    mc_samples: int = 1  # L samples of z per example; 1 is the standard estimator
    binarization: str = "dynamic"  # Bernoulli targets: fresh binary draw per epoch avoids overfitting
    seed: int = 0  # seeds init, batch order, binarization and epsilon
    amp: bool = True  # mixed precision on CUDA only; ignored on CPU
    grad_clip_norm: float | None = None  # None leaves gradients as they are

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"epochs={self.epochs} must be at least 1.")
        _require(self.batch_size >= 1, f"batch_size={self.batch_size} must be at least 1.")
        _require(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be positive.")
        _require(self.beta >= 0, f"beta={self.beta} must be non-negative.")
        _require(self.kl_warmup_epochs >= 0, f"kl_warmup_epochs={self.kl_warmup_epochs} must be >= 0.")
        _require(self.free_bits >= 0, f"free_bits={self.free_bits} must be >= 0.")
        _require(self.mc_samples >= 1, f"mc_samples={self.mc_samples} must be at least 1.")
        _one_of("binarization", self.binarization, BINARIZATIONS)
        _require(
            self.grad_clip_norm is None or self.grad_clip_norm > 0,
            f"grad_clip_norm={self.grad_clip_norm} must be positive or None.",
        )


@dataclass(frozen=True)
class EmbeddingsConfig:
    """How the latents table scores each image."""

    seed: int = 0  # the one seeded binarization that per-image reconstruction NLLs are scored on


@dataclass(frozen=True)
class SamplesConfig:
    """What the prior-samples asset draws and decodes."""

    n_samples: int = 64  # an 8x8 grid
    seed: int = 0  # z ~ N(0, I) is drawn from a generator with this seed
    n_interpolations: int = 8  # pairs of test digits of different classes
    interpolation_steps: int = 10  # frames per interpolation, both ends included

    def __post_init__(self) -> None:
        _require(self.n_samples >= 1, f"n_samples={self.n_samples} must be at least 1.")
        _require(self.n_interpolations >= 1, f"n_interpolations={self.n_interpolations} must be at least 1.")
        _require(self.interpolation_steps >= 2, f"interpolation_steps={self.interpolation_steps} must be at least 2 (both ends).")


@dataclass(frozen=True)
class ReportConfig:
    """What the reconstruction report shows."""

    gallery_size: int = 16  # worst and best test reconstructions shown

    def __post_init__(self) -> None:
        _require(1 <= self.gallery_size <= 1000, f"gallery_size={self.gallery_size} must be between 1 and 1000.")


@dataclass(frozen=True)
class EvaluationConfig:
    """How much evaluation to buy: the defaults keep the whole pipeline near 3 minutes on 2 CPU cores."""

    seed: int = 0  # every subsample, probe and estimator draws from this seed
    tsne_points: int = 5000  # test images mapped by t-SNE (openTSNE, Barnes-Hut); ~8 s each for VAE and AE on 2 cores
    trustworthiness_neighbors: int = 10  # the k of trustworthiness (van der Maaten's default scale)
    probe_max_train: int = 10_000  # training rows for the probes, the same rows for latents, PCA and pixels
    knn_k: int = 5  # neighbours of the kNN probe
    iwae_k: int = 1000  # importance samples; 5000 is the literature's protocol (~3 min on all 10,000 on 2 cores)
    iwae_examples: int = 2000  # images for the IWAE NLL (10,000 for a full test set)
    smoothness_pairs: int = 100  # latent interpolations between digits of different classes
    smoothness_steps: int = 10  # frames per interpolation
    regularity_samples: int = 2000  # decoded prior / fitted-Gaussian draws judged per model (FD needs >> 128 features)
    regularity_pairs: int = 1000  # midpoints between different-class test codes judged per model

    def __post_init__(self) -> None:
        _require(
            self.regularity_samples >= 200 and self.regularity_pairs >= 200,
            f"regularity_samples={self.regularity_samples} and regularity_pairs={self.regularity_pairs} must be at least "
            "200: a Fréchet distance over the judge's 128 features needs more samples than features.",
        )
        _require(self.tsne_points >= 50, f"tsne_points={self.tsne_points} must be at least 50 for t-SNE to mean anything.")
        _require(self.trustworthiness_neighbors >= 1, f"trustworthiness_neighbors={self.trustworthiness_neighbors} must be at least 1.")
        _require(
            self.trustworthiness_neighbors < self.tsne_points // 2,
            f"trustworthiness_neighbors={self.trustworthiness_neighbors} must be below half of tsne_points={self.tsne_points}.",
        )
        _require(self.probe_max_train >= 10, f"probe_max_train={self.probe_max_train} must be at least 10 (one row per class).")
        _require(self.knn_k >= 1, f"knn_k={self.knn_k} must be at least 1.")
        _require(self.knn_k <= self.probe_max_train, f"knn_k={self.knn_k} must not exceed probe_max_train={self.probe_max_train}.")
        _require(self.iwae_k >= 1, f"iwae_k={self.iwae_k} must be at least 1 (importance samples per image).")
        _require(self.iwae_examples >= 1, f"iwae_examples={self.iwae_examples} must be at least 1.")
        _require(self.smoothness_pairs >= 1, f"smoothness_pairs={self.smoothness_pairs} must be at least 1.")
        _require(self.smoothness_steps >= 3, f"smoothness_steps={self.smoothness_steps} must be at least 3 for step sizes to vary.")


@dataclass(frozen=True)
class GateConfig:
    """How a challenger is measured against the champion (on the validation split), and the tolerances."""

    seed: int = 0  # subsample, binarization, IWAE noise and probe all draw from it
    iwae_k: int = 1000  # importance samples per image; the champion is re-measured if its k differed
    iwae_examples: int = 2000  # validation images for the IWAE NLL (standard error ~0.3 nats at this size)
    probe_max_train: int = 10_000  # training rows of the probe, scored on the validation split
    nll_tolerance: float = 1.0  # nats: IWAE estimates on 2,000 images wobble by a few tenths between seeds
    probe_tolerance: float = 0.005  # half a point: probe noise on 10,000 validation images is ~0.3 points

    def __post_init__(self) -> None:
        _require(self.iwae_k >= 1, f"iwae_k={self.iwae_k} must be at least 1 (importance samples per image).")
        _require(self.iwae_examples >= 2, f"iwae_examples={self.iwae_examples} must be at least 2 (for a standard error).")
        _require(self.probe_max_train >= 10, f"probe_max_train={self.probe_max_train} must be at least 10 (one row per class).")
        _require(self.nll_tolerance >= 0, f"nll_tolerance={self.nll_tolerance} must be >= 0 nats.")
        _require(0 <= self.probe_tolerance < 1, f"probe_tolerance={self.probe_tolerance} must be in [0, 1).")


@dataclass(frozen=True)
class ComparisonConfig:
    """How two model versions are measured side by side (a report: on the test split, one protocol for both)."""

    seed: int = 0  # binarization, IWAE noise, probe rows and prior draws: the same for both versions
    iwae_k: int = 1000  # importance samples per image, as in latent_evaluation
    iwae_examples: int = 2000  # test images for the IWAE NLL (standard error ~0.3 nats at this size)
    probe_max_train: int = 10_000  # training rows of the linear probe, the same rows for both
    prior_samples: int = 2000  # decoded N(0, I) draws judged per version (FD needs >> 128 features)

    def __post_init__(self) -> None:
        _require(self.iwae_k >= 1, f"iwae_k={self.iwae_k} must be at least 1 (importance samples per image).")
        _require(self.iwae_examples >= 2, f"iwae_examples={self.iwae_examples} must be at least 2 (for a standard error).")
        _require(self.probe_max_train >= 10, f"probe_max_train={self.probe_max_train} must be at least 10 (one row per class).")
        _require(
            self.prior_samples >= 200,
            f"prior_samples={self.prior_samples} must be at least 200: a Fréchet distance over the judge's 128 "
            "features needs more samples than features.",
        )


def to_dict(cfg: Any) -> dict[str, Any]:
    """A flat, JSON-friendly dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a config from `to_dict` output, restoring tuples."""
    fields = {f.name: f for f in cls.__dataclass_fields__.values()}  # type: ignore[attr-defined]
    kwargs = {}
    for k, v in values.items():
        if k not in fields:
            raise ConfigError(f"unknown {cls.__name__} field {k!r}; known: {', '.join(fields)}.")
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


__all__ = [
    "ARCHITECTURES",
    "BINARIZATIONS",
    "DATASETS",
    "LIKELIHOODS",
    "OFFICIAL_TRAIN_IMAGES",
    "ConfigError",
    "DataConfig",
    "EmbeddingsConfig",
    "EvaluationConfig",
    "GateConfig",
    "ModelConfig",
    "ReportConfig",
    "SamplesConfig",
    "TrainConfig",
    "from_dict",
    "to_dict",
]
