"""Ingest benchmark: wall time, store size and peak memory of building the tensor store from raw MNIST.

Usage: VAE_PIPELINE_MNIST_DIR=../shared/mnist/raw python benchmarks/bench_ingest.py
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

from vae_pipeline.core import data


def main() -> None:
    source = Path(os.environ.get("VAE_PIPELINE_MNIST_DIR", Path(__file__).resolve().parents[1] / "../shared/mnist/raw"))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mnist.safetensors"
        t0 = time.perf_counter()
        raw = data.read_raw_dataset(source, "mnist")
        t1 = time.perf_counter()
        arrays = data.build_store_arrays(raw, val_size=10_000, split_seed=0)
        data.write_tensor_store(path, arrays, data.store_metadata(raw, 10_000, 0))
        t2 = time.perf_counter()
        store = data.load_tensor_store(path)
        t3 = time.perf_counter()
        size = path.stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"read_and_verify_s={t1 - t0:.3f}")
    print(f"split_and_write_s={t2 - t1:.3f}")
    print(f"ingest_total_s={t2 - t0:.3f}")
    print(f"load_and_verify_store_s={t3 - t2:.3f}")
    print(f"store_bytes={size} ({size / 2**20:.1f} MiB; float32 would be {sum(len(s) for s in store.splits.values()) * 784 * 4 / 2**20:.1f} MiB)")
    print(f"peak_rss_mib={peak:.0f} (interpreter and imports before ingest: {rss_before:.0f})")


if __name__ == "__main__":
    main()
