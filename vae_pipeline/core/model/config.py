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


def check_count(name: str, value: object, low: int, high: int, why: str) -> None:
    """`value` is a whole number in [low, high]; `why` says what the upper bound protects (time or memory).

    A count that scales time or memory is bounded here, before any work: 1e8 prior samples would
    grow past the machine's memory long after ingest and training ran. Booleans and fractions are
    refused, not truncated (`True` is 1 to Python, `int(2.7)` is 2).
    """
    _require(
        isinstance(value, int) and not isinstance(value, bool),
        f"{name}={value!r} must be a whole number between {low} and {high}.",
    )
    _require(value >= low, f"{name}={value} must be at least {low}.")
    _require(value <= high, f"{name}={value} is above its bound {high}: {why}; use at most {high}.")


# Upper bounds of the counts that scale time or memory, each with what it protects. They sit far
# above what any study of MNIST-sized images needs and far below what fails a 2-core, 24 GiB machine.
MAX_EPOCHS = 1000  # each epoch is one pass over up to 59,999 images (~6 s on 2 CPU cores at the defaults)
MAX_WIDTH = 16_384  # a hidden layer: 16,384 x 16,384 weights are 1 GiB in float32, 4 GiB with gradients and Adam
MAX_HIDDEN_LAYERS = 16
MAX_CONV_CHANNELS = 1024
MAX_MC_SAMPLES = 1000  # every sample of z is a decoder pass kept for backward
MAX_IWAE_K = 10_000  # each image costs k decoder passes; 5,000 is the literature's protocol (~3 min for 10,000 images)
MAX_EXAMPLES = 10_000  # the test split of MNIST and Fashion-MNIST has 10,000 images
MAX_PROBE_ROWS = OFFICIAL_TRAIN_IMAGES  # probes train on at most every training image
MAX_TSNE_POINTS = 10_000  # t-SNE maps test images; the test split has 10,000
MAX_SAMPLES = 10_000  # decoded images are held in memory and drawn into one PNG grid, 8 per row
MAX_INTERPOLATIONS = 100  # rows of the interpolation strip PNG
MAX_STEPS = 100  # frames per interpolation: columns of the strip PNG (28 px each)


def _iwae(k: object, examples: object, least_examples: int) -> None:
    check_count("iwae_k", k, 1, MAX_IWAE_K, "each image costs k decoder passes (5,000 is the literature's protocol)")
    check_count("iwae_examples", examples, least_examples, MAX_EXAMPLES,
           "a split has at most 10,000 images to score (2 give a standard error)")


