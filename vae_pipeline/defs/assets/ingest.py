"""Ingest: the raw IDX files, then the normalized tensor store."""

import os
import time
from pathlib import Path

import dagster as dg

from vae_pipeline.core.data import raw_settle, raw_source, tensor_store
from vae_pipeline.core.model.config import DataConfig
from vae_pipeline.defs.automation import as_soon_as_new_data
from vae_pipeline.defs.manifests import MnistRaw, MnistTensors, RawFile
from vae_pipeline.defs.raw_files import RAW_FILES_ASSET, raw_settle_seconds
from vae_pipeline.defs.storage.folder import MNIST_DIR_ENV, PipelineStorage

GROUP = "ingest"
INGEST_CODE_VERSION = "3"


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


def _record(storage: PipelineStorage, path: Path) -> str:
    """How the raw manifest names a path: relative inside the data folder (movable), else absolute.

    A source folder outside the data folder is the user's own (configured or $VAE_PIPELINE_MNIST_DIR),
    and only its absolute path names it.
    """
    path = path.resolve()
    return storage.relative(path) if path.is_relative_to(storage.root) else str(path)


def _recorded(storage: PipelineStorage, stored: str) -> Path:
    """The path a raw manifest names (see `_record`)."""
    return Path(stored) if Path(stored).is_absolute() else storage.resolve(stored)


@dg.asset(group_name=GROUP, code_version=INGEST_CODE_VERSION, deps=[RAW_FILES_ASSET], automation_condition=as_soon_as_new_data())
def mnist_raw(context: dg.AssetExecutionContext, config: MnistRawConfig, storage: PipelineStorage) -> dg.MaterializeResult:
    """The four official IDX files, located and checked against the official md5 sums."""
    DataConfig(dataset=config.dataset)  # validates the name before any file is touched
    directory, source = raw_source.locate_raw_dir(
        config.dataset,
        config.source_dir or os.environ.get(MNIST_DIR_ENV),
        storage.root,
        config.allow_download,
    )
    raw = raw_settle.read_raw_files(
        directory, config.dataset, verify_md5=config.verify_md5, source=source, settle_seconds=raw_settle_seconds()
    )
    files = {
        key: RawFile(path=_record(storage, f.path), md5=f.md5, content_md5=f.content_md5, verified=f.verified)
        for key, f in raw.files.items()
    }
    manifest = MnistRaw(
        dataset=raw.dataset,
        source=source,
        directory=_record(storage, raw.directory),
        verify_md5=config.verify_md5,
        files=files,
        counts=raw.counts(),
    )
    if raw.directory.resolve().is_relative_to(storage.root):  # downloaded into the data folder: mnist_tensors may run elsewhere
        for f in raw.files.values():
            storage.publish(f.path)
    context.log.info(f"read {raw.dataset} from {directory} ({source})")
    return dg.MaterializeResult(
        value=manifest,
        data_version=dg.DataVersion(raw.content_version),
        metadata={
            "dataset": raw.dataset,
            "source": source,
            "directory": dg.MetadataValue.path(str(raw.directory.resolve())),
            "md5": dg.MetadataValue.json({k: v.md5 for k, v in files.items()}),
            "all_official": all(f.verified for f in files.values()),
            "train_count": raw.counts()["train"],
            "test_count": raw.counts()["test"],
        },
    )


@dg.asset(group_name=GROUP, code_version=INGEST_CODE_VERSION, automation_condition=as_soon_as_new_data())
def mnist_tensors(
    context: dg.AssetExecutionContext, config: MnistTensorsConfig, storage: PipelineStorage, mnist_raw: MnistRaw
) -> dg.MaterializeResult:
    """Normalized images (uint8 x 1/255), labels and a seeded train/val/test split, as safetensors.

    The store is filed under its content hash, so a second split lands beside the first instead
    of replacing the store that earlier models were trained on.
    """
    start = time.perf_counter()
    dataset = mnist_raw.dataset
    DataConfig(dataset=dataset, val_size=config.val_size, split_seed=config.split_seed)
    directory = _recorded(storage, mnist_raw.directory)
    raw = raw_settle.read_raw_files(directory, dataset, verify_md5=mnist_raw.verify_md5, settle_seconds=raw_settle_seconds())
    arrays = tensor_store.build_store_arrays(raw, config.val_size, config.split_seed)
    metadata = tensor_store.store_metadata(raw, config.val_size, config.split_seed)
    stored = tensor_store.put_tensor_store(storage.folder("tensors"), arrays, metadata)
    if stored.damage is not None:
        context.log.warning(f"{stored.path} was damaged and has been rewritten: {stored.damage}")
    path, digest = stored.path, stored.content_sha256
    storage.publish(path)
    store = tensor_store.load_tensor_store(path)
    summary = tensor_store.store_summary(store)
    context.log.info(
        f"{stored.action} {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.2f}s"
    )
    return dg.MaterializeResult(
        value=MnistTensors(path=storage.relative(path), dataset=dataset, content_sha256=digest, val_size=config.val_size,
                           split_seed=config.split_seed, counts={k: v["count"] for k, v in summary.items()}),
        data_version=dg.DataVersion(digest),
        metadata={
            "path": dg.MetadataValue.path(storage.url(path)),
            "store_write": stored.action if stored.damage is None else f"{stored.action}: {stored.damage}",
            "content_sha256": digest,
            "size_mib": round(path.stat().st_size / 2**20, 2),
            "storage": "uint8 images x 1/255 (lossless, 4x smaller than float32)",
            "train_count": summary["train"]["count"],
            "val_count": summary["val"]["count"],
            "test_count": summary["test"]["count"],
            "label_counts": dg.MetadataValue.json({k: v["label_counts"] for k, v in summary.items()}),
        },
    )
