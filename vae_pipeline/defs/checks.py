"""Asset checks: data sanity on the tensor store (blocking where downstream work would be wasted)."""

import dagster as dg

from vae_pipeline.core.data import checks as data_checks, tensor_store
from vae_pipeline.defs.assets.ingest import mnist_tensors
from vae_pipeline.defs.manifests import MnistTensors
from vae_pipeline.defs.storage.folder import PipelineStorage


def _result(
    check: data_checks.CheckResult, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=check.passed,
        severity=severity,
        description=check.description,
        metadata={"details": dg.MetadataValue.json(dict(check.details))},
    )


def _store(storage: PipelineStorage, mnist_tensors: MnistTensors) -> tensor_store.TensorStore:
    # The manifest names the store relative to the data folder; the storage resource resolves it.
    return tensor_store.load_tensor_store(storage.resolve(mnist_tensors.path))


@dg.asset_check(asset=mnist_tensors, blocking=True, description="Every image is 28x28.")
def tensors_shape(mnist_tensors: MnistTensors, storage: PipelineStorage) -> dg.AssetCheckResult:
    return _result(data_checks.check_shapes(_store(storage, mnist_tensors)))


@dg.asset_check(asset=mnist_tensors, blocking=True, description="Pixels are uint8, scale to [0, 1], no NaN.")
def tensors_value_range(mnist_tensors: MnistTensors, storage: PipelineStorage) -> dg.AssetCheckResult:
    return _result(data_checks.check_value_range(_store(storage, mnist_tensors)))


@dg.asset_check(asset=mnist_tensors, blocking=True, description="Splits are disjoint and sized as configured.")
def tensors_splits(mnist_tensors: MnistTensors, storage: PipelineStorage) -> dg.AssetCheckResult:
    return _result(data_checks.check_splits(_store(storage, mnist_tensors), mnist_tensors.val_size))


@dg.asset_check(
    asset=mnist_tensors,
    blocking=True,
    description="Label histogram equals the dataset's published counts (blocking for a full-size set, a warning for a slice).",
)
def tensors_label_histogram(mnist_tensors: MnistTensors, storage: PipelineStorage) -> dg.AssetCheckResult:
    # A deliberate slice or custom subset is allowed to differ: a warning, which does not block.
    # A set as large as the official one that differs has had labels changed: an error, which does.
    check = data_checks.check_label_histogram(_store(storage, mnist_tensors))
    full_size = bool(check.details["full_size"])
    return _result(check, dg.AssetCheckSeverity.ERROR if full_size else dg.AssetCheckSeverity.WARN)


DATA_CHECKS = [tensors_shape, tensors_value_range, tensors_splits, tensors_label_histogram]
