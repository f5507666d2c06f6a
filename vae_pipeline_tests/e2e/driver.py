"""Materialize the pipeline in this process, so that a fault test can kill it (kill -9) where it wants.

    python -m vae_pipeline_tests.e2e.driver --data-dir D --source-dir S --seed N [--variant z4-b1-bern] [--select a,b]
        [--crash-before-replace .parquet]

`--crash-before-replace SUFFIX` kills this process with SIGKILL at the moment the atomic writer
(core/atomic.py) is about to rename a finished temporary file over a path ending in SUFFIX: the
worst moment for a crash, made deterministic. Training options default to the tiny test config, the
variant (the partition of the model assets) to the tiny variant; each run has an ephemeral instance
of its own, to which the variant is added first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import dagster as dg


def _crash_before_replace(suffix: str) -> None:
    replace = os.replace

    def crashing_replace(src, dst, *args, **kwargs):  # noqa: ANN001, ANN202
        if str(dst).endswith(suffix):
            print(f"driver: SIGKILL before renaming {src} -> {dst}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst, *args, **kwargs)

    os.replace = crashing_replace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite under the data folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--training", default="{}", help="JSON overrides of vae_model's config")
    parser.add_argument("--variant", default=None, help="the partition key: latent size, beta, likelihood (default: the tiny variant)")
    parser.add_argument("--tensors", default='{"val_size": 200}', help="JSON config of mnist_tensors")
    parser.add_argument("--verify-md5", action="store_true")
    parser.add_argument("--select", default=None, help="comma-separated asset keys; default the whole job")
    parser.add_argument("--crash-before-replace", default=None, metavar="SUFFIX")
    args = parser.parse_args(argv)
    if args.crash_before_replace:
        _crash_before_replace(args.crash_before_replace)

    from vae_pipeline.definitions import defs
    from vae_pipeline.defs.resources import default_resources
    from vae_pipeline_tests.helpers import TINY_COMPARISON, TINY_EVALUATION, TINY_GATES, TINY_JUDGE, TINY_TRAINING
    from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

    config = {
        "mnist_raw": {"config": {"source_dir": args.source_dir, "verify_md5": args.verify_md5, "allow_download": False}},
        "mnist_tensors": {"config": json.loads(args.tensors)},
        "vae_model": {"config": {**TINY_TRAINING, "seed": args.seed, **json.loads(args.training)}},
        "latent_evaluation": {"config": TINY_EVALUATION},
        "champion_comparison": {"config": TINY_GATES},
        "version_comparison": {"config": TINY_COMPARISON},
        "digit_classifier": {"config": TINY_JUDGE},
    }
    resources = default_resources(args.data_dir, tracking_uri=args.tracking_uri)
    variant = args.variant or TINY_VARIANT
    instance = add_variants(dg.DagsterInstance.ephemeral(), variant)
    if args.select:
        selection = args.select.split(",")
        config = {k: v for k, v in config.items() if k in selection}
        result = dg.materialize(
            list(defs.assets), selection=selection, run_config={"ops": config}, resources=resources,
            instance=instance, partition_key=variant, raise_on_error=False,
        )
    else:
        result = defs.resolve_job_def("vae_pipeline_job").execute_in_process(
            run_config={"ops": config}, resources=resources, instance=instance, partition_key=variant, raise_on_error=False
        )
    materialized = sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()})
    print(json.dumps({"success": result.success, "run_id": result.run_id, "variant": variant, "materialized": materialized}), flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
