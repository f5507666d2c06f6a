"""PNG renderings: valid files of the expected size, written atomically, bad input refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from scipy.stats import norm

from vae_pipeline.core.evaluation.plots import (
    PANEL_GAP_PX,
    gaussian_quantile_grid,
    image_grid_png,
    image_panels_png,
    interpolation_strip_png,
    latent_scatter_panels_png,
    tile_images,
    tsne_scatter_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path) -> Image.Image:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = Image.open(path)
    image.load()
    assert image.format == "PNG"
    return image


def digits(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


class TestTileImages:
    def test_mosaic_shape_and_placement(self):
        images = np.zeros((5, 1, 28, 28))
        images[4] = 1.0
        grid = tile_images(images, nrow=3, padding=2)
        assert grid.shape == (2 * 30 + 2, 3 * 30 + 2)
        assert grid[32:60, 32:60].min() == 1.0  # fifth image: second row, second column
        assert grid[2:30, 2:30].max() == 0.0

    def test_padding_is_background_ink_zero(self):
        # Shown with gray_r, 0 is white paper: padding must not draw black frames around the digits.
        grid = tile_images(np.ones((4, 1, 28, 28)), nrow=2, padding=2)
        assert grid[:2].max() == 0.0 and grid[:, 30:32].max() == 0.0

    def test_out_of_range_images_are_refused(self):
        with pytest.raises(ValueError, match="clamp"):
            tile_images(np.full((2, 1, 28, 28), 1.5), nrow=2)


class TestImageGridPng:
    def test_writes_a_png_sized_by_the_grid(self, tmp_path):
        path = image_grid_png(digits(16), tmp_path / "grid.png", nrow=8)
        assert path == tmp_path / "grid.png"
        image = read_png(path)
        # 8 x 2 images of 28 px with 2 px padding, drawn at 2x.
        assert image.size == (2 * (8 * 30 + 2), 2 * (2 * 30 + 2))

    def test_title_adds_a_band_and_folders_are_created(self, tmp_path):
        path = image_grid_png(digits(4).numpy(), tmp_path / "a" / "b" / "grid.png", nrow=4, title="samples")
        width, height = read_png(path).size
        assert width == 2 * (4 * 30 + 2) and height > 2 * 32

    def test_overwrite_is_atomic_and_leaves_no_temporary_files(self, tmp_path):
        path = tmp_path / "grid.png"
        image_grid_png(digits(4), path, nrow=2)
        image_grid_png(digits(9, seed=1), path, nrow=3)
        assert read_png(path).size == (2 * (3 * 30 + 2), 2 * (3 * 30 + 2))
        assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]

    def test_failed_write_keeps_the_old_file_and_no_temporary(self, tmp_path, monkeypatch):
        path = tmp_path / "grid.png"
        image_grid_png(digits(4), path, nrow=2)
        before = path.read_bytes()

        def half_written(self, target, **kwargs):
            Path(target).write_bytes(PNG_SIGNATURE)
            raise OSError("disk full")

        monkeypatch.setattr(Figure, "savefig", half_written)
        with pytest.raises(OSError, match="disk full"):
            image_grid_png(digits(4, seed=1), path, nrow=2)
        assert path.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]

    def test_nan_images_are_refused(self, tmp_path):
        with pytest.raises(ValueError, match="NaN"):
            image_grid_png(torch.full((4, 1, 28, 28), float("nan")), tmp_path / "grid.png", nrow=2)
        assert not (tmp_path / "grid.png").exists()


class TestInterpolationStripPng:
    def test_one_row_per_path(self, tmp_path):
        frames = torch.rand(3, 7, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        image = read_png(interpolation_strip_png(frames, tmp_path / "strip.png"))
        assert image.size == (2 * (7 * 30 + 2), 2 * (3 * 30 + 2))

    def test_accepts_a_list_of_rows(self, tmp_path):
        rows = [torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)]
        image = read_png(interpolation_strip_png(rows, tmp_path / "strip.png", title="3 -> 8"))
        assert image.size[0] == 2 * (5 * 30 + 2)


class TestTsneScatterPng:
    def test_writes_a_png_of_the_requested_size(self, tmp_path):
        rng = np.random.default_rng(0)
        embedding, labels = rng.standard_normal((500, 2)), rng.integers(0, 10, 500)
        path = tsne_scatter_png(embedding, labels, tmp_path / "tsne.png", title="t-SNE", size_px=(640, 480))
        image = read_png(path)
        assert image.size == (640, 480)
        # Coloured points, not a blank canvas: more than a handful of distinct colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10

    def test_mismatched_labels_fail_loudly(self, tmp_path):
        with pytest.raises(ValueError, match="labels"):
            tsne_scatter_png(np.zeros((5, 2)), np.zeros(4), tmp_path / "tsne.png")


class TestImagePanelsPng:
    def test_panels_sit_side_by_side_at_the_grid_size(self, tmp_path):
        panels = [(f"model {i}: FD {10.0 * i:.1f}", digits(20, seed=i)) for i in range(3)]
        image = read_png(image_panels_png(panels, tmp_path / "panels.png", nrow=10))
        grid_w, grid_h = 2 * (10 * 30 + 2), 2 * (2 * 30 + 2)
        assert image.size[0] == 3 * grid_w + 2 * PANEL_GAP_PX
        assert image.size[1] > grid_h  # the grids plus the title band
        assert [p.name for p in tmp_path.iterdir()] == ["panels.png"]

    def test_panels_of_different_sizes_are_refused(self, tmp_path):
        with pytest.raises(ValueError, match="same number of images"):
            image_panels_png([("a", digits(20)), ("b", digits(10))], tmp_path / "panels.png", nrow=10)
        assert not (tmp_path / "panels.png").exists()


class TestGaussianQuantileGrid:
    def test_grid_holds_quantiles_in_display_order(self):
        grid = gaussian_quantile_grid(5)
        q = norm.ppf([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
        assert grid.shape == (25, 2)
        np.testing.assert_allclose(grid[:5, 0], q)  # first row: z_1 increases left to right
        np.testing.assert_allclose(grid[:5, 1], q[-1])  # ... at the largest z_2 (top of the picture)
        np.testing.assert_allclose(grid[::5, 1], q[::-1])
        assert np.isfinite(grid).all()

    def test_decoded_grid_renders_as_a_square_manifold(self, tmp_path):
        n = 6
        codes = torch.from_numpy(gaussian_quantile_grid(n)).float()
        images = torch.sigmoid(codes[:, :1, None, None] * torch.ones(1, 1, 28, 28))  # brightness follows z_1
        image = read_png(image_panels_png([("VAE", images), ("AE", images.flip(0))], tmp_path / "manifold.png", nrow=n))
        assert image.size[0] == 2 * 2 * (n * 30 + 2) + PANEL_GAP_PX


class TestLatentScatterPanelsPng:
    def test_writes_one_panel_per_model(self, tmp_path):
        rng = np.random.default_rng(0)
        panels = [("VAE", rng.standard_normal((300, 2)), rng.integers(0, 10, 300)),
                  ("AE", 8 * rng.standard_normal((300, 2)), rng.integers(0, 10, 300))]
        image = read_png(latent_scatter_panels_png(panels, tmp_path / "codes.png", panel_px=300))
        assert image.size == (600, 300)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10

    def test_codes_that_are_not_2d_are_refused(self, tmp_path):
        with pytest.raises(ValueError, match="2-D codes"):
            latent_scatter_panels_png([("VAE", np.zeros((10, 20)), np.zeros(10))], tmp_path / "codes.png")
