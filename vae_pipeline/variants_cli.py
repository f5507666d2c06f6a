"""Add model variants as partitions of this Dagster instance, without the daemon's sensor.

    python -m vae_pipeline.variants_cli add                  # the sweep file's variants
    python -m vae_pipeline.variants_cli add z10-b4-bern      # named keys
    python -m vae_pipeline.variants_cli list                 # the variants this instance has
    python -m vae_pipeline.variants_cli sweep                # the sweep file's keys (checked), one per line

The instance is $DAGSTER_HOME's (scripts/instance.sh sets it). Keys are checked before anything is
added, so a bad key or sweep file changes nothing.
"""

from __future__ import annotations

import argparse
import sys

import dagster as dg

from vae_pipeline.core.model.config import ConfigError
from vae_pipeline.core.selection.sweep import MAX_VARIANTS, Variant, load_sweep
from vae_pipeline.defs.variants import VARIANTS, missing_variants, sweep_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae_pipeline.variants_cli", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add variants (default: every variant of the sweep file)")
    add.add_argument("keys", nargs="*", help="variant keys such as z20-b1-bern")
    add.add_argument("--sweep", help="sweep file (default: $VAE_PIPELINE_SWEEP, else sweeps/default.yaml)")
    commands.add_parser("list", help="the variants this instance has, in the order they were added")
    show = commands.add_parser("sweep", help="the sweep file's variant keys, one per line (nothing is added)")
    show.add_argument("file", nargs="?", help="sweep file (default: $VAE_PIPELINE_SWEEP, else sweeps/default.yaml)")
    args = parser.parse_args(argv)
    if args.command == "sweep":
        try:
            print("\n".join(v.key for v in load_sweep(args.file or sweep_file())))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    with dg.DagsterInstance.get() as instance:
        if args.command == "list":
            print("\n".join(instance.get_dynamic_partitions(VARIANTS.name)))
            return 0
        try:
            if len(args.keys) > MAX_VARIANTS:
                raise ConfigError(f"{len(args.keys)} keys at once is above the bound of {MAX_VARIANTS} (each trains two "
                                  f"models); add at most {MAX_VARIANTS} at a time.")
            variants = [Variant.from_key(k) for k in args.keys] if args.keys else load_sweep(args.sweep or sweep_file())
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        new = missing_variants(instance, variants)
        if new:
            instance.add_dynamic_partitions(VARIANTS.name, new)
        print(f"added {', '.join(new)}" if new else "every variant is a partition already")
    return 0


if __name__ == "__main__":
    sys.exit(main())
