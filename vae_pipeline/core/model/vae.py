"""The variational auto-encoder: an encoder q(z|x), the reparameterization and a decoder p(x|z).

The methods follow the maths of Kingma & Welling (2014): `encode` gives the parameters of a
diagonal Gaussian q(z|x), `reparameterize` draws z = mu + sigma * eps so gradients reach the
encoder, `decode` gives the parameters of p(x|z) (Bernoulli logits or Gaussian means).
With `ModelConfig.variational=False` the same network is a plain deterministic auto-encoder.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from vae_pipeline.core.model.config import ModelConfig


class VAEOutput(NamedTuple):
    """What one forward pass produces; `logvar` is None for the deterministic auto-encoder."""

    decoded: torch.Tensor  # (B, C, H, W) Bernoulli logits or Gaussian means
    mu: torch.Tensor  # (B, latent_dim)
    logvar: torch.Tensor | None  # (B, latent_dim)
    z: torch.Tensor  # (B, latent_dim) the code the decoder saw


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _conv_sizes(size: int, n_layers: int) -> list[int]:
    """Spatial sizes after each stride-2, kernel-3, padding-1 convolution: ceil(size / 2) each."""
    sizes = [size]
    for _ in range(n_layers):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


class _ConvEncoder(nn.Module):
    """Stride-2 convolutions, then the MLP trunk; maps (B, C, H, W) to (B, hidden_dims[-1])."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, h, w = cfg.image_shape
        channels = [c, *cfg.conv_channels]
        convs: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            convs += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*convs)
        hs, ws = _conv_sizes(h, len(cfg.conv_channels)), _conv_sizes(w, len(cfg.conv_channels))
        flat = channels[-1] * hs[-1] * ws[-1]
        self.trunk = _mlp([flat, *cfg.hidden_dims])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x)  # (B, conv_channels[-1], h', w')
        return torch.relu(self.trunk(h.flatten(1)))  # (B, hidden_dims[-1])


class _ConvDecoder(nn.Module):
    """The mirror of `_ConvEncoder`: MLP trunk, then stride-2 transposed convolutions back to (C, H, W)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, h, w = cfg.image_shape
        n = len(cfg.conv_channels)
        self.hs, self.ws = _conv_sizes(h, n), _conv_sizes(w, n)
        self.start = (cfg.conv_channels[-1], self.hs[-1], self.ws[-1])
        flat = self.start[0] * self.start[1] * self.start[2]
        self.trunk = _mlp([cfg.latent_dim, *reversed(cfg.hidden_dims), flat])
        channels = [*reversed(cfg.conv_channels), c]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            # Transposed conv gives 2n - 1 + output_padding; pick the padding that lands on the
            # encoder's size exactly, so odd sizes (7 -> 4 -> 7) round-trip.
            n_in_h, n_out_h = self.hs[n - i], self.hs[n - i - 1]
            n_in_w, n_out_w = self.ws[n - i], self.ws[n - i - 1]
            pad = (n_out_h - (2 * n_in_h - 1), n_out_w - (2 * n_in_w - 1))
            layers.append(nn.ConvTranspose2d(c_in, c_out, kernel_size=3, stride=2, padding=1, output_padding=pad))
            if i < n - 1:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.trunk(z))  # (B, C' * h' * w')
        return self.deconvs(h.view(-1, *self.start))  # (B, C, H, W)


class VAE(nn.Module):
    """A VAE (or, with `variational=False`, an auto-encoder) for images, built from a ModelConfig."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = list(cfg.hidden_dims)
        # Modules are registered in the order data flows: encoder trunk, latent head, decoder.
        if cfg.architecture == "mlp":
            # The trunk ends in a ReLU so the head sees rectified features, as in the 784-400-20 reference.
            self.encoder_trunk: nn.Module = nn.Sequential(nn.Flatten(), _mlp([cfg.input_dim, *hidden]), nn.ReLU())
        else:
            self.encoder_trunk = _ConvEncoder(cfg)
        # One layer gives [mu, logvar] side by side: a single matmul per step instead of two. The
        # deterministic auto-encoder has no variance half: its code is a point, not a distribution.
        self.fc_latent = nn.Linear(hidden[-1], cfg.latent_dim * (2 if cfg.variational else 1))
        if cfg.architecture == "mlp":
            self.decoder_net: nn.Module = _mlp([cfg.latent_dim, *reversed(hidden), cfg.input_dim])
        else:
            self.decoder_net = _ConvDecoder(cfg)
        if cfg.likelihood == "gaussian":
            if cfg.gaussian_sigma is None:
                # One shared log-sigma, learned: a per-pixel sigma would let background pixels
                # drive their sigma to zero and the likelihood to infinity.
                self.log_sigma: torch.Tensor | None = nn.Parameter(torch.zeros(()))
            else:
                self.register_buffer("log_sigma", torch.tensor(math.log(cfg.gaussian_sigma)))
        else:
            self.log_sigma = None

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The parameters of q(z|x): mean and log-variance, or (code, None) for the auto-encoder."""
        h = self.encoder_trunk(x)  # (B, hidden_dims[-1])
        out = self.fc_latent(h)  # (B, 2 * latent_dim), or (B, latent_dim) for the auto-encoder
        if not self.cfg.variational:
            return out, None
        mu, logvar = out.chunk(2, dim=-1)  # (B, latent_dim) each
        return mu, logvar

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A differentiable draw z ~ N(mu, sigma^2): z = mu + sigma * eps with eps ~ N(0, I).

        `generator` (on mu's device) makes the draw reproducible; mu and logvar may carry
        leading sample dimensions, e.g. (L, B, latent_dim).
        """
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)  # (..., latent_dim)
        return mu + torch.exp(0.5 * logvar) * eps  # (..., latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The parameters of p(x|z): Bernoulli logits or Gaussian means, shaped like the images."""
        out = self.decoder_net(z)  # (B, C*H*W) for mlp, (B, C, H, W) for conv
        return out.view(-1, *self.cfg.image_shape)  # (B, C, H, W)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, draw one z (the code itself for the auto-encoder), decode."""
        mu, logvar = self.encode(x)  # (B, latent_dim) each
        z = mu if logvar is None else self.reparameterize(mu, logvar, generator)  # (B, latent_dim)
        return VAEOutput(self.decode(z), mu, logvar, z)


def build_model(cfg: ModelConfig, seed: int = 0) -> VAE:
    """A freshly initialised model on the CPU; `seed` fixes the initial weights.

    The global RNG is forked, so building a model does not disturb anyone else's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE(cfg)


__all__ = ["VAE", "VAEOutput", "build_model"]
