"""Sanity checks on a tensor store (pure; the Dagster asset checks call these)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from vae_pipeline.core.data.idx import IMAGE_HW, OFFICIAL_LABEL_COUNTS
from vae_pipeline.core.data.tensor_store import TensorStore, store_summary


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one data sanity check."""

    passed: bool
    description: str
    details: Mapping[str, object] = field(default_factory=dict)


def check_shapes(store: TensorStore) -> CheckResult:
    bad = {n: list(s.images.shape) for n, s in store.splits.items() if tuple(s.images.shape[1:]) != IMAGE_HW}
    return CheckResult(not bad, "every image is 28x28" if not bad else f"wrong image shapes: {bad}", {"bad": bad})


def check_value_range(store: TensorStore) -> CheckResult:
    """Stored dtype is uint8 and the scaled images span exactly [0, 1] with no NaN."""
    details: dict[str, object] = {}
    ok = True
    for name, split in store.splits.items():
        x = split.float_images()
        lo, hi = float(x.min()), float(x.max())
        nan = int(torch.isnan(x).sum())
        details[name] = {"dtype": str(split.images.dtype), "min": lo, "max": hi, "nan": nan}
        ok &= split.images.dtype == torch.uint8 and lo == 0.0 and hi == 1.0 and nan == 0
    return CheckResult(bool(ok), "pixels are uint8, scale to [0, 1], no NaN", details)


def is_full_size(store: TensorStore) -> bool:
    """Whether train+val and test are as large as the dataset's official files (not a slice)."""
    expected = OFFICIAL_LABEL_COUNTS.get(store.dataset)
    if expected is None:
        return False
    return len(store["train"]) + len(store["val"]) == sum(expected["train"]) and len(store["test"]) == sum(expected["test"])


def check_label_histogram(store: TensorStore) -> CheckResult:
    """train+val and test label counts equal the published ones for the dataset.

    `details["full_size"]` says whether the store is as large as the official set: a slice is
    expected to differ, a full-size set that differs has had labels changed.
    """
    expected = OFFICIAL_LABEL_COUNTS.get(store.dataset)
    summary = store_summary(store)
    train_val = (np.array(summary["train"]["label_counts"]) + np.array(summary["val"]["label_counts"])).tolist()
    observed = {"train": train_val, "test": summary["test"]["label_counts"]}
    full_size = is_full_size(store)
    if expected is None:
        return CheckResult(False, f"no published label counts for {store.dataset}", {"observed": observed, "full_size": False})
    ok = all(tuple(observed[s]) == expected[s] for s in ("train", "test"))
    if ok:
        description = "label histogram equals the published counts"
    elif full_size:
        description = (
            f"a full-size {store.dataset} set whose label histogram differs from the published one: labels were "
            "changed; fetch the official files again"
        )
    else:
        description = "label histogram differs from the published counts, as a slice's does"
    return CheckResult(ok, description, {"observed": observed, "expected": expected, "full_size": full_size})


def check_splits(store: TensorStore, expected_val_size: int) -> CheckResult:
    """Split sizes add up and no official index is in two splits."""
    train = set(store["train"].index.tolist())
    val = set(store["val"].index.tolist())
    shared = len(train & val)
    sizes = {n: len(s) for n, s in store.splits.items()}
    ok = shared == 0 and sizes["val"] == expected_val_size and all(len(s.images) == len(s.labels) for s in store.splits.values())
    return CheckResult(ok, "splits are disjoint and sized as configured", {"sizes": sizes, "shared_train_val": shared})
