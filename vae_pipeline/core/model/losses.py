"""Per-example loss terms in nats and the two estimators of log p(x): the ELBO and the IWAE bound.

Every term is per example and summed over pixels (or latent dimensions); averages over a batch
are taken by the caller or by `elbo_terms`. Metric names, shared by the training history,
MLflow and parquet columns: `neg_elbo`, `recon_nll`, `kl` and `iwae_nll`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from vae_pipeline.core.model.vae import VAE

METRIC_NAMES = ("neg_elbo", "recon_nll", "kl")  # the per-epoch metrics, prefixed train_/val_ in the history
IWAE_METRIC = "iwae_nll"
LOG_2PI = math.log(2.0 * math.pi)


def recon_nll(
    decoded: torch.Tensor, x: torch.Tensor, likelihood: str, log_sigma: torch.Tensor | None = None
) -> torch.Tensor:
    """-log p(x|z) per example in nats, summed over the last three (C, H, W) dimensions.

    `decoded` holds Bernoulli logits or Gaussian means and may carry leading sample dimensions
    that broadcast against `x`. The Gaussian density is the full one, constant included, so the
    number is a true negative log-density and comparable across sigmas.
    """
    decoded = decoded.float()  # the NLL is summed over 784 pixels; fp16/bf16 would lose digits
    if likelihood == "bernoulli":
        x = x.expand_as(decoded)
        per_pixel = F.binary_cross_entropy_with_logits(decoded, x, reduction="none")  # (..., C, H, W)
    elif likelihood == "gaussian":
        if log_sigma is None:
            raise ValueError("a Gaussian likelihood needs log_sigma; pass model.log_sigma.")
        log_sigma = log_sigma.float()
        per_pixel = 0.5 * ((x - decoded) * torch.exp(-log_sigma)) ** 2 + log_sigma + 0.5 * LOG_2PI  # (..., C, H, W)
    else:
        raise ValueError(f"likelihood={likelihood!r} is not supported; use 'bernoulli' or 'gaussian'.")
    return per_pixel.sum(dim=(-3, -2, -1))  # (...,)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) of each latent dimension, in nats, for a diagonal Gaussian q."""
    mu, logvar = mu.float(), logvar.float()
    # Closed form, Kingma & Welling (2014), Appendix B: -KL = 0.5 * sum(1 + log sigma^2 - mu^2 - sigma^2).
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)  # (..., latent_dim)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per example, in nats, summed over latent dimensions."""
    return kl_per_dimension(mu, logvar).sum(dim=-1)  # (...,)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(dim=-1)  # (...,)


def log_normal_standard(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(dim=-1)  # (...,)


def beta_at_epoch(epoch: int, beta: float, warmup_epochs: int) -> float:
    """The KL weight used in epoch `epoch` (0-based): a linear ramp from 0 up to `beta`.

    With warm-up the first epoch trains with weight 0 and epoch `warmup_epochs` reaches `beta`
    (Bowman et al. 2016; Sønderby et al. 2016).
    """
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, epoch / warmup_epochs)


class ElboTerms(NamedTuple):
    """One batch's objective and its parts, each averaged over the batch, in nats per example."""

    loss: torch.Tensor  # () what is minimised: recon + weight * (free-bits) KL
    neg_elbo: torch.Tensor  # () the true negative ELBO (weight 1, no free bits), an upper bound on -log p(x)
    recon_nll: torch.Tensor  # () E_q[-log p(x|z)], Monte-Carlo over `mc_samples`
    kl: torch.Tensor  # () KL(q(z|x) || p(z)), closed form
    mu: torch.Tensor  # (B, latent_dim), for diagnostics such as active units


