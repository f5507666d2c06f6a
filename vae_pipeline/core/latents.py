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


def latent_schema(latent_dim: int, metadata: Mapping[str, str] | None = None) -> pa.Schema:
    """The columns of a latents file; `metadata` lands in the parquet footer."""
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),  # "<official file>-<index>", e.g. "t10k-00042"
            pa.field("split", pa.string(), nullable=False),  # train, val or test
            pa.field("label", pa.int8(), nullable=False),
            pa.field("mu", pa.list_(pa.float32(), latent_dim), nullable=False),  # posterior mean
            pa.field("logvar", pa.list_(pa.float32(), latent_dim), nullable=True),  # null for an auto-encoder
            pa.field("recon_nll", pa.float32(), nullable=False),  # -log p(x | z = mu), nats
            pa.field("kl", pa.float32(), nullable=False),  # KL(q(z|x) || N(0, I)), nats
            pa.field("model_version", pa.int64(), nullable=False),
        ],
        metadata=dict(metadata or {}),
    )


def image_ids(split: str, index: np.ndarray) -> list[str]:
    """Stable ids naming the official file and the position in it."""
    return [f"{SOURCE_FILE[split]}-{i:05d}" for i in index.tolist()]


def latent_table(
    splits: Mapping[str, Mapping[str, np.ndarray]],
    model_version: int,
    metadata: Mapping[str, str] | None = None,
) -> pa.Table:
    """Build the table from per-split arrays: index, label, mu (n, d), logvar (n, d) or None, recon_nll, kl."""
    latent_dim = next(iter(splits.values()))["mu"].shape[1]
    schema = latent_schema(latent_dim, metadata)
    parts = []
    for split, arrays in splits.items():
        n = len(arrays["label"])
        mu = np.ascontiguousarray(arrays["mu"], dtype=np.float32)  # (n, d)
        logvar = arrays.get("logvar")
        columns = {
            "image_id": pa.array(image_ids(split, np.asarray(arrays["index"])), pa.string()),
            "split": pa.array([split] * n, pa.string()),
            "label": pa.array(np.asarray(arrays["label"], dtype=np.int8)),
            "mu": pa.FixedSizeListArray.from_arrays(pa.array(mu.reshape(-1)), latent_dim),
            "logvar": (
                pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ascontiguousarray(logvar, dtype=np.float32).reshape(-1)), latent_dim
                )
                if logvar is not None
                else pa.nulls(n, pa.list_(pa.float32(), latent_dim))
            ),
            "recon_nll": pa.array(np.asarray(arrays["recon_nll"], dtype=np.float32)),
            "kl": pa.array(np.asarray(arrays["kl"], dtype=np.float32)),
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
