"""Report statistics: per-class error tables and the worst / best examples."""

from __future__ import annotations

import numpy as np
import pytest

from vae_pipeline.core.reports import extreme_indices, per_class_error_stats


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
