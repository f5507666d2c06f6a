"""Inference helpers: encodings, prior samples, per-example errors, IWAE NLL, latent diagnostics."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from vae_pipeline.core.evaluation import smoothness
from vae_pipeline.core.model import inference, losses
from vae_pipeline.core.model.config import ModelConfig
from vae_pipeline.core.model.vae import build_model

MODEL = ModelConfig(hidden_dims=(32,), latent_dim=4)


def _x(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


class TestEncodeMean:
    def test_batching_does_not_change_the_encodings(self) -> None:
        model, x = build_model(MODEL), _x(10)
        mu_a, logvar_a = inference.encode_mean(model, x, batch_size=3)
        mu_b, logvar_b = inference.encode_mean(model, x, batch_size=100)
        assert mu_a.shape == (10, 4) and logvar_a.shape == (10, 4)
        torch.testing.assert_close(mu_a, mu_b)
        torch.testing.assert_close(logvar_a, logvar_b)

    def test_autoencoder_has_no_logvar_and_training_flag_is_restored(self) -> None:
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3, variational=False))
        model.train()
        mu, logvar = inference.encode_mean(model, _x(5))
        assert mu.shape == (5, 3) and logvar is None
        assert model.training


class TestSamplePrior:
    @pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
    def test_images_in_unit_range_and_seeded(self, likelihood: str) -> None:
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3, likelihood=likelihood))
        a = inference.sample_prior(model, 7, torch.Generator().manual_seed(0), "cpu", batch_size=3)
        b = inference.sample_prior(model, 7, torch.Generator().manual_seed(0), "cpu")
        c = inference.sample_prior(model, 7, torch.Generator().manual_seed(1), "cpu")
        assert a.shape == (7, 1, 28, 28)
        assert a.min() >= 0.0 and a.max() <= 1.0
        torch.testing.assert_close(a, b)
        assert not torch.equal(a, c)


class TestReconstructionErrors:
    def test_deterministic_and_scored_at_the_mean(self) -> None:
        model, x = build_model(MODEL), torch.bernoulli(_x(6))
        a, again = inference.reconstruction_errors(model, x, "cpu", batch_size=4), inference.reconstruction_errors(model, x, "cpu", batch_size=4)
        assert torch.equal(a.recon_nll, again.recon_nll) and torch.equal(a.kl, again.kl)
        # Another batch size may change float32 kernels' summation order (it did under `pytest -n 2`), not the figure.
        b = inference.reconstruction_errors(model, x, "cpu")
        torch.testing.assert_close(a.recon_nll, b.recon_nll)
        torch.testing.assert_close(a.kl, b.kl)
        with torch.no_grad():
            mu, logvar = model.encode(x)
            expected = losses.recon_nll(model.decode(mu), x, "bernoulli")
        torch.testing.assert_close(a.recon_nll, expected)
        torch.testing.assert_close(a.kl, losses.kl_divergence(mu, logvar))


class TestIwaeNll:
    def test_per_example_seeded_and_positive(self) -> None:
        model, x = build_model(MODEL), torch.bernoulli(_x(5))
        a = inference.iwae_nll(model, x, k=50, generator=torch.Generator().manual_seed(0), batch_size=2, chunk=20)
        b = inference.iwae_nll(model, x, k=50, generator=torch.Generator().manual_seed(0), batch_size=2, chunk=20)
        assert a.shape == (5,)
        assert torch.equal(a, b)
        assert (a > 0).all()  # a Bernoulli likelihood is at most 1, so its NLL is positive

    def test_below_the_negative_elbo_on_average(self) -> None:
        model, x = build_model(MODEL), torch.bernoulli(_x(32))
        nll = inference.iwae_nll(model, x, k=500, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            neg_elbo = losses.elbo_terms(model, x, mc_samples=100, generator=torch.Generator().manual_seed(1)).neg_elbo
        assert nll.mean() < neg_elbo


class TestRateDistortion:
    def test_rate_plus_distortion_is_the_negative_elbo_of_training(self) -> None:
        """Fails if D is scored at z = mu (the latents table's figure) or R + D drifts from the bound training optimises."""
        model = build_model(ModelConfig(hidden_dims=(32,), latent_dim=4), seed=0).eval()
        x = torch.bernoulli(_x(50), generator=torch.Generator().manual_seed(1))  # binary inputs, as trained
        rd = inference.rate_distortion(model, x, samples=3, generator=torch.Generator().manual_seed(2), batch_size=50)
        with torch.no_grad():
            terms = losses.elbo_terms(model, x, mc_samples=3, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(rd.rate.mean() + rd.distortion.mean(), terms.neg_elbo)
        torch.testing.assert_close(rd.rate, losses.kl_divergence(*model.encode(x)).detach())
        at_mu = inference.reconstruction_errors(model, x).recon_nll
        assert (rd.distortion - at_mu).abs().mean() > 1e-3  # the draws of z matter: D is not the figure at mu

    def test_the_iwae_nll_is_below_the_negative_elbo(self) -> None:
        model = build_model(ModelConfig(hidden_dims=(32,), latent_dim=4), seed=0)
        x = torch.bernoulli(_x(40), generator=torch.Generator().manual_seed(1))
        rd = inference.rate_distortion(model, x, samples=50, generator=torch.Generator().manual_seed(2))
        nll = inference.iwae_nll(model, x, k=200, generator=torch.Generator().manual_seed(3))
        assert nll.mean() < (rd.rate + rd.distortion).mean()

    def test_an_autoencoder_has_no_rate(self) -> None:
        model = build_model(ModelConfig(hidden_dims=(32,), latent_dim=4, variational=False), seed=0)
        with pytest.raises(ValueError, match="deterministic auto-encoder"):
            inference.rate_distortion(model, _x(4))


class TestActiveUnits:
    def test_counts_dimensions_whose_mean_moves_with_x(self) -> None:
        g = torch.Generator().manual_seed(0)
        mu = torch.cat([torch.randn(500, 3, generator=g), 0.001 * torch.randn(500, 2, generator=g)], dim=1)
        assert inference.active_units(mu) == 3
        assert inference.active_units(mu, threshold=1e-8) == 5

    def test_needs_two_encodings(self) -> None:
        with pytest.raises(ValueError, match="at least two"):
            inference.active_units(torch.zeros(1, 3))


class TestKlPerDimension:
    def test_dataset_average_and_sums_to_the_mean_kl(self) -> None:
        g = torch.Generator().manual_seed(0)
        mu, logvar = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)
        per_dim = inference.mean_kl_per_dimension(mu, logvar)
        assert per_dim.shape == (4,)
        torch.testing.assert_close(per_dim.sum(), losses.kl_divergence(mu, logvar).mean())

    def test_collapsed_dimension_is_zero(self) -> None:
        mu = torch.cat([torch.randn(20, 1), torch.zeros(20, 1)], dim=1)
        logvar = torch.zeros(20, 2)
        per_dim = inference.mean_kl_per_dimension(mu, logvar)
        assert per_dim[1] == 0.0 and per_dim[0] > 0.0


class TestDecodeLatents:
    def test_codes_decode_to_the_reconstructions_at_mu_whatever_the_batch(self) -> None:
        model, x = build_model(MODEL), _x(5)
        with torch.no_grad():
            mu, _ = model.encode(x)
            expected = torch.sigmoid(model.decode(mu))
        images = inference.decode_latents(model, mu, "cpu", batch_size=2)
        assert images.shape == (5, 1, 28, 28)
        torch.testing.assert_close(images, expected)

    def test_interpolation_through_the_one_implementation_ends_on_the_reconstructions(self) -> None:
        model, x = build_model(MODEL), _x(2)
        mu, _ = inference.encode_mean(model, x)
        path = smoothness.decode_interpolations(partial(inference.decode_latents, model, device="cpu"), mu[:1], mu[1:], steps=5)
        assert path.shape == (1, 5, 1, 28, 28)
        ends = inference.decode_latents(model, mu)
        torch.testing.assert_close(path[0, 0], ends[0])
        torch.testing.assert_close(path[0, -1], ends[1])

    def test_codes_of_the_wrong_width_fail_loudly(self) -> None:
        with pytest.raises(ValueError, match="z must be"):
            inference.decode_latents(build_model(MODEL), torch.zeros(3, 7))
