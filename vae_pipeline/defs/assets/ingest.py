"""Ingest: the raw IDX files, then the normalized tensor store."""

import os
import time

import dagster as dg

from vae_pipeline.core import data
from vae_pipeline.core.config import DataConfig
from vae_pipeline.defs.resources import MNIST_DIR_ENV, PipelineStorage

GROUP = "ingest"


class MnistRawConfig(dg.Config):
    """Which MNIST-format dataset to read, and from where."""

    dataset: str = "mnist"  # or "fashion_mnist" (same format, same code path)
    source_dir: str | None = None  # a folder with the four IDX files; default $VAE_PIPELINE_MNIST_DIR
    allow_download: bool = True  # torchvision download into data/ when no files are found
    verify_md5: bool = True  # off only for deliberately different IDX data (a slice, say)


class MnistTensorsConfig(dg.Config):
    """How the training set is split into train and validation."""

    val_size: int = 10_000  # carved from the 60k training images; the test set stays apart
    split_seed: int = 0  # the split is a seeded permutation


@dg.asset(group_name=GROUP, code_version="1")
def mnist_raw(context: dg.AssetExecutionContext, config: MnistRawConfig, storage: PipelineStorage) -> dg.Output:
    """The four official IDX files, located and checked against the official md5 sums."""
    DataConfig(dataset=config.dataset)  # validates the name before any file is touched
    directory, source = data.locate_raw_dir(
        config.dataset,
        config.source_dir or os.environ.get(MNIST_DIR_ENV),
        storage.root,
        config.allow_download,
    )
    raw = data.read_raw_dataset(directory, config.dataset, verify_md5=config.verify_md5, source=source)
    files = {
        key: {"path": str(f.path), "md5": f.md5, "content_md5": f.content_md5, "verified": f.verified}
        for key, f in raw.files.items()
    }
    manifest = {
        "dataset": raw.dataset,
        "source": source,
        "directory": str(raw.directory.resolve()),
        "verify_md5": config.verify_md5,
        "files": files,
        "counts": raw.counts(),
    }
    context.log.info(f"read {raw.dataset} from {directory} ({source})")
    return dg.Output(
        manifest,
        data_version=dg.DataVersion(raw.content_version),
        metadata={
            "dataset": raw.dataset,
            "source": source,
            "directory": dg.MetadataValue.path(str(raw.directory.resolve())),
            "md5": dg.MetadataValue.json({k: v["md5"] for k, v in files.items()}),
            "all_official": all(f["verified"] for f in files.values()),
            "train_count": raw.counts()["train"],
            "test_count": raw.counts()["test"],
        },
    )


@dg.asset(group_name=GROUP, code_version="1")
def mnist_tensors(
    context: dg.AssetExecutionContext, config: MnistTensorsConfig, storage: PipelineStorage, mnist_raw: dict
) -> dg.Output:
    """Normalized images (uint8 x 1/255), labels and a seeded train/val/test split, as safetensors."""
    start = time.perf_counter()
    dataset = mnist_raw["dataset"]
    DataConfig(dataset=dataset, val_size=config.val_size, split_seed=config.split_seed)
    raw = data.read_raw_dataset(mnist_raw["directory"], dataset, verify_md5=mnist_raw["verify_md5"])
    arrays = data.build_store_arrays(raw, config.val_size, config.split_seed)
    path = storage.path("tensors", f"{dataset}.safetensors")
    digest = data.write_tensor_store(path, arrays, data.store_metadata(raw, config.val_size, config.split_seed))
    store = data.load_tensor_store(path)
    summary = data.store_summary(store)
    context.log.info(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.2f}s")
    return dg.Output(
        {"path": str(path), "dataset": dataset, "content_sha256": digest, "val_size": config.val_size,
         "split_seed": config.split_seed, "counts": {k: v["count"] for k, v in summary.items()}},
        data_version=dg.DataVersion(digest),
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "content_sha256": digest,
            "size_mib": round(path.stat().st_size / 2**20, 2),
            "storage": "uint8 images x 1/255 (lossless, 4x smaller than float32)",
            "train_count": summary["train"]["count"],
            "val_count": summary["val"]["count"],
            "test_count": summary["test"]["count"],
            "label_counts": dg.MetadataValue.json({k: v["label_counts"] for k, v in summary.items()}),
        },
    )
