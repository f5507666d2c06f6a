"""Ingest benchmark: wall time, store size and peak memory of building the tensor store from raw MNIST,
then the peak memory of refusing hostile files (a gzip bomb, a header whose dimensions overflow).

Usage: VAE_PIPELINE_MNIST_DIR=../shared/mnist/raw python benchmarks/bench_ingest.py
The hostile files are built by the test helpers (vae_pipeline_tests/idx_files.py, one copy of them) and
read in a fresh interpreter each, so that each peak is measured alone.
"""

from __future__ import annotations

import gzip
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # vae_pipeline_tests is not installed; its IDX writers are reused here

from vae_pipeline.core.data import idx, tensor_store
from vae_pipeline_tests.idx_files import idx_header, measure_read, tiny_arrays, write_bomb_set, write_idx_set

BOMB_EXPANDED_BYTES = 4 << 30  # the bomb: 17 MB of .gz expanding to 3.9 GB


def bench_official(source: Path) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        raw = idx.read_raw_dataset(source, "mnist")
        t1 = time.perf_counter()
        arrays = tensor_store.build_store_arrays(raw, val_size=10_000, split_seed=0)
        stored = tensor_store.put_tensor_store(Path(tmp), arrays, tensor_store.store_metadata(raw, 10_000, 0))
        t2 = time.perf_counter()
        store = tensor_store.load_tensor_store(stored.path)
        t3 = time.perf_counter()
        again = tensor_store.put_tensor_store(Path(tmp), arrays, tensor_store.store_metadata(raw, 10_000, 0))
        t4 = time.perf_counter()
        size = stored.path.stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"read_and_verify_s={t1 - t0:.3f}")
    print(f"split_and_write_s={t2 - t1:.3f}")
    print(f"ingest_total_s={t2 - t0:.3f}")
    print(f"load_and_verify_store_s={t3 - t2:.3f}")
    print(f"reuse_identical_store_s={t4 - t3:.3f} ({again.action})")
    float32_mib = sum(len(s) for s in store.splits.values()) * 784 * 4 / 2**20
    print(f"store_bytes={size} ({size / 2**20:.1f} MiB; float32 would be {float32_mib:.1f} MiB)")
    print(f"peak_rss_mib={peak:.0f} (interpreter and imports before ingest: {rss_before:.0f})")


def bench_hostile() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bomb = write_bomb_set(Path(tmp) / "bomb", BOMB_EXPANDED_BYTES)
        gz_size = (bomb / "train-images-idx3-ubyte.gz").stat().st_size
        for verify_md5 in (True, False):
            m = measure_read(bomb, verify_md5=verify_md5)
            print(
                f"gzip_bomb verify_md5={verify_md5}: {gz_size / 2**20:.1f} MiB .gz expanding to "
                f"{BOMB_EXPANDED_BYTES / 2**30:.0f} GiB; "
                f"refused={m['refusal'] is not None}; peak_delta_mib={m['peak_delta_mib']:.1f} "
                f"(VmHWM above the {m['rss_before_mib']:.1f} MiB resident after imports; VmHWM reset: {m['hwm_reset']})"
            )
        overflow = write_idx_set(Path(tmp) / "overflow", tiny_arrays())
        header = idx_header(idx.IDX_IMAGES_MAGIC, (2**31, 2**31, 2**31))
        (overflow / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(1000)))
        m = measure_read(overflow, verify_md5=False)
        print(f"overflowing_header 2^31x2^31x2^31: refused={m['refusal'] is not None}; peak_delta_mib={m['peak_delta_mib']:.1f}")
        print(f"  {m['refusal']}")


def main() -> None:
    bench_official(Path(os.environ.get("VAE_PIPELINE_MNIST_DIR", REPO_ROOT / "../shared/mnist/raw")))
    bench_hostile()


if __name__ == "__main__":
    main()
