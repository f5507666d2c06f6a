"""Linear probe, kNN and the PCA baseline on synthetic clusters whose right answer is known in advance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_pipeline.core.evaluation.probes import knn_accuracy, linear_probe, pca_baseline, pca_features
from vae_pipeline_tests.synthetic import N_CLASSES, clusters

SIDE = 28


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


class TestPcaBaseline:
    def test_features_have_the_latent_size_and_keep_the_variance_of_a_low_rank_input(self):
        rng = np.random.default_rng(0)
        basis = rng.standard_normal((3, 30))
        x, xt = rng.standard_normal((200, 3)) @ basis, rng.standard_normal((50, 3)) @ basis  # rank 3
        ftr, fte, explained = pca_features(x, xt, n_components=3, seed=0)
        assert ftr.shape == (200, 3) and fte.shape == (50, 3)
        assert explained == pytest.approx(1.0)

    def test_probes_on_pca_separate_clusters_and_use_the_probes_training_rows(self):
        x, y = clusters(50, dim=16, seed=0)
        xt, yt = clusters(25, dim=16, seed=1)
        images = torch.from_numpy(x).float().reshape(-1, 1, 4, 4)
        result = pca_baseline(images, y, xt, yt, n_components=4, seed=0, k=5, max_train=120)
        assert result.n_components == 4 and 0.0 < result.explained_variance <= 1.0
        assert result.probe.n_train == result.knn.n_train == 120
        assert result.probe.accuracy > 0.97 and result.knn.accuracy > 0.97

    def test_too_many_components_fail_loudly(self):
        x, y = clusters(2, dim=3, seed=0)
        with pytest.raises(ValueError, match="n_components=5"):
            pca_baseline(x, y, x, y, n_components=5, seed=0)
