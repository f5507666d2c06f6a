"""t-SNE maps and trustworthiness on tiny synthetic data whose right answer is known in advance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_pipeline.core.evaluation.probes import knn_accuracy
from vae_pipeline.core.evaluation.tsne import FFT_ABOVE, gradient_method, trustworthiness_score, tsne_embedding
from vae_pipeline_tests.synthetic import clusters

SIDE = 28


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

    @pytest.mark.parametrize("k", [1, 10, 40])
    def test_the_same_score_as_scikit_learn(self, k: int):
        """Fails on a rank off by one (self counted as a neighbour, <= for <) or a wrong normalisation."""
        from sklearn.manifold import trustworthiness

        x, _ = clusters(50, dim=6, seed=0)  # (200, 6)
        low = x[:, :2] + 0.5 * np.random.default_rng(1).standard_normal((len(x), 2))
        assert trustworthiness_score(x, low, n_neighbors=k) == pytest.approx(trustworthiness(x, low, n_neighbors=k), abs=1e-12)
        assert trustworthiness_score(x, low, n_neighbors=k) < 1.0

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

    @pytest.mark.parametrize("method", ["bh", "fft"])
    def test_clusters_stay_together_in_the_map(self, method: str):
        """Each point's cluster is read off its neighbours among the *other* half of the map.

        Fails on a map that loses the clusters (a shuffled or random embedding scores about 0.25);
        scoring points against themselves would not, as each point is its own nearest neighbour.
        """
        x, y = clusters(60, dim=6, seed=0)
        emb = tsne_embedding(x, seed=0, perplexity=10, n_jobs=1, n_iter=100, early_exaggeration_iter=50, method=method)
        assert knn_accuracy(emb[::2], y[::2], emb[1::2], y[1::2], k=3).accuracy == 1.0
        shuffled = emb[np.random.default_rng(0).permutation(len(emb))]
        assert knn_accuracy(shuffled[::2], y[::2], shuffled[1::2], y[1::2], k=3).accuracy < 0.5

    def test_barnes_hut_up_to_the_measured_size_fft_above(self):
        assert [gradient_method(n) for n in (100, 5_000, FFT_ABOVE, FFT_ABOVE + 1)] == ["bh", "bh", "bh", "fft"]
        with pytest.raises(ValueError, match="'bh'"):
            tsne_embedding(np.zeros((200, 3)), seed=0, method="exact")

    def test_too_few_points_for_the_perplexity_fail_loudly(self):
        with pytest.raises(ValueError, match="lower the perplexity"):
            tsne_embedding(np.zeros((50, 3)), seed=0, perplexity=30)
