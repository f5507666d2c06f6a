"""Latent-space measures on tiny synthetic data whose right answer is known in advance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_pipeline.core.evaluation import (
    SMOOTH_MAX_STEP_RATIO,
    extreme_indices,
    interpolate_latents,
    interpolation_smoothness,
    knn_accuracy,
    linear_probe,
    path_smoothness,
    per_class_error_stats,
    pick_interpolation_pairs,
    smoothness_verdict,
    subsample_indices,
    trustworthiness_score,
    tsne_embedding,
)

N_CLASSES = 4
SIDE = 28


def clusters(n_per_class: int, dim: int, seed: int, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs, one per class, centred on scaled basis vectors."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(N_CLASSES), n_per_class)
    centres = 5.0 * np.eye(N_CLASSES, dim)
    return centres[y] + spread * rng.standard_normal((len(y), dim)), y


class TestSubsample:
    def test_keeps_all_rows_when_not_asked_to_sample(self):
        np.testing.assert_array_equal(subsample_indices(5, None, seed=0), np.arange(5))
        np.testing.assert_array_equal(subsample_indices(5, 10, seed=0), np.arange(5))

    def test_sample_is_seeded_sorted_and_unique(self):
        a = subsample_indices(100, 10, seed=3)
        np.testing.assert_array_equal(a, subsample_indices(100, 10, seed=3))
        assert len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
        assert not np.array_equal(a, subsample_indices(100, 10, seed=4))


class TestLinearProbe:
    def test_separable_clusters_are_classified_almost_perfectly(self):
        x, y = clusters(50, dim=8, seed=0)
        xt, yt = clusters(25, dim=8, seed=1)
        result = linear_probe(x, y, xt, yt, seed=0)
        assert result.accuracy > 0.97
        assert result.converged is True
        assert set(result.per_class_accuracy) == set(range(N_CLASSES))
        assert (result.n_train, result.n_test) == (200, 100)

    def test_random_labels_give_chance_accuracy(self):
        rng = np.random.default_rng(0)
        x, xt = rng.standard_normal((400, 8)), rng.standard_normal((2000, 8))
        y, yt = rng.integers(0, N_CLASSES, 400), rng.integers(0, N_CLASSES, 2000)
        accuracy = linear_probe(x, y, xt, yt, seed=0).accuracy
        assert abs(accuracy - 1 / N_CLASSES) < 0.06

    def test_accepts_image_tensors_and_subsamples_training_rows(self):
        x, y = clusters(50, dim=16, seed=0)
        xt, yt = clusters(25, dim=16, seed=1)
        images, test_images = (torch.from_numpy(a).float().reshape(-1, 1, 4, 4) for a in (x, xt))
        result = linear_probe(images, torch.from_numpy(y), test_images, torch.from_numpy(yt), seed=0, max_train=60)
        assert result.n_train == 60
        assert result.accuracy > 0.9

    def test_single_class_training_set_fails_loudly(self):
        x = np.zeros((10, 3))
        with pytest.raises(ValueError, match="single class"):
            linear_probe(x, np.zeros(10), x, np.zeros(10), seed=0)


class TestKnnAccuracy:
    def test_separable_clusters_are_classified_perfectly(self):
        x, y = clusters(50, dim=8, seed=0)
        xt, yt = clusters(25, dim=8, seed=1)
        assert knn_accuracy(x, y, xt, yt, k=5).accuracy == 1.0

    def test_random_labels_give_chance_accuracy(self):
        rng = np.random.default_rng(0)
        x, xt = rng.standard_normal((400, 8)), rng.standard_normal((2000, 8))
        y, yt = rng.integers(0, N_CLASSES, 400), rng.integers(0, N_CLASSES, 2000)
        assert abs(knn_accuracy(x, y, xt, yt, k=5).accuracy - 1 / N_CLASSES) < 0.06

    def test_subsample_is_seeded(self):
        x, y = clusters(50, dim=8, seed=0)
        a = knn_accuracy(x, y, x, y, k=1, max_train=20, seed=1)
        b = knn_accuracy(x, y, x, y, k=1, max_train=20, seed=1)
        assert a == b and a.n_train == 20

    def test_k_larger_than_training_set_fails_loudly(self):
        x, y = clusters(2, dim=3, seed=0)
        with pytest.raises(ValueError, match="k=50"):
            knn_accuracy(x, y, x, y, k=50)


class TestTrustworthiness:
    def test_identity_embedding_is_fully_trustworthy(self):
        x = np.random.default_rng(0).standard_normal((200, 2))
        assert trustworthiness_score(x, x, n_neighbors=10) == pytest.approx(1.0)

    def test_shuffled_embedding_is_much_less_trustworthy(self):
        x = np.random.default_rng(0).standard_normal((200, 2))
        shuffled = x[np.random.default_rng(1).permutation(len(x))]
        assert trustworthiness_score(x, shuffled, n_neighbors=10) < 0.7

    def test_subsampling_is_seeded_and_still_scores_identity_as_one(self):
        x = np.random.default_rng(0).standard_normal((300, 2))
        noisy = x + 0.3 * np.random.default_rng(1).standard_normal(x.shape)
        a = trustworthiness_score(x, noisy, max_samples=100, seed=5)
        assert a == trustworthiness_score(x, noisy, max_samples=100, seed=5)
        assert trustworthiness_score(x, x, max_samples=100, seed=5) == pytest.approx(1.0)

    def test_mismatched_rows_fail_loudly(self):
        with pytest.raises(ValueError, match="same points"):
            trustworthiness_score(np.zeros((30, 3)), np.zeros((29, 2)))


class TestTsneEmbedding:
    def test_shape_and_determinism_for_a_fixed_seed(self):
        x, _ = clusters(30, dim=6, seed=0)
        a = tsne_embedding(x, seed=7, perplexity=10, n_jobs=1, n_iter=50, early_exaggeration_iter=50)
        b = tsne_embedding(torch.from_numpy(x), seed=7, perplexity=10, n_jobs=1, n_iter=50, early_exaggeration_iter=50)
        assert a.shape == (120, 2)
        np.testing.assert_allclose(a, b)

    def test_clusters_stay_together_in_the_map(self):
        x, y = clusters(30, dim=6, seed=0)
        emb = tsne_embedding(x, seed=0, perplexity=10, n_jobs=1, n_iter=100, early_exaggeration_iter=50)
        assert knn_accuracy(emb, y, emb, y, k=3).accuracy == 1.0

    def test_too_few_points_for_the_perplexity_fail_loudly(self):
        with pytest.raises(ValueError, match="lower the perplexity"):
            tsne_embedding(np.zeros((50, 3)), seed=0, perplexity=30)


def linear_decoder(z: torch.Tensor) -> torch.Tensor:
    """Images whose pixels are a fixed linear map of z: a straight line decodes to even steps."""
    weights = torch.linspace(-1.0, 1.0, SIDE * SIDE * z.shape[1], dtype=z.dtype).reshape(z.shape[1], -1)
    return (z @ weights).reshape(-1, 1, SIDE, SIDE)


def step_decoder(z: torch.Tensor) -> torch.Tensor:
    """Two images, switching where the first latent coordinate crosses zero: a jump mid-path."""
    ones = torch.ones(len(z), 1, SIDE, SIDE, dtype=z.dtype)
    return ones * (z[:, :1, None, None] > 0).to(z.dtype)


class TestInterpolation:
    def test_latent_line_has_evenly_spaced_points_and_exact_endpoints(self):
        z_a, z_b = torch.zeros(2, 3), torch.ones(2, 3)
        z = interpolate_latents(z_a, z_b, steps=5)
        assert z.shape == (2, 5, 3)
        torch.testing.assert_close(z[:, 0], z_a)
        torch.testing.assert_close(z[:, -1], z_b)
        torch.testing.assert_close(z[0, :, 0], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))

    def test_linear_decoder_moves_evenly_and_straight(self):
        g = torch.Generator().manual_seed(0)
        z_a, z_b = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
        stats = interpolation_smoothness(linear_decoder, z_a, z_b, steps=10)
        np.testing.assert_allclose(stats.max_step_ratio, 1.0, atol=1e-6)
        np.testing.assert_allclose(stats.path_ratio, 1.0, atol=1e-6)
        smooth, sentence = smoothness_verdict(stats)
        assert smooth and sentence.startswith("smooth") and "1.00x" in sentence

    def test_step_decoder_jumps_and_gets_a_negative_verdict(self):
        z_a = torch.full((6, 2), -1.0)
        z_b = torch.full((6, 2), 1.0)
        stats = interpolation_smoothness(step_decoder, z_a, z_b, steps=10)
        # All motion in one of the 9 steps: max / mean = 9.
        np.testing.assert_allclose(stats.max_step_ratio, 9.0)
        assert stats.summary()["max_step_ratio_median"] > SMOOTH_MAX_STEP_RATIO
        smooth, sentence = smoothness_verdict(stats)
        assert not smooth and sentence.startswith("not smooth") and "9.00x" in sentence

    def test_detour_raises_the_path_ratio(self):
        # The frames go out to a distant image and back towards the end: long path, short chord.
        frames = np.zeros((1, 5, 1, 2, 2))
        frames[0, :, 0, 0, 0] = [0.0, 1.0, 2.0, 1.0, 0.5]
        stats = path_smoothness(frames)
        assert stats.path_ratio[0] == pytest.approx(3.5 / 0.5)
        assert not smoothness_verdict(stats, threshold=10.0)[0]

    def test_constant_decoder_is_degenerate_not_smooth(self):
        frames = np.zeros((3, 5, 1, SIDE, SIDE))
        stats = path_smoothness(frames)
        assert stats.n_degenerate == 3 and np.isnan(stats.max_step_ratio).all()
        assert smoothness_verdict(stats)[0] is False

    def test_total_variation_counts_edges(self):
        frames = np.zeros((1, 3, 1, 4, 4))
        frames[0, :, 0, :, :2] = 1.0  # left half white: one vertical edge, 4 pixels long
        assert path_smoothness(frames).mean_tv[0] == pytest.approx(4.0)

    def test_pairs_are_seeded_and_cross_classes(self):
        labels = np.repeat(np.arange(3), 10)
        a, b = pick_interpolation_pairs(labels, n_pairs=50, seed=0)
        assert len(a) == len(b) == 50
        assert np.all(labels[a] != labels[b])
        a2, b2 = pick_interpolation_pairs(labels, n_pairs=50, seed=0)
        np.testing.assert_array_equal(a, a2)
        np.testing.assert_array_equal(b, b2)


class TestPerClassErrorStats:
    def test_statistics_per_class(self):
        errors = np.array([1.0, 2.0, 3.0, 10.0, 10.0])
        labels = np.array([0, 0, 0, 1, 1])
        table = per_class_error_stats(errors, labels)
        assert list(table.columns) == ["count", "mean", "std", "median", "p90", "max"]
        assert table.loc[0, "count"] == 3 and table.loc[1, "count"] == 2
        assert table.loc[0, "mean"] == pytest.approx(2.0)
        assert table.loc[0, "std"] == pytest.approx(1.0)
        assert table.loc[0, "p90"] == pytest.approx(2.8)
        assert table.loc[1, "max"] == 10.0 and table.loc[1, "std"] == 0.0

    def test_extreme_indices_are_ordered_and_stable(self):
        errors = np.array([0.5, 3.0, 0.1, 3.0, 0.1])
        worst, best = extreme_indices(errors, k=2)
        np.testing.assert_array_equal(worst, [1, 3])
        np.testing.assert_array_equal(best, [2, 4])
