"""Using a trained model: encodings, decodings, samples, per-example errors, IWAE NLL, latent diagnostics.

Every function is batched, runs without autograd, takes the device it should compute on and
returns CPU tensors, so callers (Dagster assets, notebooks) never hold GPU memory by accident.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch

from vae_pipeline.core.model import losses
from vae_pipeline.core.model.vae import VAE

DEFAULT_BATCH_SIZE = 1000  # inference keeps no activations for backward, so large batches are cheap


@contextlib.contextmanager
def _eval_mode(model: VAE) -> Iterator[None]:
    """Eval mode and inference mode for the duration, restoring the model's training flag after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _batches(x: torch.Tensor, batch_size: int, device: torch.device | str) -> Iterator[torch.Tensor]:
    """Consecutive slices of `x` moved to `device` as float32 images in [0, 1]."""
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)  # (B, C, H, W)
        yield xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()


def decoded_mean(model: VAE, decoded: torch.Tensor) -> torch.Tensor:
    """The mean of p(x|z) as an image in [0, 1]: sigmoid of Bernoulli logits, clamped Gaussian means."""
    if model.cfg.likelihood == "bernoulli":
        return torch.sigmoid(decoded.float())
    # Gaussian means are unconstrained; outside [0, 1] they are not valid pixel values.
    return decoded.float().clamp(0.0, 1.0)


