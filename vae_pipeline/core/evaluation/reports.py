"""What the output assets compute from a trained model: per-image encodings and errors, reconstructions,
per-class error statistics and the worst and best examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from vae_pipeline.core.data.tensor_store import TensorStore
from vae_pipeline.core.evaluation.arrays import ArrayLike, as_numpy
from vae_pipeline.core.model.inference import decoded_mean, encode_mean, recon_nll_at
from vae_pipeline.core.model.losses import kl_divergence
from vae_pipeline.core.model.vae import VAE


def scoring_targets(model: VAE, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The images as the likelihood scores them: one seeded binarization for a Bernoulli model.

    A fixed draw makes per-example NLLs proper log-likelihoods of binary data in nats and makes
    them repeatable; a Gaussian model scores the grey values as they are.
    """
    if model.cfg.likelihood == "bernoulli":
        return torch.bernoulli(images, generator=generator)
    return images


def encode_splits(
    model: VAE, store: TensorStore, device: torch.device | str, seed: int, splits: tuple[str, ...] = ("train", "val", "test")
) -> dict[str, dict[str, np.ndarray]]:
    """Per split and image: official index, label, mu, logvar, recon_nll_at_mu and kl, all of one encoding.

    The grey image is encoded once; `kl` is the KL of that row's own mu and logvar, and
    `recon_nll_at_mu` scores one seeded binarization of the image (a Bernoulli model; a Gaussian
    scores the grey values) under the decoder at z = mu. An auto-encoder has no logvar and no KL
    (None). This is not the ELBO's Monte-Carlo reconstruction term (val_recon_nll in MLflow).
    """
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in splits:
        split = store[name]
        x = split.float_images()  # (n, 1, 28, 28)
        mu, logvar = encode_mean(model, x, device=device)  # (n, d) each; logvar None for an AE
        recon = recon_nll_at(model, mu, scoring_targets(model, x, generator), device=device)  # (n,)
        out[name] = {
            "index": split.index.numpy(),
            "label": split.labels.numpy(),
            "mu": mu.numpy(),
            "logvar": logvar.numpy() if logvar is not None else None,
            "recon_nll_at_mu": recon.numpy(),
            "kl": kl_divergence(mu, logvar).numpy() if logvar is not None else None,  # (n,)
        }
    return out


@torch.no_grad()
def reconstruction_pairs(model: VAE, images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Originals and their reconstructions (decoder mean at z = mu), interleaved: (2n, C, H, W) on the CPU."""
    model.eval()
    x = images.to(device)  # (n, C, H, W)
    mu, _ = model.encode(x)  # (n, d)
    recon = decoded_mean(model, model.decode(mu)).cpu()  # (n, C, H, W)
    return torch.stack([images.float(), recon], dim=1).reshape(-1, *images.shape[1:])  # (2n, C, H, W)


def per_class_change(current: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """Mean error per class now, before, and the difference (negative = better now)."""
    joined = pd.DataFrame({"mean_now": current["mean"], "mean_before": previous["mean"]})
    joined["change"] = joined["mean_now"] - joined["mean_before"]
    joined["change_pct"] = 100.0 * joined["change"] / joined["mean_before"]
    return joined


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
