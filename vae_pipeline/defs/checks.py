"""Asset checks: data sanity on the tensor store (blocking where downstream work would be wasted)."""

import dagster as dg

from vae_pipeline.core import data
from vae_pipeline.defs.assets.ingest import mnist_tensors


def _result(check: data.CheckResult, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=check.passed,
        severity=severity,
        description=check.description,
        metadata={"details": dg.MetadataValue.json(dict(check.details))},
    )


@dg.asset_check(asset=mnist_tensors, blocking=True, description="Every image is 28x28.")
def tensors_shape(mnist_tensors: dict) -> dg.AssetCheckResult:
    return _result(data.check_shapes(data.load_tensor_store(mnist_tensors["path"])))


@dg.asset_check(asset=mnist_tensors, blocking=True, description="Pixels are uint8, scale to [0, 1], no NaN.")
def tensors_value_range(mnist_tensors: dict) -> dg.AssetCheckResult:
    return _result(data.check_value_range(data.load_tensor_store(mnist_tensors["path"])))


@dg.asset_check(asset=mnist_tensors, blocking=True, description="Splits are disjoint and sized as configured.")
def tensors_splits(mnist_tensors: dict) -> dg.AssetCheckResult:
    store = data.load_tensor_store(mnist_tensors["path"])
    return _result(data.check_splits(store, mnist_tensors["val_size"]))


@dg.asset_check(asset=mnist_tensors, description="Label histogram equals the dataset's published counts.")
def tensors_label_histogram(mnist_tensors: dict) -> dg.AssetCheckResult:
    # A warning, not a block: a deliberate slice or custom IDX set is allowed to differ.
    store = data.load_tensor_store(mnist_tensors["path"])
    return _result(data.check_label_histogram(store), dg.AssetCheckSeverity.WARN)


DATA_CHECKS = [tensors_shape, tensors_value_range, tensors_splits, tensors_label_histogram]