def encode_mean(
    model: VAE, x: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The encoder's (mu, logvar) for every image, on the CPU; logvar is None for an auto-encoder."""
    mus, logvars = [], []
    with _eval_mode(model):
        for xb in _batches(x, batch_size, device):
            mu, logvar = model.encode(xb)  # (B, latent_dim) each
            mus.append(mu.float().cpu())
            if logvar is not None:
                logvars.append(logvar.float().cpu())
    mu_all = torch.cat(mus)  # (n, latent_dim)
    return mu_all, (torch.cat(logvars) if logvars else None)


def sample_prior(
    model: VAE,
    n: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> torch.Tensor:
    """n images decoded from z ~ N(0, I), as the decoder's mean in [0, 1], shape (n, C, H, W), on the CPU.

    `generator` must live on `device`; the same generator state gives the same images, whatever
    the batch size (all codes are drawn at once: n * latent_dim numbers are cheap).
    """
    z = torch.randn(n, model.latent_dim, generator=generator, device=device)  # (n, latent_dim)
    return decode_latents(model, z, device, batch_size)  # (n, C, H, W)


def decode_latents(
    model: VAE, z: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE
) -> torch.Tensor:
    """Latent codes (n, latent_dim) decoded to the decoder's mean in [0, 1], (n, C, H, W), on the CPU.

    The one way a code becomes an image: prior samples, interpolations (pass
    `functools.partial(decode_latents, model, device=device)` as the `decode` callable of
    `smoothness.decode_interpolations`) and the regularity figures all go through it.
    """
    if z.ndim != 2 or z.shape[1] != model.latent_dim:
        raise ValueError(f"z must be (n, {model.latent_dim}) for this model, got shape {tuple(z.shape)}.")
    images = []
    with _eval_mode(model):
        for start in range(0, len(z), batch_size):
            zb = z[start : start + batch_size].to(device)  # (B, latent_dim)
            images.append(decoded_mean(model, model.decode(zb)).cpu())  # (B, C, H, W)
    if not images:
        return torch.empty(0, *model.cfg.image_shape)  # (0, C, H, W)
    return torch.cat(images)  # (n, C, H, W)


class ReconstructionErrors(NamedTuple):
    """Per-example terms in nats, on the CPU."""

    recon_nll: torch.Tensor  # (n,) -log p(x | z = mu)
    kl: torch.Tensor  # (n,) KL(q(z|x) || N(0, I)); zeros for an auto-encoder


def reconstruction_errors(
    model: VAE, x: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE
) -> ReconstructionErrors:
    """Per-example reconstruction NLL and KL, deterministically.

    The reconstruction is scored at z = mu rather than at a sampled z: the number is then a
    property of the image and the model, repeatable without a seed, which is what ranking
    images by error (outliers, worst reconstructions) needs. It is therefore not the ELBO's
    Monte-Carlo term (which averages over z ~ q). `x` is scored as given: binarize it first to
    get a Bernoulli NLL of binary data; grey values give the cross-entropy.
    """
    recon, kl = [], []
    with _eval_mode(model):
        for xb in _batches(x, batch_size, device):
            mu, logvar = model.encode(xb)  # (B, latent_dim) each
            recon.append(losses.recon_nll(model.decode(mu), xb, model.cfg.likelihood, model.log_sigma).cpu())  # (B,)
            kl.append(losses.kl_divergence(mu, logvar).cpu() if logvar is not None else torch.zeros(xb.shape[0]))
    return ReconstructionErrors(torch.cat(recon), torch.cat(kl))


def recon_nll_at(
    model: VAE, z: torch.Tensor, target: torch.Tensor, device: torch.device | str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> torch.Tensor:
    """-log p(target | z) per example in nats, on the CPU: the decoder scored at given codes.

    With z the encoder's mean of the same image, this is the deterministic reconstruction term
    the latents table stores beside that image's mu, logvar and KL.
    """
    if len(z) != len(target):
        raise ValueError(f"got {len(z)} codes for {len(target)} target images.")
    out = []
    with _eval_mode(model):
        for start in range(0, len(z), batch_size):
            zb = z[start : start + batch_size].to(device)  # (B, latent_dim)
            (xb,) = _batches(target[start : start + batch_size], batch_size, device)  # (B, C, H, W)
            out.append(losses.recon_nll(model.decode(zb), xb, model.cfg.likelihood, model.log_sigma).cpu())  # (B,)
    return torch.cat(out)  # (n,)


def iwae_nll(
    model: VAE,
    x: torch.Tensor,
    k: int = 5000,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    batch_size: int = 100,
    chunk: int = 50,
) -> torch.Tensor:
    """Per-example NLL estimates -log p(x) from the importance-weighted bound with k samples, on the CPU.

    An upper bound on the true NLL in expectation that tightens as k grows (Burda et al. 2015);
    k=5000 is the literature's test protocol. Memory holds batch_size * chunk decoded images; the
    defaults' 5,000 per step stay in cache and ran fastest on a 2-core CPU (about 19 ms per image at
    k=5000, measured), several times faster than 50,000 per step.
    `generator` (on `device`) makes the estimate reproducible.
    """
    out = []
    with _eval_mode(model):
        for xb in _batches(x, batch_size, device):
            ll = losses.iwae_log_likelihood(model, xb, k, generator=generator, chunk=chunk)  # (B,)
            out.append((-ll).cpu())
    return torch.cat(out)  # (n,)


class RateDistortion(NamedTuple):
    """Per-example terms of the negative ELBO in nats, on the CPU: rate + distortion = -ELBO (Alemi et al. 2018)."""

    rate: torch.Tensor  # (n,) R = KL(q(z|x) || N(0, I)), the closed form
    distortion: torch.Tensor  # (n,) D = E_q(z|x)[-log p(x|z)], a Monte-Carlo mean over `samples` draws of z


def rate_distortion(
    model: VAE,
    x: torch.Tensor,
    samples: int = 10,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    batch_size: int = 100,
) -> RateDistortion:
    """The rate and distortion of each image's ELBO, the β-VAE trade-off's two axes.

    `x` is encoded and scored as the model was trained: binarized for a Bernoulli model (see
    `reports.scoring_targets`), so R + D is the negative ELBO, the bound the IWAE NLL tightens
    (IWAE NLL <= R + D in expectation). Unlike the latents table's `recon_nll_at_mu` (the decoder at
    z = mu of the grey image) D averages over z ~ q(z|x). `generator` (on `device`) fixes the draws.
    """
    if samples < 1:
        raise ValueError(f"samples={samples} must be at least 1.")
    rates, distortions = [], []
    with _eval_mode(model):
        for xb in _batches(x, batch_size, device):
            mu, logvar = model.encode(xb)  # (B, latent_dim) each
            if logvar is None:
                raise ValueError("rate and distortion need q(z|x); a deterministic auto-encoder (variational=False) has none.")
            distortions.append(losses.expected_recon_nll(model, mu, logvar, xb, samples, generator).cpu())  # (B,)
            rates.append(losses.kl_divergence(mu, logvar).cpu())  # (B,)
    return RateDistortion(torch.cat(rates), torch.cat(distortions))


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """How many latent dimensions are used: Cov_x(E_q[z_i]) > threshold (Burda et al. 2015).

    `mu` (n, latent_dim) holds the encoder means of a dataset; a dimension whose mean does not
    move with x carries no information about it.
    """
    if mu.shape[0] < 2:
        raise ValueError(f"active units need at least two encodings to take a variance, got {mu.shape[0]}.")
    return int((mu.float().var(dim=0) > threshold).sum())


def mean_kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The dataset-average KL(q(z_i|x) || N(0, 1)) of each latent dimension, shape (latent_dim,), nats.

    Dimensions near zero have collapsed to the prior (posterior collapse); the sum is the mean KL.
    `losses.kl_per_dimension` is the per-example term this averages over the rows.
    """
    return losses.kl_per_dimension(mu, logvar).mean(dim=0)  # (latent_dim,)


__all__ = [
    "RateDistortion",
    "ReconstructionErrors",
    "active_units",
    "decode_latents",
    "decoded_mean",
    "encode_mean",
    "iwae_nll",
    "mean_kl_per_dimension",
    "rate_distortion",
    "recon_nll_at",
    "reconstruction_errors",
    "sample_prior",
]
