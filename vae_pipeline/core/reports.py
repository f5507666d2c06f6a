"""What the output assets compute from a trained model: per-image encodings and errors, reconstructions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from vae_pipeline.core.data import TensorStore
from vae_pipeline.core.inference import decoded_mean, encode_mean, reconstruction_errors
from vae_pipeline.core.model import VAE


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
    """Per split: official index, label, mu, logvar (None for an auto-encoder), recon_nll and kl per image."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in splits:
        split = store[name]
        x = split.float_images()  # (n, 1, 28, 28)
        mu, logvar = encode_mean(model, x, device=device)  # (n, d) each
        errors = reconstruction_errors(model, scoring_targets(model, x, generator), device=device)
        out[name] = {
            "index": split.index.numpy(),
            "label": split.labels.numpy(),
            "mu": mu.numpy(),
            "logvar": logvar.numpy() if logvar is not None else None,
            "recon_nll": errors.recon_nll.numpy(),
            "kl": errors.kl.numpy(),
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
