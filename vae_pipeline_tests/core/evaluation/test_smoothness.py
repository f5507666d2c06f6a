"""Interpolation smoothness with decoders whose paths are known: linear (even), step (one jump)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_pipeline.core.evaluation.smoothness import (
    SMOOTH_MAX_STEP_RATIO,
    decode_interpolations,
    interpolate_latents,
    interpolation_smoothness,
    path_smoothness,
    pick_interpolation_pairs,
    smoothness_verdict,
)

SIDE = 28


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

    def test_decoded_paths_are_batched_consistently_and_end_on_the_codes_images(self):
        g = torch.Generator().manual_seed(0)
        z_a, z_b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
        frames = decode_interpolations(linear_decoder, z_a, z_b, steps=4, batch_size=3)
        assert frames.shape == (5, 4, 1, SIDE, SIDE)
        torch.testing.assert_close(frames, decode_interpolations(linear_decoder, z_a, z_b, steps=4, batch_size=100))
        torch.testing.assert_close(frames[:, 0], linear_decoder(z_a))
        torch.testing.assert_close(frames[:, -1], linear_decoder(z_b))

    def test_a_decoder_that_drops_codes_fails_loudly(self):
        with pytest.raises(ValueError, match="latent codes"):
            decode_interpolations(lambda z: linear_decoder(z)[:1], torch.zeros(2, 3), torch.ones(2, 3), steps=3)

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