def expected_recon_nll(
    model: VAE, mu: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor, samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """E_q(z|x)[-log p(target|z)] per example (B,), nats: the mean over `samples` reparameterized draws of z.

    The ELBO's reconstruction term, as training optimises it and as the rate-distortion figures
    report it (`inference.rate_distortion`).
    """
    if samples == 1:
        z = model.reparameterize(mu, logvar, generator)  # (B, latent_dim)
        return recon_nll(model.decode(z), target, model.cfg.likelihood, model.log_sigma)  # (B,)
    mu_l = mu.expand(samples, *mu.shape)  # (L, B, latent_dim)
    z = model.reparameterize(mu_l, logvar.expand_as(mu_l), generator)  # (L, B, latent_dim)
    decoded = model.decode(z).view(samples, *target.shape)  # (L, B, C, H, W)
    return recon_nll(decoded, target, model.cfg.likelihood, model.log_sigma).mean(dim=0)  # (B,)


def elbo_terms(
    model: VAE,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
) -> ElboTerms:
    """The negative ELBO of a batch and the training objective derived from it.

    `x` (B, C, H, W) is the encoder input and `target` the pixels scored by p(x|z) (defaults to
    `x`). The reconstruction term averages `mc_samples` reparameterized draws; the KL is the
    closed form. Free bits (Kingma et al. 2016) floor each dimension's batch-mean KL at
    `free_bits` nats in the objective only, so the reported `neg_elbo` stays the true bound.
    For a deterministic auto-encoder the KL is zero and `neg_elbo` is just the reconstruction NLL.
    """
    target = x if target is None else target
    mu, logvar = model.encode(x)  # (B, latent_dim) each
    if logvar is None:
        recon = recon_nll(model.decode(mu), target, model.cfg.likelihood, model.log_sigma)  # (B,)
        recon_mean = recon.mean()
        zero = recon_mean.new_zeros(())
        return ElboTerms(recon_mean, recon_mean, recon_mean, zero, mu)
    recon = expected_recon_nll(model, mu, logvar, target, mc_samples, generator)  # (B,)
    kl_dims = kl_per_dimension(mu, logvar)  # (B, latent_dim)
    recon_mean = recon.mean()
    kl_mean = kl_dims.sum(dim=1).mean()
    if free_bits > 0:
        kl_objective = kl_dims.mean(dim=0).clamp(min=free_bits).sum()  # () floor per dimension, batch mean
    else:
        kl_objective = kl_mean
    loss = recon_mean + kl_weight * kl_objective
    return ElboTerms(loss, recon_mean + kl_mean, recon_mean, kl_mean, mu)


def iwae_log_likelihood(
    model: VAE,
    x: torch.Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    chunk: int = 500,
) -> torch.Tensor:
    """The importance-weighted lower bound on log p(x) per example (Burda et al. 2015), in nats.

    log p(x) >= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k, z_k ~ q(z|x).
    Samples are drawn `chunk` at a time and folded into a running logsumexp, so memory holds
    chunk * B decoded images whatever k is (k=5000 is the usual evaluation). k=1 is the ELBO.
    """
    mu, logvar = model.encode(x)  # (B, latent_dim) each
    if logvar is None:
        raise ValueError("the IWAE bound needs q(z|x); a deterministic auto-encoder (variational=False) has none.")
    mu, logvar = mu.float(), logvar.float()
    running = torch.full(mu.shape[:1], -math.inf, device=mu.device)  # (B,) logsumexp so far
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        mu_c = mu.expand(c, *mu.shape)  # (c, B, latent_dim)
        logvar_c = logvar.expand_as(mu_c)  # (c, B, latent_dim)
        z = model.reparameterize(mu_c, logvar_c, generator)  # (c, B, latent_dim)
        decoded = model.decode(z).view(c, *x.shape)  # (c, B, C, H, W)
        log_px_z = -recon_nll(decoded, x, model.cfg.likelihood, model.log_sigma)  # (c, B)
        log_w = log_px_z + log_normal_standard(z) - log_normal_diag(z, mu_c, logvar_c)  # (c, B)
        running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))  # (B,)
    return running - math.log(k)  # (B,)


__all__ = [
    "IWAE_METRIC",
    "METRIC_NAMES",
    "ElboTerms",
    "elbo_terms",
    "expected_recon_nll",
    "beta_at_epoch",
    "iwae_log_likelihood",
    "kl_divergence",
    "kl_per_dimension",
    "log_normal_diag",
    "log_normal_standard",
    "recon_nll",
]
