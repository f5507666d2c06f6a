"""PNG renderings of images, interpolations and t-SNE maps, written atomically.

Figures are built with matplotlib's object API on an Agg canvas: no pyplot, no global backend
switch, no figure registry that leaks memory in a long-running Dagster process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vae_pipeline.core.atomic import atomic_path
from vae_pipeline.core.evaluation import ArrayLike, as_numpy

DPI = 100  # figure sizes below are in pixels; inches are pixels / DPI
PIXEL_ZOOM = 2  # each image pixel becomes a 2x2 block, so a 28x28 digit reads at 56 px
TITLE_PX = 28  # band above a grid that holds its title


def _save_png(fig: Figure, path: Path | str) -> Path:
    """Write the figure atomically: a reader (the Dagster UI, MLflow) never sees a half-written PNG."""
    FigureCanvasAgg(fig)  # attaches itself to the figure
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def _as_images(images: ArrayLike) -> np.ndarray:
    """(n, h, w) float images in [0, 1] from (n, 1, h, w) or (n, h, w)."""
    x = as_numpy(images).astype(np.float64)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"images must have one channel, got shape {x.shape}.")
        x = x[:, 0]
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"images must be a non-empty (n, 1, h, w) or (n, h, w) batch, got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("images hold NaN or infinite values; the model or decoder that made them is broken.")
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(
            f"images must be in [0, 1] (got min {x.min():.3g}, max {x.max():.3g}); "
            "pass probabilities or clamp Gaussian means with .clamp(0, 1) first."
        )
    return x


def tile_images(images: ArrayLike, nrow: int, padding: int = 2) -> np.ndarray:
    """One (H, W) mosaic of n images, `nrow` per row, separated by `padding` white pixels."""
    x = _as_images(images)
    if nrow < 1:
        raise ValueError(f"nrow={nrow} must be at least 1.")
    n, h, w = x.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)  # ceil
    grid = np.ones((nrows * (h + padding) + padding, ncol * (w + padding) + padding))
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = x[i]
    return grid


def _grid_figure(grid: np.ndarray, title: str | None) -> Figure:
    h, w = grid.shape[0] * PIXEL_ZOOM, grid.shape[1] * PIXEL_ZOOM
    band = TITLE_PX if title else 0
    fig = Figure(figsize=(w / DPI, (h + band) / DPI), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, h / (h + band)))
    # Digits are ink on paper: show 1 as black, so the white padding reads as background.
    ax.imshow(grid, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1.0 - (band / 2) / (h + band), title, ha="center", va="center", fontsize=10)
    return fig


def image_grid_png(images: ArrayLike, path: Path | str, nrow: int = 8, title: str | None = None) -> Path:
    """A PNG mosaic of (n, 1, 28, 28) images in [0, 1], `nrow` per row, for samples and reconstructions."""
    return _save_png(_grid_figure(tile_images(images, nrow), title), path)


def interpolation_strip_png(frames: ArrayLike | list[ArrayLike], path: Path | str, title: str | None = None) -> Path:
    """A PNG with one row per interpolation path: frames (n_paths, steps, 1, 28, 28) in [0, 1]."""
    if isinstance(frames, list):
        frames = torch.stack([torch.as_tensor(as_numpy(f)) for f in frames])
    x = as_numpy(frames)
    if x.ndim not in (4, 5):
        raise ValueError(f"frames must be (n_paths, steps, [1,] h, w), got shape {x.shape}.")
    n_paths, steps = x.shape[:2]
    flat = x.reshape(n_paths * steps, *x.shape[2:])  # (n_paths * steps, [1,] h, w), row by row
    return image_grid_png(flat, path, nrow=steps, title=title)


def tsne_scatter_png(
    embedding: ArrayLike,
    labels: ArrayLike,
    path: Path | str,
    title: str | None = None,
    size_px: tuple[int, int] = (800, 800),
) -> Path:
    """A PNG scatter of a 2-D embedding (n, 2), one colour per label with a legend, `size_px` wide x high."""
    e, y = as_numpy(embedding), as_numpy(labels).reshape(-1)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"embedding must be (n, 2), got shape {e.shape}.")
    if len(e) != len(y):
        raise ValueError(f"embedding has {len(e)} points but labels has {len(y)}.")
    classes = np.unique(y)
    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)
    ax = fig.add_subplot()
    # tab10 gives ten distinct colours; more classes cycle through tab20.
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    # Small, translucent points: at 10,000 points overplotting hides density otherwise.
    marker_size = max(1.0, min(20.0, 20_000 / max(len(e), 1)))
    for i, c in enumerate(classes):
        pts = e[y == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=marker_size, color=palette(i % palette.N), alpha=0.6, linewidths=0, label=str(c))
    ax.legend(title="label", markerscale=max(1.0, 30 / marker_size) ** 0.5, loc="best", fontsize=8, frameon=True)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_png(fig, path)


__all__ = ["image_grid_png", "interpolation_strip_png", "tile_images", "tsne_scatter_png"]
