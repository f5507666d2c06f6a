"""The latent-embeddings table: one row per image, one parquet file per model version.

Every file in the folder has the same schema and a `model_version` column, so pandas reads one
version or all of them from the folder: `pd.read_parquet(folder, filters=[("model_version", "==", 3)])`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vae_pipeline.core.atomic import atomic_path

SOURCE_FILE = {"train": "train", "val": "train", "test": "t10k"}  # which official file each split comes from


def latent_schema(metadata: Mapping[str, str] | None = None) -> pa.Schema:
    """The columns of a latents file, the same for every model version; `metadata` lands in the parquet footer.

    `mu` and `logvar` are variable-length lists (each row holds latent_dim values; the footer says
    how many), so versions of different latent sizes, and an auto-encoder's missing `logvar`, read
    back together: a null fixed-size list does not round-trip through parquet, and two fixed sizes
    cannot be unified into one table.
    """
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),  # "<official file>-<index>", e.g. "t10k-00042"
            pa.field("split", pa.string(), nullable=False),  # train, val or test
            pa.field("label", pa.int8(), nullable=False),  # class 0..9, checked before the cast
            pa.field("mu", pa.list_(pa.float32()), nullable=False),  # posterior mean, latent_dim values
            pa.field("logvar", pa.list_(pa.float32()), nullable=True),  # posterior log-variance; null for an auto-encoder
            pa.field("recon_nll_at_mu", pa.float32(), nullable=False),  # -log p(x | z = mu), nats
            pa.field("kl", pa.float32(), nullable=True),  # KL(N(mu, exp(logvar)) || N(0, I)) of this row; null for an AE
            pa.field("model_version", pa.int64(), nullable=False),
        ],
        metadata=dict(metadata or {}),
    )


def image_ids(split: str, index: np.ndarray) -> list[str]:
    """Stable ids naming the official file and the position in it."""
    return [f"{SOURCE_FILE[split]}-{i:05d}" for i in index.tolist()]


def _vectors(values: np.ndarray | None, n: int, latent_dim: int) -> pa.Array:
    """(n, latent_dim) floats as a list column; None gives a column of n nulls."""
    if values is None:
        return pa.nulls(n, pa.list_(pa.float32()))
    values = np.ascontiguousarray(values, dtype=np.float32)  # (n, latent_dim)
    if values.shape != (n, latent_dim):
        raise ValueError(f"expected latent vectors of shape {(n, latent_dim)}, got {values.shape}.")
    offsets = pa.array(np.arange(0, (n + 1) * latent_dim, latent_dim, dtype=np.int32))  # (n + 1,)
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def _labels(labels: np.ndarray, split: str) -> pa.Array:
    """Labels as int8, refusing values that int8 would wrap (255 must never become -1)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int8).max):
        raise ValueError(
            f"the {split} split holds labels from {labels.min()} to {labels.max()}, outside what the latents table "
            "stores; the tensor store is not a class-labelled MNIST-format set: re-ingest it."
        )
    return pa.array(labels.astype(np.int8))


def latent_table(
    splits: Mapping[str, Mapping[str, np.ndarray]],
    model_version: int,
    metadata: Mapping[str, str] | None = None,
) -> pa.Table:
    """Build the table from per-split arrays: index, label, mu (n, d), logvar (n, d) or None, recon_nll_at_mu, kl or None."""
    latent_dim = next(iter(splits.values()))["mu"].shape[1]
    schema = latent_schema({**(metadata or {}), "latent_dim": str(latent_dim)})
    parts = []
    for split, arrays in splits.items():
        n = len(arrays["label"])
        kl = arrays.get("kl")
        columns = {
            "image_id": pa.array(image_ids(split, np.asarray(arrays["index"])), pa.string()),
            "split": pa.array([split] * n, pa.string()),
            "label": _labels(arrays["label"], split),
            "mu": _vectors(arrays["mu"], n, latent_dim),
            "logvar": _vectors(arrays.get("logvar"), n, latent_dim),
            "recon_nll_at_mu": pa.array(np.asarray(arrays["recon_nll_at_mu"], dtype=np.float32)),
            "kl": pa.array(np.asarray(kl, dtype=np.float32)) if kl is not None else pa.nulls(n, pa.float32()),
            "model_version": pa.array(np.full(n, model_version, dtype=np.int64)),
        }
        parts.append(pa.Table.from_pydict(columns, schema=schema))
    return pa.concat_tables(parts)


def write_parquet(table: pa.Table, path: Path | str) -> Path:
    """Write atomically: a reader (or a crash) never sees a half-written file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path
