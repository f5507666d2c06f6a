"""Regularity figures on inputs whose right answer is known: Gaussians with closed-form distances, forced verdicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vae_pipeline.core.evaluation.judge import JudgeConfig, judge_outputs, train_judge
from vae_pipeline.core.evaluation.regularity import (
    CONFIDENT_PROB,
    FITTED_FD_MARGIN,
    PriorFit,
    RegularityFigures,
    SampleQuality,
    class_coverage,
    fit_gaussian,
    frechet_distance,
    frechet_distance_gaussians,
    gaussian_mmd2,
    midpoint_codes,
    nearest_distances,
    prior_fit,
    quality_from_outputs,
    regularity_figures,
    regularity_verdict,
    sample_gaussian,
    training_codes,
)


def rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


class TestFrechetDistance:
    def test_diagonal_gaussians_have_the_closed_form(self):
        # ||mu_a - mu_b||^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = (1 + 4) + (1 - 2)^2 + (2 - 1)^2 = 7
        fd = frechet_distance_gaussians(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 2.0]), np.diag([4.0, 1.0]))
        assert fd == pytest.approx(7.0)

    def test_non_diagonal_covariance_against_the_identity(self):
        # With A = I: Tr(I + B - 2 B^1/2) = sum (1 - sqrt(lambda_i))^2 over B's eigenvalues.
        eig = np.array([0.25, 1.0, 4.0, 9.0])
        q = rotation(4, seed=0)
        b = q @ np.diag(eig) @ q.T
        expected = float(((1.0 - np.sqrt(eig)) ** 2).sum())  # 0.25 + 0 + 1 + 4
        assert frechet_distance_gaussians(np.zeros(4), np.eye(4), np.zeros(4), b) == pytest.approx(expected)
        assert frechet_distance_gaussians(np.zeros(4), b, np.zeros(4), np.eye(4)) == pytest.approx(expected)

    def test_same_set_is_zero_and_samples_approach_the_closed_form(self):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((20_000, 3))
        assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
        b = 2.0 * rng.standard_normal((20_000, 3)) + np.array([1.0, 0.0, 0.0])
        # means: 1; covariances I vs 4I: 3 * (1 - 2)^2 = 3; total 4
        assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.03)

    def test_singular_covariance_stays_real_and_finite(self):
        # A dead feature (always 0) makes both covariances singular, as a ReLU unit that never fires does.
        rng = np.random.default_rng(1)
        a = np.column_stack([rng.standard_normal(500), np.zeros(500)])
        b = np.column_stack([rng.standard_normal(500) + 3.0, np.zeros(500)])
        fd = frechet_distance(torch.from_numpy(a), b)
        assert np.isfinite(fd) and fd == pytest.approx(9.0, rel=0.1)

    def test_mismatched_widths_fail_loudly(self):
        with pytest.raises(ValueError, match="same judge"):
            frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


class TestSampleQuality:
    def test_coverage_is_one_for_balanced_and_zero_for_one_class(self):
        assert class_coverage(np.arange(1000) % 10) == pytest.approx(1.0)
        assert class_coverage(np.full(50, 3)) == pytest.approx(0.0)
        assert 0.0 < class_coverage(np.array([0, 0, 0, 1])) < 0.5

    def test_confidence_figures_follow_the_threshold(self):
        probs = np.full((4, 10), 0.0)
        probs[0, 0] = 1.0
        probs[1, 1] = CONFIDENT_PROB
        probs[1, 2] = 1.0 - CONFIDENT_PROB
        probs[2:, :] = 0.1  # undecided
        rng = np.random.default_rng(0)
        q = quality_from_outputs(rng.standard_normal((4, 3)), probs, rng.standard_normal((50, 3)))
        assert q.n == 4
        assert q.confident_share == pytest.approx(0.5)
        assert q.mean_max_prob == pytest.approx((1.0 + CONFIDENT_PROB + 0.1 + 0.1) / 4)


class TestPriors:
    def test_fitted_gaussian_draws_are_seeded_and_match_the_fit(self):
        rng = np.random.default_rng(0)
        cov = np.array([[4.0, 1.5], [1.5, 1.0]])
        codes = rng.multivariate_normal([3.0, -1.0], cov, size=5000)
        fit = fit_gaussian(codes)
        np.testing.assert_allclose(fit.mean.numpy(), [3.0, -1.0], atol=0.1)
        a = sample_gaussian(fit, 20_000, torch.Generator().manual_seed(1))
        b = sample_gaussian(fit, 20_000, torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b)
        np.testing.assert_allclose(np.cov(a.numpy(), rowvar=False), fit.cov.numpy(), atol=0.15)

    def test_a_dead_dimension_gives_draws_without_spread_there(self):
        codes = np.column_stack([np.random.default_rng(0).standard_normal(100), np.full(100, 2.0)])
        z = sample_gaussian(fit_gaussian(codes), 50, torch.Generator().manual_seed(0))
        assert torch.isfinite(z).all()
        torch.testing.assert_close(z[:, 1], torch.full((50,), 2.0))

    def test_too_few_codes_for_a_covariance_fail_loudly(self):
        with pytest.raises(ValueError, match="full covariance"):
            fit_gaussian(np.zeros((3, 5)))


class TestTrainingCodes:
    def test_autoencoder_codes_are_the_means_and_vae_codes_are_seeded_posterior_draws(self):
        mu = torch.zeros(20_000, 2)
        logvar = torch.log(torch.tensor([[1.0, 0.0001]])).expand(20_000, 2)  # std 1 and 0.01
        torch.testing.assert_close(training_codes(mu, None, torch.Generator().manual_seed(0)), mu)
        z = training_codes(mu, logvar, torch.Generator().manual_seed(0))
        torch.testing.assert_close(z, training_codes(mu, logvar, torch.Generator().manual_seed(0)))
        np.testing.assert_allclose(z.std(0).numpy(), [1.0, 0.01], rtol=0.03)

    def test_mismatched_logvar_fails_loudly(self):
        with pytest.raises(ValueError, match="must match mu"):
            training_codes(torch.zeros(3, 2), torch.zeros(3, 1), torch.Generator())


class TestMidpoints:
    def test_midpoints_are_halfway_between_different_class_codes(self):
        """Fails if a pair may share a class (its midpoint is that class's own point), or if the point is not halfway.

        Class c sits at position P[c] on every axis; the positions are chosen so that the halfway
        point of each pair of different classes is a value no other pair, and no class, has.
        """
        positions = np.array([0.0, 1.0, 4.0, 9.0])
        labels = np.repeat(np.arange(4), 5)
        codes = positions[labels][:, None] * np.ones((1, 3))  # (20, 3)
        halfway = {(positions[a] + positions[b]) / 2 for a in range(4) for b in range(4) if a != b}
        assert not halfway & set(positions)  # the test's premise
        mid = midpoint_codes(codes, labels, n_pairs=200, seed=0)
        assert mid.shape == (200, 3)
        assert set(mid[:, 0].tolist()) <= halfway  # every midpoint: halfway between two different classes
        assert len(set(mid[:, 0].tolist())) == len(halfway)  # and 200 pairs reach every pair of classes
        torch.testing.assert_close(mid, midpoint_codes(codes, labels, n_pairs=200, seed=0))


class TestPriorFit:
    def test_mmd_is_near_zero_for_the_same_distribution_and_large_for_a_shift(self):
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((1000, 4)), rng.standard_normal((1000, 4))
        same = gaussian_mmd2(x, y, bandwidth=2.0)
        shifted = gaussian_mmd2(x + 3.0, y, bandwidth=2.0)
        assert abs(same) < 0.01 and shifted > 0.3

    def test_codes_drawn_from_the_prior_have_few_holes(self):
        codes = np.random.default_rng(0).standard_normal((4000, 5))
        fit = prior_fit(codes, seed=0, n_draws=2000)
        assert abs(fit.mmd2) < 0.01
        # A prior draw then behaves like a code: about 1 - 0.95 of them beyond the 95th percentile.
        assert 0.01 < fit.holes_share < 0.10
        assert fit.bandwidth == pytest.approx(np.sqrt(5))

    def test_codes_far_from_the_prior_leave_it_all_holes(self):
        codes = np.random.default_rng(0).standard_normal((4000, 5)) * 0.5 + 6.0
        fit = prior_fit(codes, seed=0, n_draws=2000)
        assert fit.holes_share > 0.99 and fit.mmd2 > 0.5

    def test_nearest_distances_can_skip_each_row_itself(self):
        points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0]], dtype=torch.float64)
        torch.testing.assert_close(nearest_distances(points, points, exclude_self=True), torch.tensor([5.0, 1.0, 1.0], dtype=torch.float64))
        torch.testing.assert_close(nearest_distances(points, points), torch.zeros(3, dtype=torch.float64))


def quality(fd: float, confident: float = 0.8) -> SampleQuality:
    return SampleQuality(n=100, fd=fd, mean_max_prob=0.9, confident_share=confident, class_coverage=0.95)


def figures(prior_fd: float, midpoints_fd: float, fitted_fd: float = 10.0, seed: int = 0) -> RegularityFigures:
    return RegularityFigures(
        reconstructions=quality(1.0),
        prior=quality(prior_fd),
        fitted=quality(fitted_fd),
        midpoints=quality(midpoints_fd),
        prior_fit=PriorFit(mmd2=0.01, bandwidth=1.0, holes_share=0.05, hole_radius=1.0, n_codes=100, n_draws=100),
        seed=seed,
    )


class TestRegularityVerdict:
    def test_vae_better_on_every_test_is_more_regular(self):
        vae, ae = figures(prior_fd=10.0, midpoints_fd=8.0), figures(prior_fd=60.0, midpoints_fd=20.0, fitted_fd=9.0)
        regular, sentence = regularity_verdict(vae, ae, ae.fitted)
        assert regular is True
        assert sentence.startswith("more regular") and "10.00 (VAE) < 60.00 (AE)" in sentence and "8.00 (VAE) < 20.00" in sentence

    def test_worse_midpoints_make_it_not_more_regular(self):
        vae, ae = figures(prior_fd=10.0, midpoints_fd=25.0), figures(prior_fd=60.0, midpoints_fd=20.0)
        regular, sentence = regularity_verdict(vae, ae, ae.fitted)
        assert regular is False and sentence.startswith("not more regular") and "25.00 (VAE) >= 20.00" in sentence

    def test_losing_to_the_fitted_gaussian_beyond_the_margin_makes_it_not_more_regular(self):
        fitted_fd = 10.0
        vae = figures(prior_fd=fitted_fd * (1 + FITTED_FD_MARGIN) + 1.0, midpoints_fd=5.0)
        ae = figures(prior_fd=100.0, midpoints_fd=20.0, fitted_fd=fitted_fd)
        regular, sentence = regularity_verdict(vae, ae, ae.fitted)
        assert regular is False and "beyond" in sentence

    def test_worse_prior_samples_make_it_not_more_regular(self):
        vae, ae = figures(prior_fd=30.0, midpoints_fd=5.0), figures(prior_fd=20.0, midpoints_fd=20.0, fitted_fd=50.0)
        assert regularity_verdict(vae, ae, ae.fitted)[0] is False

    def test_figures_measured_differently_are_refused(self):
        with pytest.raises(ValueError, match="measure them alike"):
            regularity_verdict(figures(1.0, 1.0, seed=0), figures(2.0, 2.0, seed=1), quality(1.0))


def pattern_images(labels: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    """Synthetic 'digits': class c lights a 7-pixel-wide bar at a class-specific place, plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = noise * torch.rand(len(labels), 1, 28, 28, generator=g)
    for i, c in enumerate(labels.tolist()):
        row, col = divmod(c, 5)
        x[i, 0, 4 + 12 * row : 10 + 12 * row, 2 + 5 * col : 7 + 5 * col] = 1.0
    return x.clamp(0.0, 1.0)


class TestRegularityFigures:
    def test_a_vae_and_an_autoencoder_decode_the_same_draws_under_one_seed(self):
        """Fails if the draws share one generator: the VAE's posterior samples (an AE draws none) shifted its prior draws.

        The VAE's posterior is made a point (log-variance -40), so its training codes equal the
        AE's and both fit the same Gaussian: then prior draws, fitted-Gaussian draws and midpoint
        pairs must all be identical.
        """
        labels = torch.arange(300) % 10
        cfg = JudgeConfig(epochs=1, batch_size=32, feature_dim=8, channels=(4, 8))
        judge = train_judge(pattern_images(labels, 0.2, seed=0), labels, cfg, "cpu")
        reference, _ = judge_outputs(judge, pattern_images(labels, 0.2, seed=1), "cpu")
        codes = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))

        def decoded_codes(logvar: torch.Tensor | None) -> list[torch.Tensor]:
            seen: list[torch.Tensor] = []

            def decode(z: torch.Tensor) -> torch.Tensor:
                seen.append(z.clone())
                return pattern_images((z[:, 0].clamp(-2.5, 2.49) * 2 + 5).long(), 0.2, seed=2)

            regularity_figures(judge, decode, codes, logvar, codes[:100], labels[:100], reference, "cpu", seed=3,
                               n_samples=64, n_pairs=32)
            return seen  # reconstructions, prior draws, fitted-Gaussian draws, midpoints

        vae = decoded_codes(torch.full_like(codes, -40.0))
        ae = decoded_codes(None)
        for part in (0, 1, 3):  # the test codes, N(0, I) draws and midpoints: exactly the same numbers
            torch.testing.assert_close(vae[part], ae[part], rtol=0, atol=0)
        torch.testing.assert_close(vae[2], ae[2], rtol=0, atol=1e-5)  # the same noise through (rounding-)equal fits

    def test_figures_of_a_decoder_are_seeded_and_measured_at_the_requested_sizes(self):
        labels = torch.arange(300) % 10
        cfg = JudgeConfig(epochs=10, batch_size=32, feature_dim=8, channels=(4, 8))
        judge = train_judge(pattern_images(labels, 0.2, seed=0), labels, cfg, "cpu")
        reference, _ = judge_outputs(judge, pattern_images(labels, 0.2, seed=1), "cpu")

        def decode(z: torch.Tensor) -> torch.Tensor:
            # The class is read off the first code coordinate: a toy decoder that is a digit everywhere.
            cls = (z[:, 0].clamp(-2.5, 2.49) * 2 + 5).long()
            return pattern_images(cls, 0.2, seed=2)

        codes = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
        test_codes, test_labels = codes[:100], labels[:100]
        def run() -> RegularityFigures:
            return regularity_figures(
                judge, decode, codes, None, test_codes, test_labels, reference, "cpu", seed=3, n_samples=64, n_pairs=32
            )

        a, b = run(), run()
        assert a == b
        assert (a.reconstructions.n, a.prior.n, a.fitted.n, a.midpoints.n) == (64, 64, 64, 32)
        # Every decoded image is a clean pattern, so the judge is confident about nearly all of them.
        assert a.prior.confident_share > 0.9 and a.midpoints.confident_share > 0.9
        assert a.prior_fit == prior_fit(codes, seed=3)
        assert set(a.flat("vae_")) >= {"vae_prior_fd", "vae_midpoints_confident_share", "vae_prior_fit_holes_share"}
        assert dataclasses.asdict(a)["seed"] == 3
