"""The VAE module: shapes for every architecture and likelihood, reparameterization, seeding."""

from __future__ import annotations

import pytest
import torch

from vae_pipeline.core.model.config import ModelConfig
from vae_pipeline.core.model.vae import VAE, build_model

VARIANTS = [
    pytest.param(arch, lik, sigma, variational, id=f"{arch}-{lik}-{sigma}-{'vae' if variational else 'ae'}")
    for arch in ("mlp", "conv")
    for lik, sigma in (("bernoulli", None), ("gaussian", None), ("gaussian", 0.2))
    for variational in (True, False)
]


def _cfg(architecture: str = "mlp", likelihood: str = "bernoulli", sigma: float | None = None, variational: bool = True) -> ModelConfig:
    return ModelConfig(
        architecture=architecture,
        likelihood=likelihood,
        gaussian_sigma=sigma,
        variational=variational,
        hidden_dims=(32,),
        latent_dim=5,
        conv_channels=(4, 8),
    )


class TestShapes:
    @pytest.mark.parametrize("architecture, likelihood, sigma, variational", VARIANTS)
    def test_encode_decode_forward_shapes(self, architecture: str, likelihood: str, sigma: float | None, variational: bool) -> None:
        model = build_model(_cfg(architecture, likelihood, sigma, variational))
        x = torch.rand(3, 1, 28, 28)
        mu, logvar = model.encode(x)
        assert mu.shape == (3, 5)
        assert (logvar is None) == (not variational)
        if variational:
            assert logvar.shape == (3, 5)
        assert model.decode(torch.randn(7, 5)).shape == (7, 1, 28, 28)
        out = model(x, generator=torch.Generator().manual_seed(0))
        assert out.decoded.shape == (3, 1, 28, 28)
        assert out.z.shape == (3, 5)

    def test_default_mlp_is_784_400_20(self) -> None:
        model = build_model(ModelConfig())
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(784, 400), (400, 40), (20, 400), (400, 784)]

    def test_decode_flattens_leading_sample_dims(self) -> None:
        model = build_model(_cfg())
        assert model.decode(torch.randn(4, 3, 5)).shape == (12, 1, 28, 28)

    @pytest.mark.parametrize("channels", [(4,), (4, 8, 16)])
    def test_conv_depths_round_trip_to_28(self, channels: tuple[int, ...]) -> None:
        cfg = ModelConfig(architecture="conv", conv_channels=channels, hidden_dims=(16,), latent_dim=3)
        assert build_model(cfg)(torch.rand(2, 1, 28, 28)).decoded.shape == (2, 1, 28, 28)


class TestGaussianSigma:
    def test_fixed_sigma_is_a_buffer_not_trained(self) -> None:
        model = build_model(_cfg(likelihood="gaussian", sigma=0.2))
        assert torch.isclose(model.log_sigma.exp(), torch.tensor(0.2))
        assert all(p is not model.log_sigma for p in model.parameters())

    def test_learned_sigma_is_one_parameter(self) -> None:
        model = build_model(_cfg(likelihood="gaussian", sigma=None))
        assert isinstance(model.log_sigma, torch.nn.Parameter)
        assert model.log_sigma.shape == ()

    def test_bernoulli_has_no_sigma(self) -> None:
        assert build_model(_cfg()).log_sigma is None


class TestReparameterization:
    def test_gradients_reach_encoder_through_the_sample(self) -> None:
        model = build_model(_cfg())
        out = model(torch.rand(4, 1, 28, 28), generator=torch.Generator().manual_seed(0))
        out.decoded.sum().backward()
        grad = model.fc_latent.weight.grad
        assert grad is not None
        half = model.latent_dim
        assert grad[:half].abs().sum() > 0, "no gradient reached the mean head"
        assert grad[half:].abs().sum() > 0, "no gradient reached the log-variance head"

    def test_same_generator_seed_gives_same_draw(self) -> None:
        mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
        a = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(7))
        b = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(7))
        c = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(8))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)

    def test_draw_has_the_requested_mean_and_std(self) -> None:
        mu = torch.full((200_000, 1), 2.0)
        logvar = torch.full((200_000, 1), 2 * torch.log(torch.tensor(0.5)).item())
        z = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
        assert abs(z.mean().item() - 2.0) < 0.01
        assert abs(z.std().item() - 0.5) < 0.01

    def test_autoencoder_code_is_deterministic(self) -> None:
        model = build_model(_cfg(variational=False))
        x = torch.rand(2, 1, 28, 28)
        assert torch.equal(model(x).decoded, model(x).decoded)


class TestBuildModel:
    def test_seed_fixes_initial_weights(self) -> None:
        a, b, c = build_model(_cfg(), seed=1), build_model(_cfg(), seed=1), build_model(_cfg(), seed=2)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))

    def test_does_not_disturb_the_global_rng(self) -> None:
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        build_model(_cfg(), seed=5)
        assert torch.equal(torch.rand(3), expected)
