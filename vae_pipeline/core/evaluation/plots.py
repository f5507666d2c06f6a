"""PNG renderings of images, interpolations, t-SNE maps and VAE-vs-AE comparisons, written atomically.

Figures are built with matplotlib's object API on an Agg canvas: no pyplot, no global backend
switch, no figure registry that leaks memory in a long-running Dagster process.
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vae_pipeline.core.atomic import atomic_path
from vae_pipeline.core.evaluation.arrays import ArrayLike, as_numpy

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
    grid = np.zeros((nrows * (h + padding) + padding, ncol * (w + padding) + padding))  # 0 renders white (gray_r)
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


def _check_points(points: ArrayLike, labels: ArrayLike, name: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
    e, y = as_numpy(points), as_numpy(labels).reshape(-1)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"{name} must be (n, 2), got shape {e.shape}; plot 2-D points (a t-SNE map or 2-D codes).")
    if len(e) != len(y):
        raise ValueError(f"{name} has {len(e)} points but labels has {len(y)}.")
    return e, y


def _scatter(ax, e: np.ndarray, y: np.ndarray, ticks: bool = False) -> None:
    """One colour per label with a legend, on an existing axes."""
    classes = np.unique(y)
    # tab10 gives ten distinct colours; more classes cycle through tab20.
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    # Small, translucent points: at 10,000 points overplotting hides density otherwise.
    marker_size = max(1.0, min(20.0, 20_000 / max(len(e), 1)))
    for i, c in enumerate(classes):
        pts = e[y == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=marker_size, color=palette(i % palette.N), alpha=0.6, linewidths=0, label=str(c))
    ax.legend(title="label", markerscale=max(1.0, 30 / marker_size) ** 0.5, loc="best", fontsize=8, frameon=True)
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])


def tsne_scatter_png(
    embedding: ArrayLike,
    labels: ArrayLike,
    path: Path | str,
    title: str | None = None,
    size_px: tuple[int, int] = (800, 800),
) -> Path:
    """A PNG scatter of a 2-D embedding (n, 2), one colour per label with a legend, `size_px` wide x high."""
    e, y = _check_points(embedding, labels)
    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)
    ax = fig.add_subplot()
    _scatter(ax, e, y)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_png(fig, path)


# --- side-by-side comparisons (VAE | auto-encoder | auto-encoder with a fitted prior) ----------

PANEL_GAP_PX = 16  # white space between side-by-side panels


def image_panels_png(panels: list[tuple[str, ArrayLike]], path: Path | str, nrow: int = 10) -> Path:
    """Side-by-side image mosaics, one per (title, images (n, 1, 28, 28) in [0, 1]), each with its title.

    For comparing what decoders make of the same kind of latent point (prior draws, a quantile
    grid): put the figure that ranks them (e.g. the FD) in each title. All panels must tile to the
    same size, so pass the same number of images to each.
    """
    if not panels:
        raise ValueError("panels is empty; pass at least one (title, images) pair.")
    grids = [tile_images(images, nrow) for _, images in panels]
    shapes = {g.shape for g in grids}
    if len(shapes) != 1:
        raise ValueError(f"panels tile to different sizes {sorted(shapes)}; pass the same number of images to each.")
    h, w = grids[0].shape[0] * PIXEL_ZOOM, grids[0].shape[1] * PIXEL_ZOOM
    # Two title lines: a title such as "AE, Gaussian fitted to codes: FD 12.3" is wider than a 10-digit grid.
    band = 2 * TITLE_PX
    width = len(grids) * w + (len(grids) - 1) * PANEL_GAP_PX
    fig = Figure(figsize=(width / DPI, (h + band) / DPI), dpi=DPI)
    for i, ((title, _), grid) in enumerate(zip(panels, grids)):
        left = i * (w + PANEL_GAP_PX)
        ax = fig.add_axes((left / width, 0.0, w / width, h / (h + band)))
        # Digits are ink on paper: show 1 as black, so the white padding reads as background.
        ax.imshow(grid, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        fig.text((left + w / 2) / width, 1.0 - (band / 2) / (h + band), title, ha="center", va="center", fontsize=9, wrap=True)
    return _save_png(fig, path)


def gaussian_quantile_grid(n: int) -> np.ndarray:
    """An n x n grid of 2-D codes at Gaussian quantiles, (n * n, 2), in row-major display order.

    The quantiles of an even grid in (0, 1) (ends excluded, where the inverse CDF is infinite)
    through the standard normal's inverse CDF: equal prior mass between neighbours, as in Kingma & Welling (2014),
    Fig. 4. Rows run from high z_2 (top) to low, columns from low z_1 (left) to high, so
    `tile_images(decode(grid), nrow=n)` shows the plane the way a scatter plot of the codes does.
    """
    if n < 2:
        raise ValueError(f"n={n} must be at least 2 for a grid.")
    q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.0, 1.0, n + 2)[1:-1]])  # (n,) increasing quantiles
    z1, z2 = np.meshgrid(q, q[::-1])  # (n, n) each; row 0 is the largest z_2
    return np.stack([z1.ravel(), z2.ravel()], axis=1)  # (n * n, 2)


def latent_scatter_panels_png(
    panels: list[tuple[str, ArrayLike, ArrayLike]], path: Path | str, panel_px: int = 600
) -> Path:
    """Side-by-side scatters of 2-D codes, one per (title, codes (n, 2), labels (n,)), coloured by label.

    Axes keep their units (ticks shown), so a VAE's codes near N(0, I) and an auto-encoder's
    codes spread over a wider range can be compared by scale as well as by shape.
    """
    if not panels:
        raise ValueError("panels is empty; pass at least one (title, codes, labels) triple.")
    checked = [(title, *_check_points(codes, labels, name=f"codes of {title!r}")) for title, codes, labels in panels]
    fig = Figure(figsize=(len(panels) * panel_px / DPI, panel_px / DPI), dpi=DPI)
    for i, (title, e, y) in enumerate(checked):
        ax = fig.add_subplot(1, len(panels), i + 1)
        _scatter(ax, e, y, ticks=True)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
    fig.tight_layout()
    return _save_png(fig, path)


__all__ = [
    "gaussian_quantile_grid",
    "image_grid_png",
    "image_panels_png",
    "interpolation_strip_png",
    "latent_scatter_panels_png",
    "tile_images",
    "tsne_scatter_png",
]
