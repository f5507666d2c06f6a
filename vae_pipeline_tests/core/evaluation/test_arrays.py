"""Shared array helpers: seeded subsamples and row checks."""

from __future__ import annotations

import numpy as np
import pytest

from vae_pipeline.core.evaluation.arrays import check_rows, subsample_indices


class TestSubsample:
    def test_keeps_all_rows_when_not_asked_to_sample(self):
        np.testing.assert_array_equal(subsample_indices(5, None, seed=0), np.arange(5))
        np.testing.assert_array_equal(subsample_indices(5, 10, seed=0), np.arange(5))

    def test_sample_is_seeded_sorted_and_unique(self):
        a = subsample_indices(100, 10, seed=3)
        np.testing.assert_array_equal(a, subsample_indices(100, 10, seed=3))
        assert len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
        assert not np.array_equal(a, subsample_indices(100, 10, seed=4))

class TestCheckRows:
    def test_wrong_rank_empty_and_nan_are_refused(self):
        with pytest.raises(ValueError, match="2 dimensions"):
            check_rows("x", np.zeros(3))
        with pytest.raises(ValueError, match="empty"):
            check_rows("x", np.zeros((0, 2)))
        with pytest.raises(ValueError, match="NaN"):
            check_rows("x", np.array([[0.0, np.nan]]))
