"""Report statistics: per-class error tables and the worst / best examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_pipeline.core.data.tensor_store import Split, TensorStore
from vae_pipeline.core.evaluation.reports import encode_splits, extreme_indices, per_class_error_stats
from vae_pipeline.core.model.config import ModelConfig
from vae_pipeline.core.model.losses import kl_divergence
from vae_pipeline.core.model.vae import build_model


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


class TestEncodeSplits:
    """Every column of a latents row describes one encoding of one image."""

    def _store(self):
        gen = torch.Generator().manual_seed(0)
        images = (torch.rand(12, 28, 28, generator=gen) * 255).to(torch.uint8)
        split = Split(images=images, labels=torch.arange(12) % 10, index=torch.arange(12))
        return TensorStore({"train": split, "val": split, "test": split}, {"dataset": "mnist"})

    def test_kl_is_the_kl_of_the_rows_own_mu_and_logvar(self):
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3), seed=0)
        rows = encode_splits(model, self._store(), "cpu", seed=0, splits=("test",))["test"]
        # Before: mu/logvar came from the grey image and kl from re-encoding a binarized one.
        expected = kl_divergence(torch.as_tensor(rows["mu"]), torch.as_tensor(rows["logvar"])).numpy()
        np.testing.assert_allclose(rows["kl"], expected, rtol=1e-6)
        assert set(rows) == {"index", "label", "mu", "logvar", "recon_nll_at_mu", "kl"}

    def test_an_autoencoder_has_no_logvar_and_no_kl(self):
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3, variational=False), seed=0)
        rows = encode_splits(model, self._store(), "cpu", seed=0, splits=("test",))["test"]
        assert rows["logvar"] is None and rows["kl"] is None and rows["recon_nll_at_mu"].shape == (12,)
