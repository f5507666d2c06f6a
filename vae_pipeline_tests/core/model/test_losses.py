"""Loss terms against torch.distributions, and the IWAE bound's ordering against the ELBO."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vae_pipeline.core.model import losses
from vae_pipeline.core.model.config import ModelConfig
from vae_pipeline.core.model.vae import build_model


def _tiny(likelihood: str = "bernoulli", sigma: float | None = None) -> torch.nn.Module:
    return build_model(ModelConfig(hidden_dims=(32,), latent_dim=4, likelihood=likelihood, gaussian_sigma=sigma), seed=3)


def _binary_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3), generator=g)


class TestKlDivergence:
    def test_matches_torch_distributions(self) -> None:
        g = torch.Generator().manual_seed(0)
        mu, logvar = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
        q = Normal(mu, torch.exp(0.5 * logvar))
        expected = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu)))  # (6, 5)
        torch.testing.assert_close(losses.kl_per_dimension(mu, logvar), expected)
        torch.testing.assert_close(losses.kl_divergence(mu, logvar), expected.sum(dim=1))

    def test_zero_exactly_at_the_prior(self) -> None:
        assert torch.equal(losses.kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


class TestReconstructionNll:
    def test_gaussian_is_the_full_normal_log_density(self) -> None:
        g = torch.Generator().manual_seed(0)
        x, mean = torch.rand(3, 1, 28, 28, generator=g), torch.rand(3, 1, 28, 28, generator=g)
        log_sigma = torch.tensor(math.log(0.3))
        expected = -Normal(mean, 0.3).log_prob(x).sum(dim=(1, 2, 3))
        torch.testing.assert_close(losses.recon_nll(mean, x, "gaussian", log_sigma), expected)

    def test_bernoulli_is_the_bernoulli_log_likelihood(self) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.5), generator=g)
        logits = 3 * torch.randn(3, 1, 28, 28, generator=g)
        expected = -Bernoulli(logits=logits).log_prob(x).sum(dim=(1, 2, 3))
        torch.testing.assert_close(losses.recon_nll(logits, x, "bernoulli"), expected)

    def test_leading_sample_dims_broadcast_against_x(self) -> None:
        x = torch.rand(2, 1, 28, 28)
        logits = torch.randn(5, 2, 1, 28, 28)
        out = losses.recon_nll(logits, x, "bernoulli")
        assert out.shape == (5, 2)
        torch.testing.assert_close(out[3], losses.recon_nll(logits[3], x, "bernoulli"))

    def test_bernoulli_with_grey_targets_is_the_cross_entropy(self) -> None:
        # Grey targets (binarization "none") score the cross-entropy -[x log p + (1 - x) log(1 - p)].
        g = torch.Generator().manual_seed(1)
        x = torch.rand(4, 1, 28, 28, generator=g, dtype=torch.float64)
        logits = 4 * torch.randn(4, 1, 28, 28, generator=g, dtype=torch.float64)
        p = torch.sigmoid(logits)
        expected = -(x * p.log() + (1 - x) * (1 - p).log()).sum(dim=(1, 2, 3))
        torch.testing.assert_close(losses.recon_nll(logits.float(), x.float(), "bernoulli").double(), expected, rtol=1e-6, atol=1e-3)

    def test_bernoulli_extreme_logits_stay_finite_and_exact(self) -> None:
        # |logit| far beyond where exp overflows float32 (88): the terms are 0 or |logit| per pixel.
        logits = torch.tensor([1e4, -1e4, 100.0, -100.0]).view(1, 1, 2, 2).repeat(2, 1, 1, 1).requires_grad_()
        x = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]).view(2, 1, 2, 2)
        out = losses.recon_nll(logits, x, "bernoulli")
        torch.testing.assert_close(out, torch.tensor([100.0 + 100.0, 1e4 + 1e4]))
        out.sum().backward()
        torch.testing.assert_close(logits.grad, torch.sigmoid(logits.detach()) - x)

    def test_gaussian_without_sigma_fails_with_the_fix(self) -> None:
        with pytest.raises(ValueError, match="log_sigma"):
            losses.recon_nll(torch.zeros(1, 1, 28, 28), torch.zeros(1, 1, 28, 28), "gaussian")


class TestElboTerms:
    def test_neg_elbo_is_recon_plus_kl(self) -> None:
        model, x = _tiny(), _binary_images(8)
        t = losses.elbo_terms(model, x, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(t.neg_elbo, t.recon_nll + t.kl)
        torch.testing.assert_close(t.loss, t.neg_elbo)

    def test_kl_weight_and_free_bits_change_the_loss_not_the_bound(self) -> None:
        model, x = _tiny(), _binary_images(8)
        plain = losses.elbo_terms(model, x, generator=torch.Generator().manual_seed(0))
        warm = losses.elbo_terms(model, x, kl_weight=0.0, generator=torch.Generator().manual_seed(0))
        floored = losses.elbo_terms(model, x, free_bits=5.0, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(warm.loss, plain.recon_nll)
        torch.testing.assert_close(warm.neg_elbo, plain.neg_elbo)
        # With a floor of 5 nats in each of 4 dimensions, the KL in the objective is at least 20.
        assert floored.loss >= plain.recon_nll + 20.0 - 1e-4
        torch.testing.assert_close(floored.neg_elbo, plain.neg_elbo)

    def test_more_mc_samples_reduce_the_variance_of_the_recon_term(self) -> None:
        model, x = _tiny(), _binary_images(4)
        def spread(samples: int) -> float:
            draws = [
                losses.elbo_terms(model, x, mc_samples=samples, generator=torch.Generator().manual_seed(s)).recon_nll
                for s in range(30)
            ]
            return torch.stack(draws).std().item()
        assert spread(16) < spread(1)

    def test_autoencoder_has_zero_kl(self) -> None:
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3, variational=False))
        t = losses.elbo_terms(model, _binary_images(4))
        assert t.kl.item() == 0.0
        torch.testing.assert_close(t.neg_elbo, t.recon_nll)


class TestBetaWarmup:
    def test_linear_ramp_from_zero(self) -> None:
        assert [losses.beta_at_epoch(e, 1.0, 4) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]

    def test_no_warmup_is_constant(self) -> None:
        assert losses.beta_at_epoch(0, 0.5, 0) == 0.5


class TestIwaeBound:
    @pytest.fixture
    def model_and_x(self) -> tuple[torch.nn.Module, torch.Tensor]:
        model = _tiny()
        # Sharpen the decoder so the posterior is far from q and the bound has room to tighten.
        with torch.no_grad():
            for p in model.decoder_net.parameters():
                p.mul_(2.0)
        return model, _binary_images(64)

    def _mean_ll(self, model: torch.nn.Module, x: torch.Tensor, k: int, seed: int, chunk: int = 500) -> float:
        with torch.no_grad():
            ll = losses.iwae_log_likelihood(model, x, k, generator=torch.Generator().manual_seed(seed), chunk=chunk)
        return ll.mean().item()

    def test_iwae_is_above_the_elbo_and_tightens_with_k(self, model_and_x: tuple[torch.nn.Module, torch.Tensor]) -> None:
        model, x = model_and_x
        with torch.no_grad():
            elbo = -losses.elbo_terms(model, x, mc_samples=200, generator=torch.Generator().manual_seed(0)).neg_elbo.item()
        k1 = sum(self._mean_ll(model, x, 1, seed=s) for s in range(10)) / 10
        bounds = [k1] + [self._mean_ll(model, x, k, seed=1) for k in (10, 100, 1000)]
        # k=1 is an unbiased ELBO estimate (its 10-seed mean has a standard error near 2 nats here);
        # each tenfold k raises the bound by several times the estimates' seed-to-seed spread.
        assert abs(bounds[0] - elbo) < 6.0
        assert bounds[1] > bounds[0] + 10.0
        assert bounds[2] > bounds[1] + 5.0
        assert bounds[3] > bounds[2] + 1.0
        assert bounds[3] > elbo + 30.0

    def test_logsumexp_of_same_samples_never_below_their_mean(self, model_and_x: tuple[torch.nn.Module, torch.Tensor]) -> None:
        # Jensen, sample by sample: log mean exp(w) >= mean(w) for any draw, so this holds for every seed.
        model, x = model_and_x
        for seed in range(3):
            k1_mean = sum(self._mean_ll(model, x, 1, seed=seed * 100 + i) for i in range(5)) / 5
            assert self._mean_ll(model, x, 50, seed=seed) > k1_mean

    def test_chunk_size_does_not_change_the_estimate_beyond_noise(self, model_and_x: tuple[torch.nn.Module, torch.Tensor]) -> None:
        model, x = model_and_x
        a = self._mean_ll(model, x, 300, seed=0, chunk=7)
        b = self._mean_ll(model, x, 300, seed=1, chunk=300)
        assert abs(a - b) < 1.0

    def test_autoencoder_is_refused(self) -> None:
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3, variational=False))
        with pytest.raises(ValueError, match="variational"):
            losses.iwae_log_likelihood(model, _binary_images(2), 10)