def _probe_rows(rows: object) -> None:
    check_count("probe_max_train", rows, 10, MAX_PROBE_ROWS, "the probes train on training images (one per class at least)")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to ingest and how to split it."""

    dataset: str = "mnist"  # "fashion_mnist" uses the same IDX format and code path
    val_size: int = 10_000  # carved from the 60k training images; test stays untouched
    split_seed: int = 0  # the split is a seeded permutation, so it is reproducible

    def __post_init__(self) -> None:
        _one_of("dataset", self.dataset, DATASETS)
        check_count("val_size", self.val_size, 1, OFFICIAL_TRAIN_IMAGES - 1,
               f"the training set has {OFFICIAL_TRAIN_IMAGES} images and at least one must be left to train on")

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
        check_count("latent_dim", self.latent_dim, 1, self.input_dim,
               f"a code of more numbers than the {self.input_dim} pixels it encodes compresses nothing")
        _require(
            1 <= len(self.hidden_dims) <= MAX_HIDDEN_LAYERS,
            f"hidden_dims={self.hidden_dims} must list between 1 and {MAX_HIDDEN_LAYERS} widths.",
        )
        for i, width in enumerate(self.hidden_dims):
            check_count(f"hidden_dims[{i}]", width, 1, MAX_WIDTH, "each layer's weights, gradients and Adam state grow with its "
                   "width times the next layer's (16,384 x 16,384 is 4 GiB)")
        _require(
            self.gaussian_sigma is None or self.gaussian_sigma > 0,
            f"gaussian_sigma={self.gaussian_sigma} must be positive, or None to learn it.",
        )
        _require(
            1 <= len(self.conv_channels) <= 4,
            f"conv_channels={self.conv_channels} must list 1 to 4 channel counts (each layer halves 28 x 28).",
        )
        for i, channels in enumerate(self.conv_channels):
            check_count(f"conv_channels[{i}]", channels, 1, MAX_CONV_CHANNELS, "activations and weights grow with the channels")

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
        check_count("epochs", self.epochs, 1, MAX_EPOCHS, "each epoch is a pass over the training split (~6 s on 2 CPU cores)")
        check_count("batch_size", self.batch_size, 1, OFFICIAL_TRAIN_IMAGES - 1, "a batch cannot hold more than the training split")
        _require(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be positive.")
        _require(self.beta >= 0, f"beta={self.beta} must be non-negative.")
        _require(self.kl_warmup_epochs >= 0, f"kl_warmup_epochs={self.kl_warmup_epochs} must be >= 0.")
        _require(self.free_bits >= 0, f"free_bits={self.free_bits} must be >= 0.")
        check_count("mc_samples", self.mc_samples, 1, MAX_MC_SAMPLES, "each sample of z is a decoder pass kept for backward")
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
        check_count("n_samples", self.n_samples, 1, MAX_SAMPLES,
               "the decoded images are held in memory and drawn into one PNG grid, 8 per row")
        check_count("n_interpolations", self.n_interpolations, 1, MAX_INTERPOLATIONS, "each is a row of the interpolation strip PNG")
        check_count("interpolation_steps", self.interpolation_steps, 2, MAX_STEPS,
               "each step is a 28-pixel column of the interpolation strip PNG; 2 are the two ends")


@dataclass(frozen=True)
class ReportConfig:
    """What the reconstruction report shows."""

    gallery_size: int = 16  # worst and best test reconstructions shown

    def __post_init__(self) -> None:
        check_count("gallery_size", self.gallery_size, 1, 1000, "each shown reconstruction is a tile of the report's PNG")


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
        for name in ("regularity_samples", "regularity_pairs", "smoothness_pairs"):
            check_count(name, getattr(self, name), 1, MAX_EXAMPLES, "each is decoded and judged; the test split has 10,000 images")
        check_count("tsne_points", self.tsne_points, 50, MAX_TSNE_POINTS,
               "t-SNE maps test images, and the test split has 10,000")
        check_count("trustworthiness_neighbors", self.trustworthiness_neighbors, 1, MAX_TSNE_POINTS // 2,
               "neighbours are counted among the mapped points")
        _require(
            self.trustworthiness_neighbors < self.tsne_points // 2,
            f"trustworthiness_neighbors={self.trustworthiness_neighbors} must be below half of tsne_points={self.tsne_points}.",
        )
        _probe_rows(self.probe_max_train)
        check_count("knn_k", self.knn_k, 1, self.probe_max_train, "neighbours are found among the probe's training rows")
        _iwae(self.iwae_k, self.iwae_examples, least_examples=1)
        check_count("smoothness_steps", self.smoothness_steps, 3, MAX_STEPS, "each step is decoded and judged; 3 let step sizes vary")


@dataclass(frozen=True)
class GateConfig:
    """How a challenger is measured against the champion (on the validation split), and the tolerances."""

    seed: int = 0  # subsample, binarization, IWAE noise and probe all draw from it
    iwae_k: int = 1000  # importance samples per image; the champion is re-measured if its k differed
    iwae_examples: int = 2000  # validation images for the IWAE NLL (standard error ~0.3 nats at this size)
    probe_max_train: int = 10_000  # training rows of the probe, scored on the validation split
    nll_tolerance: float = 1.0  # nats: IWAE estimates on 2,000 images wobble by a few tenths between seeds
    probe_tolerance: float = 0.005  # half a point: probe noise on 10,000 validation images is ~0.3 points
    # A champion trained on other data is compared only on validation images neither model trained on;
    # below this many the comparison is refused (IWAE's standard error grows as 1/sqrt(n): ~0.4 nats here).
    min_held_out: int = 1000

    def __post_init__(self) -> None:
        _iwae(self.iwae_k, self.iwae_examples, least_examples=2)
        _probe_rows(self.probe_max_train)
        check_count("min_held_out", self.min_held_out, 2, MAX_EXAMPLES, "a validation split holds at most 10,000 images")
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
        _iwae(self.iwae_k, self.iwae_examples, least_examples=2)
        _probe_rows(self.probe_max_train)
        _require(
            self.prior_samples >= 200,
            f"prior_samples={self.prior_samples} must be at least 200: a Fréchet distance over the judge's 128 "
            "features needs more samples than features.",
        )
        check_count("prior_samples", self.prior_samples, 200, MAX_EXAMPLES, "each is decoded and judged")


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
    "MAX_CONV_CHANNELS",
    "MAX_EPOCHS",
    "MAX_EXAMPLES",
    "MAX_HIDDEN_LAYERS",
    "MAX_INTERPOLATIONS",
    "MAX_IWAE_K",
    "MAX_MC_SAMPLES",
    "MAX_PROBE_ROWS",
    "MAX_SAMPLES",
    "MAX_STEPS",
    "MAX_TSNE_POINTS",
    "MAX_WIDTH",
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
    "check_count",
    "from_dict",
    "to_dict",
]
